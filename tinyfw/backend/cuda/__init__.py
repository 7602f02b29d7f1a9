"""The CUDA backend: every primitive of ``tinyfw.backend.interface`` as numba.cuda kernels.

Arrays are numba.cuda device arrays, always C-contiguous. Without a GPU, run with
``NUMBA_ENABLE_CUDASIM=1`` (set before Python starts): Numba's simulator then executes the same
kernels in Python threads -- slowly, but exactly enough to test them on any machine.

One file per concept: ``runtime`` (launch sizes, dtypes, strides), ``creation``, ``elementwise``,
``reduction``, ``layout`` (shape and memory), ``indexing``, ``matmul``, and the fused kernels.
"""
from numba import cuda as _cuda

if not _cuda.is_available():
    raise RuntimeError(
        "tinyfw: the 'cuda' device is unavailable: numba.cuda finds no usable GPU/driver. "
        "Without a GPU, set NUMBA_ENABLE_CUDASIM=1 in the environment before starting Python to "
        "run the CUDA kernels in Numba's (slow) simulator.")

from .runtime import SIMULATOR, is_device_array  # noqa: E402,F401
from .host_fallback import *  # noqa: E402,F401,F403  fused references by host round trip,
#                                                      replaced below by the kernels
from .creation import *  # noqa: E402,F401,F403
from .elementwise import *  # noqa: E402,F401,F403
from .reduction import *  # noqa: E402,F401,F403
from .layout import *  # noqa: E402,F401,F403
from .indexing import *  # noqa: E402,F401,F403
from .matmul import *  # noqa: E402,F401,F403
from .softmax import *  # noqa: E402,F401,F403
from .cross_entropy import *  # noqa: E402,F401,F403
from .embedding import *  # noqa: E402,F401,F403
from .gelu import *  # noqa: E402,F401,F403
from .elu_plus_one import *  # noqa: E402,F401,F403
from .adam import *  # noqa: E402,F401,F403
from .norms import *  # noqa: E402,F401,F403
from .attention import *  # noqa: E402,F401,F403
from .fast_weights import *  # noqa: E402,F401,F403
from .safu import *  # noqa: E402,F401,F403

DEVICE = "cuda"

#: fused names still served by a host round trip (no CUDA kernel yet)
HOST_FALLBACKS = sorted(name for name, value in list(globals().items())
                        if getattr(value, "host_fallback", None) is True)
