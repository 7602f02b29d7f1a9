"""Shared machinery of the CUDA backend: launch sizes, dtype rules, strides, kernel launches.

Every array this backend returns is a C-contiguous numba.cuda device array. Kernels therefore see
each input as a flat 1-D buffer and find element ``i`` of a (possibly broadcast or transposed)
input through element strides computed here, on the host. That one idea covers broadcasting,
transposes, slicing and concatenation with a handful of kernels.

Under ``NUMBA_ENABLE_CUDASIM=1`` every CUDA thread is a Python thread, so the simulator gets small
blocks and few of them. Correctness never depends on the launch size: every kernel loops
("grid-stride") until all its work is done, whatever grid it was given.
"""
import functools
import math

import numba
import numpy as np
from numba import cuda
from numba.core import config

#: True when numba.cuda is Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``).
SIMULATOR = bool(config.ENABLE_CUDASIM)

if SIMULATOR:
    # On a real GPU, a device array's host-side ``.shape`` is a plain tuple, so engine code may
    # write ``x.shape[-1]``. The simulator's FakeShape refuses negative indices; give it plain
    # tuple indexing so the simulator behaves like the real device on the host.
    from numba.cuda.simulator.cudadrv import devicearray as _simulated
    _simulated.FakeShape.__getitem__ = tuple.__getitem__

#: Threads per block of the 1-D kernels (a power of two: the shared-memory trees halve it).
THREADS = 8 if SIMULATOR else 256
#: Most blocks one launch uses; the kernels' grid-stride loops cover any remaining work.
MAX_BLOCKS = 4 if SIMULATOR else 65535
#: Elements each thread of a row reduction sums before the shared-memory tree; a block reduces a
#: chunk of ``THREADS * ITEMS_PER_THREAD`` elements of a row, longer rows take several passes.
ITEMS_PER_THREAD = 2 if SIMULATOR else 8
#: Tile edge of the shared-memory matmul (a block is TILE x TILE threads).
TILE = 4 if SIMULATOR else 16
#: Most blocks along gridDim.y / gridDim.z (65535 is CUDA's limit); the kernels loop over the rest.
MAX_GRID_YZ = 4 if SIMULATOR else 65535

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
NUMERIC_DTYPES = INT_DTYPES + FLOAT_DTYPES
SUPPORTED_DTYPES = (np.dtype(np.bool_),) + NUMERIC_DTYPES


def dtype_names(dtypes):
    return ", ".join(str(d) for d in dtypes)


def check_dtype(op, dtype, allowed=SUPPORTED_DTYPES):
    """Raise a TypeError naming ``op`` if ``dtype`` is not one of ``allowed``."""
    dtype = np.dtype(dtype)
    if dtype not in allowed:
        raise TypeError(f"{op}: unsupported dtype {dtype} on the cuda backend "
                        f"(supported: {dtype_names(allowed)})")
    return dtype


# ----------------------------------------------------------------------------------------------
# Arrays
# ----------------------------------------------------------------------------------------------

def is_device_array(x):
    """True for numba.cuda device arrays (the simulator's fake ones included)."""
    return bool(getattr(x, "__cuda_ndarray__", False))


def is_scalar(x):
    return isinstance(x, (bool, int, float, np.generic)) or (
        isinstance(x, np.ndarray) and x.ndim == 0)


def empty(shape, dtype):
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def device_array(x, op):
    """``x`` as a C-contiguous device array; a NumPy array here is a device mix-up (TypeError)."""
    if not is_device_array(x):
        kind = "a NumPy array" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{op}: expected a cuda device array, got {kind}; move host data to the "
                        f"device with from_numpy first")
    check_dtype(op, x.dtype)
    if not x.is_c_contiguous():
        # Only views made outside this backend can be strided; numba's own strided assignment
        # copies them into a fresh C-ordered array.
        out = empty(x.shape, x.dtype)
        out[...] = x
        x = out
    return x


def flat(x):
    """The 1-D view of a C-contiguous device array (a 0-d array becomes shape (1,))."""
    return x if x.ndim == 1 else x.reshape(x.size)


def c_strides(shape):
    """Element strides of a C-ordered array of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def broadcast_strides(shape, out_shape):
    """Element strides that read a C-ordered ``shape`` array as if broadcast to ``out_shape``."""
    lead = len(out_shape) - len(shape)
    strides = (0,) * lead + c_strides(shape)
    sizes = (1,) * lead + tuple(shape)
    return tuple(0 if size == 1 else stride for size, stride in zip(sizes, strides))


def coalesce(shape, *strides_list):
    """Drop size-1 dimensions and merge neighbours that every operand walks contiguously.

    A same-shape elementwise op on contiguous arrays becomes one dimension, so the kernels' index
    arithmetic costs one division instead of ``ndim``. Always returns at least one dimension.
    """
    dims = [(size, [s[d] for s in strides_list]) for d, size in enumerate(shape) if size != 1]
    merged = []
    for size, strides in dims:
        if merged:
            prev_size, prev_strides = merged[-1]
            if all(p == st * size for p, st in zip(prev_strides, strides)):
                merged[-1] = (prev_size * size, strides)
                continue
        merged.append((size, strides))
    if not merged:
        merged = [(1, [0] * len(strides_list))]
    out_shape = tuple(size for size, _ in merged)
    out_strides = [tuple(strides[k] for _, strides in merged) for k in range(len(strides_list))]
    return (out_shape, *out_strides)


def prod(shape):
    return math.prod(int(s) for s in shape)


# ----------------------------------------------------------------------------------------------
# Kernels and launches
# ----------------------------------------------------------------------------------------------

#: kernel -> (module, factory name, key): how to rebuild it (for the PTX compile check).
_ORIGINS = {}


def kernel_factory(factory):
    """Cache a function ``key -> cuda kernel`` so each kernel is compiled once per key.

    Every kernel of the backend comes from such a factory (keyed by op name and dtype), which
    also lets ``tests/cuda_ptx_check.py`` rebuild it outside the simulator.
    """
    @functools.lru_cache(maxsize=None)
    def cached(*key):
        kernel = factory(*key)
        _ORIGINS[kernel] = (factory.__module__, factory.__name__, key)
        return kernel
    cached.__doc__ = factory.__doc__
    cached.__name__ = factory.__name__
    return cached


def blocks_for(n, threads=THREADS):
    """Blocks for a grid-stride 1-D launch over ``n`` items (capped; the loop covers the rest)."""
    return max(1, min(-(-n // threads), MAX_BLOCKS))


#: Under the simulator, the (kernel origin, argument types) of every launch: the simulator runs
#: kernels as plain Python and never compiles them, so tests/cuda_ptx_check.py compiles these
#: signatures for a real GPU (to PTX, no GPU needed) to catch code only the simulator accepts.
_recorded = set()


def recorded_launches():
    """The launch signatures seen so far under the simulator (empty on a real GPU)."""
    return set(_recorded)


def launch(kernel, grid, block, *args):
    """``kernel[grid, block](*args)``; under the simulator also records the signature."""
    if SIMULATOR:
        _recorded.add((_ORIGINS[kernel], tuple(_numba_type(a) for a in args)))
    kernel[grid, block](*args)


def _numba_type(arg):
    """The Numba type a real launch would give ``arg`` (simulator arrays typed by hand: older
    simulators' fake arrays cannot be typed by ``numba.typeof``)."""
    if is_device_array(arg):
        layout = "C" if arg.is_c_contiguous() else "A"
        return numba.types.Array(numba.from_dtype(arg.dtype), arg.ndim, layout)
    return numba.typeof(arg)


def launch_1d(kernel, n, *args):
    """Launch a 1-D grid-stride ``kernel`` over ``n`` items; nothing to do when ``n == 0``."""
    if n > 0:
        launch(kernel, blocks_for(n), THREADS, *args)


@cuda.jit(device=True, inline=True)
def as_float64(v):
    """``v`` widened to float64 (the product with 1.0 promotes float32): elementwise kernels
    evaluate in float64 and round once on store."""
    return v * 1.0


@cuda.jit(device=True, inline=True)
def strided_offset(i, shape, strides):
    """Element offset of flat (C-order) position ``i`` of ``shape`` in an array with ``strides``.

    ``shape`` and ``strides`` are tuples of equal length; broadcast dimensions have stride 0.
    """
    offset = 0
    for d in range(len(shape) - 1, -1, -1):
        k = i % shape[d]
        i //= shape[d]
        offset += k * strides[d]
    return offset


def launch_rows(kernel, rows, cols, *args):
    """Launch a block-per-row ``kernel`` over ``rows`` rows of ``cols`` elements.

    Blocks loop over rows (``blockIdx.x, + gridDim.x, ...``); a block has the smallest power of
    two of threads that covers a row, at most THREADS, so short rows do not idle a full block.
    """
    if rows > 0:
        threads = 1
        while threads < min(cols, THREADS):
            threads *= 2
        launch(kernel, max(1, min(rows, MAX_BLOCKS)), threads, *args)


# ----------------------------------------------------------------------------------------------
# Block-wide reductions for block-per-row kernels. Every thread of the block must call them (they
# synchronise); ``buffer`` is a float64 shared array of THREADS entries owned by the caller, and
# the block size is a power of two (launch_rows).
# ----------------------------------------------------------------------------------------------

@cuda.jit(device=True, inline=True)
def block_sum(buffer, t, value):
    """The sum over the block of each thread's ``value`` (returned to every thread)."""
    buffer[t] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if t < width:
            buffer[t] += buffer[t + width]
        cuda.syncthreads()
        width //= 2
    total = buffer[0]
    cuda.syncthreads()  # everyone has read buffer[0] before the buffer is reused
    return total


@cuda.jit(device=True, inline=True)
def block_max(buffer, t, value):
    """The maximum over the block of each thread's ``value`` (NaN propagates)."""
    buffer[t] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if t < width:
            other = buffer[t + width]
            if other > buffer[t] or other != other:
                buffer[t] = other
        cuda.syncthreads()
        width //= 2
    total = buffer[0]
    cuda.syncthreads()
    return total
