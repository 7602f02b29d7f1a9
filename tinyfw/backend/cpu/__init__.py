"""The CPU backend: NumPy for the primitives, Numba kernels for the fused operations.

Every name in ``tinyfw.backend.interface.PRIMITIVES`` is an attribute of this module. Fused
operations first come from the NumPy reference, then are replaced by the Numba kernel of the same
name where one exists, so the backend is always complete and each kernel can be checked against
the reference it replaces. Loading it also tunes malloc for the training loop's pattern of
allocations (``allocator.py``).
"""
from . import allocator  # noqa: F401  keeps freed arrays in the heap (see allocator.py)
from .primitives import *  # noqa: F401,F403
from .bias import *  # noqa: F401,F403  iadd, and sum's column-sum kernel (replaces primitives.sum)
from ..reference import *  # noqa: F401,F403  fallbacks, replaced below by the Numba kernels
from .core_kernels import *  # noqa: F401,F403
from .fast_weights import *  # noqa: F401,F403  sum rule and delta rule recurrences
from .safu import *  # noqa: F401,F403  SAFU block-context attention
from .norms import *  # noqa: F401,F403  layer norm, RMS norm
from .attention import *  # noqa: F401,F403  softmax attention (flash-style recompute from lse)
