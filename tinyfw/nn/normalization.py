"""Normalisation layers: ``LayerNorm`` (Ba et al., 2016) and ``RMSNorm`` (Zhang & Sennrich, 2019).

Both normalise over the trailing ``normalized_shape`` dims (usually the model width ``D``) and then
scale by a learned ``weight`` (initialised to ones); LayerNorm also centres and adds a learned
``bias`` (zeros). The math lives in ``tinyfw/ops/norms.py`` and ``backend/reference/norms.py``.
"""
from ..ops import norms as _norms
from ..tensor import ones, zeros
from .module import Module, Parameter

__all__ = ["LayerNorm", "RMSNorm"]


def _shape(name, normalized_shape):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"{name}: normalized_shape must be a positive int or a non-empty tuple of "
                         f"positive ints, got {normalized_shape!r}")
    return shape


class LayerNorm(Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape`` dims.

    ``bias=False`` drops the bias (as nanoGPT allows); ``elementwise_affine=False`` drops both.
    """

    def __init__(self, normalized_shape, eps=1e-5, bias=True, elementwise_affine=True, dtype=None,
                 device="cpu"):
        super().__init__()
        self.normalized_shape = _shape("LayerNorm", normalized_shape)
        self.eps = float(eps)
        if elementwise_affine:
            self.weight = Parameter(ones(*self.normalized_shape, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = Parameter(zeros(*self.normalized_shape, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return _norms.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.weight is not None}, bias={self.bias is not None}")


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last ``len(normalized_shape)`` dims."""

    def __init__(self, normalized_shape, eps=1e-6, elementwise_affine=True, dtype=None,
                 device="cpu"):
        super().__init__()
        self.normalized_shape = _shape("RMSNorm", normalized_shape)
        self.eps = float(eps)
        if elementwise_affine:
            self.weight = Parameter(ones(*self.normalized_shape, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)

    def forward(self, x):
        return _norms.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.weight is not None}")
