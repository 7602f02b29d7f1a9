"""Softmax attention: ``softmax(scale * q k^T + mask) v``, forward and backward as fused kernels.

``backend/reference/attention.py`` is the NumPy meaning. The forward keeps only the row
log-sum-exp for the backward, never the ``(L, L)`` probabilities.

Three entry points:

- ``scaled_dot_product_attention(q, k, v, is_causal=False, scale=None)``: PyTorch's function
  (``is_causal`` is the top-left aligned lower triangle, also when ``Lq != Lk``).
- ``causal_attention(q, k, v, scale=None)``: the queries are the *last* ``Lq`` of the ``Lk``
  positions (the bottom-right aligned triangle): what a KV cache needs when new tokens attend to
  the cached ones and to each other. Equal to the former when ``Lq == Lk``.
- ``attention_probabilities(q, k, is_causal=False, scale=None)``: the weights themselves
  ``(..., Lq, Lk)``, for attention maps (differentiable, but it materialises ``L^2`` numbers).

and one for the Transformer layer: ``packed_causal_self_attention(qkv, n_heads)`` takes the
output of the fused ``D -> 3D`` projection as it is and returns the heads already merged, so the
split into q, k, v, the head permutes and the merge are one Function instead of nine.
"""
import inspect
import math

from ..autograd import Function
from ..tensor import Tensor
from .shape import reshape

__all__ = ["scaled_dot_product_attention", "causal_attention", "attention_probabilities",
           "packed_causal_self_attention"]


class Attention(Function):
    """q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv) -> o (B, H, Lq, Dv).

    o is laid out in memory as q is, and dq, dk, dv as q, k, v are, where the backend can write
    its results into given arrays (``out=``): heads split from a (B, L, H, Dh) projection with
    ``transpose(1, 2)`` then get back an o whose ``transpose(1, 2).reshape(B, L, H Dh)`` is a
    view, and gradients that the same ops carry back to the projection without copies.
    """

    @staticmethod
    def forward(ctx, q, k, v, scale, causal, offset):
        be = ctx.backend
        o_shape = tuple(q.shape[:-1]) + (v.shape[-1],)
        o_out = _new_in_layout_of(be, q, o_shape) if _takes_out(be.attention_forward) else None
        if o_out is None:
            o, lse = be.attention_forward(q, k, v, scale, causal, offset)
        else:
            o, lse = be.attention_forward(q, k, v, scale, causal, offset, out=o_out)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = (scale, causal, offset)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        be = ctx.backend
        outs = _gradients_in_layout(be, (q, k, v)) if _takes_out(be.attention_backward) else None
        if outs is None:
            dq, dk, dv = be.attention_backward(do, q, k, v, o, lse, *ctx.args)
        else:
            dq, dk, dv = be.attention_backward(do, q, k, v, o, lse, *ctx.args, out=outs)
        return dq, dk, dv, None, None, None


_TAKES_OUT = {}


def _takes_out(backend_function):
    """Whether a backend's attention function accepts ``out=`` (the interface does not require
    it); asked once per function."""
    answer = _TAKES_OUT.get(backend_function)
    if answer is None:
        try:
            answer = "out" in inspect.signature(backend_function).parameters
        except (TypeError, ValueError):     # no signature to read: call it without
            answer = False
        _TAKES_OUT[backend_function] = answer
    return answer


def _memory_order(a):
    """The axes of ``a`` in the order its memory runs, outermost first, as told by its strides:
    the leading axes by decreasing stride, the last axis last (the kernels want rows with
    adjacent elements), and axes of length one (their stride means nothing) where they are."""
    lead = [i for i in range(a.ndim - 1) if a.shape[i] != 1]
    by_stride = iter(sorted(lead, key=lambda i: -abs(a.strides[i])))  # stable: ties keep order
    return tuple(next(by_stride) if i in lead else i for i in range(a.ndim - 1)) + (a.ndim - 1,)


def _new_in_layout_of(backend, a, shape):
    """A new array of ``shape`` (``a``'s number of dims) laid out in memory in the axis order of
    ``a``: a transposed view of an array whose axes are in that order. None when that order is
    the plain C order (the backend allocates such arrays itself)."""
    order = _memory_order(a)
    if order == tuple(range(a.ndim)):
        return None
    base = backend.zeros(tuple(shape[i] for i in order), a.dtype)
    return backend.transpose(base, tuple(sorted(range(a.ndim), key=order.__getitem__)))


def _gradients_in_layout(backend, inputs):
    """New arrays for the gradients of ``inputs``, each laid out as its input; None when every
    input is in C order (the backend's own arrays are then the same)."""
    outs = [_new_in_layout_of(backend, a, a.shape) for a in inputs]
    if all(out is None for out in outs):
        return None
    return tuple(backend.zeros(a.shape, a.dtype) if out is None else out
                 for a, out in zip(inputs, outs))


class PackedCausalSelfAttention(Function):
    """qkv (B, L, 3D), laid out (3, H, Dh) in the last dim -> y (B, L, D), heads merged.

    The same numbers as splitting qkv into q, k, v (B, H, L, Dh), causal attention and merging
    the heads with ``transpose(1, 2).reshape``, in one Function over the backend's
    ``packed_attention_forward/backward`` (the CPU kernels read the heads where they lie and
    write y and the (B, L, 3D) gradient in place). Done as separate ops (``Attention`` lays
    o and the gradients out as the heads, so those ops copy no heads), it takes nine nodes: a
    split whose backward concatenates the three gradients into a new (B, L, 3D) array, a
    reshape and a transpose for each of q, k, v, and a transpose and a reshape for the merge;
    one Function has neither the nodes nor the concatenation.
    """

    @staticmethod
    def forward(ctx, qkv, n_heads, scale):
        y, lse = ctx.backend.packed_attention_forward(qkv, n_heads, scale)
        ctx.save_for_backward(qkv, y, lse)
        ctx.n_heads, ctx.scale = n_heads, scale
        return y

    @staticmethod
    def backward(ctx, dy):
        qkv, y, lse = ctx.saved_tensors
        return (ctx.backend.packed_attention_backward(dy, qkv, y, lse, ctx.n_heads, ctx.scale),
                None, None)


class AttentionProbabilities(Function):
    @staticmethod
    def forward(ctx, q, k, scale, causal, offset):
        p = ctx.backend.attention_probabilities(q, k, scale, causal, offset)
        ctx.save_for_backward(q, k, p)
        ctx.scale = scale
        return p

    @staticmethod
    def backward(ctx, g):
        q, k, p = ctx.saved_tensors
        be = ctx.backend
        # softmax backward, then the two products of s = scale * q k^T
        ds = be.mul(be.mul(p, be.sub(g, be.sum(be.mul(g, p), -1, True))), ctx.scale)
        swap = tuple(range(q.ndim - 2)) + (q.ndim - 1, q.ndim - 2)
        dq = be.matmul(ds, k) if ctx.needs_input_grad[0] else None
        dk = be.matmul(be.transpose(ds, swap), q) if ctx.needs_input_grad[1] else None
        return dq, dk, None, None, None


def _check(name, q, k, v=None):
    """Validate (..., L, D) inputs with equal leading dims; returns the default scale 1/sqrt(D)."""
    ts = (("q", q), ("k", k)) + ((("v", v),) if v is not None else ())
    for label, t in ts:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {label} must be a Tensor, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise TypeError(f"{name}: {label} must be floating point, got {t.dtype}")
    shapes = ", ".join(f"{label} {t.shape}" for label, t in ts)
    if len({t.dtype for _, t in ts}) != 1:
        raise TypeError(f"{name}: q, k, v must share one dtype, got "
                        + ", ".join(f"{label} {t.dtype}" for label, t in ts))
    if any(t.ndim < 2 for _, t in ts) or len({t.ndim for _, t in ts}) != 1:
        raise ValueError(f"{name}: q, k, v must be (..., L, D) with the same number of dims, got "
                         f"{shapes}")
    if (q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]
            or (v is not None and (v.shape[:-2] != k.shape[:-2] or v.shape[-2] != k.shape[-2]))):
        raise ValueError(f"{name}: need q (..., Lq, D), k (..., Lk, D), v (..., Lk, Dv) with the "
                         f"same leading dims, got {shapes}")
    if k.shape[-2] < 1 or q.shape[-1] < 1 or (v is not None and v.shape[-1] < 1):
        raise ValueError(f"{name}: need at least one key and positive feature sizes, got {shapes}")
    return 1.0 / math.sqrt(q.shape[-1])


def _as_4d(t):
    """(..., L, D) -> (B, H, L, D): the kernels run over a (batch, head) grid."""
    if t.ndim == 4:
        return t
    lead = math.prod(t.shape[:-2])
    return reshape(t, (1, lead) + t.shape[-2:])


def _attention(q, k, v, scale, causal, offset):
    o = Attention.apply(_as_4d(q), _as_4d(k), _as_4d(v), float(scale), bool(causal), int(offset))
    return o if q.ndim == 4 else reshape(o, q.shape[:-1] + v.shape[-1:])


def scaled_dot_product_attention(q, k, v, is_causal=False, scale=None):
    """``softmax(scale * q k^T [+ causal mask]) v`` with PyTorch's semantics.

    q ``(..., Lq, D)``, k ``(..., Lk, D)``, v ``(..., Lk, Dv)`` -> ``(..., Lq, Dv)``; usually
    ``(B, H, L, D)``. ``scale`` defaults to ``1/sqrt(D)``. ``is_causal``: query i sees keys
    ``0..i`` (top-left aligned, as PyTorch, when ``Lq != Lk``).
    """
    default = _check("scaled_dot_product_attention", q, k, v)
    return _attention(q, k, v, default if scale is None else scale, is_causal, 0)


def causal_attention(q, k, v, scale=None):
    """Causal attention where the ``Lq`` queries are the last ``Lq`` of the ``Lk`` positions.

    Query i (absolute position ``Lk - Lq + i``) sees keys ``0..Lk - Lq + i``: the new tokens of
    a KV-cached step attend to the whole cache and causally to each other. Needs ``Lq <= Lk``.
    """
    default = _check("causal_attention", q, k, v)
    if q.shape[-2] > k.shape[-2]:
        raise ValueError(f"causal_attention: more queries than keys (q {q.shape}, k {k.shape}); "
                         "the queries must be the last positions of the keys")
    return _attention(q, k, v, default if scale is None else scale, True,
                      k.shape[-2] - q.shape[-2])


def packed_causal_self_attention(qkv, n_heads, scale=None):
    """Causal multi-head self-attention on a fused projection: qkv ``(B, L, 3D)`` -> ``(B, L, D)``.

    The last dim of ``qkv`` holds q, k, v side by side, each as ``n_heads`` heads of width
    ``Dh = D / n_heads`` (nanoGPT's ``c_attn`` layout); the result has the heads merged in the
    same order. Equal to ``scaled_dot_product_attention(q, k, v, is_causal=True)`` on the split
    ``(B, H, L, Dh)`` heads followed by ``transpose(1, 2).reshape(B, L, D)``, in one Function.
    ``scale`` defaults to ``1/sqrt(Dh)``.
    """
    if not isinstance(qkv, Tensor):
        raise TypeError(f"packed_causal_self_attention: qkv must be a Tensor, got "
                        f"{type(qkv).__name__}")
    if qkv.dtype.kind != "f":
        raise TypeError(f"packed_causal_self_attention: qkv must be floating point, got "
                        f"{qkv.dtype}")
    if not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"packed_causal_self_attention: n_heads must be a positive int, got "
                         f"{n_heads!r}")
    if qkv.ndim != 3 or qkv.shape[1] < 1 or qkv.shape[2] % (3 * n_heads) or qkv.shape[2] == 0:
        raise ValueError(f"packed_causal_self_attention: qkv must be (B, L, 3 * D) with L >= 1 "
                         f"and D a positive multiple of n_heads={n_heads}, got {qkv.shape}")
    head_dim = qkv.shape[2] // (3 * n_heads)
    return PackedCausalSelfAttention.apply(
        qkv, n_heads, float(1.0 / math.sqrt(head_dim) if scale is None else scale))


def attention_probabilities(q, k, is_causal=False, scale=None, offset=0):
    """The attention weights ``softmax(scale * q k^T [+ mask])``: ``(..., Lq, Lk)``, rows sum to 1.

    ``is_causal`` and ``scale`` as in ``scaled_dot_product_attention``; ``offset`` shifts the
    causal diagonal (query i sees keys ``0..i + offset``; ``Lk - Lq`` for cached queries).
    """
    default = _check("attention_probabilities", q, k)
    if offset < 0:
        raise ValueError(f"attention_probabilities: offset must be >= 0, got {offset}")
    return AttentionProbabilities.apply(q, k, float(default if scale is None else scale),
                                        bool(is_causal), int(offset))
