"""Reductions: sum, mean, max, min, var, logsumexp, argmax, argmin.

``dim`` is None (all dims), an int or a tuple of ints; ``keepdim`` keeps reduced dims as size 1.
Backward re-inserts the reduced dims (size 1) and lets broadcasting spread the gradient.
"""
import builtins
import collections

from ..autograd import Function
from ..backend import backend_for
from ..tensor import Tensor
from .elementwise import sqrt


def normalize_dims(name, dim, ndim):
    """``dim`` as a sorted tuple of non-negative axes (all axes when None)."""
    if dim is None:
        return tuple(range(ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = []
    for d in dims:
        n = builtins.max(ndim, 1)  # a 0-d tensor accepts dim 0 / -1, as PyTorch
        if not isinstance(d, int) or not -n <= d < n:
            raise ValueError(f"{name}: dim {d!r} is out of range for a tensor with {ndim} dims")
        out.append(d % n)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: dim {dim!r} repeats a dimension")
    return tuple(sorted(out)) if ndim else ()


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.shape = x.shape
        ctx.axes = axes
        return ctx.backend.sum(x, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        g = be.reshape(g, _kept_shape(ctx.shape, ctx.axes))
        return be.broadcast_to(g, ctx.shape), None, None


class MaxMin(Function):
    """max or min over ``axes``; the gradient goes to the extreme elements, split among ties."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, use_max):
        be = ctx.backend
        y = be.max(x, axis=axes, keepdims=True) if use_max else be.min(x, axis=axes, keepdims=True)
        ctx.save_for_backward(x, y)
        ctx.axes = axes
        return y if keepdim else be.reshape(y, tuple(n for i, n in enumerate(x.shape)
                                                     if i not in axes))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        be = ctx.backend
        hit = be.astype(be.eq(x, y), g.dtype)
        count = be.sum(hit, axis=ctx.axes, keepdims=True)
        g = be.reshape(g, y.shape)
        return be.mul(hit, be.div(g, count)), None, None, None


class MaxMinAlongDim(Function):
    """``torch.max(x, dim)`` values: the gradient goes to the returned index only (the first
    extreme element), not split among ties as for a full reduction."""

    @staticmethod
    def forward(ctx, x, axis, keepdim, use_max):
        be = ctx.backend
        index = be.argmax(x, axis) if use_max else be.argmin(x, axis)
        kept = _kept_shape(x.shape, (axis,))
        y = be.max(x, axis=axis, keepdims=keepdim) if use_max else \
            be.min(x, axis=axis, keepdims=keepdim)
        ctx.index, ctx.kept, ctx.axis, ctx.shape = be.reshape(index, kept), kept, axis, x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        n = ctx.shape[ctx.axis]
        positions = be.reshape(be.arange(0, n, 1, ctx.index.dtype),
                               tuple(n if i == ctx.axis else 1 for i in range(len(ctx.shape))))
        chosen = be.astype(be.eq(positions, ctx.index), g.dtype)
        return be.mul(chosen, be.reshape(g, ctx.kept)), None, None, None


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        be = ctx.backend
        m = be.max(x, axis=axes, keepdims=True)
        # rows that are all -inf: use 0 as the shift so exp(x - m) is 0, not nan
        m = be.where(be.eq(m, float("-inf")), 0, m)
        s = be.sum(be.exp(be.sub(x, m)), axis=axes, keepdims=True)
        y = be.add(be.log(s), m)
        ctx.save_for_backward(x, y)
        ctx.axes = axes
        return y if keepdim else be.reshape(y, tuple(n for i, n in enumerate(x.shape)
                                                     if i not in axes))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        be = ctx.backend
        g = be.reshape(g, y.shape)
        return be.mul(g, be.exp(be.sub(x, y))), None, None


def sum(x, dim=None, keepdim=False):  # noqa: A001
    return Sum.apply(x, normalize_dims("sum", dim, x.ndim), keepdim)


def mean(x, dim=None, keepdim=False):
    axes = normalize_dims("mean", dim, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    if count == 0:
        raise ValueError(f"mean: reducing over an empty dimension (shape {x.shape}, dim {dim})")
    return Sum.apply(x, axes, keepdim) * (1.0 / count)


def var(x, dim=None, keepdim=False, correction=1, unbiased=None):
    """Variance with Bessel's correction by default (``correction=1``), as ``torch.var``."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    axes = normalize_dims("var", dim, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    if count - correction <= 0:
        raise ValueError(f"var: {count} elements with correction {correction} leave no degrees "
                         "of freedom")
    centred = x - mean(x, dim=axes, keepdim=True)
    return Sum.apply(centred * centred, axes, keepdim) * (1.0 / (count - correction))


def std(x, dim=None, keepdim=False, correction=1, unbiased=None):
    return sqrt(var(x, dim, keepdim, correction, unbiased))


def logsumexp(x, dim, keepdim=False):
    return LogSumExp.apply(x, normalize_dims("logsumexp", dim, x.ndim), keepdim)


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def _max_min(x, dim, keepdim, use_max):
    name = "max" if use_max else "min"
    if x.numel() == 0:
        raise ValueError(f"{name}: reducing an empty tensor of shape {x.shape}")
    if dim is None:
        return MaxMin.apply(x, normalize_dims(name, None, x.ndim), keepdim, use_max)
    if not isinstance(dim, int):
        return MaxMin.apply(x, normalize_dims(name, dim, x.ndim), keepdim, use_max)
    # torch.max(x, dim) returns (values, indices)
    (axis,) = normalize_dims(name, dim, x.ndim)
    values = MaxMinAlongDim.apply(x, axis, keepdim, use_max)
    indices = (argmax if use_max else argmin)(x, dim, keepdim)
    return MaxResult(values, indices)


def max(x, dim=None, keepdim=False):  # noqa: A001
    return _max_min(x, dim, keepdim, True)


def min(x, dim=None, keepdim=False):  # noqa: A001
    return _max_min(x, dim, keepdim, False)


def amax(x, dim=None, keepdim=False):
    return MaxMin.apply(x, normalize_dims("amax", dim, x.ndim), keepdim, True)


def amin(x, dim=None, keepdim=False):
    return MaxMin.apply(x, normalize_dims("amin", dim, x.ndim), keepdim, False)


def _arg(name, x, dim, keepdim):
    be = backend_for(x.device)
    if dim is None:
        out = getattr(be, name)(be.reshape(x.data, (-1,)), 0)
        return Tensor._wrap(be.reshape(out, (1,) * x.ndim if keepdim else ()), x.device)
    (axis,) = normalize_dims(name, dim, x.ndim)
    out = getattr(be, name)(x.data, axis)
    if keepdim:
        out = be.reshape(out, _kept_shape(x.shape, (axis,)))
    return Tensor._wrap(out, x.device)


def argmax(x, dim=None, keepdim=False):
    return _arg("argmax", x, dim, keepdim)


def argmin(x, dim=None, keepdim=False):
    return _arg("argmin", x, dim, keepdim)
