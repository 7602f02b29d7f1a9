"""Creation and transfer: from_numpy / to_numpy (host <-> device copies), zeros, full, arange."""
import math

import numpy as np
from numba import cuda

from .runtime import (check_dtype, device_array, empty, flat, kernel_factory,
                      launch_1d, prod)

__all__ = ["from_numpy", "to_numpy", "zeros", "full", "arange"]


@kernel_factory
def fill_kernel():
    """``out[i] = value`` for every element."""
    def kernel(out, value, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = value
    return cuda.jit(kernel)


@kernel_factory
def arange_kernel():
    """``out[i] = start + i * step``."""
    def kernel(out, start, step, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = start + i * step
    return cuda.jit(kernel)


def from_numpy(a, copy=True):
    """A device copy of ``a`` (anything ``np.asarray`` accepts), C-contiguous (always a copy,
    whatever ``copy`` says)."""
    a = np.asarray(a, order="C")  # keeps 0-d arrays 0-d
    check_dtype("from_numpy", a.dtype)
    return cuda.to_device(a)


def to_numpy(x):
    """A host copy of the device array ``x`` as a NumPy array."""
    return device_array(x, "to_numpy").copy_to_host()


def _shape(op, shape):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(int(s) < 0 for s in shape):
        raise ValueError(f"{op}: negative dimension in shape {shape}")
    return tuple(int(s) for s in shape)


def full(shape, value, dtype=None):
    """``np.full(shape, value, dtype)`` on the device (dtype inferred from ``value`` if None)."""
    shape = _shape("full", shape)
    dtype = check_dtype("full", np.asarray(value).dtype if dtype is None else dtype)
    out = empty(shape, dtype)
    n = prod(shape)
    launch_1d(fill_kernel(), n, flat(out), dtype.type(value), n)
    return out


def zeros(shape, dtype):
    """``np.zeros(shape, dtype)`` on the device."""
    return full(shape, 0, np.dtype(dtype) if dtype is not None else np.dtype(np.float64))


def arange(start, stop=None, step=1, dtype=None):
    """``np.arange(start, stop, step, dtype)`` on the device."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: step must not be zero")
    dtype = check_dtype("arange", np.result_type(start, stop, step) if dtype is None else dtype)
    n = max(0, math.ceil((stop - start) / step))
    out = empty((n,), dtype)
    launch_1d(arange_kernel(), n, out, dtype.type(start), dtype.type(step), n)
    return out
