"""Numba kernels for SAFU block-context attention (cached comparisons).

Same names, signatures and results as ``backend/reference/safu.py``, which documents the math.
The forward runs every (batch, position) pair as a unit: position t reads the cached query
q_t and its window x_{t-block+1..t} and writes only its own h_t and a_t. The backward runs in
two race-free passes: pass 1 (parallel over positions t) computes the score gradients
``ds_t`` and ``dq_t``; pass 2 (parallel over positions j) gathers
``dx_j = sum_k a_{j+k,k} dh_{j+k} + ds_{j+k,k} q_{j+k}`` instead of scattering into it.
Both are O(L * block * D). Scores and sums are accumulated in float64 and stored in the inputs'
dtype.

The running mean of the document context alone stays the NumPy reference (``np.cumsum`` is
already one vectorised pass).

The three contexts in one call each way (``safu_contexts_forward/backward``, what ``SAFUMixer``
and ``SAFU`` run): one pass over the positions of a sequence writes each row of
``z = [h; r; d]`` where it lies (the block attention, the R shifted copies and the running mean),
and one pass back collects the gradient of x from the three column groups of ``dz``, so neither
direction builds the pieces of z or their gradients as separate arrays. A sequence (batch row)
is the unit of work: the running mean runs along it. The backward scatters ``a_tk dh_t +
scale ds_tk q_t`` into ``dx_{t-k}`` within its own row, so rows never share memory (where a call
runs: ``runtime/launch.py``, policy ``SAFU_CONTEXTS``). Dot products are summed in the inputs'
dtype under ``fastmath`` reassociation (SIMD sums), exp is ``fastmath.exp_of_dtype``
(vectorised for float32); the softmax denominators and the running sums are float64.
"""
import numpy as np
from numba import njit

from ..reference.safu import check_block_inputs, check_contexts_inputs
from .fastmath import exp_of_dtype as _exp
from .runtime import launch
from .runtime.allocator import empty_aligned

__all__ = ["safu_block_attention_forward", "safu_block_attention_backward",
           "safu_contexts_forward", "safu_contexts_backward"]

# Reassociation/contraction for SIMD sums; not 'nnan'/'ninf', so inf and NaN still behave.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

# The forward takes the softmax of this many positions at a time, slot by slot, so its max, exp
# and sums run as vector loops over positions (rows of ``block`` <= 8 scores do not fill a
# vector; bench/README.md, SAFU section, has the timings).
POSITION_CHUNK = 64


# The block-attention kernels handle the (batch, position) pairs bt in [start, stop), flattened
# as bt = b * L + t; ``launch.run`` (policy ``ALWAYS_POOL``) runs them in Numba's pool.

@njit(nogil=True, cache=True)
def _block_attention_forward_positions(x, q, block, h, a, start, stop):
    B, L, D = x.shape
    for bt in range(start, stop):
        b = bt // L
        t = bt % L
        n = min(block, t + 1)
        w = np.empty(n, dtype=np.float64)        # scores, then unnormalised weights
        top = -np.inf
        for k in range(n):
            acc = 0.0
            for d in range(D):
                acc += q[b, t, d] * x[b, t - k, d]
            w[k] = acc
            if acc > top:
                top = acc
        total = 0.0
        for k in range(n):
            w[k] = np.exp(w[k] - top)
            total += w[k]
        for k in range(n):
            a[b, t, k] = w[k] / total
        for k in range(n, block):
            a[b, t, k] = 0.0
        for d in range(D):
            acc = 0.0
            for k in range(n):
                acc += (w[k] / total) * x[b, t - k, d]
            h[b, t, d] = acc


@njit(nogil=True, cache=True)
def _block_attention_score_gradients(dh, da, has_da, x, q, a, block, ds, dq, start, stop):
    """Backward pass 1: per position t, the weight gradients g, the score gradients ds and dq_t."""
    B, L, D = x.shape
    for bt in range(start, stop):
        b = bt // L
        t = bt % L
        n = min(block, t + 1)
        g = np.empty(n, dtype=np.float64)
        mean = 0.0
        for k in range(n):
            acc = 0.0
            for d in range(D):
                acc += dh[b, t, d] * x[b, t - k, d]
            if has_da:
                acc += da[b, t, k]
            g[k] = acc
            mean += a[b, t, k] * acc
        for k in range(n):
            ds[b, t, k] = a[b, t, k] * (g[k] - mean)
        for k in range(n, block):
            ds[b, t, k] = 0.0
        for d in range(D):
            acc = 0.0
            for k in range(n):
                acc += ds[b, t, k] * x[b, t - k, d]
            dq[b, t, d] = acc


@njit(nogil=True, cache=True)
def _block_attention_input_gradients(dh, q, a, ds, block, dx, start, stop):
    """Backward pass 2: per position j, gather from the positions t = j + k whose window holds j."""
    B, L, D = dx.shape
    for bj in range(start, stop):
        b = bj // L
        j = bj % L
        kmax = min(block, L - j)
        for d in range(D):
            acc = 0.0
            for k in range(kmax):
                t = j + k
                acc += a[b, t, k] * dh[b, t, d] + ds[b, t, k] * q[b, t, d]
            dx[b, j, d] = acc


def safu_block_attention_forward(x, q, block):
    """x, q: (B, L, D); block >= 1 -> ``(h (B, L, D), a (B, L, block))``."""
    block = check_block_inputs("safu_block_attention_forward", x, q, block)
    x = np.ascontiguousarray(x)
    q = np.ascontiguousarray(q)
    B, L, D = x.shape
    h = np.empty_like(x)
    a = np.empty((B, L, block), dtype=x.dtype)
    launch.run(launch.ALWAYS_POOL, _block_attention_forward_positions, (x, q, block, h, a), B * L,
               B * L * block * D)
    return h, a


def safu_block_attention_backward(dh, da, x, q, a, block):
    """Gradients ``(dx, dq)`` of the forward; ``da`` (B, L, block) may be None."""
    block = check_block_inputs("safu_block_attention_backward", x, q, block)
    B, L, D = x.shape
    if dh.shape != x.shape or a.shape != (B, L, block):
        raise ValueError(f"safu_block_attention_backward: dh {tuple(dh.shape)} must match x "
                         f"{tuple(x.shape)} and a {tuple(a.shape)} must be {(B, L, block)}")
    dtype = x.dtype
    x, q = np.ascontiguousarray(x), np.ascontiguousarray(q)
    dh = np.ascontiguousarray(dh, dtype=dtype)
    a = np.ascontiguousarray(a, dtype=dtype)
    has_da = da is not None
    da = np.ascontiguousarray(da, dtype=dtype) if has_da else np.zeros((1, 1, 1), dtype=dtype)
    ds = np.empty((B, L, block), dtype=dtype)
    dq = np.empty_like(x)
    dx = np.empty_like(x)
    work = B * L * block * D
    launch.run(launch.ALWAYS_POOL, _block_attention_score_gradients,
               (dh, da, has_da, x, q, a, block, ds, dq), B * L, work)
    launch.run(launch.ALWAYS_POOL, _block_attention_input_gradients, (dh, q, a, ds, block, dx),
               B * L, work)
    return dx, dq


# ------------------------------------------------------------------ the three contexts at once
# The loops below work on 1-D row views (``x[b, j]``, ``z[b, i][col:col + D]``): indexed by the
# loop counter alone, they compile to plain vector loops, which 3-D indices with a computed
# column do not.

@njit(inline="always", fastmath=_FASTMATH)
def _dot(u, v):
    """``u . v`` of two rows, summed in their dtype (float32 SIMD lanes are twice as many; the
    reference's einsum sums in the dtype too)."""
    acc = u[0] * v[0]
    for d in range(1, u.shape[0]):
        acc += u[d] * v[d]
    return acc


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _contexts_forward_rows(x, q, start, block, radial, use_document, scale, prev_sum, has_prev,
                           prev_count, z, a, b0, b1):
    """Rows b0..b1-1 of z (B, L, d_z) and a (B, L, block) from x (B, S, D), q (B, L, D)."""
    S, D = x.shape[1], x.shape[2]
    L = S - start
    col_radial = D if block > 0 else 0
    col_document = col_radial + radial * D
    chunk = min(L, POSITION_CHUNK)
    w = np.empty((max(block, 1), max(chunk, 1)), dtype=x.dtype)   # scores, then weights
    top = np.empty(max(chunk, 1), dtype=x.dtype)
    norm = np.empty(max(chunk, 1), dtype=np.float64)
    total = np.empty(D, dtype=np.float64)
    for b in range(b0, b1):
        for d in range(D):
            total[d] = prev_sum[b, d] if has_prev else 0.0
        for i0 in range(0, L, max(chunk, 1)):
            n_pos = min(chunk, L - i0)
            if block > 0:
                # the softmax of a chunk of positions, slot by slot: vector loops over positions
                for k in range(block):
                    wk = w[k]
                    for c in range(n_pos):
                        t = start + i0 + c
                        wk[c] = scale * _dot(q[b, i0 + c], x[b, t - k]) if t >= k else -np.inf
                for c in range(n_pos):
                    top[c] = w[0, c]                 # slot 0 (t itself) is always real
                for k in range(1, block):
                    wk = w[k]
                    for c in range(n_pos):
                        top[c] = max(top[c], wk[c])
                for c in range(n_pos):
                    norm[c] = 0.0
                for k in range(block):
                    wk = w[k]
                    for c in range(n_pos):
                        wk[c] = _exp(wk[c] - top[c])   # 0 for the -inf of missing slots
                        norm[c] += wk[c]
                for c in range(n_pos):
                    ai = a[b, i0 + c]
                    inv = 1.0 / norm[c]
                    for k in range(block):
                        ai[k] = w[k, c] * inv
            for c in range(n_pos):
                i = i0 + c
                t = start + i
                zi = z[b, i]
                if block > 0:
                    n = min(block, t + 1)
                    ai = a[b, i]
                    h = zi[:D]
                    a0, x0 = ai[0], x[b, t]
                    for d in range(D):
                        h[d] = a0 * x0[d]
                    for k in range(1, n):
                        ak, xk = ai[k], x[b, t - k]
                        for d in range(D):
                            h[d] += ak * xk[d]
                for k in range(radial):
                    r = zi[col_radial + k * D:col_radial + (k + 1) * D]
                    if t - k >= 0:
                        xk = x[b, t - k]
                        for d in range(D):
                            r[d] = xk[d]
                    else:
                        for d in range(D):
                            r[d] = 0.0
                if use_document:
                    inv = 1.0 / (prev_count + i + 1)
                    mean = zi[col_document:col_document + D]
                    xt = x[b, t]
                    for d in range(D):
                        running = total[d] + xt[d]
                        total[d] = running
                        mean[d] = running * inv


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _contexts_backward_rows(dz, da, has_da, x, q, a, start, block, radial, use_document, scale,
                            prev_count, dx, dq, b0, b1):
    """Rows b0..b1-1 of dx (B, S, D) and dq (B, L, D) from dz (B, L, d_z)."""
    S, D = x.shape[1], x.shape[2]
    L = S - start
    col_radial = D if block > 0 else 0
    col_document = col_radial + radial * D
    g = np.empty(max(block, 1), dtype=np.float64)
    ds = np.empty(max(block, 1), dtype=x.dtype)       # scale * ds, in the inputs' dtype
    total = np.empty(D, dtype=np.float64)
    for b in range(b0, b1):
        dx[b] = 0.0
        for i in range(L):
            t = start + i
            dzi = dz[b, i]
            if block > 0:
                n = min(block, t + 1)
                dh, qi, ai = dzi[:D], q[b, i], a[b, i]
                mean = 0.0
                for k in range(n):
                    acc = _dot(dh, x[b, t - k]) + 0.0
                    if has_da:
                        acc += da[b, i, k]
                    g[k] = acc
                    mean += ai[k] * acc
                for k in range(n):
                    ds[k] = scale * (ai[k] * (g[k] - mean))
                dqi = dq[b, i]
                for d in range(D):
                    dqi[d] = 0.0
                for k in range(n):
                    dsk, ak = ds[k], ai[k]
                    xk, dxk = x[b, t - k], dx[b, t - k]
                    for d in range(D):
                        dqi[d] += dsk * xk[d]
                        dxk[d] += ak * dh[d] + dsk * qi[d]
            for k in range(min(radial, t + 1)):
                dr = dzi[col_radial + k * D:col_radial + (k + 1) * D]
                dxk = dx[b, t - k]
                for d in range(D):
                    dxk[d] += dr[d]
        if use_document:
            for d in range(D):
                total[d] = 0.0
            for i in range(L - 1, -1, -1):
                inv = 1.0 / (prev_count + i + 1)
                dd = dz[b, i][col_document:col_document + D]
                dxt = dx[b, start + i]
                for d in range(D):
                    running = total[d] + dd[d] * inv
                    total[d] = running
                    dxt[d] += running


def _contexts_work(B, S, D, block, radial):
    """Multiply-adds and copied elements of one direction, roughly."""
    return B * S * D * (2 * block + radial + 1)


def safu_contexts_forward(x, q, start, block, radial, use_document, scale=1.0, prev_sum=None,
                          prev_count=0):
    """x (B, S, D), q (B, S - start, D) or None -> ``(z (B, L, d_z), a (B, L, block) or None)``."""
    start, block, radial, d_z = check_contexts_inputs("safu_contexts_forward", x, q, start,
                                                      block, radial, use_document)
    dt = x.dtype
    x = np.ascontiguousarray(x)
    B, S, D = x.shape
    L = S - start
    q = np.ascontiguousarray(q, dtype=dt) if block else np.zeros((1, 1, 1), dtype=dt)
    has_prev = use_document and prev_sum is not None
    if has_prev and tuple(prev_sum.shape) != (B, D):
        raise ValueError(f"safu_contexts_forward: prev_sum must be (B, D) = {(B, D)}, got "
                         f"{tuple(prev_sum.shape)}")
    prev = (np.ascontiguousarray(prev_sum, dtype=np.float64) if has_prev
            else np.zeros((1, 1), dtype=np.float64))
    z = empty_aligned((B, L, d_z), dt)     # rows on cache lines: whole-vector stores
    a = np.empty((B, L, max(block, 1)), dtype=dt)
    args = (x, q, start, block, radial, bool(use_document), float(scale), prev, has_prev,
            int(prev_count), z, a)
    launch.run(launch.SAFU_CONTEXTS, _contexts_forward_rows, args, B,
               _contexts_work(B, L, D, block, radial))
    return z, (a if block else None)


def safu_contexts_backward(dz, da, x, q, a, start, block, radial, use_document, scale=1.0,
                           prev_count=0):
    """-> ``(dx (B, S, D), dq (B, L, D) or None)``; ``da`` may be None."""
    start, block, radial, d_z = check_contexts_inputs("safu_contexts_backward", x, q, start,
                                                      block, radial, use_document)
    dt = x.dtype
    x = np.ascontiguousarray(x)
    B, S, D = x.shape
    L = S - start
    if tuple(dz.shape) != (B, L, d_z):
        raise ValueError(f"safu_contexts_backward: dz must be (B, L, d_z) = {(B, L, d_z)}, got "
                         f"{tuple(dz.shape)}")
    dz = np.ascontiguousarray(dz, dtype=dt)
    if block:
        if a is None or tuple(a.shape) != (B, L, block):
            raise ValueError(f"safu_contexts_backward: a must be (B, L, block) = "
                             f"{(B, L, block)}, got {None if a is None else tuple(a.shape)}")
        if da is not None and tuple(da.shape) != (B, L, block):
            raise ValueError(f"safu_contexts_backward: da must be (B, L, block) = "
                             f"{(B, L, block)}, got {tuple(da.shape)}")
        q = np.ascontiguousarray(q, dtype=dt)
        a = np.ascontiguousarray(a, dtype=dt)
    else:
        q = a = np.zeros((1, 1, 1), dtype=dt)
    has_da = block > 0 and da is not None
    da = np.ascontiguousarray(da, dtype=dt) if has_da else np.zeros((1, 1, 1), dtype=dt)
    dx = empty_aligned((B, S, D), dt)
    dq = empty_aligned((B, L, D), dt) if block else np.zeros((1, 1, 1), dtype=dt)
    args = (dz, da, has_da, x, q, a, start, block, radial, bool(use_document), float(scale),
            int(prev_count), dx, dq)
    launch.run(launch.SAFU_CONTEXTS, _contexts_backward_rows, args, B,
               2 * _contexts_work(B, L, D, block, radial))
    return dx, (dq if block else None)
