"""Numba kernels for softmax attention (same names and meaning as
``backend/reference/attention.py``, which documents the math and the causal ``offset``).

Design, chosen by measurement (see "Measured" below): plain loops, not ``np.dot`` per head.

- ``prange`` over the ``B * H`` (batch, head) pairs; each pair owns its slices of every output,
  so threads never write the same memory. Small problems run on the calling thread
  (``PARALLEL_MIN_WORK``).
- One query row at a time, never the ``(Lq, Lk)`` score matrix: the scores of row ``i`` live in an
  ``Lk`` buffer, so memory stays ``O(L)`` per thread at any context length, and causal rows stop
  at their last visible key (half the work of a dense masked product).
- Keys (and in the backward, values) are copied transposed, ``(D, Lk)``, once per head, so the
  innermost score loop runs along contiguous memory over ``j`` and vectorises without needing to
  reorder a floating-point sum.
- The backward recomputes ``p = exp(s - lse)`` row by row from the forward's log-sum-exp.
- Arithmetic stays in the input dtype (float32 SIMD is twice as wide); the softmax denominator is
  summed in float64. ``fastmath`` allows reassociating sums (the dot products over ``d`` become
  SIMD reductions) but keeps IEEE inf/NaN semantics (masked keys are skipped, never set to
  ``-inf``, so no inf arithmetic is needed in the first place).

Measured (2-core CI-class machine shared with other jobs; ms per call, min of repeats,
forward/backward, causal; NumPy reference / ``np.dot`` per head inside ``prange`` / these loops):

    one thread, CPU time
        float32 (12, 4, 64, 32)    5.3/9.1     1.2/1.9     1.3/2.4
        float32 (1, 4, 1024, 32)   69/105      22/32       21/36
        float64 (1, 4, 1024, 32)   74/117      32/68       32/68
    two threads, wall time
        float32 (12, 4, 64, 32)    9.8/12      3.0/1.0     4.0/1.2
        float32 (1, 4, 1024, 32)   316/477     171/383     44/88
        float32 (4, 4, 256, 32)    160/143     201/132     8.5/27

Single-threaded, BLAS wins the small backward (its GEMMs are register-tiled). Run in ``prange``,
the ``np.dot`` version was several times slower and erratic at the larger shapes, where BLAS
starts its own threads (our reading: the BLAS pool and Numba's threads compete for the cores),
while the loops kept their single-thread speed-up. The loops are the robust choice.
"""
import numpy as np
from numba import njit, prange

__all__ = ["attention_forward", "attention_backward"]

# Reassociation/contraction for SIMD sums; not 'nnan'/'ninf', so inf and NaN still behave.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# Below this many multiply-adds (B * H * Lq * Lk * (D + Dv)) one thread does the whole job: waking
# Numba's thread pool costs more than the work (a generation step is one query row per head),
# and on a busy machine far more. Tests set it to 0 or to a huge value to exercise both paths.
PARALLEL_MIN_WORK = 1 << 17


# Each kernel handles the (batch, head) pairs bh in [start, stop), flattened as bh = b * H + h;
# the ``_parallel_*`` drivers give each pair to a thread, the wrappers call the kernels directly
# (one thread) for small inputs.

@njit(cache=True, fastmath=_FASTMATH)
def _attention_forward_heads(q, k, v, scale, causal, offset, o, lse, start, stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    for bh in range(start, stop):
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


@njit(cache=True, fastmath=_FASTMATH)
def _attention_backward_heads(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv, start,
                              stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        kT = np.ascontiguousarray(k[b, h].T)       # (D, Lk)
        vT = np.ascontiguousarray(v[b, h].T)       # (Dv, Lk)
        dkb = np.zeros((Lk, D), dtype=q.dtype)      # accumulated over all query rows
        dvb = np.zeros((Lk, Dv), dtype=q.dtype)
        kb = k[b, h]                                # (Lk, D)
        p = np.empty(Lk, dtype=q.dtype)
        ds = np.empty(Lk, dtype=q.dtype)
        dqi = np.empty(D, dtype=q.dtype)
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
            qi = q[b, h, i]
            doi = do[b, h, i]
            dqi[:] = 0
            for j in range(n):                      # one pass over the keys for all three
                pj = p[j]
                dsj = ds[j]
                for d in range(Dv):
                    dvb[j, d] += pj * doi[d]
                for d in range(D):
                    dkb[j, d] += dsj * qi[d]
                    dqi[d] += dsj * kb[j, d]
            dq[b, h, i] = dqi
        dk[b, h] = dkb
        dv[b, h] = dvb


@njit(parallel=True, cache=True)
def _parallel_attention_forward(q, k, v, scale, causal, offset, o, lse):
    for bh in prange(q.shape[0] * q.shape[1]):
        _attention_forward_heads(q, k, v, scale, causal, offset, o, lse, bh, bh + 1)


@njit(parallel=True, cache=True)
def _parallel_attention_backward(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv):
    for bh in prange(q.shape[0] * q.shape[1]):
        _attention_backward_heads(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv, bh,
                                  bh + 1)


def _parallel(q, k, v):
    B, H, Lq, D = q.shape
    return B * H > 1 and B * H * Lq * k.shape[2] * (D + v.shape[3]) >= PARALLEL_MIN_WORK


def _check(name, q, k, v, offset):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{name}: q, k, v must be (B, H, L, D), got shapes {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if (q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[3] != k.shape[3]
            or k.shape[2] < 1 or q.shape[3] < 1 or v.shape[3] < 1):
        raise ValueError(f"{name}: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape} "
                         "(need q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), "
                         "Lk, D, Dv >= 1)")
    if offset < 0:
        raise ValueError(f"{name}: causal offset must be >= 0, got {offset}")


def attention_forward(q, k, v, scale, causal, offset=0):
    """Softmax attention -> (o (B, H, Lq, Dv), lse (B, H, Lq)); see the reference."""
    _check("attention_forward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v = (np.ascontiguousarray(a, dtype=dt) for a in (q, k, v))
    o = np.empty(q.shape[:3] + (v.shape[3],), dtype=dt)
    lse = np.empty(q.shape[:3], dtype=dt)
    args = (q, k, v, dt.type(scale), bool(causal), int(offset), o, lse)
    if _parallel(q, k, v):
        _parallel_attention_forward(*args)
    else:
        _attention_forward_heads(*args, 0, q.shape[0] * q.shape[1])
    return o, lse


def attention_backward(do, q, k, v, o, lse, scale, causal, offset=0):
    """Gradients of ``attention_forward`` -> (dq, dk, dv); see the reference."""
    _check("attention_backward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v, do, o, lse = (np.ascontiguousarray(a, dtype=dt) for a in (q, k, v, do, o, lse))
    dq = np.empty_like(q)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    args = (do, q, k, v, o, lse, dt.type(scale), bool(causal), int(offset), dq, dk, dv)
    if _parallel(q, k, v):
        _parallel_attention_backward(*args)
    else:
        _attention_backward_heads(*args, 0, q.shape[0] * q.shape[1])
    return dq, dk, dv
