"""Elementwise operations with NumPy broadcasting.

Backward formulas return gradients in the broadcast result's shape; the engine sums them back to
each input's shape (``autograd.unbroadcast``). Python numbers may stand for either operand.
"""
from ..autograd import Function
from ..backend import backend_for
from ..tensor import Tensor, full


def _check_broadcast(name, a, b):
    sa = getattr(a, "shape", ())
    sb = getattr(b, "shape", ())
    for x, y in zip(reversed(sa), reversed(sb)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{name}: shapes {tuple(sa)} and {tuple(sb)} cannot be broadcast "
                             "together")


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return ctx.backend.add(a, b)

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return ctx.backend.sub(a, b)

    @staticmethod
    def backward(ctx, g):
        return g, (ctx.backend.neg(g) if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.mul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        mul = ctx.backend.mul
        return (mul(g, b) if ctx.needs_input_grad[0] else None,
                mul(g, a) if ctx.needs_input_grad[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.div(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        be = ctx.backend
        da = be.div(g, b) if ctx.needs_input_grad[0] else None
        # d(a/b)/db = -a / b^2
        db = be.neg(be.div(be.mul(g, a), be.mul(b, b))) if ctx.needs_input_grad[1] else None
        return da, db


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        y = ctx.backend.pow(a, b)
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        be = ctx.backend
        da = db = None
        if ctx.needs_input_grad[0]:
            # b * a^(b-1), written so that a = 0 with b >= 1 gives no 0 * inf
            if isinstance(b, (int, float)):
                da = be.mul(g, be.mul(b, be.pow(a, b - 1))) if b != 0 else be.mul(g, 0)
            else:
                # b a^(b-1), and exactly 0 where b = 0 (else 0 * inf = nan at a = 0)
                slope = be.mul(b, be.pow(a, be.sub(b, 1)))
                da = be.mul(g, be.where(be.eq(b, 0), 0, slope))
        if ctx.needs_input_grad[1]:
            # d(a^b)/db = a^b log a: NaN for a < 0 (undefined, as PyTorch), and 0 at a = 0
            # (where a^b is 0 or 1 and PyTorch defines it as 0) instead of 0 * -inf
            at_zero = be.eq(a, 0)
            log_a = be.log(be.where(at_zero, 1, a))
            db = be.mul(g, be.where(at_zero, 0, be.mul(y, log_a)))
        return da, db


def _binary(function, name):
    def op(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            _check_broadcast(name, a, b)
        return function.apply(a, b)
    op.__name__ = name
    return op


add = _binary(Add, "add")
sub = _binary(Sub, "sub")
mul = _binary(Mul, "mul")
div = _binary(Div, "div")


def pow(a, b):  # noqa: A001
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        _check_broadcast("pow", a, b)
    if not isinstance(a, Tensor):
        # number ** tensor: make the base a tensor of the exponent's dtype and device
        a = full(b.shape, a, dtype=b.dtype, device=b.device)
    return Pow.apply(a, b)


def rsub(a, b):
    return Sub.apply(b, a)


def rdiv(a, b):
    return Div.apply(b, a)


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return ctx.backend.neg(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.neg(g)


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return ctx.backend.mul(g, y)


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.backend.div(g, x)


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        be = ctx.backend
        return be.div(be.mul(g, 0.5), y)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        be = ctx.backend
        return be.mul(g, be.sub(1, be.mul(y, y)))


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        be = ctx.backend
        return be.mul(g, be.mul(y, be.sub(1, y)))


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.backend.mul(g, ctx.backend.sign(x))  # sign(0) = 0, as PyTorch


class Clip(Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return ctx.backend.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        be = ctx.backend
        # gradient passes where x is inside [lo, hi] (boundaries included, as PyTorch)
        inside = be.full(x.shape, True, bool)
        if ctx.lo is not None:
            inside = be.mul(inside, be.ge(x, ctx.lo))
        if ctx.hi is not None:
            inside = be.mul(inside, be.le(x, ctx.hi))
        return be.where(inside, g, 0), None, None


class Extremum(Function):
    """maximum (``use_max``) or minimum of two operands; ties split the gradient equally, as
    PyTorch's maximum / minimum do."""

    @staticmethod
    def forward(ctx, a, b, use_max):
        be = ctx.backend
        ctx.save_for_backward(a, b)
        ctx.use_max = use_max
        return be.maximum(a, b) if use_max else be.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        be = ctx.backend
        a_wins = be.astype(be.gt(a, b) if ctx.use_max else be.lt(a, b), g.dtype)
        tie = be.mul(be.astype(be.eq(a, b), g.dtype), 0.5)
        wa = be.add(a_wins, tie)
        return be.mul(g, wa), be.mul(g, be.sub(1, wa)), None


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = cond
        return ctx.backend.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        be = ctx.backend
        return (None,
                be.where(ctx.cond, g, 0) if ctx.needs_input_grad[1] else None,
                be.where(ctx.cond, 0, g) if ctx.needs_input_grad[2] else None)


def neg(x):
    return Neg.apply(x)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def abs(x):  # noqa: A001
    return Abs.apply(x)


def clip(x, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    return Clip.apply(x, min, max)


clamp = clip


def maximum(a, b):
    _check_broadcast("maximum", a, b)
    return Extremum.apply(a, b, True)


def minimum(a, b):
    _check_broadcast("minimum", a, b)
    return Extremum.apply(a, b, False)


def where(condition, a, b):
    """``a`` where ``condition`` else ``b`` (broadcast); the gradient follows the chosen side."""
    if not isinstance(condition, Tensor) or condition.dtype.kind != "b":
        raise TypeError(f"where: condition must be a bool tensor, got "
                        f"{getattr(condition, 'dtype', type(condition).__name__)}")
    for t in (a, b):
        if isinstance(t, Tensor):
            _check_broadcast("where", condition, t)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = full(condition.shape, float(a), device=condition.device)
    return Where.apply(condition, a, b)


def masked_fill(x, mask, value):
    """``x`` with ``value`` where ``mask`` is true (mask broadcasts against x)."""
    if not isinstance(mask, Tensor) or mask.dtype.kind != "b":
        raise TypeError(f"masked_fill: mask must be a bool tensor, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    _check_broadcast("masked_fill", x, mask)
    return Where.apply(mask, value, x)


def _compare(name):
    def op(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            _check_broadcast(name, a, b)
            if a.device != b.device:
                raise ValueError(f"{name}: tensors on different devices ({a.device}, {b.device})")
        ref = a if isinstance(a, Tensor) else b
        be = backend_for(ref.device)
        ad = a.data if isinstance(a, Tensor) else a
        bd = b.data if isinstance(b, Tensor) else b
        return Tensor._wrap(getattr(be, name)(ad, bd), ref.device)
    op.__name__ = name
    return op


eq = _compare("eq")
ne = _compare("ne")
lt = _compare("lt")
le = _compare("le")
gt = _compare("gt")
ge = _compare("ge")
