"""Activation functions: relu, gelu (erf and tanh forms), silu, elu."""
from ..autograd import Function


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        be = ctx.backend
        return be.where(be.gt(y, 0), g, 0)  # derivative 0 at x = 0, as PyTorch


class GELU(Function):
    """Fused kernel pair ``gelu_forward`` / ``gelu_backward`` (see backend/reference/core.py)."""

    @staticmethod
    def forward(ctx, x, approximate):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return ctx.backend.gelu_forward(x, approximate)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.backend.gelu_backward(x, g, ctx.approximate), None


class SiLU(Function):
    @staticmethod
    def forward(ctx, x):
        be = ctx.backend
        s = be.sigmoid(x)
        ctx.save_for_backward(x, s)
        return be.mul(x, s)

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        be = ctx.backend
        # d/dx x s(x) = s (1 + x (1 - s))
        return be.mul(g, be.mul(s, be.add(1, be.mul(x, be.sub(1, s)))))


class ELU(Function):
    @staticmethod
    def forward(ctx, x, alpha):
        be = ctx.backend
        neg_part = be.mul(be.sub(be.exp(be.minimum(x, 0)), 1), alpha)
        y = be.where(be.gt(x, 0), x, neg_part)
        ctx.save_for_backward(x, y)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        be = ctx.backend
        # for x <= 0: d/dx alpha (e^x - 1) = y + alpha
        return be.where(be.gt(x, 0), g, be.mul(g, be.add(y, ctx.alpha))), None


def relu(x):
    return ReLU.apply(x)


def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate)


def silu(x):
    return SiLU.apply(x)


def elu(x, alpha=1.0):
    return ELU.apply(x, float(alpha))
