"""Embedding backward: a scatter-add of rows (reference: backend/reference/core.py).

``dweight[ids[i]] += dout[i]`` for every position ``i``, one thread per element of ``dout``,
with atomic adds because several positions may hold the same id. (Atomic float additions run in
no fixed order, so float32 results may differ from the reference in the last bits.)
"""
import numpy as np
from numba import cuda

from ..reference.core import check_float, check_ids
from .creation import zeros
from .indexing import scatter_add_rows_kernel
from .runtime import device_array, flat, is_device_array, launch_1d, prod

__all__ = ["embedding_backward"]


def embedding_backward(ids, dout, num_embeddings):
    """ids (...) int, dout (..., D) -> dweight (num_embeddings, D)."""
    op = "embedding_backward"
    dout = device_array(dout, op)
    check_float(op, dout=dout)
    if tuple(dout.shape[:-1]) != tuple(ids.shape):
        raise ValueError(f"{op}: dout must be ids.shape + (D,), got ids "
                         f"{tuple(ids.shape)} and dout {tuple(dout.shape)}")
    # Validate on the host so every backend rejects bad ids with the reference's message.
    host_ids = ids.copy_to_host() if is_device_array(ids) else np.asarray(ids)
    check_ids(op, host_ids, num_embeddings)
    if is_device_array(ids) and ids.dtype == np.int64:
        ids = device_array(ids, op)
    else:
        ids = cuda.to_device(np.asarray(host_ids, dtype=np.int64, order="C"))
    d = tuple(dout.shape)[-1]
    dweight = zeros((num_embeddings, d), dout.dtype)
    error = zeros((1,), np.int32)  # the kernel's bounds flag; the ids were checked above
    n = prod(dout.shape)
    launch_1d(scatter_add_rows_kernel(), n, flat(dweight), flat(dout), flat(ids), num_embeddings,
              d, error, n)
    return dweight
