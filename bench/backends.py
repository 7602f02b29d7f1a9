"""The two tinyfw paths every CPU workload runs: the engine as shipped (NumPy primitives + Numba
kernels), and the same engine with every fused kernel replaced by its plain NumPy reference from
``tinyfw/backend/reference/`` -- the second peer, which shows what the Numba kernels buy.

The engine finds its backend with ``backend_for(device)`` at every operation, so the reference
path is the same model code run while the registry hands out a module whose fused names are the
reference functions (``use_backend``).
"""
import contextlib
import importlib
import os
import pkgutil
import types

import tinyfw.backend as registry
from tinyfw.backend import backend_for


def reference_functions():
    """Every public function of the ``tinyfw.backend.reference`` files, by name.

    Each file there has ``__all__``; files not yet re-exported by the package's ``__init__`` are
    picked up too, so a new reference is used as soon as its file exists.
    """
    import tinyfw.backend.reference as ref
    functions = {}
    for info in pkgutil.iter_modules(ref.__path__):
        try:
            module = importlib.import_module(f"{ref.__name__}.{info.name}")
        except Exception:  # a file being written by someone else right now: skip it
            continue
        for name in getattr(module, "__all__", ()):
            functions[name] = getattr(module, name)
    return functions


def _cpu_kernel_names():
    """Names the CPU backend gets from its Numba kernel files (not from primitives.py)."""
    import tinyfw.backend.cpu as cpu
    names = set()
    for info in pkgutil.iter_modules(cpu.__path__):
        if info.name == "primitives":
            continue
        try:
            module = importlib.import_module(f"{cpu.__name__}.{info.name}")
        except Exception:
            continue
        names.update(getattr(module, "__all__", ()))
    return names


_reference_module = None


def reference_backend():
    """A backend module: the CPU backend's primitives, every fused kernel from the reference."""
    global _reference_module
    if _reference_module is None:
        cpu = backend_for("cpu")
        module = types.ModuleType("tinyfw_bench_reference_backend")
        module.__dict__.update({k: v for k, v in vars(cpu).items() if not k.startswith("__")})
        module.__dict__.update(reference_functions())
        _reference_module = module
    return _reference_module


def kernels_without_reference():
    """Numba kernels (CPU) that have no NumPy reference: the reference path still uses these."""
    return sorted(_cpu_kernel_names() - set(reference_functions()))


def reference_replaced():
    """Names whose Numba kernel the reference path replaces (what the tinyfw/ref ratio covers)."""
    return sorted(_cpu_kernel_names() & set(reference_functions()))


@contextlib.contextmanager
def use_backend(module, device="cpu"):
    """Make ``backend_for(device)`` return ``module`` inside the block."""
    backend_for(device)  # make sure the real one is loaded, so it can be put back
    name = registry.normalize_device(device)
    saved = registry._loaded[name]
    registry._loaded[name] = module
    try:
        yield module
    finally:
        registry._loaded[name] = saved


def on_reference(fn):
    """``fn`` wrapped to run with the reference backend (for the timer's callables)."""
    module = reference_backend()

    def wrapped():
        with use_backend(module):
            return fn()
    return wrapped


def under_reference(build):
    """Call a builder (model/optimizer construction) under the reference backend."""
    with use_backend(reference_backend()):
        return build()


def cuda_usable():
    """(True, '') when a real CUDA GPU is there; otherwise (False, why). The simulator does not
    count: its timings mean nothing."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False, "NUMBA_ENABLE_CUDASIM=1 (the CUDA simulator): simulator timings are never quoted"
    try:
        from numba import cuda
        if not cuda.is_available():
            return False, "numba.cuda finds no CUDA GPU"
    except Exception as e:  # numba-cuda missing or broken driver
        return False, f"numba.cuda unusable: {e}"
    return True, ""
