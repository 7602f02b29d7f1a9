"""Tensor's operators and computing methods, attached to the class from the functions that
compute them.

The package is built in layers, and each layer imports only the layers below it:

    tensor.py      the Tensor data structure and the functions that create tensors
    autograd.py    Function, the graph and the backward walk          (imports tensor)
    ops/           every differentiable operation as a Function       (imports both)
    this module    ``Tensor.__add__ = ops.elementwise.add``, ...      (imports all three)

``a + b`` calls ``Tensor.__add__``, which is ``ops.elementwise.add``; ``t.sum(1)`` is
``ops.reduce.sum(t, 1)``; ``t.backward()`` is ``autograd.backward(t)``. ``tinyfw/__init__.py``
imports this module right after ``tensor`` and ``autograd``, so every Tensor has these methods
before any other part of the package runs. To give Tensor a new method, add its function to
``METHODS``.
"""
import numpy as np

from . import autograd
from .backend import normalize_device
from .ops import activations as A
from .ops import elementwise as E
from .ops import linalg as L
from .ops import nn as N
from .ops import reduce as R
from .ops import shape as S
from .tensor import Tensor, float32, float64, int64


def _reflected(fn):
    """The reflected operator: ``2 * t`` calls ``t.__rmul__(2)``, which is ``fn(2, t)``."""
    def method(self, other):
        return fn(other, self)
    method.__name__ = f"reflected_{fn.__name__}"
    return method


def to(self, device=None, dtype=None):
    """A copy on ``device`` and/or of ``dtype`` (``self`` if nothing changes).
    Differentiable: gradients flow back to the original device and dtype."""
    t = self
    if dtype is not None and np.dtype(dtype) != self.dtype:
        t = S.cast(t, np.dtype(dtype))
    if device is not None and normalize_device(device) != self.device:
        t = S.to_device(t, normalize_device(device))
    return t


def cpu(self):
    return to(self, "cpu")


def cuda(self):
    return to(self, "cuda")


def float(self):  # noqa: A001  (the name of the method, as in PyTorch)
    return to(self, dtype=float32)


def double(self):
    return to(self, dtype=float64)


def long(self):
    return to(self, dtype=int64)


def type_as(self, other):
    return to(self, dtype=other.dtype)


#: method name -> the function it calls, with the Tensor as first argument
METHODS = {
    # arithmetic and comparison operators
    "__add__": E.add, "__radd__": _reflected(E.add), "__sub__": E.sub, "__rsub__": E.rsub,
    "__mul__": E.mul, "__rmul__": _reflected(E.mul), "__truediv__": E.div,
    "__rtruediv__": E.rdiv, "__pow__": E.pow, "__rpow__": _reflected(E.pow),
    "__matmul__": L.matmul, "__rmatmul__": _reflected(L.matmul), "__neg__": E.neg,
    "__eq__": E.eq, "__ne__": E.ne, "__lt__": E.lt, "__le__": E.le, "__gt__": E.gt,
    "__ge__": E.ge, "__getitem__": S.index,
    # elementwise functions
    "exp": E.exp, "log": E.log, "sqrt": E.sqrt, "tanh": E.tanh, "sigmoid": E.sigmoid,
    "abs": E.abs, "clip": E.clip, "clamp": E.clip, "masked_fill": E.masked_fill,
    "relu": A.relu,
    # reductions
    "sum": R.sum, "mean": R.mean, "max": R.max, "min": R.min, "amax": R.amax,
    "amin": R.amin, "var": R.var, "std": R.std, "logsumexp": R.logsumexp,
    "argmax": R.argmax, "argmin": R.argmin,
    # shape
    "reshape": S.reshape, "view": S.reshape, "transpose": S.transpose,
    "permute": S.permute, "unsqueeze": S.unsqueeze, "squeeze": S.squeeze,
    "flatten": S.flatten, "expand": S.expand, "contiguous": S.contiguous,
    "split": S.split, "chunk": S.chunk, "clone": S.clone,
    # linear algebra and neural-network functions
    "matmul": L.matmul, "softmax": N.softmax, "log_softmax": N.log_softmax,
    # devices and dtypes
    "to": to, "cpu": cpu, "cuda": cuda, "float": float, "double": double, "long": long,
    "type_as": type_as,
    # gradients
    "backward": autograd.backward,
}

for _name, _function in METHODS.items():
    setattr(Tensor, _name, _function)
# Setting __eq__ on the finished class leaves its __hash__ alone: Tensors stay hashable by
# identity (tensor.py), so they can be dict keys although ``==`` is elementwise.
