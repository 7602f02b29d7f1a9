"""Numba kernels for softmax attention (same names and meaning as
``backend/reference/attention.py``, which documents the math and the causal ``offset``).

Design, chosen by measurement (numbers in the module docstring of ``tests/test_attention.py``'s
companion report; the short version: plain loops beat ``np.dot`` per head inside ``prange``):

- ``prange`` over the ``B * H`` (batch, head) pairs; each pair owns its slices of every output,
  so threads never write the same memory.
- One query row at a time, never the ``(Lq, Lk)`` score matrix: the scores of row ``i`` live in an
  ``Lk`` buffer, so memory stays ``O(L)`` per thread at any context length, and causal rows stop
  at their last visible key (half the work of a dense masked product).
- Keys (and in the backward, values) are copied transposed, ``(D, Lk)``, once per head, so the
  innermost score loop runs along contiguous memory over ``j`` and vectorises without needing to
  reorder a floating-point sum.
- The backward recomputes ``p = exp(s - lse)`` row by row from the forward's log-sum-exp.
- Arithmetic stays in the input dtype (float32 SIMD is twice as wide); the softmax denominator is
  summed in float64. ``fastmath`` allows reassociating sums (the dot products over ``d`` become
  SIMD reductions) but keeps IEEE inf/NaN semantics, which the ``-inf``-free masking relies on
  anyway.

Why not ``np.dot`` per head: inside ``prange`` every call goes to a BLAS that runs its own thread
pool, so the two pools fight for the cores; measured on the 2-core CI machine this was both slower
and far more erratic than the loops at the nanoGPT shape, and the dense masked ``(L, L)`` products
do twice the causal work.
"""
import numpy as np
from numba import njit, prange

__all__ = ["attention_forward", "attention_backward"]

# Reassociation/contraction for SIMD sums; not 'nnan'/'ninf', so inf and NaN still behave.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _attention_forward_kernel(q, k, v, scale, causal, offset, o, lse):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        kT = np.ascontiguousarray(k[b, h].T)       # (D, Lk)
        vb = v[b, h]                                # (Lk, Dv)
        s = np.empty(Lk, dtype=q.dtype)             # scores, then probabilities, of one row
        acc = np.empty(Dv, dtype=q.dtype)
        for i in range(Lq):
            n = min(Lk, i + offset + 1) if causal else Lk   # keys 0..n-1 are visible
            s[:n] = 0
            for d in range(D):
                qd = q[b, h, i, d] * scale
                for j in range(n):
                    s[j] += qd * kT[d, j]
            m = s[0]
            for j in range(1, n):
                m = max(m, s[j])
            for j in range(n):
                s[j] = np.exp(s[j] - m)             # <= 1: no overflow
            denom = 0.0
            for j in range(n):
                denom += s[j]
            acc[:] = 0
            for j in range(n):
                pj = s[j]
                for d in range(Dv):
                    acc[d] += pj * vb[j, d]
            inv = 1.0 / denom
            for d in range(Dv):
                o[b, h, i, d] = acc[d] * inv
            lse[b, h, i] = m + np.log(denom)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _attention_backward_kernel(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        kT = np.ascontiguousarray(k[b, h].T)       # (D, Lk)
        vT = np.ascontiguousarray(v[b, h].T)       # (Dv, Lk)
        dkb = np.zeros((Lk, D), dtype=q.dtype)      # accumulated over all query rows
        dvb = np.zeros((Lk, Dv), dtype=q.dtype)
        p = np.empty(Lk, dtype=q.dtype)
        ds = np.empty(Lk, dtype=q.dtype)
        for i in range(Lq):
            n = min(Lk, i + offset + 1) if causal else Lk
            delta = do[b, h, i, 0] * o[b, h, i, 0]  # sum_j p_ij dp_ij, computed as do_i . o_i
            for d in range(1, Dv):
                delta += do[b, h, i, d] * o[b, h, i, d]
            p[:n] = 0
            ds[:n] = 0
            for d in range(D):
                qd = q[b, h, i, d] * scale
                for j in range(n):
                    p[j] += qd * kT[d, j]
            for d in range(Dv):
                dod = do[b, h, i, d]
                for j in range(n):
                    ds[j] += dod * vT[d, j]         # dp_ij = do_i . v_j
            li = lse[b, h, i]
            for j in range(n):
                p[j] = np.exp(p[j] - li)
            for j in range(n):
                ds[j] = p[j] * (ds[j] - delta) * scale
            for j in range(n):
                pj = p[j]
                dsj = ds[j]
                for d in range(Dv):
                    dvb[j, d] += pj * do[b, h, i, d]
                for d in range(D):
                    dkb[j, d] += dsj * q[b, h, i, d]
            for d in range(D):
                t = ds[0] * kT[d, 0]
                for j in range(1, n):
                    t += ds[j] * kT[d, j]
                dq[b, h, i, d] = t
        dk[b, h] = dkb
        dv[b, h] = dvb


def _check(name, q, k, v, offset):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{name}: q, k, v must be (B, H, L, D), got shapes {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if (q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[3] != k.shape[3]
            or k.shape[2] < 1 or q.shape[3] < 1 or v.shape[3] < 1):
        raise ValueError(f"{name}: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape} "
                         "(need q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), Lk, D, Dv >= 1)")
    if offset < 0:
        raise ValueError(f"{name}: causal offset must be >= 0, got {offset}")


def attention_forward(q, k, v, scale, causal, offset=0):
    """Softmax attention -> (o (B, H, Lq, Dv), lse (B, H, Lq)); see the reference."""
    _check("attention_forward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v = (np.ascontiguousarray(a, dtype=dt) for a in (q, k, v))
    o = np.empty(q.shape[:3] + (v.shape[3],), dtype=dt)
    lse = np.empty(q.shape[:3], dtype=dt)
    _attention_forward_kernel(q, k, v, dt.type(scale), bool(causal), int(offset), o, lse)
    return o, lse


def attention_backward(do, q, k, v, o, lse, scale, causal, offset=0):
    """Gradients of ``attention_forward`` -> (dq, dk, dv); see the reference."""
    _check("attention_backward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v, do, o, lse = (np.ascontiguousarray(a, dtype=dt) for a in (q, k, v, do, o, lse))
    dq = np.empty_like(q)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    _attention_backward_kernel(do, q, k, v, o, lse, dt.type(scale), bool(causal), int(offset),
                               dq, dk, dv)
    return dq, dk, dv
