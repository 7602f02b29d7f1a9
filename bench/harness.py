"""Measuring tools shared by every workload: threads, the machine, the matmul peak, the timer.

A figure only counts as a ratio measured side by side in one run (``docs/BENCH.md``): the timer
runs the implementations of one workload in alternation (tinyfw, reference, torch, then the next
round in a rotated order) and reports the median of each, so a burst of load from another process
hits all of them alike instead of one.
"""
import ctypes
import glob
import os
import platform
import statistics
import sys
import time

import numpy as np


# ---------------------------------------------------------------------------------------- threads
def _openblas():
    """NumPy's OpenBLAS as a ctypes library with (get, set) thread functions, or None."""
    candidates = []
    numpy_dir = os.path.dirname(np.__file__)
    candidates += glob.glob(os.path.join(numpy_dir, os.pardir, "numpy.libs", "*openblas*"))
    candidates += glob.glob(os.path.join(numpy_dir, ".dylibs", "*openblas*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_",
                       "openblas_{}_num_threads"):
            get = getattr(lib, suffix.format("get"), None)
            put = getattr(lib, suffix.format("set"), None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


_BLAS = _openblas()


def blas_threads():
    """Threads NumPy's BLAS uses (None when it cannot be asked)."""
    return _BLAS[0]() if _BLAS else None


def set_blas_threads(n):
    if _BLAS:
        _BLAS[1](n)


def set_threads(n):
    """Use ``n`` threads in Numba kernels, in NumPy's BLAS and in SciPy's (which ``addmm`` and
    the kernels' ``gemm`` call): tinyfw's thread pools."""
    import tinyfw  # noqa: F401  first: it picks Numba's threading layer, fixed at the first launch
    import numba
    from tinyfw.backend.cpu.runtime.blas import blas_thread_controls
    numba.set_num_threads(n)
    if _BLAS:
        _BLAS[1](n)
    scipy_blas = blas_thread_controls()
    if scipy_blas is not None:
        scipy_blas[1](n)


def tinyfw_threads():
    """tinyfw's thread count: Numba's (the BLAS pool is set to the same by ``set_threads``)."""
    import numba
    return numba.get_num_threads()


# ---------------------------------------------------------------------------------------- machine
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    """The SIMD extensions that decide BLAS speed (avx2, avx512f, ...), as a short string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(s for s in ("avx2", "fma", "avx512f", "avx512_bf16",
                                                "amx_tile") if s in flags)
    except OSError:
        pass
    return ""


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def _helper_threads_enabled():
    from tinyfw.backend.cpu.runtime import helper_threads
    return helper_threads.ENABLED


def machine_info(torch_module=None):
    import numba
    import scipy
    info = {
        "cpu": cpu_model(),
        "simd": cpu_flags(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "blas_threads": blas_threads(),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "helper_threads": _helper_threads_enabled(),
        "torch": None,
        "torch_threads": None,
        "load_average_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if torch_module is not None:
        info["torch"] = torch_module.__version__
        info["torch_threads"] = torch_module.get_num_threads()
    return info


# ---------------------------------------------------------------------------------------- peak
def matmul_peak(n=2048, repeats=5, clock="wall"):
    """float32 ``numpy.matmul`` of two (n, n) matrices: GFLOP/s (best and median of ``repeats``).

    The best run is the machine's peak (the figure compute-bound workloads are shared of); the
    median says how noisy the machine was while measuring. ``clock='cpu'`` times with the
    process CPU time (with one thread: the work alone, whatever else runs on the machine).
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: BLAS threads started, pages touched
    times = []
    for _ in range(repeats):
        t0 = timer()
        np.matmul(a, b, out=out)
        times.append(timer() - t0)
    flop = 2.0 * n ** 3
    return {"n": n, "gflops": flop / min(times) / 1e9,
            "gflops_median": flop / statistics.median(times) / 1e9, "repeats": repeats}


def matmul_peak_in_child(n=2048, repeats=5, threads=None, clock="wall"):
    """``matmul_peak`` measured in a child process.

    Measuring it here would leave this process's allocator changed: glibc raises its mmap
    threshold when the 16 MB matrices are freed, after which every workload of the run would
    allocate faster than the same code does in a user's training script.
    """
    import json
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from bench import harness as H; "
            "n, r, t = map(int, sys.argv[2:5]); t and H.set_blas_threads(t); "
            "print(json.dumps(H.matmul_peak(n, r, sys.argv[5])))")
    out = subprocess.run([sys.executable, "-c", code, root, str(n), str(repeats),
                          str(threads or 0), clock], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_bandwidth(n_bytes=256 * 2 ** 20, repeats=5):
    """Copy bandwidth (GB/s, read + write counted) of ``numpy.copyto`` on a large float32 array:
    the yardstick for the memory-bound workloads (W5, W7)."""
    n = n_bytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return {"bytes": 2 * n * 4, "gbs": 2 * n * 4 / min(times) / 1e9}


# ---------------------------------------------------------------------------------------- timer
class Timing:
    """Samples (seconds) of one implementation of one case."""

    def __init__(self, name):
        self.name = name
        self.samples = []

    @property
    def median(self):
        return statistics.median(self.samples)

    def as_dict(self):
        s = sorted(self.samples)
        return {"median_ms": 1e3 * self.median, "min_ms": 1e3 * s[0], "max_ms": 1e3 * s[-1],
                "runs": len(s)}


# Before each timed call: a pause, so the thread pool of the implementation that ran before has
# gone quiet, then one untimed call, so this implementation's own pool is awake again. PyTorch's
# OpenMP workers and OpenBLAS's keep spinning on the cores for a while after their last job, and
# the next implementation would pay for it (measured on the 2-core EPYC: W5 LayerNorm in tinyfw
# 10.1 ms median right after a PyTorch call, 7.3 ms after a 50 ms pause); after a pause alone,
# PyTorch's first call pays for waking its sleeping workers instead (W5 LayerNorm 8.7 against
# 5.1 ms back to back). Each implementation is thus timed in its steady state, as a user running
# only it would see it, and the order of the rotation no longer decides part of a ratio.
SETTLE_S = 0.05


def measure(impls, repeats=7, warmup=1, budget_s=None, min_repeats=3, sync=None,
            settle_s=SETTLE_S):
    """Time each callable of ``impls`` (name -> zero-argument callable), alternating.

    Every implementation is first called ``warmup`` times (JIT compilation, caches, allocator),
    then rounds of one timed call each run in a rotating order, each after a pause of
    ``settle_s`` seconds and one untimed call (see ``SETTLE_S``). With ``budget_s`` the number of rounds is cut so
    the whole measurement stays near that many seconds (never below ``min_repeats``).
    ``sync`` (a callable) is called after each timed call when the work is asynchronous (GPU).
    Returns name -> Timing.
    """
    def call(fn):
        fn()
        if sync is not None:
            sync()

    names = list(impls)
    first = {}
    for name in names:
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            call(impls[name])
            first[name] = time.perf_counter() - t0
    rounds = repeats
    if budget_s is not None:
        per_round = sum(first.values()) or 1e-9
        per_round *= 2 if settle_s else 1           # the untimed call before each timed one
        rounds = max(min_repeats, min(repeats, int(budget_s / per_round)))
    timings = {name: Timing(name) for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if settle_s:
                time.sleep(settle_s)
                call(impls[name])
            t0 = time.perf_counter()
            call(impls[name])
            timings[name].samples.append(time.perf_counter() - t0)
    return timings


def fmt_ms(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)
