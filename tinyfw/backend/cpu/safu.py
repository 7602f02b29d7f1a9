"""Numba kernels for SAFU block-context attention (cached comparisons).

Same names, signatures and results as ``backend/reference/safu.py``, which documents the math.
The forward runs every (batch, position) pair in parallel: position t reads the cached query
q_t and its window x_{t-block+1..t} and writes only its own h_t and a_t. The backward runs in
two race-free passes: pass 1 (parallel over positions t) computes the score gradients
``ds_t`` and ``dq_t``; pass 2 (parallel over positions j) gathers
``dx_j = sum_k a_{j+k,k} dh_{j+k} + ds_{j+k,k} q_{j+k}`` instead of scattering into it.
Both are O(L * block * D). Scores and sums are accumulated in float64 and stored in the inputs'
dtype.

The running mean of the document context stays the NumPy reference (``np.cumsum`` is already
one vectorised pass).
"""
import numpy as np
from numba import njit, prange

from ..reference.safu import check_block_inputs

__all__ = ["safu_block_attention_forward", "safu_block_attention_backward"]


@njit(cache=True, parallel=True)
def _block_attention_forward_kernel(x, q, block, h, a):
    B, L, D = x.shape
    for bt in prange(B * L):
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


@njit(cache=True, parallel=True)
def _block_attention_backward_kernel(dh, da, has_da, x, q, a, block, ds, dq, dx):
    B, L, D = x.shape
    # pass 1: per position t, the weight gradients g, the score gradients ds and dq_t
    for bt in prange(B * L):
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
    # pass 2: per position j, gather from the positions t = j + k whose window holds j
    for bj in prange(B * L):
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
    _block_attention_forward_kernel(x, q, block, h, a)
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
    _block_attention_backward_kernel(dh, da, has_da, x, q, a, block, ds, dq, dx)
    return dx, dq
