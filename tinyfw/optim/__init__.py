"""``tinyfw.optim``: SGD, Adam, AdamW and learning-rate schedules."""
from .optimizer import Optimizer  # noqa: F401
from .sgd import SGD  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .schedules import warmup_cosine_lr, LRScheduler, WarmupCosine, LambdaLR  # noqa: F401
from ..nn.utils import clip_grad_norm_  # noqa: F401
