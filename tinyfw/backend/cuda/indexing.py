"""Indexing: ``getitem`` (x[index]) and its backward ``index_add`` (a scatter-add).

NumPy itself interprets the index, on the host, so every indexing rule (negative indices, None,
Ellipsis, mixing slices with integer arrays) means exactly what it means in NumPy:

- basic indexing (ints, slices, None, Ellipsis) selects a strided view: NumPy computes its offset
  and strides on a stand-in array of int8 (one byte per element, never read), and the device
  gathers or scatters through them;
- an integer array on the first axis (an embedding lookup, ``x[ids]``) is gathered row by row on
  the device, with device-side bounds checks;
- any other advanced index is turned by NumPy into the flat position of every selected element,
  which is uploaded and gathered from (or scatter-added into with atomics).
"""
import numpy as np
from numba import cuda

from .creation import zeros
from .elementwise import cast_to
from .layout import broadcast_to, strided_gather, strided_scatter
from .runtime import (INT_DTYPES, NUMERIC_DTYPES, c_strides, check_dtype,
                      device_array, flat, empty, is_device_array, kernel_factory, launch_1d,
                      prod)

__all__ = ["getitem", "index_add"]


@kernel_factory
def gather_rows_kernel():
    """``out[i, :] = x[ids[i], :]`` on flat buffers; a bad id sets ``error[0]``."""
    def kernel(out, x, ids, num_rows, row_size, error, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            row = ids[i // row_size]
            if row < 0:
                row += num_rows
            if row < 0 or row >= num_rows:
                error[0] = 1
            else:
                out[i] = x[row * row_size + i % row_size]
    return cuda.jit(kernel)


@kernel_factory
def gather_kernel():
    """``out[i] = x[positions[i]]``."""
    def kernel(out, x, positions, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = x[positions[i]]
    return cuda.jit(kernel)


@kernel_factory
def scatter_add_rows_kernel():
    """``out[ids[i], :] += values[i, :]`` with atomics (ids may repeat); bad ids set error."""
    def kernel(out, values, ids, num_rows, row_size, error, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            row = ids[i // row_size]
            if row < 0:
                row += num_rows
            if row < 0 or row >= num_rows:
                error[0] = 1
            else:
                cuda.atomic.add(out, row * row_size + i % row_size, values[i])
    return cuda.jit(kernel)


@kernel_factory
def scatter_add_kernel():
    """``out[positions[i]] += values[i]`` with atomics (positions may repeat)."""
    def kernel(out, values, positions, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            cuda.atomic.add(out, positions[i], values[i])
    return cuda.jit(kernel)


# ----------------------------------------------------------------------------------------------
# Reading the index
# ----------------------------------------------------------------------------------------------

def _items(index):
    return index if isinstance(index, tuple) else (index,)


def _is_basic(item):
    return item is None or item is Ellipsis or isinstance(item, (int, np.integer, slice))


def _row_ids(index):
    """The integer id array if ``index`` is ``ids`` or ``(ids, :, ..., :)``, else None."""
    items = _items(index)
    ids = items[0]
    rest_is_full = all(isinstance(i, slice) and i == slice(None) or i is Ellipsis
                       for i in items[1:])
    if not rest_is_full:
        return None
    if is_device_array(ids) and ids.dtype in INT_DTYPES and ids.ndim >= 1:
        return ids
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu" and ids.ndim >= 1:
        return ids
    return None


def _host_index(index):
    """The index with device arrays copied to the host (NumPy interprets it)."""
    items = tuple(i.copy_to_host() if is_device_array(i) else i for i in _items(index))
    return items if isinstance(index, tuple) else items[0]


def _basic_view(op, shape, index):
    """(offset, shape, strides) in elements of ``x[index]`` for a basic index."""
    stand_in = np.empty(shape, dtype=np.int8)  # never read: only its addresses are used
    items = _items(index)
    if not any(i is Ellipsis for i in items):
        items = items + (Ellipsis,)  # keeps an all-int index a 0-d view, not a scalar
    try:
        view = stand_in[items]
    except IndexError as e:
        raise IndexError(f"{op}: index {index!r} for shape {tuple(shape)}: {e}") from None
    offset = view.__array_interface__["data"][0] - stand_in.__array_interface__["data"][0]
    return offset, view.shape, view.strides


def _positions(op, shape, index):
    """Flat positions (int64, the shape of the result) of the elements ``x[index]`` selects."""
    try:
        return np.arange(prod(shape), dtype=np.int64).reshape(shape)[_host_index(index)]
    except IndexError as e:
        raise IndexError(f"{op}: index for shape {tuple(shape)}: {e}") from None


def _ids_device(ids):
    return ids if is_device_array(ids) else cuda.to_device(np.asarray(ids, np.int64, order="C"))


def _check_error(op, error, num_rows):
    if error.copy_to_host()[0]:
        raise IndexError(f"{op}: an index is out of bounds for axis 0 with size {num_rows}")


# ----------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------

def getitem(x, index):
    """``x[index]`` as a new C-contiguous array (ints, slices, None, Ellipsis, integer arrays
    on the host or device, boolean masks)."""
    x = device_array(x, "getitem")
    if all(_is_basic(i) for i in _items(index)):
        offset, shape, strides = _basic_view("getitem", x.shape, index)
        return strided_gather(x, offset, shape, strides)
    ids = _row_ids(index)
    if ids is not None and x.ndim >= 1:
        ids = device_array(_ids_device(ids), "getitem")
        row_size = prod(x.shape[1:])
        out = empty(tuple(ids.shape) + tuple(x.shape[1:]), x.dtype)
        error = zeros((1,), np.int32)
        n = out.size
        launch_1d(gather_rows_kernel(), n, flat(out), flat(x), flat(ids), x.shape[0], row_size,
                  error, n)
        if n:
            _check_error("getitem", error, x.shape[0])
        return out
    positions = _positions("getitem", x.shape, index)
    out = empty(positions.shape, x.dtype)
    n = positions.size
    if n:
        launch_1d(gather_kernel(), n, flat(out), flat(x), cuda.to_device(positions.ravel()), n)
    return out


def index_add(shape, index, values, dtype=None):
    """``out = zeros(shape); np.add.at(out, index, values)``: repeated indices accumulate.

    ``values`` is broadcast to the shape of ``out[index]``; atomics make repeated positions add.
    Supported dtypes: int32, int64, float32, float64.
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    values = device_array(values, "index_add")
    dtype = check_dtype("index_add", dtype or values.dtype, NUMERIC_DTYPES)
    if values.dtype != dtype:
        values = cast_to(values, dtype)
    out = zeros(shape, dtype)
    if all(_is_basic(i) for i in _items(index)):
        # Basic indexing selects each element once: a plain strided write is the scatter-add.
        offset, view_shape, view_strides = _basic_view("index_add", shape, index)
        values = _broadcast_values(values, view_shape)
        strided_scatter(out, offset, view_strides, values, c_strides(view_shape), view_shape)
        return out
    ids = _row_ids(index)
    if ids is not None and len(shape) >= 1:
        ids = device_array(_ids_device(ids), "index_add")
        values = _broadcast_values(values, tuple(ids.shape) + shape[1:])
        error = zeros((1,), np.int32)
        n = values.size
        launch_1d(scatter_add_rows_kernel(), n, flat(out), flat(values), flat(ids), shape[0],
                  prod(shape[1:]), error, n)
        if n:
            _check_error("index_add", error, shape[0])
        return out
    positions = _positions("index_add", shape, index)
    values = _broadcast_values(values, positions.shape)
    n = positions.size
    if n:
        launch_1d(scatter_add_kernel(), n, flat(out), flat(values),
                  cuda.to_device(positions.ravel()), n)
    return out


def _broadcast_values(values, shape):
    try:
        return broadcast_to(values, shape)
    except ValueError:
        raise ValueError(f"index_add: values of shape {tuple(values.shape)} do not fit the "
                         f"indexed shape {tuple(shape)}") from None

