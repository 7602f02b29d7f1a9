"""NumPy reference for softmax attention (Vaswani et al., 2017), forward and backward.

For each batch element and head, with queries ``q (Lq, D)``, keys ``k (Lk, D)``, values
``v (Lk, Dv)``:

    s = scale * q @ k.T                      scores, (Lq, Lk)
    s[i, j] = -inf where key j is masked      (causal: j > i + offset)
    p = softmax(s, axis=-1)                  attention probabilities
    o = p @ v                                output, (Lq, Dv)

The forward also returns ``lse = logsumexp(s, axis=-1)`` (one number per query row). The backward
recomputes ``p = exp(s - lse)`` from it instead of storing the ``(Lq, Lk)`` probabilities, which
is what lets the kernels run at long context without keeping ``L^2`` numbers per head alive
between forward and backward (the FlashAttention trick, Dao et al., 2022; ``tiled_attention.py``
adds its tiling, so that not even one head's ``(Lq, Lk)`` scores are held at once).

Causal masking: key ``j`` is visible to query ``i`` iff ``j <= i + offset``. ``offset = 0`` is
PyTorch's ``is_causal`` (the top-left aligned lower triangle, also for ``Lq != Lk``);
``offset = Lk - Lq`` is what a KV cache needs (the ``Lq`` new queries are the last ``Lq``
positions). ``offset`` must be ``>= 0`` so that every query sees at least key 0.

Shapes: ``q (B, H, Lq, D)``, ``k (B, H, Lk, D)``, ``v (B, H, Lk, Dv)``, ``o (B, H, Lq, Dv)``,
``lse (B, H, Lq)``.
"""
import numpy as np

__all__ = ["attention_forward", "attention_backward", "attention_probabilities",
           "packed_attention_forward", "packed_attention_backward"]


def _causal_mask(lq, lk, offset):
    """(Lq, Lk) bool, True where key j is visible to query i (j <= i + offset)."""
    return np.arange(lk)[None, :] <= np.arange(lq)[:, None] + offset


def _scores(q, k, scale, causal, offset):
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if causal:
        s = np.where(_causal_mask(q.shape[-2], k.shape[-2], offset), s, -np.inf)
    return s


def attention_probabilities(q, k, scale, causal, offset=0):
    """The softmax attention weights p: (B, H, Lq, Lk); rows sum to 1 (used for attention maps)."""
    s = _scores(q, k, scale, causal, offset)
    s = s - s.max(axis=-1, keepdims=True)   # stability: exp never overflows, the max row entry is 1
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)).astype(q.dtype, copy=False)


def attention_forward(q, k, v, scale, causal, offset=0):
    """Softmax attention -> (o (B, H, Lq, Dv), lse (B, H, Lq))."""
    s = _scores(q, k, scale, causal, offset)
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(axis=-1, keepdims=True)
    o = (p @ v) / l
    lse = (m + np.log(l))[..., 0]
    return o.astype(q.dtype, copy=False), lse.astype(q.dtype, copy=False)


def attention_backward(do, q, k, v, o, lse, scale, causal, offset=0):
    """Gradients of ``attention_forward`` -> (dq, dk, dv), shaped like q, k, v.

    With p recomputed from lse and delta_i = sum_d do[i, d] * o[i, d] (= sum_j p_ij * dp_ij):
        dv = p.T @ do          dp = do @ v.T          ds = p * (dp - delta)
        dq = scale * ds @ k    dk = scale * ds.T @ q
    ``ds`` is the softmax backward; using ``o`` for ``delta`` avoids a second (Lq, Lk) product.
    Masked entries have p = 0, so they get no gradient.
    """
    p = np.exp(_scores(q, k, scale, causal, offset) - lse[..., None])
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    delta = (do * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = (ds @ k) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    dt = q.dtype
    return dq.astype(dt, copy=False), dk.astype(dt, copy=False), dv.astype(dt, copy=False)


# Packed self-attention: a transformer block's one (B, L, 3 H Dh) projection holds q, k and v of
# every head side by side, laid out (3, H, Dh) in its last dim; the attention output goes on as
# (B, L, H Dh) with the heads merged. These two take and give those layouts, so a backend can
# read the heads and write the outputs in place instead of splitting, permuting and concatenating.

def packed_layout(op, shape, n_heads):
    """(B, L, 3, H, Dh): the layout of a qkv of ``shape`` (B, L, 3 H Dh), checked."""
    shape = tuple(shape)
    if len(shape) != 3 or n_heads < 1 or shape[2] % (3 * n_heads):
        raise ValueError(f"{op}: qkv must be (B, L, 3 * n_heads * Dh), got shape {shape} with "
                         f"n_heads={n_heads}")
    return shape[0], shape[1], 3, n_heads, shape[2] // (3 * n_heads)


def packed_heads(qkv, n_heads, op="packed_attention"):
    """q, k, v: (B, H, L, Dh) views of ``qkv`` (B, L, 3 H Dh)."""
    heads = qkv.reshape(packed_layout(op, getattr(qkv, "shape", ()), n_heads))
    return tuple(heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def packed_attention_forward(qkv, n_heads, scale):
    """Causal self-attention of the heads packed in ``qkv`` (B, L, 3 H Dh) -> (y (B, L, H Dh),
    the heads' outputs merged, lse (B, H, L))."""
    q, k, v = packed_heads(qkv, n_heads, "packed_attention_forward")
    o, lse = attention_forward(q, k, v, scale, True, 0)
    B, H, L, Dh = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, L, H * Dh), lse


def packed_attention_backward(dy, qkv, y, lse, n_heads, scale):
    """Gradient of ``packed_attention_forward`` with respect to ``qkv``: (B, L, 3 H Dh), the
    gradients of q, k and v side by side as they were packed."""
    q, k, v = packed_heads(qkv, n_heads, "packed_attention_backward")
    B, H, L, Dh = q.shape
    o, do = (np.reshape(a, (B, L, H, Dh)).transpose(0, 2, 1, 3) for a in (y, dy))
    grads = attention_backward(do, q, k, v, o, lse, scale, True, 0)
    return np.stack([g.transpose(0, 2, 1, 3) for g in grads], axis=2).reshape(B, L, 3 * H * Dh)
