"""tinyfw: a readable deep-learning engine on NumPy + Numba (CPU) and numba.cuda (GPU).

    import tinyfw as fw
    import tinyfw.nn as nn
    import tinyfw.nn.functional as F

This module only re-exports; each name lives in the file that defines it.
"""
from .backend import cpu as _cpu_backend  # noqa: F401  first: sets up threads, BLAS before NumPy
from .tensor import (Tensor, tensor, as_tensor, zeros, ones, full, randn, rand, randint, arange,
                     zeros_like, ones_like, full_like, randn_like, set_default_dtype,
                     get_default_dtype, float16, float32, float64, int32, int64, uint8, bool_,
                     long, double)
from .autograd import no_grad, enable_grad, is_grad_enabled, Function
from . import tensor_methods  # noqa: F401  gives Tensor its operators and methods
from .gradcheck import gradcheck, GradcheckError
from .random import manual_seed, initial_seed
from .ops.elementwise import (exp, log, sqrt, tanh, sigmoid, abs, clip, clamp, where,
                              masked_fill, maximum, minimum)
from .ops.reduce import sum, mean, max, min, amax, amin, var, std, logsumexp, argmax, argmin
from .ops.shape import (reshape, transpose, permute, unsqueeze, squeeze, flatten, cat, stack,
                        split, chunk)
from .ops.linalg import matmul
from .ops.activations import relu
from .ops.nn import softmax, log_softmax
from . import autograd
from . import nn, optim, warmstart, data
from . import viz
from .serialization import save, load

autograd.gradcheck = gradcheck  # also reachable as fw.autograd.gradcheck, as in PyTorch

__version__ = "0.1.0"
