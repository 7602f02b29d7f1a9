"""Reductions: sum / max / min over any axes (keepdims), argmax / argmin.

The host moves the reduced axes to the end (one transpose copy, skipped when they already are),
so every reduction becomes "reduce each row of a (rows, length) array". Short rows (at most
SHORT_ROW elements) take one thread each and a plain loop. Longer rows take blocks: block
(c, r) of the row kernel reduces chunk c of row r: each thread folds a strided share of the
chunk, then the block combines its threads' values with a shared-memory tree. A row longer
than one chunk leaves one partial per chunk, and the same kernel runs again on the
(rows, chunks) partials until one value is left.
"""
import builtins

import numpy as np
import numba
from numba import cuda

from .layout import transpose
from .elementwise import cast_to
from .runtime import (INT_DTYPES, ITEMS_PER_THREAD, MAX_BLOCKS, MAX_GRID_YZ, NUMERIC_DTYPES,
                      THREADS, check_dtype, device_array, empty, flat, kernel_factory, launch,
                      launch_1d, prod)

__all__ = ["sum", "max", "min", "argmax", "argmin"]

#: Elements of a row one block reduces in one pass (at least).
CHUNK = THREADS * ITEMS_PER_THREAD
#: Rows up to this length are reduced by one thread each (a block would mostly idle).
SHORT_ROW = 32


@cuda.jit(device=True, inline=True)
def _sum(a, b):
    return a + b


@cuda.jit(device=True, inline=True)
def _max(a, b):
    # NaN propagates, as in np.max.
    return a if (a > b or a != a) else b


@cuda.jit(device=True, inline=True)
def _min(a, b):
    return a if (a < b or a != a) else b


@cuda.jit(device=True, inline=True)
def _arg_better(a, ia, b, ib, sign):
    """True if (value a, index ia) wins over (b, ib): larger (sign=1) or smaller (sign=-1)
    value, the first NaN, and the lower index among ties, as np.argmax / np.argmin."""
    if a != a:
        return b == b or ia < ib
    if b != b:
        return False
    if a == b:
        return ia < ib
    return (a > b) if sign > 0 else (a < b)


_COMBINE = {"sum": _sum, "max": _max, "min": _min}


@kernel_factory
def reduce_short_rows_kernel(name):
    """``out[r] = combine(x[r, :])``, one thread per row of a (rows, length) array."""
    combine = _COMBINE[name]

    def kernel(out, x, rows, length, init):
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            acc = init
            for j in range(length):
                acc = combine(acc, x[r * length + j])
            out[r] = acc
    return cuda.jit(kernel)


@kernel_factory
def arg_short_rows_kernel():
    """``out[r] = argmax / argmin(x[r, :])`` (sign 1 / -1), one thread per row."""
    def kernel(out, x, rows, length, sign):
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            best = 0
            best_value = x[r * length]
            for j in range(1, length):
                v = x[r * length + j]
                if _arg_better(v, j, best_value, best, sign):
                    best_value = v
                    best = j
            out[r] = best
    return cuda.jit(kernel)


@kernel_factory
def reduce_rows_kernel(name, dtype_name):
    """``out[r, c] = combine(x[r, c*chunk : (c+1)*chunk])`` for a (rows, length) array ``x``."""
    combine = _COMBINE[name]
    nb_dtype = numba.from_dtype(np.dtype(dtype_name))

    def kernel(out, x, rows, length, chunk, init):
        partial = cuda.shared.array(THREADS, nb_dtype)
        t = cuda.threadIdx.x
        c = cuda.blockIdx.x
        chunks = cuda.gridDim.x
        start = c * chunk
        stop = start + chunk if start + chunk < length else length
        for r in range(cuda.blockIdx.y, rows, cuda.gridDim.y):
            acc = init
            for j in range(start + t, stop, THREADS):
                acc = combine(acc, x[r * length + j])
            partial[t] = acc
            cuda.syncthreads()
            width = THREADS // 2
            while width > 0:
                if t < width:
                    partial[t] = combine(partial[t], partial[t + width])
                cuda.syncthreads()
                width //= 2
            if t == 0:
                out[r * chunks + c] = partial[0]
            cuda.syncthreads()  # partial[] is reused by the next row
    return cuda.jit(kernel)


@kernel_factory
def arg_rows_kernel(dtype_name):
    """Like reduce_rows_kernel for (value, index) pairs. The first pass (``has_index`` false)
    takes indices from positions in the row; later passes read them from ``index``."""
    nb_dtype = numba.from_dtype(np.dtype(dtype_name))

    def kernel(out_value, out_index, x, index, has_index, rows, length, chunk, sign):
        values = cuda.shared.array(THREADS, nb_dtype)
        indices = cuda.shared.array(THREADS, numba.int64)
        t = cuda.threadIdx.x
        c = cuda.blockIdx.x
        chunks = cuda.gridDim.x
        start = c * chunk
        stop = start + chunk if start + chunk < length else length
        for r in range(cuda.blockIdx.y, rows, cuda.gridDim.y):
            best = -1  # no element seen yet
            best_value = x[r * length + start]
            for j in range(start + t, stop, THREADS):
                v = x[r * length + j]
                k = index[r * length + j] if has_index else j
                if best < 0 or _arg_better(v, k, best_value, best, sign):
                    best_value = v
                    best = k
            values[t] = best_value
            indices[t] = best
            cuda.syncthreads()
            width = THREADS // 2
            while width > 0:
                if t < width:
                    other = indices[t + width]
                    if other >= 0 and (indices[t] < 0 or _arg_better(
                            values[t + width], other, values[t], indices[t], sign)):
                        values[t] = values[t + width]
                        indices[t] = other
                cuda.syncthreads()
                width //= 2
            if t == 0:
                out_value[r * chunks + c] = values[0]
                out_index[r * chunks + c] = indices[0]
            cuda.syncthreads()
    return cuda.jit(kernel)


def _grid(rows, length):
    """Launch shape of one pass over (rows, length): (grid, chunks, chunk).

    Blocks along y take rows (looping when there are more rows than blocks), blocks along x
    take chunks of at least CHUNK elements, and a launch has at most MAX_BLOCKS blocks.
    """
    row_blocks = builtins.max(1, builtins.min(rows, MAX_GRID_YZ))
    chunks = builtins.min(-(-length // CHUNK), builtins.max(1, MAX_BLOCKS // row_blocks))
    chunk = -(-length // chunks)
    return (chunks, row_blocks), chunks, chunk


def _rows(op, x, axis):
    """Move the reduced ``axis`` (int, tuple or None) of ``x`` to the end. Returns the moved
    array, its (rows, length) and the result's shape without and with keepdims."""
    ndim, shape = x.ndim, tuple(x.shape)
    axes = tuple(range(ndim)) if axis is None else (
        (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis))
    reduced = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of bounds for shape {shape}")
        reduced.append(int(a) % ndim)
    if len(set(reduced)) != len(reduced):
        raise ValueError(f"{op}: repeated axis in {axis}")
    kept = [d for d in range(ndim) if d not in reduced]
    reduced = sorted(reduced)
    kept_shape = tuple(shape[d] for d in kept)
    keep_shape = tuple(1 if d in reduced else shape[d] for d in range(ndim))
    moved = transpose(x, kept + reduced)
    return moved, prod(kept_shape), prod(shape[d] for d in reduced), kept_shape, keep_shape


def _reduce(name, x, axis, keepdims):
    x = device_array(x, name)
    dtype = x.dtype
    if name == "sum" and (dtype == np.bool_ or dtype in INT_DTYPES):
        dtype = np.dtype(np.int64)  # as NumPy: integer and bool sums are int64
    check_dtype(name, dtype, NUMERIC_DTYPES)
    x2d, rows, length, kept_shape, keep_shape = _rows(name, x, axis)
    if length == 0 and name != "sum":
        raise ValueError(f"{name}: zero-size reduction over axis {axis} of shape "
                         f"{tuple(x.shape)} has no identity")
    if x2d.dtype != dtype:
        x2d = cast_to(x2d, dtype)
    init = _identity(name, dtype)
    if length <= SHORT_ROW:
        out = empty((rows,), dtype)
        launch_1d(reduce_short_rows_kernel(name), rows, out, flat(x2d), rows, length, init)
        return out.reshape(keep_shape if keepdims else kept_shape)
    current, length_now = flat(x2d), length
    while True:
        grid, chunks, chunk = _grid(rows, builtins.max(length_now, 1))
        out = empty((rows * chunks,), dtype)
        if rows:
            launch(reduce_rows_kernel(name, dtype.name), grid, THREADS,
                   out, current, rows, length_now, chunk, init)
        current, length_now = out, chunks
        if chunks == 1:
            break
    return current.reshape(keep_shape if keepdims else kept_shape)


def _identity(name, dtype):
    if name == "sum":
        return dtype.type(0)
    if dtype in INT_DTYPES:
        info = np.iinfo(dtype)
        return dtype.type(info.min if name == "max" else info.max)
    return dtype.type(-np.inf if name == "max" else np.inf)


def sum(x, axis=None, keepdims=False):
    """``np.sum(x, axis, keepdims)``; bool and integer inputs sum to int64."""
    return _reduce("sum", x, axis, keepdims)


def max(x, axis=None, keepdims=False):
    """``np.max(x, axis, keepdims)`` (NaN propagates; empty reductions are a ValueError)."""
    return _reduce("max", x, axis, keepdims)


def min(x, axis=None, keepdims=False):
    """``np.min(x, axis, keepdims)``."""
    return _reduce("min", x, axis, keepdims)


def _arg(name, x, axis, sign):
    x = device_array(x, name)
    check_dtype(name, x.dtype, NUMERIC_DTYPES)
    if axis is not None and not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: axis must be an int or None, got {axis!r}")
    if axis is None:
        x = x.reshape(x.size)
        axis = 0
    x2d, rows, length, kept_shape, _ = _rows(name, x, axis)
    if length == 0:
        raise ValueError(f"{name}: attempt to get {name} of an empty sequence "
                         f"(shape {tuple(x.shape)}, axis {axis})")
    if length <= SHORT_ROW:
        out = empty((rows,), np.int64)
        launch_1d(arg_short_rows_kernel(), rows, out, flat(x2d), rows, length, sign)
        return out.reshape(kept_shape)
    values, index, has_index, length_now = flat(x2d), empty((1,), np.int64), False, length
    while True:
        grid, chunks, chunk = _grid(rows, length_now)
        out_values = empty((rows * chunks,), x.dtype)
        out_index = empty((rows * chunks,), np.int64)
        if rows:
            launch(arg_rows_kernel(x.dtype.name), grid, THREADS, out_values, out_index,
                   values, index, has_index, rows, length_now, chunk, sign)
        values, index, has_index, length_now = out_values, out_index, True, chunks
        if chunks == 1:
            break
    return index.reshape(kept_shape)


def argmax(x, axis=None):
    """``np.argmax(x, axis)`` as int64 (first maximum; a NaN counts as the maximum)."""
    return _arg("argmax", x, axis, 1)


def argmin(x, axis=None):
    """``np.argmin(x, axis)`` as int64."""
    return _arg("argmin", x, axis, -1)
