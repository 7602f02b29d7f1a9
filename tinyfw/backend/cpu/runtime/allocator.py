"""Aligned copies: ``copy_aligned`` puts the copy of a large array on a 64-byte boundary.

malloc, and so NumPy, gives 16-byte alignment: three arrays in four start inside a cache line,
and then every 64-byte (AVX-512) load of a kernel's inner loop touches two lines, which slows
memory-bound kernels such as layer norm by several percent. The CPU backend's
``from_numpy(a, copy=True)`` (what ``tinyfw.tensor`` calls) copies through here. (malloc's own
settings are in ``environment.py``.)
"""
import math

import numpy as np

ALIGNMENT = 64               # bytes: a cache line, and one AVX-512 vector
ALIGN_MIN_BYTES = 1 << 16    # smaller copies stay plain: aligning costs about 2 us


def empty_aligned(shape, dtype):
    """``np.empty(shape, dtype)`` whose first element lies on an ``ALIGNMENT``-byte boundary (a
    view into a slightly larger array)."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    raw = np.empty(count + ALIGNMENT // dtype.itemsize, dtype)
    start = (-raw.ctypes.data % ALIGNMENT) // dtype.itemsize
    return raw[start:start + count].reshape(shape)


def copy_aligned(array, dtype):
    """A C-contiguous copy of ``array`` as ``dtype``, ``ALIGNMENT``-byte aligned when it has at
    least ``ALIGN_MIN_BYTES``."""
    dtype = np.dtype(dtype)
    if array.size * dtype.itemsize < ALIGN_MIN_BYTES:
        return np.array(array, dtype=dtype, copy=True, order="C")
    out = empty_aligned(array.shape, dtype)
    np.copyto(out, array, casting="unsafe")
    return out
