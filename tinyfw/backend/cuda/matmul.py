"""``matmul(a, b)``: NumPy's matmul (batched and broadcast) with a tiled shared-memory kernel.

Each block computes one TILE x TILE tile of one output matrix. It walks the K dimension a tile
at a time: the block's threads load a TILE x TILE piece of ``a`` and of ``b`` into shared memory
together, then each thread accumulates its dot product from the fast copies. Every input element
is read from global memory once per tile instead of once per output element.

Batch dimensions broadcast without copies: the host computes, per input, the element stride of
each batch dimension (0 where the input is broadcast), and block z finds its matrices through
them.
"""
import numpy as np
import numba
from numba import cuda

from .creation import zeros
from .elementwise import add, cast_to, iadd
from .runtime import (FLOAT_DTYPES, MAX_GRID_YZ, TILE, check_dtype, device_array, empty, flat,
                      kernel_factory, launch, prod, strided_offset)

__all__ = ["matmul", "addmm"]


@kernel_factory
def matmul_kernel(dtype_name):
    """``out[z] = a[z] @ b[z]`` for every batch index ``z`` (flat buffers; batch offsets from
    ``batch_shape`` and the per-input batch strides)."""
    nb_dtype = numba.from_dtype(np.dtype(dtype_name))

    def kernel(out, a, b, m, n, k, batch_shape, a_strides, b_strides, batches, zero):
        a_tile = cuda.shared.array((TILE, TILE), nb_dtype)
        b_tile = cuda.shared.array((TILE, TILE), nb_dtype)
        tx = cuda.threadIdx.x  # column inside the tile
        ty = cuda.threadIdx.y  # row inside the tile
        col = cuda.blockIdx.x * TILE + tx
        row_blocks = (m + TILE - 1) // TILE
        for z in range(cuda.blockIdx.z, batches, cuda.gridDim.z):
            a_base = strided_offset(z, batch_shape, a_strides)
            b_base = strided_offset(z, batch_shape, b_strides)
            for row_block in range(cuda.blockIdx.y, row_blocks, cuda.gridDim.y):
                row = row_block * TILE + ty
                acc = zero
                for k0 in range(0, k, TILE):
                    # Threads outside the matrices load zeros, which add nothing to the sums.
                    ka = k0 + tx
                    a_tile[ty, tx] = a[a_base + row * k + ka] if (row < m and ka < k) else zero
                    kb = k0 + ty
                    b_tile[ty, tx] = b[b_base + kb * n + col] if (kb < k and col < n) else zero
                    cuda.syncthreads()
                    for j in range(TILE):
                        acc += a_tile[ty, j] * b_tile[j, tx]
                    cuda.syncthreads()
                if row < m and col < n:
                    out[(z * m + row) * n + col] = acc
    return cuda.jit(kernel)


def matmul(a, b):
    """``np.matmul(a, b)`` for float32 / float64 device arrays.

    a ``(..., M, K)``, b ``(..., K, N)`` -> ``(broadcast(...), M, N)``; a 1-D ``a`` is a row
    ``(1, K)`` and a 1-D ``b`` a column ``(K, 1)``, whose unit axis is dropped from the result.
    """
    a = device_array(a, "matmul")
    b = device_array(b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    dtype = check_dtype("matmul", np.result_type(a.dtype, b.dtype), FLOAT_DTYPES)
    a = a if a.dtype == dtype else cast_to(a, dtype)
    b = b if b.dtype == dtype else cast_to(b, dtype)
    a_shape = (1,) + tuple(a.shape) if a.ndim == 1 else tuple(a.shape)
    b_shape = tuple(b.shape) + (1,) if b.ndim == 1 else tuple(b.shape)
    m, k = a_shape[-2:]
    k2, n = b_shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned "
                         f"({k} != {k2} in the contracted dimension)")
    try:
        batch_shape = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch shapes of {tuple(a.shape)} and {tuple(b.shape)} cannot "
                         f"be broadcast together") from None
    out_shape = tuple(batch_shape) + (m, n)
    if k == 0:  # an empty contraction sums nothing
        out = zeros(out_shape, dtype)
    else:
        out = empty(out_shape, dtype)
    if k and prod(out_shape):
        batches = prod(batch_shape)
        a_batch = _batch_strides(a_shape, batch_shape)
        b_batch = _batch_strides(b_shape, batch_shape)
        kshape = tuple(batch_shape) or (1,)
        if not batch_shape:
            a_batch, b_batch = (0,), (0,)
        grid = (-(-n // TILE), min(-(-m // TILE), MAX_GRID_YZ), min(batches, MAX_GRID_YZ))
        launch(matmul_kernel(dtype.name), grid, (TILE, TILE), flat(out), flat(a), flat(b),
               m, n, k, kshape, a_batch, b_batch, batches, dtype.type(0))
    # Drop the unit axes that stood in for 1-D operands.
    final = tuple(batch_shape)
    final += (() if a.ndim == 1 else (m,)) + (() if b.ndim == 1 else (n,))
    return out.reshape(final) if final != out_shape else out


def addmm(c, a, b):
    """``c + a @ b`` (a bias row c ``(N,)`` for a ``(M, K)`` and b ``(K, N)``): the product, then
    c added into it in place where the sum keeps the product's shape and dtype."""
    y = matmul(a, b)
    same_dtype = getattr(c, "dtype", None) == y.dtype
    if same_dtype and tuple(getattr(c, "shape", ())) == tuple(y.shape[-1:]):
        iadd(y, c)
        return y
    return add(c, y)


def _batch_strides(shape, batch_shape):
    """Element stride of each batch dimension of a C-ordered ``shape`` (0 where broadcast)."""
    matrix = shape[-2] * shape[-1]
    batch = shape[:-2]
    lead = len(batch_shape) - len(batch)
    strides, step = [], matrix
    for size in reversed(batch):
        strides.append(0 if size == 1 else step)
        step *= size
    return (0,) * lead + tuple(reversed(strides))
