"""Where a kernel call runs: on the calling thread, split with helper threads, or in Numba's pool.

Every CPU kernel that can run on several threads is a serial Numba function

    kernel(*args, start, stop)          # does units [start, stop): rows, elements, heads, chunks

whose units never write the same output element, and its wrapper calls

    launch.run(policy, kernel, args, n, work)

``run`` decides by the size of the call, measured in the policy's unit of ``work``:

- below ``split_min_work`` per range (or with a single unit): the calling thread alone;
- up to ``pool_min_work``: split between the calling thread and helper threads
  (``helper_threads.py``), where helpers pay (OpenBLAS's short spin, spare threads);
- from ``pool_min_work`` on (and at least two units): Numba's pool, through one of the two
  generic ``prange`` drivers below (a static split into ranges, or ranges claimed one at a time
  from a shared counter).

All thresholds live in the policies below; tests replace a policy (``monkeypatch.setattr(launch,
"ROWS", launch.ROWS._replace(pool_min_work=0))``) to run each path.
"""
import types as pytypes
from typing import NamedTuple, Optional

import numba
import numpy as np
from numba import njit, prange

from . import helper_threads
from .atomics import fetch_add

__all__ = ["Policy", "ROWS", "NORMS", "ATTENTION", "SAFU_CONTEXTS", "ALWAYS_POOL",
           "BIAS_KERNEL_MIN_ELEMENTS", "ADDMM_MIN_ROWS", "run", "pool_threads", "unit_range"]


class Policy(NamedTuple):
    pool_min_work: int             # from this much work (and two units) up: Numba's pool
    split_min_work: Optional[int]  # below the pool: work per helper range (None: never split)
    ranges_per_thread: int         # in the pool: ranges per thread (0: one unit per range)
    claimed: bool = False          # in the pool: threads claim ranges from a shared counter


# Core fused kernels (softmax, cross-entropy, embedding backward, GELU, Adam) and the warm-start
# counts; work = elements of the largest array. The pool's launch (workqueue workers sleep between
# launches, OpenBLAS's threads spin after each matmul) costs more than it saves below 1M
# elements, so a W1 step (at most 393k) never wakes it; a helper range must outlast a thread
# wake-up (tens of microseconds): 128k elements. Four ranges per thread balance the load.
ROWS = Policy(pool_min_work=1 << 20, split_min_work=1 << 17, ranges_per_thread=4)

# Layer norm, RMS norm; work = N * D. A generation step (one row) and W1's (768, 128)
# activations stay on the calling thread. In the pool, 16 ranges per thread are claimed one at
# a time, so a thread on a busy core does fewer of them instead of holding up the others.
NORMS = Policy(pool_min_work=1 << 18, split_min_work=None, ranges_per_thread=16, claimed=True)

# Softmax attention; units = (batch, head) pairs, work = multiply-adds B H Lq Lk (D + Dv).
# W1's call (12, 4, 64, 32), 12.6M, is split in two with a helper on 2 cores (a hand-over costs
# about 2M multiply-adds); W4's shapes (from 67M) run in the pool, one head per range.
ATTENTION = Policy(pool_min_work=1 << 25, split_min_work=1 << 21, ranges_per_thread=0)

# SAFU contexts; units = batch rows, work = multiply-adds and copied elements. The W2 model's call
# (~1.9M) is split in two on 2 cores; W10's (B = 4, D = 256) from L = 1024 on run in the pool.
SAFU_CONTEXTS = Policy(pool_min_work=1 << 24, split_min_work=1 << 19, ranges_per_thread=0)

# Fast-weight recurrences and SAFU block attention: every call with two units or more runs in
# the pool, one unit (a head, a position) per range.
ALWAYS_POOL = Policy(pool_min_work=0, split_min_work=None, ranges_per_thread=0)

# Bias add and column sum (bias.py): below this many elements NumPy's own loops are as fast as a
# kernel call.
BIAS_KERNEL_MIN_ELEMENTS = 1 << 12
# addmm (bias.py) hands the product to BLAS's gemm from this many rows on: a single row is a
# matrix-vector product, which NumPy's matmul passes to gemv, about 3x faster there.
ADDMM_MIN_ROWS = 2


def pool_threads(policy, n, work):
    """Threads of Numba's pool a call of ``n`` units and ``work`` would use: 1 means no pool."""
    if n < 2 or work < policy.pool_min_work:
        return 1
    return numba.get_num_threads()


def run(policy, kernel, args, n, work):
    """``kernel(*args, start, stop)`` over units [0, n): on this thread, split with helper
    threads, or in Numba's pool, as ``policy`` says for this much ``work``."""
    threads = pool_threads(policy, n, work)
    if threads == 1:
        parts = (1 if policy.split_min_work is None
                 else helper_threads.n_parts(n, work, policy.split_min_work))
        helper_threads.run_split(kernel, args, n, parts)
        return
    n_ranges = n if policy.ranges_per_thread == 0 else min(n, policy.ranges_per_thread * threads)
    if policy.claimed:
        _driver(kernel, _claimed_ranges)(args, n, n_ranges, threads)
    else:
        _driver(kernel, _static_ranges)(args, n, n_ranges)


@njit(cache=True)
def unit_range(n, n_ranges, r):
    """[start, stop) of range r when n units are cut into n_ranges nearly equal ranges."""
    size = -(-n // n_ranges)
    return min(n, r * size), min(n, (r + 1) * size)


@njit(cache=True)
def _new_counter():
    counter = np.empty(1, np.int64)
    counter[0] = 0
    return counter


# The two parallel drivers, written once. ``_KERNEL`` is not defined here: ``_driver`` makes a
# copy of a driver per kernel with ``_KERNEL`` bound to that kernel (see there).

def _static_ranges(args, n, n_ranges):
    """Range r of n_ranges on whichever thread prange gives it."""
    for r in prange(n_ranges):
        start, stop = unit_range(n, n_ranges, r)
        _KERNEL(*args, start, stop)  # noqa: F821  (bound by _driver)


def _claimed_ranges(args, n, n_ranges, n_threads):
    """One loop iteration per thread; each thread claims the next unclaimed range until none is
    left, so a thread slowed by a busy core does fewer ranges instead of holding up the others."""
    counter = _new_counter()
    for _ in prange(n_threads):
        r = fetch_add(counter, 1)
        while r < n_ranges:
            start, stop = unit_range(n, n_ranges, r)
            _KERNEL(*args, start, stop)  # noqa: F821  (bound by _driver)
            r = fetch_add(counter, 1)


_drivers = {}


def _driver(kernel, template):
    """The compiled ``template`` driver for ``kernel`` (made on first use).

    Numba cannot cache a function that takes a kernel as an argument (a dispatcher's type differs
    in every process), so each kernel gets its own copy of the driver with the kernel as a global,
    as a hand-written driver would have. The copy is filed under the kernel's source file and
    name, so Numba's on-disk cache of it is dropped whenever that file changes, as it must be:
    the cached driver contains the compiled kernel.
    """
    key = (kernel, template)
    compiled = _drivers.get(key)
    if compiled is None:
        py_func = kernel.py_func
        name = f"{py_func.__name__}{template.__name__}"
        code = template.__code__.replace(co_filename=py_func.__code__.co_filename, co_name=name)
        function = pytypes.FunctionType(code, {**template.__globals__, "_KERNEL": kernel}, name)
        function.__qualname__ = f"{py_func.__qualname__}{template.__name__}"
        function.__module__ = py_func.__module__
        function.__doc__ = template.__doc__
        compiled = _drivers[key] = njit(parallel=True, cache=True)(function)
    return compiled
