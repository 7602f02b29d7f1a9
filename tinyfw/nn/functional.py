"""``tinyfw.nn.functional``: the ops as plain functions (``import tinyfw.nn.functional as F``)."""
from ..ops.activations import relu, gelu, silu, elu  # noqa: F401
from ..ops.elementwise import sigmoid, tanh  # noqa: F401
from ..ops.linalg import linear  # noqa: F401
from ..ops.nn import (softmax, log_softmax, cross_entropy, embedding, dropout,  # noqa: F401
                      one_hot)
from ..ops.norms import layer_norm, rms_norm  # noqa: F401
from ..ops.attention import scaled_dot_product_attention  # noqa: F401
