"""CPU primitives: the NumPy meaning of every non-fused name in ``backend/interface.py``.

Most are NumPy functions bound directly, so a CPU op costs one Python call and no wrapper.
"""
import numpy as np
from scipy import special as _special

from .runtime.allocator import copy_aligned

__all__ = [
    "from_numpy", "to_numpy", "zeros", "full", "arange",
    "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "abs", "sign", "erf",
    "add", "sub", "mul", "div", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "where", "clip",
    "sum", "max", "min", "argmax", "argmin",
    "reshape", "transpose", "broadcast_to", "contiguous", "astype", "copy",
    "concatenate", "getitem", "index_add", "matmul",
]

DEVICE = "cpu"


def from_numpy(a, copy=False):
    """``a`` as a NumPy array (shared); ``copy``: a C-contiguous copy, cache-line aligned when
    large (``runtime/allocator.py``)."""
    a = np.asarray(a)
    return copy_aligned(a, a.dtype) if copy else a


def to_numpy(x):
    return np.array(x, copy=True)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def full(shape, value, dtype):
    return np.full(shape, value, dtype=dtype)


def arange(start, stop, step, dtype):
    return np.arange(start, stop, step, dtype=dtype)


neg = np.negative
exp = np.exp
log = np.log
sqrt = np.sqrt
tanh = np.tanh
abs = np.abs
sign = np.sign


def sigmoid(x):
    # scipy's expit is stable at both tails (no overflow warning for large negative x).
    return _special.expit(x)


def erf(x):
    return _special.erf(x)


add = np.add
sub = np.subtract
mul = np.multiply
div = np.divide
pow = np.power
maximum = np.maximum
minimum = np.minimum
eq = np.equal
ne = np.not_equal
lt = np.less
le = np.less_equal
gt = np.greater
ge = np.greater_equal
where = np.where


def clip(x, lo, hi):
    return np.clip(x, lo, hi)


def sum(x, axis=None, keepdims=False):
    return np.sum(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):
    return np.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):
    return np.min(x, axis=axis, keepdims=keepdims)


def argmax(x, axis=None):
    return np.argmax(x, axis=axis)


def argmin(x, axis=None):
    return np.argmin(x, axis=axis)


def reshape(x, shape):
    return np.reshape(x, shape)


def transpose(x, axes):
    return np.transpose(x, axes)


def broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


def contiguous(x):
    return np.ascontiguousarray(x)


def astype(x, dtype):
    return x.astype(dtype, copy=False)


def copy(x):
    return np.array(x, copy=True)


def concatenate(xs, axis):
    return np.concatenate(xs, axis=axis)


def getitem(x, index):
    return x[index]


def index_add(shape, index, values, dtype=None):
    """``out = zeros(shape); out[index] += values`` with repeated indices accumulating."""
    out = np.zeros(shape, dtype=dtype or values.dtype)
    if _is_basic_index(index):
        # Basic indexing selects each element at most once: plain assignment is a scatter-add.
        out[index] = values
    else:
        np.add.at(out, index, values)
    return out


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in items)


matmul = np.matmul
