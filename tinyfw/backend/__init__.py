"""Device registry: ``backend_for('cpu' | 'cuda')`` returns the module of primitives for a device.

See ``interface.py`` for the list of primitives and their meaning.
"""
import importlib


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
