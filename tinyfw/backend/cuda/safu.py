"""SAFU kernels: block-context attention with cached comparisons, the running-mean document
context, and the score-table look-ups (reference: backend/reference/safu.py, which documents the
math; docs/WARM_START_AND_SAFU.md).

Block attention: one thread per position (b, t) computes its ``min(block, t + 1)`` scores
``q_t . x_{t-k}``, their softmax and ``h_t``; nothing is shared between positions. The backward
first computes, per position, the softmax gradient ``ds`` and ``dq``; a second kernel then
*gathers* ``dx_j = sum_k (a_{j+k,k} dh_{j+k} + ds_{j+k,k} q_{j+k})`` with one thread per element
of ``dx`` -- a gather instead of a scatter, so no atomics and a fixed summation order.

The three contexts at once (``safu_contexts_forward/backward``): one thread per position writes
its row of ``z = [h; r; d]`` (the block attention as above and the R shifted copies), one thread
per (sequence, feature) runs the running mean along the sequence into the document columns. Back:
per position the score gradients and dq; one thread per element of dx gathers the block and
radial terms from the positions whose windows hold it; one thread per (sequence, feature) adds
the document context's reversed cumulative sum.

Layout: ``x, q, h, dx, dq, dh: (B, L, D)``; ``a, da: (B, L, block)``, slot k of position t is
position ``t - k``. The contexts functions take x with ``start`` rows of history first,
``(B, S, D)``, S = start + L, and z ``(B, L, d_z)``.
"""
import math

import numpy as np
from numba import cuda

from ..reference.core import check_float
from ..reference.safu import check_block_inputs, check_contexts_inputs
from .creation import zeros
from .layout import transpose
from .matmul import matmul
from .runtime import device_array, empty, flat, is_device_array, kernel_factory, launch_1d

__all__ = [
    "safu_block_attention_forward", "safu_block_attention_backward",
    "safu_block_attention_uncached",
    "safu_running_mean_forward", "safu_running_mean_backward",
    "safu_contexts_forward", "safu_contexts_backward",
    "safu_score_table", "safu_block_scores_from_table",
]


@cuda.jit(device=True, inline=True)
def _dot(a, a_start, b, b_start, n):
    """``sum_d a[a_start + d] * b[b_start + d]`` in float64."""
    acc = 0.0
    for d in range(n):
        acc += a[a_start + d] * b[b_start + d]
    return acc


@kernel_factory
def block_attention_forward_kernel():
    """Per position (b, t): a[b, t, :] = softmax_k(q_t . x_{t-k}) over the real slots (0 on the
    others) and h_t = sum_k a_tk x_{t-k}."""
    def kernel(h, a, x, q, batch, length, dim, block):
        for pos in range(cuda.grid(1), batch * length, cuda.gridsize(1)):
            t = pos % length
            n = min(block, t + 1)  # real slots: positions t, t-1, ..., t-n+1
            m = -math.inf
            for k in range(n):
                m = max(m, _dot(q, pos * dim, x, (pos - k) * dim, dim))
            total = 0.0
            for k in range(n):
                total += math.exp(_dot(q, pos * dim, x, (pos - k) * dim, dim) - m)
            for k in range(block):
                if k < n:
                    a[pos * block + k] = math.exp(
                        _dot(q, pos * dim, x, (pos - k) * dim, dim) - m) / total
                else:
                    a[pos * block + k] = 0.0
            for d in range(dim):
                acc = 0.0
                for k in range(n):
                    acc += a[pos * block + k] * x[(pos - k) * dim + d]
                h[pos * dim + d] = acc
    return cuda.jit(kernel)


@kernel_factory
def block_attention_grad_scores_kernel():
    """Per position: g_k = dh_t . x_{t-k} (+ da_tk), ds_k = a_k (g_k - sum_k' a_k' g_k'),
    dq_t = sum_k ds_k x_{t-k}. ``ds`` is written for the dx gather."""
    def kernel(ds, dq, dh, da, has_da, x, a, batch, length, dim, block):
        for pos in range(cuda.grid(1), batch * length, cuda.gridsize(1)):
            t = pos % length
            n = min(block, t + 1)
            weighted = 0.0  # sum_k a_k g_k
            for k in range(n):
                g = _dot(dh, pos * dim, x, (pos - k) * dim, dim)
                if has_da:
                    g += da[pos * block + k]
                ds[pos * block + k] = g  # g for now; turned into ds below
                weighted += a[pos * block + k] * g
            for k in range(block):
                if k < n:
                    ds[pos * block + k] = a[pos * block + k] * (ds[pos * block + k] - weighted)
                else:
                    ds[pos * block + k] = 0.0
            for d in range(dim):
                acc = 0.0
                for k in range(n):
                    acc += ds[pos * block + k] * x[(pos - k) * dim + d]
                dq[pos * dim + d] = acc
    return cuda.jit(kernel)


@kernel_factory
def block_attention_grad_x_kernel():
    """dx[b, j, d] = sum_k (a[b, j+k, k] dh[b, j+k, d] + ds[b, j+k, k] q[b, j+k, d]) over the
    positions t = j + k < L that saw j in their window."""
    def kernel(dx, a, ds, dh, q, batch, length, dim, block):
        for idx in range(cuda.grid(1), batch * length * dim, cuda.gridsize(1)):
            d = idx % dim
            pos = idx // dim
            j = pos % length
            acc = 0.0
            for k in range(min(block, length - j)):
                later = pos + k  # position j + k of the same sequence
                acc += a[later * block + k] * dh[later * dim + d] \
                    + ds[later * block + k] * q[later * dim + d]
            dx[idx] = acc
    return cuda.jit(kernel)


@kernel_factory
def running_mean_kernel(backward):
    """Per (b, d): forward ``d_t = (S0 + sum_{j<=t} x_j) / (n0 + t + 1)``; backward the
    reversed cumulative sum ``dx_j = sum_{t>=j} dd_t / (n0 + t + 1)``."""
    def kernel(out, x, prev_sum, has_prev, prev_count, batch, length, dim):
        for idx in range(cuda.grid(1), batch * dim, cuda.gridsize(1)):
            b = idx // dim
            d = idx % dim
            acc = prev_sum[idx] * 1.0 if has_prev else 0.0
            for step in range(length):
                t = length - 1 - step if backward else step
                cell = (b * length + t) * dim + d
                if backward:
                    acc += x[cell] / (prev_count + t + 1)
                    out[cell] = acc
                else:
                    acc += x[cell]
                    out[cell] = acc / (prev_count + t + 1)
    return cuda.jit(kernel)


@kernel_factory
def contexts_forward_kernel():
    """Per position (b, i), t = start + i: a[b, i, :] and h_t into z's first D columns (when
    block > 0), then the radial copies x_{t-k} (zeros before the start)."""
    def kernel(z, a, x, q, batch, length, start, dim, block, radial, d_z, scale):
        seq = start + length
        for pos in range(cuda.grid(1), batch * length, cuda.gridsize(1)):
            b = pos // length
            t = start + pos % length
            row = b * seq + t                  # x's row of position t
            col = 0
            if block > 0:
                n = min(block, t + 1)
                m = -math.inf
                for k in range(n):
                    m = max(m, scale * _dot(q, pos * dim, x, (row - k) * dim, dim))
                total = 0.0
                for k in range(n):
                    total += math.exp(scale * _dot(q, pos * dim, x, (row - k) * dim, dim) - m)
                for k in range(block):
                    if k < n:
                        a[pos * block + k] = math.exp(
                            scale * _dot(q, pos * dim, x, (row - k) * dim, dim) - m) / total
                    else:
                        a[pos * block + k] = 0.0
                for d in range(dim):
                    acc = 0.0
                    for k in range(n):
                        acc += a[pos * block + k] * x[(row - k) * dim + d]
                    z[pos * d_z + d] = acc
                col = dim
            for k in range(radial):
                for d in range(dim):
                    z[pos * d_z + col + d] = x[(row - k) * dim + d] if t - k >= 0 else 0.0
                col += dim
    return cuda.jit(kernel)


@kernel_factory
def contexts_document_kernel(backward):
    """Per (b, d): forward, the running mean into z's column ``col + d``; backward, the reversed
    cumulative sum of dz's column ``col + d`` over ``n0 + i + 1`` added to dx's row start + i."""
    def kernel(out, src, prev_sum, has_prev, prev_count, batch, length, start, dim, d_z, col):
        seq = start + length
        for idx in range(cuda.grid(1), batch * dim, cuda.gridsize(1)):
            b = idx // dim
            d = idx % dim
            acc = prev_sum[idx] * 1.0 if has_prev else 0.0
            for step in range(length):
                i = length - 1 - step if backward else step
                if backward:
                    acc += src[(b * length + i) * d_z + col + d] / (prev_count + i + 1)
                    out[(b * seq + start + i) * dim + d] += acc
                else:
                    acc += src[(b * seq + start + i) * dim + d]
                    out[(b * length + i) * d_z + col + d] = acc / (prev_count + i + 1)
    return cuda.jit(kernel)


@kernel_factory
def contexts_grad_scores_kernel():
    """Per position (b, i): g_k = dh_i . x_{t-k} (+ da), ds_k = scale a_k (g_k - sum a g) (stored
    for the dx gather), dq_i = sum_k ds_k x_{t-k}; dh_i is dz's first D columns."""
    def kernel(ds, dq, dz, da, has_da, x, a, batch, length, start, dim, block, d_z, scale):
        seq = start + length
        for pos in range(cuda.grid(1), batch * length, cuda.gridsize(1)):
            b = pos // length
            t = start + pos % length
            row = b * seq + t
            n = min(block, t + 1)
            weighted = 0.0
            for k in range(n):
                g = _dot(dz, pos * d_z, x, (row - k) * dim, dim)
                if has_da:
                    g += da[pos * block + k]
                ds[pos * block + k] = g
                weighted += a[pos * block + k] * g
            for k in range(block):
                if k < n:
                    ds[pos * block + k] = scale * a[pos * block + k] * (
                        ds[pos * block + k] - weighted)
                else:
                    ds[pos * block + k] = 0.0
            for d in range(dim):
                acc = 0.0
                for k in range(n):
                    acc += ds[pos * block + k] * x[(row - k) * dim + d]
                dq[pos * dim + d] = acc
    return cuda.jit(kernel)


@kernel_factory
def contexts_grad_x_kernel():
    """dx[b, j, d] = sum over the positions t = j + k (start <= t < S) whose windows hold j: the
    block terms a_tk dh_t + ds_tk q_t (k < block) and the radial terms dz_t[slot k] (k < R)."""
    def kernel(dx, a, ds, dz, q, batch, length, start, dim, block, radial, d_z):
        seq = start + length
        for idx in range(cuda.grid(1), batch * seq * dim, cuda.gridsize(1)):
            d = idx % dim
            j = (idx // dim) % seq
            b = idx // (dim * seq)
            acc = 0.0
            for k in range(max(0, start - j), min(block, seq - j)):
                pos = b * length + j + k - start
                acc += a[pos * block + k] * dz[pos * d_z + d] \
                    + ds[pos * block + k] * q[pos * dim + d]
            col = dim if block > 0 else 0
            for k in range(max(0, start - j), min(radial, seq - j)):
                pos = b * length + j + k - start
                acc += dz[pos * d_z + col + k * dim + d]
            dx[idx] = acc
    return cuda.jit(kernel)


@kernel_factory
def scores_from_table_kernel():
    """s[b, t, k] = table[ids[b, t], ids[b, t - k]], -inf before the start; bad ids flag error."""
    def kernel(s, ids, table, vocab, batch, length, block, error):
        for idx in range(cuda.grid(1), batch * length * block, cuda.gridsize(1)):
            k = idx % block
            pos = idx // block
            t = pos % length
            if k > t:
                s[idx] = -math.inf
            else:
                u = ids[pos]
                w = ids[pos - k]
                if u < 0 or u >= vocab or w < 0 or w >= vocab:
                    error[0] = 1
                    s[idx] = math.nan
                else:
                    s[idx] = table[u * vocab + w]
    return cuda.jit(kernel)


def safu_block_attention_forward(x, q, block):
    """x, q (B, L, D), block >= 1 -> (h (B, L, D), a (B, L, block))."""
    op = "safu_block_attention_forward"
    x, q = device_array(x, op), device_array(q, op)
    block = check_block_inputs(op, x, q, block)
    B, L, D = tuple(x.shape)
    h, a = empty((B, L, D), x.dtype), empty((B, L, block), x.dtype)
    launch_1d(block_attention_forward_kernel(), B * L, flat(h), flat(a), flat(x), flat(q), B, L, D,
              block)
    return h, a


def safu_block_attention_backward(dh, da, x, q, a, block):
    """-> (dx, dq), both (B, L, D); ``da`` may be None."""
    op = "safu_block_attention_backward"
    x, q, dh, a = (device_array(v, op) for v in (x, q, dh, a))
    block = check_block_inputs(op, x, q, block)
    B, L, D = tuple(x.shape)
    if tuple(dh.shape) != (B, L, D) or tuple(a.shape) != (B, L, block) or (
            da is not None and tuple(da.shape) != (B, L, block)):
        raise ValueError(f"{op}: dh {tuple(dh.shape)} must match x {tuple(x.shape)}; a and da "
                         f"must be {(B, L, block)}, got a {tuple(a.shape)}"
                         + ("" if da is None else f" and da {tuple(da.shape)}"))
    has_da = da is not None
    da = device_array(da, op) if has_da else empty((1,), x.dtype)
    check_float(op, x=x, dh=dh, a=a, da=da)
    ds, dq, dx = empty((B, L, block), x.dtype), empty((B, L, D), x.dtype), empty((B, L, D), x.dtype)
    launch_1d(block_attention_grad_scores_kernel(), B * L, flat(ds), flat(dq), flat(dh), flat(da),
              has_da, flat(x), flat(a), B, L, D, block)
    launch_1d(block_attention_grad_x_kernel(), B * L * D, flat(dx), flat(a), flat(ds), flat(dh),
              flat(q), B, L, D, block)
    return dx, dq


def safu_block_attention_uncached(x, w_a, block):
    """The same attention from ``W_A`` directly: ``forward(x, x @ w_a, block)`` on the device."""
    op = "safu_block_attention_uncached"
    x, w_a = device_array(x, op), device_array(w_a, op)
    check_float(op, x=x, w_a=w_a)
    d = tuple(x.shape)[-1]
    if tuple(w_a.shape) != (d, d):
        raise ValueError(f"{op}: w_a must be (D, D) = {(d, d)} for x {tuple(x.shape)}, "
                         f"got {tuple(w_a.shape)}")
    return safu_block_attention_forward(x, matmul(x, w_a), block)


def _running_mean(op, backward, x, prev_sum, prev_count):
    x = device_array(x, op)
    check_float(op, x=x)
    if x.ndim != 3:
        raise ValueError(f"{op}: x must be (batch, length, dim), got {tuple(x.shape)}")
    if prev_count < 0:
        raise ValueError(f"{op}: prev_count must be >= 0, got {prev_count}")
    B, L, D = tuple(x.shape)
    has_prev = prev_sum is not None
    if has_prev:
        prev_sum = device_array(prev_sum, op)
        check_float(op, x=x, prev_sum=prev_sum)
        if tuple(prev_sum.shape) != (B, D):
            raise ValueError(f"{op}: prev_sum must be (B, D) = {(B, D)}, "
                             f"got {tuple(prev_sum.shape)}")
    else:
        prev_sum = empty((1,), x.dtype)
    out = empty((B, L, D), x.dtype)
    launch_1d(running_mean_kernel(backward), B * D, flat(out), flat(x), flat(prev_sum), has_prev,
              int(prev_count), B, L, D)
    return out


def safu_running_mean_forward(x, prev_sum=None, prev_count=0):
    """x (B, L, D), prev_sum (B, D) or None, prev_count >= 0 -> d (B, L, D)."""
    return _running_mean("safu_running_mean_forward", False, x, prev_sum, prev_count)


def safu_running_mean_backward(dd, prev_count=0):
    """dd (B, L, D) -> dx (B, L, D)."""
    return _running_mean("safu_running_mean_backward", True, dd, None, prev_count)


def safu_contexts_forward(x, q, start, block, radial, use_document, scale=1.0, prev_sum=None,
                          prev_count=0):
    """x (B, S, D), q (B, S - start, D) or None -> (z (B, L, d_z), a (B, L, block) or None)."""
    op = "safu_contexts_forward"
    x = device_array(x, op)
    q = device_array(q, op) if block else None
    start, block, radial, d_z = check_contexts_inputs(op, x, q, start, block, radial,
                                                      use_document)
    B, S, D = tuple(x.shape)
    L = S - start
    has_prev = bool(use_document) and prev_sum is not None
    if has_prev:
        prev_sum = device_array(prev_sum, op)
        check_float(op, x=x, prev_sum=prev_sum)
        if tuple(prev_sum.shape) != (B, D):
            raise ValueError(f"{op}: prev_sum must be (B, D) = {(B, D)}, "
                             f"got {tuple(prev_sum.shape)}")
    else:
        prev_sum = empty((1,), x.dtype)
    z = empty((B, L, d_z), x.dtype)
    a = empty((B, L, block), x.dtype) if block else empty((1,), x.dtype)
    qf = flat(q) if block else empty((1,), x.dtype)
    if B * L and (block or radial):
        launch_1d(contexts_forward_kernel(), B * L, flat(z), flat(a), flat(x), qf, B, L, start,
                  D, block, radial, d_z, float(scale))
    if B * L and use_document:
        launch_1d(contexts_document_kernel(False), B * D, flat(z), flat(x), flat(prev_sum),
                  has_prev, int(prev_count), B, L, start, D, d_z, d_z - D)
    return z, (a if block else None)


def safu_contexts_backward(dz, da, x, q, a, start, block, radial, use_document, scale=1.0,
                           prev_count=0):
    """-> (dx (B, S, D), dq (B, L, D) or None); ``da`` may be None."""
    op = "safu_contexts_backward"
    x, dz = device_array(x, op), device_array(dz, op)
    q = device_array(q, op) if block else None
    start, block, radial, d_z = check_contexts_inputs(op, x, q, start, block, radial,
                                                      use_document)
    B, S, D = tuple(x.shape)
    L = S - start
    check_float(op, x=x, dz=dz)
    if tuple(dz.shape) != (B, L, d_z):
        raise ValueError(f"{op}: dz must be (B, L, d_z) = {(B, L, d_z)}, got {tuple(dz.shape)}")
    dtype = x.dtype
    has_da = bool(block) and da is not None
    if block:
        a = device_array(a, op)
        if tuple(a.shape) != (B, L, block) or (has_da and tuple(da.shape) != (B, L, block)):
            raise ValueError(f"{op}: a and da must be (B, L, block) = {(B, L, block)}, got a "
                             f"{tuple(a.shape)}" + (f" and da {tuple(da.shape)}" if has_da else ""))
        da = device_array(da, op) if has_da else empty((1,), dtype)
        check_float(op, x=x, a=a, da=da)
        ds, dq = empty((B, L, block), dtype), empty((B, L, D), dtype)
        if B * L:
            launch_1d(contexts_grad_scores_kernel(), B * L, flat(ds), flat(dq), flat(dz),
                      flat(da), has_da, flat(x), flat(a), B, L, start, D, block, d_z,
                      float(scale))
        qf, af, dsf = flat(q), flat(a), flat(ds)
    else:
        dq = None
        qf = af = dsf = empty((1,), dtype)
    dx = empty((B, S, D), dtype)
    if B * S * D:
        launch_1d(contexts_grad_x_kernel(), B * S * D, flat(dx), af, dsf, flat(dz), qf, B, L,
                  start, D, block, radial, d_z)
    if B * L and use_document:
        launch_1d(contexts_document_kernel(True), B * D, flat(dx), flat(dz), empty((1,), dtype),
                  False, int(prev_count), B, L, start, D, d_z, d_z - D)
    return dx, dq


def safu_score_table(vectors, w_a):
    """T[u, v] = e_u^T W_A e_v for vectors (V, D) -> (V, V)."""
    op = "safu_score_table"
    vectors, w_a = device_array(vectors, op), device_array(w_a, op)
    check_float(op, vectors=vectors, w_a=w_a)
    return matmul(matmul(vectors, w_a), transpose(vectors))


def safu_block_scores_from_table(ids, table, block):
    """ids (B, L) int, table (V, V) -> s (B, L, block), -inf on slots before the start."""
    op = "safu_block_scores_from_table"
    table = device_array(table, op)
    check_float(op, table=table)
    if not is_device_array(ids):
        ids = cuda.to_device(np.asarray(ids, dtype=np.int64, order="C"))
    ids = device_array(ids, op)
    if ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise TypeError(f"{op}: ids must be a (B, L) integer array, got {ids.dtype} "
                        f"{tuple(ids.shape)}")
    B, L = tuple(ids.shape)
    vocab = tuple(table.shape)[0]
    s = empty((B, L, block), table.dtype)
    error = zeros((1,), np.int32)
    launch_1d(scores_from_table_kernel(), B * L * block, flat(s), flat(ids), flat(table), vocab,
              B, L, block, error)
    if B * L * block and error.copy_to_host()[0]:
        raise IndexError(f"{op}: an id is out of range for a table of {vocab} types")
    return s
