"""Split a mid-size kernel call between the calling thread and helper threads.

A kernel here is a serial Numba function ``kernel(*args, start, stop)`` over independent units
(rows, elements, attention heads) that releases the GIL (``nogil=True``). There are three ways to
run one (``launch.py`` chooses by the size of the work):

- small work: on the calling thread alone;
- mid-size work (what a W1 training step is made of: a GELU over 393k elements, attention over
  48 heads of 64 tokens, 0.2-1 ms each on one core): ``run_split`` below, the calling thread
  takes the first range and the helper threads the others;
- large work (W4-W7's inputs): Numba's parallel pool (``launch.py``'s ``prange`` drivers).

Why not Numba's pool for the middle too: a pool launch costs more, and varies more, than waking
one helper, so at these sizes the helpers gain where the pool barely breaks even. Handing a
range to a helper still costs a thread wake-up (some tens of microseconds), so only calls of
about 0.1 ms and more are split.

Helpers only pay when NumPy's BLAS does not keep the other cores busy between matmuls:
``ENABLED`` is true when NumPy uses OpenBLAS with a short spin (``environment.short_blas_spin``).
With OpenBLAS's default spin a helper shares its core with a spinning BLAS thread, and splitting
makes the step slower. The measurements are in
``bench/NOTES.md``.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba
import numpy as np
from numba import njit

from .atomics import load_acquire
from .environment import configure

__all__ = ["run_split", "n_parts"]


def _numpy_uses_openblas():
    try:
        return "openblas" in np.__config__.CONFIG["Build Dependencies"]["blas"]["name"].lower()
    except (AttributeError, KeyError, TypeError):
        return False


ENABLED = configure().blas_spin_is_short and _numpy_uses_openblas()

_pool = None
_pool_pid = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()   # .helper is True on the helper threads


def _mark_helper():
    _local.helper = True


def _executor(n_helpers):
    """The helper threads (made on first use, again after a fork: a child has none of them)."""
    global _pool, _pool_pid, _pool_size
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < n_helpers:
            _pool = ThreadPoolExecutor(n_helpers, thread_name_prefix="tinyfw-helper",
                                       initializer=_mark_helper)
            _pool_pid, _pool_size = os.getpid(), n_helpers
        return _pool


def _threads():
    """Threads tinyfw may use: Numba's count (``numba.set_num_threads``)."""
    return numba.get_num_threads()


def n_parts(n, work, min_work):
    """How many ranges to cut ``n`` units into: 1 unless helpers are enabled, there are spare
    threads and each range gets at least ``min_work`` of the ``work``; 1 on a helper thread
    (a helper waiting for helpers could wait for itself)."""
    by_work = work // max(1, min_work)
    if by_work < 2 or n < 2 or not ENABLED or getattr(_local, "helper", False):
        return 1                        # (most calls: decided before asking Numba, ~2 us)
    return min(n, _threads(), by_work)


@njit(nogil=True, cache=True)
def _spin_until_set(flags, max_polls):
    """Poll until every flag is nonzero (True) or ``max_polls`` polls have passed (False)."""
    for _ in range(max_polls):
        done = True
        for i in range(flags.shape[0]):
            if load_acquire(flags, i) == 0:
                done = False
                break
        if done:
            return True
    return False


# How long the calling thread polls for its helpers before it blocks on them: ~1 ms. Blocking
# costs a wake-up of its own when they finish (as long as handing a range over), and the helpers
# normally finish within tens of microseconds of the calling thread's range; polling longer
# wastes a core when a helper is late.
MAX_POLLS = 1 << 16

_DONE, _FAILED = 1, 2


def _helper_range(kernel, args, start, stop, flags, i):
    """A helper's range: the kernel, then its flag (set last, and also on an error)."""
    try:
        kernel(*args, start, stop)
    except BaseException:
        flags[i] = _FAILED
        raise
    flags[i] = _DONE


# The calling thread's range is this much larger than a helper's: a helper starts a wake-up after
# it, so equal ranges would leave the calling thread waiting at the end, and too large a first
# range leaves the helper idle instead.
FIRST_RANGE_WEIGHT = 1.25


def _bounds(n, parts, first_weight):
    """parts + 1 increasing bounds over [0, n], the first range weighted ``first_weight``
    against 1 for each of the others."""
    total = first_weight + parts - 1
    inner = [min(n, int(round(n * (first_weight + p - 1) / total))) for p in range(1, parts)]
    return [0] + inner + [n]


def run_split(kernel, args, n, parts):
    """``kernel(*args, start, stop)`` over units [0, n) cut into ``parts`` ranges (the first
    weighted ``FIRST_RANGE_WEIGHT``): the first on this thread, the others on helper threads;
    returns when all are done, and raises the first range's error, else a helper's."""
    if parts < 2:
        kernel(*args, 0, n)
        return
    bounds = _bounds(n, parts, FIRST_RANGE_WEIGHT)
    flags = np.zeros(parts - 1, dtype=np.int64)
    pool = _executor(parts - 1)
    futures = [pool.submit(_helper_range, kernel, args, bounds[p], bounds[p + 1], flags, p - 1)
               for p in range(1, parts)]
    try:
        kernel(*args, bounds[0], bounds[1])
    finally:
        # the helpers write into the caller's arrays: never return before them
        if not _spin_until_set(flags, MAX_POLLS) or (flags == _FAILED).any():
            wait(futures)
    if (flags == _FAILED).any():
        for f in futures:
            f.result()
