"""Tensor: a backend array, its gradient, and the graph node that made it.

A Tensor holds ``data`` (a NumPy array on the CPU, a numba.cuda device array on the GPU),
``grad`` (a Tensor or None), ``requires_grad`` and ``_ctx``, the ``Context`` of the Function
that produced it (None for leaves). This module defines the data structure and the functions
that create tensors (``tensor``, ``zeros``, ``randn``, ...); it imports no operation and not
``autograd``, so that both can import ``Tensor`` from below.

What a Tensor computes (operators such as ``+``, ``@`` and ``[]``, methods such as ``.sum()``,
``.reshape()`` and ``.to()``, and ``.backward()``) is a function of ``tinyfw.ops`` or
``tinyfw.autograd``; ``tinyfw/tensor_methods.py`` attaches each one to the class when
``import tinyfw`` runs, and lists them all in one table.
"""
import builtins
import numbers

import numpy as np

from .backend import backend_for, normalize_device, device_of_array
from . import random as _random

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)
long = int64
double = float64
float = float32  # noqa: A001  (torch.float is float32 too)

_default_dtype = float32


def set_default_dtype(dtype):
    """The dtype floats get when none is given (float32 unless changed, e.g. for checks)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"set_default_dtype: only floating dtypes, got {dtype}")
    _default_dtype = dtype


def get_default_dtype():
    return _default_dtype


class Tensor:
    """An n-dimensional array that can remember how it was computed.

    The methods below need no operation; the operators and the methods that run a Function
    (``t + u``, ``t.sum()``, ``t.to("cuda")``, ``t.backward()``, ...) are attached by
    ``tinyfw/tensor_methods.py``.
    """
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_out_index", "_retains_grad",
                 "device", "__weakref__")
    # Makes NumPy defer to Tensor's reflected operators: ``np.float32(2) * t`` is a Tensor.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, device=None):
        """Wrap a backend array; use ``fw.tensor(...)`` to make a Tensor from Python data."""
        self.data = data
        self.device = device or device_of_array(data)
        self.grad = None
        self._ctx = None
        self._out_index = 0
        self._retains_grad = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, data, device):
        t = cls.__new__(cls)
        t.data = data
        t.device = device
        t.grad = None
        t.requires_grad = False
        t._ctx = None
        t._out_index = 0
        t._retains_grad = False
        return t

    # ---------------------------------------------------------------- attributes
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return len(self.data.shape)

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def T(self):
        return self.transpose(-2, -1) if self.ndim >= 2 else self

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        n = 1
        for s in self.data.shape:
            n *= s
        return n

    def dim(self):
        return self.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients; this tensor "
                            f"has dtype {self.dtype} (shape {self.shape})")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) is only allowed on leaf tensors; "
                               "use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        self._retains_grad = True
        return self

    # ---------------------------------------------------------------- conversion
    def numpy(self):
        """A NumPy copy of the data, on the host."""
        return backend_for(self.device).to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item: only one-element tensors can be converted to a Python "
                             f"scalar, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, self.device)

    def zero_grad(self):
        self.grad = None

    # ---------------------------------------------------------------- printing
    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
        extra = "" if self.dtype == float32 or self.dtype == int64 else f", dtype={self.dtype}"
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self._ctx is not None:
            extra += f", grad_fn=<{self._ctx.function.__name__}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is "
                               "ambiguous; use .any() or .all()")
        return bool(self.item())

    def __float__(self):
        return builtins.float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __hash__(self):
        return id(self)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))



# -------------------------------------------------------------------- creation
def _infer_dtype(array, given):
    if given is not None:
        return np.dtype(given)
    if array.dtype.kind == "f":
        return array.dtype
    if array.dtype.kind in "iu":
        return int64 if array.dtype.kind == "i" or array.dtype.itemsize < 8 else array.dtype
    if array.dtype.kind == "b":
        return bool_
    raise TypeError(f"tensor: unsupported data type {array.dtype}")


def tensor(data, dtype=None, requires_grad=False, device="cpu"):
    """A new leaf Tensor holding a copy of ``data`` (nested lists, scalars, arrays, Tensors).

    Python floats become float32 (the default dtype), Python ints int64; NumPy arrays keep their
    dtype unless ``dtype`` is given, as in ``torch.tensor``.
    """
    if isinstance(data, Tensor):
        data = data.numpy()
    if isinstance(data, np.ndarray):
        array = data
    else:
        try:
            array = np.array(data)
        except ValueError as e:            # NumPy refuses ragged nested lists itself
            raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__} data "
                            f"(ragged lists or non-numeric values?): {e}") from None
        if array.dtype.kind == "f" and dtype is None:
            array = array.astype(_default_dtype)
        if array.dtype == object:
            raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__} data "
                            "(ragged lists or non-numeric values?)")
    array = np.asarray(array, dtype=_infer_dtype(array, dtype))
    device = normalize_device(device)
    t = Tensor(backend_for(device).from_numpy(array, copy=True), device=device)
    if requires_grad:
        t.requires_grad_(True)
    return t


def as_tensor(data, dtype=None, device="cpu"):
    """Like ``tensor`` but shares memory with a NumPy array when no conversion is needed."""
    if isinstance(data, Tensor) and dtype is None:
        return data.to(device)
    if isinstance(data, np.ndarray) and normalize_device(device) == "cpu" and \
            (dtype is None or np.dtype(dtype) == data.dtype) and data.dtype.kind in "fb":
        return Tensor(data, device="cpu")
    return tensor(data, dtype=dtype, device=device)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"invalid shape {shape}: sizes must be non-negative integers")
    return tuple(int(s) for s in shape)


def _factory(array_maker, shape, dtype, requires_grad, device):
    shape = _shape_arg(shape)
    dtype = np.dtype(dtype) if dtype is not None else _default_dtype
    device = normalize_device(device)
    t = Tensor(array_maker(backend_for(device), shape, dtype), device=device)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*shape, dtype=None, requires_grad=False, device="cpu"):
    return _factory(lambda b, s, d: b.zeros(s, d), shape, dtype, requires_grad, device)


def ones(*shape, dtype=None, requires_grad=False, device="cpu"):
    return _factory(lambda b, s, d: b.full(s, 1, d), shape, dtype, requires_grad, device)


def full(shape, fill_value, dtype=None, requires_grad=False, device="cpu"):
    if dtype is None and isinstance(fill_value, bool):
        dtype = bool_
    elif dtype is None and isinstance(fill_value, numbers.Integral):
        dtype = int64
    return _factory(lambda b, s, d: b.full(s, fill_value, d), (shape,) if isinstance(shape, int)
                    else tuple(shape), dtype, requires_grad, device)


def randn(*shape, dtype=None, requires_grad=False, device="cpu"):
    """Standard normal samples from the global generator (``manual_seed`` makes them repeat)."""
    def make(b, s, d):
        return b.from_numpy(_random.generator().standard_normal(s).astype(d))
    return _factory(make, shape, dtype, requires_grad, device)


def rand(*shape, dtype=None, requires_grad=False, device="cpu"):
    """Uniform samples in [0, 1) from the global generator."""
    def make(b, s, d):
        return b.from_numpy(_random.generator().random(s).astype(d))
    return _factory(make, shape, dtype, requires_grad, device)


def randint(low, high, size, dtype=None, device="cpu"):
    def make(b, s, d):
        return b.from_numpy(_random.generator().integers(low, high, size=s).astype(d))
    return _factory(make, tuple(size), dtype or int64, False, device)


def arange(start, end=None, step=1, dtype=None, device="cpu"):
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = int64 if is_int else _default_dtype
    device = normalize_device(device)
    return Tensor(backend_for(device).arange(start, end, step, np.dtype(dtype)), device=device)


def zeros_like(t, dtype=None, requires_grad=False, device=None):
    return zeros(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad,
                 device=device or t.device)


def ones_like(t, dtype=None, requires_grad=False, device=None):
    return ones(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad,
                device=device or t.device)


def full_like(t, fill_value, dtype=None, device=None):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device)


def randn_like(t, dtype=None, device=None):
    return randn(*t.shape, dtype=dtype or t.dtype, device=device or t.device)
