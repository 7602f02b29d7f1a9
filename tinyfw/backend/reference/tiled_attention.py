"""Softmax attention computed tile by tile (FlashAttention, Dao et al., 2022; the backward's loop
order as in FlashAttention-2, Dao, 2023), in NumPy: the algorithm the CPU kernels
(``backend/cpu/attention.py``) run, written out to be read. Same arguments, results and causal
``offset`` as ``attention.py`` beside it, whose plain form it is tested against.

The plain form builds the scores ``s = scale q k^T`` of a head whole: ``(Lq, Lk)`` numbers, 64 MiB
per head in float32 at Lq = Lk = 4096, and more for p, dp and ds in the backward. Here the
queries go in blocks of ``block_q`` rows and the keys in blocks of ``block_k``; only one
``(block_q, block_k)`` tile of the scores exists at a time.

Forward, for one query block ``Q`` (its rows of q), visiting the key blocks ``K, V`` in order:

    m = -inf, l = 0, acc = 0          per query: running max, running sum, unnormalised output
    for each key block K, V:
        S = scale Q K^T               the tile's scores (masked entries -inf)
        m_new = max(m, rowmax(S))
        P = exp(S - m_new)            <= 1: no overflow
        c = exp(m - m_new)            what was summed under the old max is rescaled to the new
        l = c l + rowsum(P)
        acc = c acc + P V
        m = m_new
    o = acc / l,  lse = m + log(l)

This is the softmax computed "online": after the last block, ``m`` is the row maximum, ``l`` the
sum of ``exp(s - m)`` over the row and ``acc`` the sum of ``exp(s - m) v``, exactly the plain
form's numbers, only added up in another order.

Backward: with ``lse`` from the forward, each tile's probabilities come back as
``P = exp(S - lse)`` without any running statistics, and ``delta = rowsum(do * o)`` (which equals
``rowsum(P * dP)``) is computed once. For each key block, for each query block that sees it:

    P = exp(scale Q K^T - lse)        (masked entries 0)
    dV += P^T dO
    dP = dO V^T
    dS = P * (dP - delta)             the softmax backward, row by row
    dK += scale dS^T Q
    dQ += scale dS K

Causal masking only touches the tiles the diagonal crosses; tiles wholly above it (every key
after every query of the block) are never visited.

Shapes: ``q (B, H, Lq, D)``, ``k (B, H, Lk, D)``, ``v (B, H, Lk, Dv)``, ``o (B, H, Lq, Dv)``,
``lse (B, H, Lq)``; the blocks cut the ``L`` axes, and every tile operation runs on all batch
elements and heads at once.
"""
import numpy as np

__all__ = ["tiled_attention_forward", "tiled_attention_backward"]


def _visible(i0, i1, j0, j1, causal, offset):
    """(i1 - i0, j1 - j0) bool: key j0 + j is visible to query i0 + i (j <= i + offset)."""
    if not causal:
        return np.ones((i1 - i0, j1 - j0), dtype=bool)
    return np.arange(j0, j1)[None, :] <= np.arange(i0, i1)[:, None] + offset


def _key_limit(i1, lk, causal, offset):
    """Keys 0 .. n-1 are the only ones visible to any query before i1."""
    return min(lk, i1 + offset) if causal else lk


def tiled_attention_forward(q, k, v, scale, causal, offset=0, block_q=64, block_k=128):
    """Softmax attention -> (o (B, H, Lq, Dv), lse (B, H, Lq)), one tile of scores at a time."""
    lq, lk = q.shape[-2], k.shape[-2]
    o = np.empty(q.shape[:-1] + v.shape[-1:], dtype=np.result_type(q, k, v))
    lse = np.empty(q.shape[:-1], dtype=o.dtype)
    for i0 in range(0, lq, block_q):
        i1 = min(lq, i0 + block_q)
        qi = q[..., i0:i1, :]
        m = np.full(qi.shape[:-1] + (1,), -np.inf)
        l = np.zeros_like(m)
        acc = np.zeros(qi.shape[:-1] + v.shape[-1:])
        for j0 in range(0, _key_limit(i1, lk, causal, offset), block_k):
            j1 = min(_key_limit(i1, lk, causal, offset), j0 + block_k)
            s = scale * (qi @ np.swapaxes(k[..., j0:j1, :], -1, -2))
            s = np.where(_visible(i0, i1, j0, j1, causal, offset), s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            p = np.exp(s - m_new)
            c = np.exp(m - m_new)
            l = c * l + p.sum(axis=-1, keepdims=True)
            acc = c * acc + p @ v[..., j0:j1, :]
            m = m_new
        o[..., i0:i1, :] = acc / l
        lse[..., i0:i1] = (m + np.log(l))[..., 0]
    return o, lse


def tiled_attention_backward(do, q, k, v, o, lse, scale, causal, offset=0, block_q=64,
                             block_k=128):
    """Gradients of ``tiled_attention_forward`` -> (dq, dk, dv), one tile at a time."""
    lq, lk = q.shape[-2], k.shape[-2]
    delta = (do * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(q.shape)
    dk = np.zeros(k.shape)
    dv = np.zeros(v.shape)
    for j0 in range(0, lk, block_k):
        j1 = min(lk, j0 + block_k)
        kj, vj = k[..., j0:j1, :], v[..., j0:j1, :]
        first_query = max(0, j0 - offset) if causal else 0      # the first query that sees j0
        for i0 in range(first_query - first_query % block_q, lq, block_q):
            i1 = min(lq, i0 + block_q)
            qi, doi = q[..., i0:i1, :], do[..., i0:i1, :]
            s = scale * (qi @ np.swapaxes(kj, -1, -2))
            s = np.where(_visible(i0, i1, j0, j1, causal, offset), s, -np.inf)
            p = np.exp(s - lse[..., i0:i1, None])                # masked: exp(-inf) = 0
            dv[..., j0:j1, :] += np.swapaxes(p, -1, -2) @ doi
            dp = doi @ np.swapaxes(vj, -1, -2)
            ds = p * (dp - delta[..., i0:i1, :])
            dk[..., j0:j1, :] += scale * (np.swapaxes(ds, -1, -2) @ qi)
            dq[..., i0:i1, :] += scale * (ds @ kj)
    dt = q.dtype
    return dq.astype(dt, copy=False), dk.astype(dt, copy=False), dv.astype(dt, copy=False)
