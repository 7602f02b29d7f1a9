"""Plain NumPy versions of every fused kernel: the oracle the tests compare the kernels against,
and the documentation a learner reads first. One file per concept; this module re-exports them.
"""
from .core import *  # noqa: F401,F403  softmax, log-softmax, cross-entropy, embedding, GELU, Adam
from .fast_weights import *  # noqa: F401,F403  sum rule and delta rule (recurrent and chunked)
from .safu import *  # noqa: F401,F403  SAFU block attention (cached comparisons), running mean
from .norms import *  # noqa: F401,F403  layer norm, RMS norm
from .attention import *  # noqa: F401,F403  softmax attention, forward/backward and probabilities
