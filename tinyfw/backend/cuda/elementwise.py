"""Elementwise primitives with NumPy broadcasting: unary, binary, comparisons, where, clip.

One approach for all of them: the host works out the broadcast output shape, the result dtype
(NumPy's promotion rules) and each input's element strides (0 along broadcast dimensions); a
1-D grid-stride kernel then walks the output in C order and reads every input through its
strides. The kernels differ only in the scalar device function they apply, so they come from one
factory per arity, keyed by the op's name.
"""
import math

import numpy as np
from numba import cuda

from .runtime import (FLOAT_DTYPES, NUMERIC_DTYPES, SUPPORTED_DTYPES, broadcast_strides,
                      check_dtype, coalesce, device_array, empty, flat, is_device_array,
                      is_scalar, kernel_factory, launch_1d, prod, strided_offset)

__all__ = [
    "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "abs", "sign", "erf",
    "add", "sub", "mul", "div", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "where", "clip",
    "cast_to", "iadd",
]


# ----------------------------------------------------------------------------------------------
# Scalar device functions: the per-element meaning of each op
# ----------------------------------------------------------------------------------------------

@cuda.jit(device=True, inline=True)
def _identity(a):
    return a


@cuda.jit(device=True, inline=True)
def _neg(a):
    return -a


@cuda.jit(device=True, inline=True)
def _exp(a):
    return math.exp(a)


@cuda.jit(device=True, inline=True)
def _log(a):
    return math.log(a)


@cuda.jit(device=True, inline=True)
def _sqrt(a):
    return math.sqrt(a)


@cuda.jit(device=True, inline=True)
def _tanh(a):
    return math.tanh(a)


@cuda.jit(device=True, inline=True)
def _sigmoid(a):
    # Never exponentiate a large positive number: both branches stay in (0, 1] before dividing.
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


@cuda.jit(device=True, inline=True)
def _abs(a):
    return -a if a < 0 else a


@cuda.jit(device=True, inline=True)
def _sign(a):
    if a > 0:
        return 1
    if a < 0:
        return -1
    return a  # 0 stays 0 and NaN stays NaN, as in NumPy


@cuda.jit(device=True, inline=True)
def _erf(a):
    return math.erf(a)


@cuda.jit(device=True, inline=True)
def _add(a, b):
    return a + b


@cuda.jit(device=True, inline=True)
def _sub(a, b):
    return a - b


@cuda.jit(device=True, inline=True)
def _mul(a, b):
    return a * b


@cuda.jit(device=True, inline=True)
def _div(a, b):
    return a / b


@cuda.jit(device=True, inline=True)
def _pow(a, b):
    return a ** b


@cuda.jit(device=True, inline=True)
def _maximum(a, b):
    # NaN wins, as in np.maximum: if b is NaN, "a > b" is false and b is returned.
    if a > b or a != a:
        return a
    return b


@cuda.jit(device=True, inline=True)
def _minimum(a, b):
    if a < b or a != a:
        return a
    return b


@cuda.jit(device=True, inline=True)
def _eq(a, b):
    return a == b


@cuda.jit(device=True, inline=True)
def _ne(a, b):
    return a != b


@cuda.jit(device=True, inline=True)
def _lt(a, b):
    return a < b


@cuda.jit(device=True, inline=True)
def _le(a, b):
    return a <= b


@cuda.jit(device=True, inline=True)
def _gt(a, b):
    return a > b


@cuda.jit(device=True, inline=True)
def _ge(a, b):
    return a >= b


@cuda.jit(device=True, inline=True)
def _where(c, a, b):
    return a if c else b


_UNARY_FUNCS = {"identity": _identity, "neg": _neg, "exp": _exp, "log": _log, "sqrt": _sqrt,
                "tanh": _tanh, "sigmoid": _sigmoid, "abs": _abs, "sign": _sign, "erf": _erf}
_BINARY_FUNCS = {"add": _add, "sub": _sub, "mul": _mul, "div": _div, "pow": _pow,
                 "maximum": _maximum, "minimum": _minimum, "eq": _eq, "ne": _ne, "lt": _lt,
                 "le": _le, "gt": _gt, "ge": _ge}


# ----------------------------------------------------------------------------------------------
# Kernels: one per arity, specialised by the scalar function
# ----------------------------------------------------------------------------------------------

@kernel_factory
def map1_kernel(name):
    """``out[i] = f(a[offset + strided(i)])``: unary ops, casts, and every strided gather."""
    f = _UNARY_FUNCS[name]

    def kernel(out, a, a_offset, shape, a_strides, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = f(a[a_offset + strided_offset(i, shape, a_strides)])
    return cuda.jit(kernel)


@kernel_factory
def map2_kernel(name):
    """``out[i] = f(a[strided(i)], b[strided(i)])`` over the broadcast shape."""
    f = _BINARY_FUNCS[name]

    def kernel(out, a, b, shape, a_strides, b_strides, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = f(a[strided_offset(i, shape, a_strides)],
                       b[strided_offset(i, shape, b_strides)])
    return cuda.jit(kernel)


@kernel_factory
def where_kernel():
    """``out[i] = a[.] if cond[.] else b[.]`` over the broadcast shape."""
    def kernel(out, cond, a, b, shape, c_strides, a_strides, b_strides, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = _where(cond[strided_offset(i, shape, c_strides)],
                            a[strided_offset(i, shape, a_strides)],
                            b[strided_offset(i, shape, b_strides)])
    return cuda.jit(kernel)


# ----------------------------------------------------------------------------------------------
# Host side: operands, dtypes, broadcasting
# ----------------------------------------------------------------------------------------------

def _operand(x, op):
    """A device array, or a scalar (Python or NumPy) kept as is for dtype promotion."""
    if is_scalar(x):
        return x
    return device_array(x, op)


def _result_dtype(op, operands):
    """NumPy's promotion (NEP 50: Python scalars are weak) over arrays and scalars."""
    parts = [x.dtype if is_device_array(x) else x for x in operands]
    try:
        return np.result_type(*parts)
    except TypeError as e:
        raise TypeError(f"{op}: cannot combine dtypes {parts}: {e}") from None


def _broadcast_shape(op, operands):
    shapes = [tuple(x.shape) if is_device_array(x) else () for x in operands]
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"{op}: shapes {' and '.join(map(str, shapes))} "
                         f"cannot be broadcast together") from None


def _as_dtype(x, dtype, op):
    """``x`` as a device array of ``dtype``: scalars are uploaded, other dtypes are cast."""
    if not is_device_array(x):
        return cuda.to_device(np.asarray(x, dtype=dtype).reshape(1))
    return x if x.dtype == dtype else cast_to(x, dtype)


def _map(name, operands, compute_dtype, out_dtype, op):
    """Broadcast ``operands`` (cast to ``compute_dtype``) and apply kernel ``name``."""
    shape = _broadcast_shape(op, operands)
    arrays = [_as_dtype(x, compute_dtype, op) for x in operands]
    strides = [broadcast_strides(x.shape, shape) if is_device_array(x) else (0,) * len(shape)
               for x in operands]
    out = empty(shape, out_dtype)
    n = prod(shape)
    if n == 0:
        return out
    kshape, *kstrides = coalesce(shape, *strides)
    flats = [flat(a) for a in arrays]
    if len(operands) == 1:
        launch_1d(map1_kernel(name), n, flat(out), flats[0], 0, kshape, kstrides[0], n)
    else:
        launch_1d(map2_kernel(name), n, flat(out), flats[0], flats[1], kshape, *kstrides, n)
    return out


def cast_to(x, dtype):
    """``x.astype(dtype)`` as a new C-contiguous device array (bool targets test ``!= 0``)."""
    dtype = check_dtype("astype", dtype)
    x = device_array(x, "astype")
    if dtype == np.bool_:
        return _map("ne", [x, 0], x.dtype, dtype, "astype")
    out = empty(x.shape, dtype)
    n = x.size
    launch_1d(map1_kernel("identity"), n, flat(out), flat(x), 0, (max(n, 1),), (1,), n)
    return out


# ----------------------------------------------------------------------------------------------
# Public primitives
# ----------------------------------------------------------------------------------------------

def _unary(name, float_only):
    def primitive(x):
        x = device_array(x, name)
        dtype = x.dtype
        if float_only and dtype in (np.dtype(np.int32), np.dtype(np.int64)):
            dtype = np.dtype(np.float64)  # as NumPy: exp(int) is float64
        check_dtype(name, dtype, FLOAT_DTYPES if float_only else NUMERIC_DTYPES)
        return _map(name, [x], dtype, dtype, name)
    primitive.__name__ = name
    primitive.__doc__ = f"np.{name} of a device array ({'float' if float_only else 'numeric'})."
    return primitive


neg = _unary("neg", float_only=False)
abs = _unary("abs", float_only=False)
sign = _unary("sign", float_only=False)
exp = _unary("exp", float_only=True)
log = _unary("log", float_only=True)
sqrt = _unary("sqrt", float_only=True)
tanh = _unary("tanh", float_only=True)
sigmoid = _unary("sigmoid", float_only=True)
erf = _unary("erf", float_only=True)


def _binary(name, allowed, comparison=False):
    def primitive(a, b):
        operands = [_operand(a, name), _operand(b, name)]
        if not any(is_device_array(x) for x in operands):
            raise TypeError(f"{name}: at least one operand must be a cuda device array")
        dtype = _result_dtype(name, operands)
        if name == "div" and dtype in (np.dtype(np.int32), np.dtype(np.int64)):
            dtype = np.dtype(np.float64)  # true division, as NumPy
        check_dtype(name, dtype, allowed)
        out_dtype = np.dtype(np.bool_) if comparison else dtype
        return _map(name, operands, dtype, out_dtype, name)
    primitive.__name__ = name
    primitive.__doc__ = f"np.{name} of two device arrays / scalars, with broadcasting."
    return primitive


add = _binary("add", NUMERIC_DTYPES)
sub = _binary("sub", NUMERIC_DTYPES)
mul = _binary("mul", NUMERIC_DTYPES)
div = _binary("div", FLOAT_DTYPES)
pow = _binary("pow", FLOAT_DTYPES)
maximum = _binary("maximum", NUMERIC_DTYPES)
minimum = _binary("minimum", NUMERIC_DTYPES)
eq = _binary("eq", SUPPORTED_DTYPES, comparison=True)
ne = _binary("ne", SUPPORTED_DTYPES, comparison=True)
lt = _binary("lt", NUMERIC_DTYPES, comparison=True)
le = _binary("le", NUMERIC_DTYPES, comparison=True)
gt = _binary("gt", NUMERIC_DTYPES, comparison=True)
ge = _binary("ge", NUMERIC_DTYPES, comparison=True)


def where(cond, a, b):
    """``np.where(cond, a, b)`` with broadcasting; ``cond`` is tested for truth (``!= 0``)."""
    operands = [_operand(cond, "where"), _operand(a, "where"), _operand(b, "where")]
    if not any(is_device_array(x) for x in operands):
        raise TypeError("where: at least one operand must be a cuda device array")
    shape = _broadcast_shape("where", operands)
    dtype = check_dtype("where", _result_dtype("where", operands[1:]))
    c = _as_dtype(operands[0], np.dtype(np.bool_), "where")
    x = _as_dtype(operands[1], dtype, "where")
    y = _as_dtype(operands[2], dtype, "where")
    strides = [broadcast_strides(v.shape, shape) if is_device_array(v) else (0,) * len(shape)
               for v in operands]
    out = empty(shape, dtype)
    n = prod(shape)
    if n:
        kshape, cs, xs, ys = coalesce(shape, *strides)
        launch_1d(where_kernel(), n, flat(out), flat(c), flat(x), flat(y), kshape, cs, xs, ys, n)
    return out


def clip(x, lo, hi):
    """``np.clip(x, lo, hi)`` = ``minimum(maximum(x, lo), hi)``; ``lo`` / ``hi`` may be None."""
    x = device_array(x, "clip")
    if lo is None and hi is None:
        return _map("identity", [x], x.dtype, x.dtype, "clip")  # a copy, as np.clip
    out = x
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return out


def iadd(target, value):
    """``target += value`` in place (``value`` broadcast to ``target``'s shape and cast to its
    dtype): how autograd accumulates gradients without replacing the array it holds."""
    if not (is_device_array(target) and target.is_c_contiguous()):
        raise TypeError("iadd: target must be a C-contiguous cuda device array")
    check_dtype("iadd", target.dtype, NUMERIC_DTYPES)
    value = _operand(value, "iadd")
    shape = tuple(target.shape)
    if _broadcast_shape("iadd", [target, value]) != shape:
        raise ValueError(f"iadd: value of shape {tuple(getattr(value, 'shape', ()))} does not "
                         f"broadcast to the target's shape {shape}")
    v = _as_dtype(value, target.dtype, "iadd")
    n = prod(shape)
    if n:
        # Thread i reads target[i] and writes target[i] only: safe in place.
        v_strides = (broadcast_strides(v.shape, shape) if is_device_array(value)
                     else (0,) * len(shape))
        kshape, t_strides, kv = coalesce(shape, broadcast_strides(shape, shape), v_strides)
        launch_1d(map2_kernel("add"), n, flat(target), flat(target), flat(v), kshape, t_strides,
                  kv, n)
