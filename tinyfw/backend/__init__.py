"""Device registry: ``backend_for('cpu' | 'cuda')`` returns the module of primitives for a device.

See ``interface.py`` for the list of primitives and their meaning.
"""
import importlib
import os
import sys


def _use_workqueue_threads():
    """Run Numba's parallel kernels on its ``workqueue`` threading layer, unless the user chose one.

    Numba would otherwise pick OpenMP, whose idle threads keep spinning after each kernel and
    compete for the cores with NumPy's BLAS threads (and with PyTorch's, in the same process):
    on 2 cores that makes a training step about three times slower (bench/NOTES.md). The layer
    is fixed at Numba's first parallel launch, so this runs when tinyfw is imported, and sets the
    environment too because Numba re-reads it when it reloads its configuration (importing
    numba.cuda does). workqueue does not support parallel kernels launched from several Python
    threads at once; tinyfw launches them from one.
    """
    if "NUMBA_THREADING_LAYER" in os.environ:
        return
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.config.THREADING_LAYER = "workqueue"


_use_workqueue_threads()

# How long (log2 of CPU cycles) OpenBLAS's idle workers spin before they sleep; see below.
BLAS_SPIN_LOG2_CYCLES = "16"


def _short_blas_spin():
    """Let OpenBLAS's idle threads sleep ~20 us after a matmul instead of spinning ~0.1 s.

    After each matmul OpenBLAS's workers wait for the next one by spinning on their cores for
    2^28 cycles (its default ``OPENBLAS_THREAD_TIMEOUT=28``), so in a training step, where a
    matmul comes every ~0.3 ms, they never stop, and any other thread of this process (tinyfw's
    helper threads, ``backend/cpu/helper_threads.py``) shares its core with a spinner. With 2^16
    cycles they stay awake between back-to-back matmuls and sleep during the fused kernels in
    between: a shorter spin would make every matmul wake them, a longer one keeps them on the
    cores through the fused kernels (timings in bench/NOTES.md).

    OpenBLAS reads the variable once, when NumPy loads it, so this runs when tinyfw is imported
    (``tinyfw/__init__.py`` imports this package before NumPy) and only if NumPy is not loaded
    yet; a value the user set is kept. ``TINYFW_BLAS_SPIN=0`` leaves the variable alone. Returns
    whether OpenBLAS's workers will sleep soon enough for helper threads to pay.
    """
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if timeout is None and os.environ.get("TINYFW_BLAS_SPIN", "1") != "0" \
            and "numpy" not in sys.modules:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = timeout = BLAS_SPIN_LOG2_CYCLES
    try:
        return timeout is not None and int(timeout) <= 20
    except ValueError:
        return False


BLAS_SPIN_IS_SHORT = _short_blas_spin()

DEVICES = ("cpu", "cuda")
_loaded = {}


def normalize_device(device):
    """'cpu', 'cuda', 'cuda:0' or None -> 'cpu' / 'cuda'; anything else is a ValueError."""
    if device is None:
        return "cpu"
    name = str(device)
    if name.startswith("cuda"):
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")


def backend_for(device):
    """The backend module for ``device``; importing the CUDA one checks that CUDA is usable."""
    module = _loaded.get(device)  # fast path: called once per op with 'cpu' or 'cuda'
    if module is None:
        name = normalize_device(device)
        module = _loaded.get(name) or importlib.import_module(f"tinyfw.backend.{name}")
        _loaded[name] = module
    return module


def device_of_array(array):
    """'cpu' for NumPy arrays, 'cuda' for numba.cuda device arrays."""
    import numpy as np
    if isinstance(array, np.ndarray):
        return "cpu"
    # Real device arrays carry both marks; the CUDA simulator's fake arrays only the first.
    if getattr(array, "__cuda_ndarray__", False) or hasattr(array, "__cuda_array_interface__"):
        return "cuda"
    raise TypeError(f"not a backend array: {type(array).__name__}")
