"""Softmax attention, forward and backward (reference: backend/reference/attention.py, which
documents the math and the causal ``offset``).

Written with the backend's own device primitives -- batched tiled ``matmul`` for the products,
the fused row softmax / log-sum-exp kernels, elementwise kernels -- plus one small kernel that
masks the causal scores. Unlike the CPU kernel, it materialises the ``(Lq, Lk)`` scores of every
head (this is not a FlashAttention kernel); the backward still recomputes the probabilities from
the forward's log-sum-exp, as the reference does.

Shapes: ``q (B, H, Lq, D)``, ``k (B, H, Lk, D)``, ``v (B, H, Lk, Dv)``, ``o (B, H, Lq, Dv)``,
``lse (B, H, Lq)``.
"""
import math

from numba import cuda

from ..reference.attention import packed_layout
from ..reference.core import check_float
from .elementwise import exp, mul, sub
from .indexing import getitem
from .layout import concatenate, reshape, transpose
from .matmul import matmul
from .reduction import sum as sum_over
from .runtime import device_array, flat, kernel_factory, launch_1d
from .softmax import logsumexp_last_axis, softmax_forward

__all__ = ["attention_forward", "attention_backward", "attention_probabilities",
           "packed_attention_forward", "packed_attention_backward"]


@kernel_factory
def causal_mask_kernel():
    """``s[..., i, j] = -inf`` where key j is hidden from query i (``j > i + offset``)."""
    def kernel(s, lq, lk, offset, n):
        for idx in range(cuda.grid(1), n, cuda.gridsize(1)):
            j = idx % lk
            i = (idx // lk) % lq
            if j > i + offset:
                s[idx] = -math.inf
    return cuda.jit(kernel)


def _check(op, q, k, v=None):
    arrays = dict(q=q, k=k) if v is None else dict(q=q, k=k, v=v)
    check_float(op, **arrays)
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if any(len(s) != 4 for s in shapes.values()) or shapes["k"][:2] != shapes["q"][:2] \
            or shapes["k"][3] != shapes["q"][3] \
            or (v is not None and shapes["v"][:3] != shapes["k"][:3]):
        raise ValueError(f"{op}: expected q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), "
                         f"got {shapes}")


def _scores(q, k, scale, causal, offset):
    """``scale * q @ k^T`` with the hidden keys at ``-inf``: (B, H, Lq, Lk)."""
    s = mul(matmul(q, transpose(k, (0, 1, 3, 2))), scale)
    if causal:
        if offset < 0:
            raise ValueError(f"attention: causal offset must be >= 0, got {offset}")
        lq, lk = tuple(s.shape)[2:]
        launch_1d(causal_mask_kernel(), s.size, flat(s), lq, lk, int(offset), s.size)
    return s


def attention_probabilities(q, k, scale, causal, offset=0):
    """The attention weights p (B, H, Lq, Lk); rows sum to 1."""
    q, k = device_array(q, "attention_probabilities"), device_array(k, "attention_probabilities")
    _check("attention_probabilities", q, k)
    return softmax_forward(_scores(q, k, scale, causal, offset))


def attention_forward(q, k, v, scale, causal, offset=0):
    """Softmax attention -> (o (B, H, Lq, Dv), lse (B, H, Lq))."""
    q, k, v = (device_array(a, "attention_forward") for a in (q, k, v))
    _check("attention_forward", q, k, v)
    s = _scores(q, k, scale, causal, offset)
    return matmul(softmax_forward(s), v), logsumexp_last_axis(s)


def attention_backward(do, q, k, v, o, lse, scale, causal, offset=0):
    """Gradients of ``attention_forward`` -> (dq, dk, dv), shaped like q, k, v.

    p = exp(s - lse); dv = p^T do; dp = do v^T; ds = p (dp - rowsum(do * o));
    dq = scale ds k; dk = scale ds^T q.
    """
    do, q, k, v, o, lse = (device_array(a, "attention_backward") for a in (do, q, k, v, o, lse))
    _check("attention_backward", q, k, v)
    s = _scores(q, k, scale, causal, offset)
    p = exp(sub(s, lse.reshape(tuple(lse.shape) + (1,))))
    dv = matmul(transpose(p, (0, 1, 3, 2)), do)
    dp = matmul(do, transpose(v, (0, 1, 3, 2)))
    delta = sum_over(mul(do, o), -1, True)
    ds = mul(p, sub(dp, delta))
    dq = mul(matmul(ds, k), scale)
    dk = mul(matmul(transpose(ds, (0, 1, 3, 2)), q), scale)
    return dq, dk, dv


def _packed_heads(qkv, n_heads, op):
    """q, k, v (B, H, L, Dh) from qkv (B, L, 3 H Dh); on this backend each is a copy."""
    qkv = device_array(qkv, op)
    heads = reshape(qkv, packed_layout(op, qkv.shape, n_heads))
    every = slice(None)
    return tuple(transpose(getitem(heads, (every, every, i)), (0, 2, 1, 3)) for i in range(3))


def packed_attention_forward(qkv, n_heads, scale):
    """Causal self-attention of the heads packed in qkv -> (y (B, L, H Dh), lse (B, H, L));
    see the reference. Here: split, attention_forward, merge."""
    q, k, v = _packed_heads(qkv, n_heads, "packed_attention_forward")
    o, lse = attention_forward(q, k, v, scale, True, 0)
    B, H, L, Dh = o.shape
    return reshape(transpose(o, (0, 2, 1, 3)), (B, L, H * Dh)), lse


def packed_attention_backward(dy, qkv, y, lse, n_heads, scale):
    """Gradient of ``packed_attention_forward`` w.r.t. qkv, (B, L, 3 H Dh); see the reference."""
    q, k, v = _packed_heads(qkv, n_heads, "packed_attention_backward")
    B, H, L, Dh = q.shape
    o, do = (transpose(reshape(device_array(a, "packed_attention_backward"), (B, L, H, Dh)),
                       (0, 2, 1, 3)) for a in (y, dy))
    grads = attention_backward(do, q, k, v, o, lse, scale, True, 0)
    # each (B, H, L, Dh) -> (B, L, 1, H, Dh), then side by side along the new axis
    slabs = [reshape(transpose(g, (0, 2, 1, 3)), (B, L, 1, H, Dh)) for g in grads]
    return reshape(concatenate(slabs, 2), (B, L, 3 * H * Dh))
