"""Layer normalisation and RMS normalisation over the trailing dimensions (PyTorch semantics).

The fused kernels (``backend/reference/norms.py`` is their NumPy meaning) normalise over the last
axis only; a multi-dimensional ``normalized_shape`` is handled here by flattening those trailing
dims into one (a reshape, so its gradient flows through the ordinary reshape op).
"""
import math

from ..autograd import Function
from ..tensor import Tensor
from .shape import reshape

__all__ = ["layer_norm", "rms_norm"]


class LayerNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, rstd = ctx.backend.layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = ctx.backend.layer_norm_backward(dy, x, weight, mean, rstd)
        return dx, dw, (db if ctx.has_bias else None), None


class RMSNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = ctx.backend.rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = ctx.backend.rms_norm_backward(dy, x, weight, rstd)
        return dx, dw, None


def _normalized_shape(name, normalized_shape):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"{name}: normalized_shape must be a positive int or a non-empty tuple "
                         f"of positive ints, got {normalized_shape!r}")
    return shape


def _check(name, x, shape, params):
    """Validate x and the affine parameters; returns the flattened size D of ``shape``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: input must be floating point, got {x.dtype}")
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"{name}: normalized_shape {shape} does not match the trailing dims of "
                         f"the input of shape {x.shape}")
    for label, p in params:
        if p is None:
            continue
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}: {label} must be a Tensor or None, got {type(p).__name__}")
        if p.shape != shape:
            raise ValueError(f"{name}: {label} of shape {p.shape} does not match normalized_shape "
                             f"{shape}")
        if p.dtype != x.dtype:
            raise TypeError(f"{name}: {label} dtype {p.dtype} differs from the input dtype "
                            f"{x.dtype}")
    return math.prod(shape)


def _flat(t, d):
    return None if t is None else reshape(t, (d,))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape`` dims.

    x ``(..., *normalized_shape)``; weight, bias ``normalized_shape`` or None; the variance is
    biased (divides by the count), as in PyTorch.
    """
    shape = _normalized_shape("layer_norm", normalized_shape)
    d = _check("layer_norm", x, shape, (("weight", weight), ("bias", bias)))
    if len(shape) == 1:
        return LayerNorm.apply(x, weight, bias, float(eps))
    y = LayerNorm.apply(reshape(x, x.shape[:x.ndim - len(shape)] + (d,)),
                        _flat(weight, d), _flat(bias, d), float(eps))
    return reshape(y, x.shape)


def rms_norm(x, normalized_shape, weight=None, eps=1e-6):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the trailing ``normalized_shape`` dims.

    x ``(..., *normalized_shape)``; weight ``normalized_shape`` or None. (PyTorch's default eps is
    the dtype's machine epsilon; tinyfw's is 1e-6, as in most RMSNorm models. Pass eps to match.)
    """
    shape = _normalized_shape("rms_norm", normalized_shape)
    d = _check("rms_norm", x, shape, (("weight", weight),))
    if len(shape) == 1:
        return RMSNorm.apply(x, weight, float(eps))
    y = RMSNorm.apply(reshape(x, x.shape[:x.ndim - len(shape)] + (d,)), _flat(weight, d),
                      float(eps))
    return reshape(y, x.shape)
