"""Matrix multiplication (batched, broadcast, 1-D promotion as ``numpy.matmul``) and ``linear``."""
from ..autograd import Function
from .shape import reshape


class MatMul(Function):
    """``a @ b`` for a, b with at least 2 dims; batch dims broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        be = ctx.backend
        da = db = None
        if ctx.needs_input_grad[0]:
            # dA = G B^T ; broadcast batch dims are summed back by the engine
            db_axes = tuple(range(b.ndim - 2)) + (b.ndim - 1, b.ndim - 2)
            da = be.matmul(g, be.transpose(b, db_axes))
        if ctx.needs_input_grad[1]:
            da_axes = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
            if a.ndim > 2 and b.ndim == 2:
                # Shared weight: one big (K, N*) @ (N*, M) product instead of a batch of small
                # ones followed by a sum: same numbers, far less work.
                k = a.shape[-1]
                a2 = be.reshape(a, (-1, k))
                g2 = be.reshape(g, (-1, g.shape[-1]))
                db = be.matmul(be.transpose(a2, (1, 0)), g2)
            else:
                db = be.matmul(be.transpose(a, da_axes), g)
        return da, db


def matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got shapes {a.shape} and "
                         f"{b.shape}")
    a2 = reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({a2.shape[-1]} != {b2.shape[-2]})")
    batch_a, batch_b = a2.shape[:-2], b2.shape[:-2]
    for x, y in zip(reversed(batch_a), reversed(batch_b)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"matmul: batch dims of {a.shape} and {b.shape} cannot be broadcast")
    if a.device != b.device:
        raise ValueError(f"matmul: operands on different devices ({a.device}, {b.device})")
    y = MatMul.apply(a2, b2)
    if a.ndim == 1:
        y = reshape(y, y.shape[:-2] + y.shape[-1:])
    if b.ndim == 1:
        y = reshape(y, y.shape[:-1])
    return y


class Linear(Function):
    """``y = x W^T + b`` over the last dim of x, leading dims flattened into one matmul."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        be = ctx.backend
        x2 = be.reshape(x, (-1, x.shape[-1]))
        w_t = be.transpose(weight, (1, 0))
        y = be.matmul(x2, w_t) if bias is None else be.addmm(bias, x2, w_t)
        ctx.save_for_backward(x2, weight)
        ctx.in_shape = x.shape
        ctx.has_bias = bias is not None
        return be.reshape(y, x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, weight = ctx.saved_tensors
        be = ctx.backend
        g2 = be.reshape(g, (-1, g.shape[-1]))
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = be.reshape(be.matmul(g2, weight), ctx.in_shape)
        if ctx.needs_input_grad[1]:
            dw = be.matmul(be.transpose(g2, (1, 0)), x2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = be.sum(g2, axis=0)
        return dx, dw, db


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with weight ``(out, in)``, x ``(..., in)``."""
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                         f"{weight.shape} (expected input (..., {weight.shape[-1] if weight.ndim else '?'}))")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias of shape {bias.shape} does not match weight of shape "
                         f"{weight.shape}")
    return Linear.apply(x, weight, bias)
