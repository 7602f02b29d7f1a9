"""Keep freed array memory in the process (glibc's malloc), instead of returning it to the kernel.

By default glibc serves every large block (from a few hundred KB up) with a fresh ``mmap`` and
unmaps it on ``free``. A training step allocates and frees the same activation and gradient
arrays every step, so each of them would be page-faulted in again, page by page, at a cost in
kernel time of a sizeable share of a small model's step. With the settings below the freed
blocks stay on malloc's heap and the next step reuses them. The cost is that up to
``TRIM_THRESHOLD`` of freed memory stays with the process (the profile is in
``bench/NOTES.md``).

The settings apply to the whole process (they are malloc's), once, when the CPU backend loads.
Set ``TINYFW_MALLOC_TUNING=0`` to leave malloc alone. Other C libraries (macOS, musl) are left
alone.

``copy_aligned`` (used by ``tinyfw.tensor``) puts the copy of a large array on a 64-byte boundary,
as PyTorch's CPU allocator does. malloc, and so NumPy, gives 16-byte alignment: three arrays in
four start inside a cache line, and then every 64-byte (AVX-512) load of a kernel's inner loop
touches two lines, which slows memory-bound kernels such as layer norm by several percent.
"""
import ctypes
import math
import os
import platform

import numpy as np

MMAP_THRESHOLD = 32 << 20   # blocks below 32 MB come from the heap (glibc's largest default)
TRIM_THRESHOLD = 256 << 20  # keep up to 256 MB of freed heap before trimming it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)


def tune_malloc(mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD):
    """Apply the settings; True if they were applied (glibc only, unless disabled)."""
    if os.environ.get("TINYFW_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


MALLOC_TUNED = tune_malloc()


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
