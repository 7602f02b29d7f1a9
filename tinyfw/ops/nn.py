"""Softmax, log-softmax, cross-entropy, embedding and dropout.

Softmax and cross-entropy run as fused kernels (``backend/reference/core.py`` is their NumPy
meaning): one pass per row with the row max subtracted, so extreme logits give no inf or NaN.
"""
import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ..backend import backend_for
from .. import random as _random
from .shape import _axis, reshape


def _to_last(be, x, axis):
    """x with ``axis`` moved last (and the permutation that undoes it), or x itself."""
    if axis == x.ndim - 1:
        return x, None
    perm = tuple(i for i in range(x.ndim) if i != axis) + (axis,)
    return be.transpose(x, perm), tuple(np.argsort(perm))


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis, log):
        be = ctx.backend
        x, undo = _to_last(be, x, axis)
        y = be.log_softmax_forward(x) if log else be.softmax_forward(x)
        ctx.save_for_backward(y)
        ctx.undo, ctx.log = undo, log
        return y if undo is None else be.transpose(y, undo)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        be = ctx.backend
        if ctx.undo is not None:
            g = be.transpose(g, tuple(np.argsort(ctx.undo)))
        dx = be.log_softmax_backward(y, g) if ctx.log else be.softmax_backward(y, g)
        return (dx if ctx.undo is None else be.transpose(dx, ctx.undo)), None, None


def softmax(x, dim=-1):
    return Softmax.apply(x, _axis("softmax", dim, x.ndim), False)


def log_softmax(x, dim=-1):
    return Softmax.apply(x, _axis("log_softmax", dim, x.ndim), True)


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index, reduction):
        be = ctx.backend
        loss, lse = be.cross_entropy_forward(logits, target, ignore_index)
        ctx.save_for_backward(logits, target, lse)
        ctx.ignore_index, ctx.reduction = ignore_index, reduction
        if reduction == "none":
            return loss
        total = be.sum(loss)
        if reduction == "sum":
            return total
        ctx.count = int(be.to_numpy(be.sum(be.ne(target, ignore_index))))
        # all targets ignored: 0/0 = nan, as PyTorch
        return be.div(total, ctx.count) if ctx.count else be.full((), np.nan, logits.dtype)

    @staticmethod
    def backward(ctx, g):
        logits, target, lse = ctx.saved_tensors
        be = ctx.backend
        n = logits.shape[0]
        if ctx.reduction == "none":
            dloss = g
        else:
            scale = 1.0 if ctx.reduction == "sum" else 1.0 / max(ctx.count, 1)
            dloss = be.broadcast_to(be.mul(g, scale), (n,))
        dlogits = be.cross_entropy_backward(be.contiguous(dloss), logits, target, lse,
                                            ctx.ignore_index)
        return dlogits, None, None, None


def cross_entropy(logits, target, ignore_index=-100, reduction="mean"):
    """Mean (or sum, or per-element) negative log-likelihood of ``target`` under softmax(logits).

    logits ``(N, C)`` or ``(B, T, C)`` (classes last), target ``(N,)`` / ``(B, T)`` integers;
    targets equal to ``ignore_index`` contribute nothing and are not counted in the mean.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}")
    if not isinstance(target, Tensor) or target.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must be an integer tensor of class indices, got "
                        f"{getattr(target, 'dtype', type(target).__name__)}")
    if logits.dtype.kind != "f":
        raise TypeError(f"cross_entropy: logits must be floating point, got {logits.dtype}")
    if logits.ndim < 2 or target.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]} (classes in the last dim), got {target.shape}")
    C = logits.shape[-1]
    t = target.numpy()
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bad.any():
        raise ValueError(f"cross_entropy: target value {int(t[bad].flat[0])} is out of range for "
                         f"{C} classes (valid: 0..{C - 1} or ignore_index={ignore_index})")
    lead = logits.shape[:-1]
    loss = CrossEntropy.apply(reshape(logits, (-1, C)), reshape(target.long() if
                              target.dtype != np.int64 else target, (-1,)),
                              ignore_index, reduction)
    return reshape(loss, lead) if reduction == "none" else loss


class Embedding(Function):
    @staticmethod
    def forward(ctx, ids, weight):
        be = ctx.backend
        ctx.save_for_backward(ids)
        ctx.num_embeddings = weight.shape[0]
        return be.getitem(weight, ids)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved_tensors
        be = ctx.backend
        d = g.shape[-1]
        flat_ids = be.contiguous(be.reshape(ids, (-1,)))
        flat_g = be.contiguous(be.reshape(g, (-1, d)))
        return None, be.embedding_backward(flat_ids, flat_g, ctx.num_embeddings)


def embedding(ids, weight):
    """Rows of ``weight`` ``(V, D)`` picked by integer ``ids`` of any shape -> ``ids.shape + (D,)``."""
    if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer tensor, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)} (float ids are not "
                        "allowed: convert with .long())")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got {weight.shape}")
    V = weight.shape[0]
    if ids.numel():
        host = ids.numpy()
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= V:
            bad = lo if lo < 0 else hi
            raise ValueError(f"embedding: id {bad} is out of range for {V} embeddings "
                             f"(valid ids: 0..{V - 1}; ids shape {ids.shape})")
    return Embedding.apply(ids, weight)


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        be = ctx.backend
        keep = _random.generator().random(x.shape) >= p
        mask = be.from_numpy((keep / (1.0 - p)).astype(x.dtype))
        ctx.save_for_backward(mask)
        return be.mul(x, mask)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return ctx.backend.mul(g, mask), None


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, float(p))


def one_hot(ids, num_classes):
    if ids.dtype.kind not in "iu":
        raise TypeError(f"one_hot: ids must be integers, got {ids.dtype}")
    host = ids.numpy()
    if host.size and (host.min() < 0 or host.max() >= num_classes):
        raise ValueError(f"one_hot: ids must lie in [0, {num_classes}), got range "
                         f"[{host.min()}, {host.max()}]")
    out = np.zeros(host.shape + (num_classes,), dtype=np.int64)
    np.put_along_axis(out, host[..., None], 1, axis=-1)
    return Tensor(backend_for(ids.device).from_numpy(out), device=ids.device)
