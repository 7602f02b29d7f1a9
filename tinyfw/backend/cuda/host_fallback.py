"""Host fallbacks: every fused function of ``backend/reference`` on device arrays, by a round trip.

A fallback copies its device-array arguments to the host, runs the NumPy reference and copies
the results back. It is correct but slow (two transfers and NumPy speed), and exists so that the
CUDA backend is complete while a kernel is missing. ``tinyfw.backend.cuda`` imports these first
and then overrides them with the kernels, exactly as the CPU backend does with its Numba
kernels; ``tinyfw.backend.cuda.HOST_FALLBACKS`` lists the names still served this way.
"""
import functools
import types

import numpy as np
from numba import cuda

from .. import reference
from .runtime import is_device_array

#: every fused name the reference defines (one file per concept, each with ``__all__``)
REFERENCE_NAMES = tuple(sorted(
    name for module in vars(reference).values() if isinstance(module, types.ModuleType)
    for name in getattr(module, "__all__", ())))


def _to_host(value):
    return value.copy_to_host() if is_device_array(value) else value


def _to_device(value):
    if isinstance(value, np.ndarray):
        return cuda.to_device(np.asarray(value, order="C"))
    if isinstance(value, np.generic):
        return cuda.to_device(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    return value


def host_fallback(function):
    """Wrap a reference function so it takes and returns device arrays."""
    @functools.wraps(function)
    def fallback(*args, **kwargs):
        host_args = [_to_host(a) for a in args]
        host_kwargs = {k: _to_host(v) for k, v in kwargs.items()}
        return _to_device(function(*host_args, **host_kwargs))
    fallback.host_fallback = True
    return fallback


# adam_step updates its arguments in place, which a round trip would lose: it always has a kernel.
__all__ = [name for name in REFERENCE_NAMES if name != "adam_step"]
for _name in __all__:
    globals()[_name] = host_fallback(getattr(reference, _name))
