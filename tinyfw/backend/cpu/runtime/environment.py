"""Process-wide settings for the CPU backend: Numba's threading layer, OpenBLAS's idle spin, and
glibc's malloc. ``configure()`` applies them once, when the CPU backend loads.

Each setting has an opt-out:

- ``NUMBA_THREADING_LAYER``: a layer the user chose is kept; otherwise ``workqueue``.
- ``OPENBLAS_THREAD_TIMEOUT``: a value the user set is kept; ``TINYFW_BLAS_SPIN=0`` leaves the
  variable unset (OpenBLAS's own default spin).
- ``TINYFW_MALLOC_TUNING=0`` leaves malloc as it is.

This module imports no NumPy (see ``configure``).
"""
import ctypes
import os
import platform
import sys
from typing import NamedTuple

# How long (log2 of CPU cycles) OpenBLAS's idle workers spin before they sleep: long enough to
# stay awake between back-to-back matmuls, short enough to sleep during the fused kernels between
# them (OpenBLAS's default, 28, keeps them on the cores for ~0.1 s after every matmul).
BLAS_SPIN_LOG2_CYCLES = "16"
# From this spin (log2 cycles) down, OpenBLAS's workers sleep soon enough for helper threads to pay.
SHORT_BLAS_SPIN_MAX = 20

# malloc: every block comes from the heap (no block gets a mapping of its own), and up to
# TRIM_THRESHOLD of freed memory at the heap's top stays with the process: more memory kept,
# fewer page faults.
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameter numbers (malloc.h)


class Settings(NamedTuple):
    threading_layer: str       # Numba's threading layer as configured
    blas_spin_is_short: bool   # OpenBLAS's workers sleep soon after a matmul
    malloc_tuned: bool         # freed blocks stay on malloc's heap


_settings = None


def use_workqueue_threads():
    """Run Numba's parallel kernels on its ``workqueue`` layer unless the user chose one.

    OpenMP's idle threads keep spinning after each kernel and compete for the cores with BLAS's
    threads. The layer is fixed at Numba's first parallel launch; the environment is set too
    because Numba re-reads it when it reloads its configuration (importing numba.cuda does).
    workqueue does not support parallel kernels launched from several Python threads at once;
    tinyfw launches them from one. Returns the layer in effect.
    """
    layer = os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    numba = sys.modules.get("numba")
    if numba is not None and layer == "workqueue":
        numba.config.THREADING_LAYER = "workqueue"
    return layer


def short_blas_spin():
    """Let OpenBLAS's idle workers sleep ~20 us after a matmul instead of spinning ~0.1 s, so
    tinyfw's helper threads (``helper_threads.py``) do not share a core with a spinning worker.

    OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy loads it, so the variable is only
    set while NumPy is not loaded yet. Returns whether the spin in effect is short.
    """
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if timeout is None and os.environ.get("TINYFW_BLAS_SPIN", "1") != "0" \
            and "numpy" not in sys.modules:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = timeout = BLAS_SPIN_LOG2_CYCLES
    try:
        return timeout is not None and int(timeout) <= SHORT_BLAS_SPIN_MAX
    except ValueError:
        return False


def tune_malloc(trim_threshold=TRIM_THRESHOLD):
    """Keep freed array memory on glibc's heap instead of unmapping it: a training step or a
    forward pass frees and allocates the same activations every time, and fresh mappings would
    be page-faulted in again each time (on a virtual machine a fault can cost microseconds).

    By default glibc gives every block above a threshold a mapping of its own and unmaps it on
    free; the threshold can be raised to 32 MB at most, and the logits of a 50k-token vocabulary
    over 1024 positions take 200 MB. So no block is mapped on its own (``M_MMAP_MAX`` 0), and
    the heap's top is handed back to the system only when more than ``trim_threshold`` of it is
    free. True if applied (glibc only, and not with ``TINYFW_MALLOC_TUNING=0``)."""
    if os.environ.get("TINYFW_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def configure():
    """Apply the settings once (later calls return the first call's ``Settings``).

    Called at the top of ``backend/cpu/__init__.py``, which ``tinyfw/__init__.py`` imports before
    anything imports NumPy: OpenBLAS reads its spin from the environment when NumPy loads it.
    """
    global _settings
    if _settings is None:
        _settings = Settings(use_workqueue_threads(), short_blas_spin(), tune_malloc())
    return _settings
