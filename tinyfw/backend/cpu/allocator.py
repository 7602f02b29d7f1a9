"""Keep freed array memory in the process (glibc's malloc), instead of returning it to the kernel.

By default glibc serves every large block (from a few hundred KB up) with a fresh ``mmap`` and
unmaps it on ``free``. A training step allocates and frees the same activation and gradient
arrays every step, so each of them is page-faulted in again, page by page: measured on the W1
step (``bench/profile_w1.py``, 1 thread), 8200 minor page faults and 28 ms of kernel time per
step, 149 ms per step in all; with the settings below 11 page faults, 4 ms of kernel time and
110 ms per step. The cost is that up to ``TRIM_THRESHOLD`` of freed memory stays with the process
(it is reused by the next step's arrays).

The settings apply to the whole process (they are malloc's), once, when the CPU backend loads.
Set ``TINYFW_MALLOC_TUNING=0`` to leave malloc alone. Other C libraries (macOS, musl) are left
alone.
"""
import ctypes
import os
import platform

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
