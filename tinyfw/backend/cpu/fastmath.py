"""Vectorisable float32 math for Numba kernels: functions that LLVM can inline into a loop and
run 8 lanes wide, where a libm call (``np.exp``, ``math.exp``) is a scalar call per element.

Shared by the float32 GELU, cross-entropy (``core_kernels.py``) and softmax attention
(``attention.py``).
"""
import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["exp_float32", "exp_of_dtype"]


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the int32 ``bits`` (a free register reinterpret)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())
    return types.float32(types.int32), codegen


_F32 = np.float32
_HALF32, _ZERO32 = _F32(0.5), _F32(0.0)
_LOG2_E = _F32(1.0 / math.log(2.0))
# ln 2 split in two (Cody & Waite): n * _LN2_HI is exact for |n| < 2^11 (_LN2_HI has 13
# significant bits), so u - n ln 2 loses nothing to cancellation.
_LN2_HI = _F32(0.693145751953125)
_LN2_LO = _F32(math.log(2.0) - 0.693145751953125)
# Below this, exp(u) (< 1.7e-38) is flushed to 0: 2^n stays a normal float, and no denormals
# (which are slow) reach the arithmetic. The float64 reference gives 0 or a denormal there.
_EXP_MIN = _F32(-87.0)
_EXP_TAYLOR = tuple(_F32(1.0 / math.factorial(k)) for k in range(8))


@njit(inline="always", fastmath={"contract"})
def exp_float32(u):
    """exp(u) for float32 u <= ~1, vectorisable: exp(u) = 2^n exp(r), n = round(u / ln 2),
    |r| <= ln 2 / 2; exp(r) by its Taylor series to r^7 (remainder < 6e-9 relative); 2^n built
    directly as float bits. Returns 0 for u < -87 and for NaN (callers only feed NaN when x is
    NaN, and x carries the NaN into their result)."""
    uc = u if u >= _EXP_MIN else _EXP_MIN
    n = np.floor(uc * _LOG2_E + _HALF32)
    r = (uc - n * _LN2_HI) - n * _LN2_LO
    c = _EXP_TAYLOR
    p = c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * (c[6]
                                                                              + r * c[7]))))))
    two_n = _float32_from_bits(np.int32((n + _F32(127.0)) * _F32(1 << 23)))
    return p * two_n if u >= _EXP_MIN else _ZERO32


def exp_of_dtype(u):
    """exp in the dtype of u inside kernels (a pure-Python stand-in for the overload below).
    For float32, u must stay below ~88 (where 2^n leaves the float32 range); every caller
    feeds differences to a row maximum or log-sum-exp, <= 0 up to rounding."""
    return np.exp(u)


@overload(exp_of_dtype, inline="always")
def _exp_of_dtype_overload(u):
    if u == types.float32:
        # The vectorisable float32 exp; its NaN -> 0 becomes NaN -> NaN as in np.exp, so a NaN
        # input still poisons its row as in the references. Callers feed x - max(x) or x - lse:
        # <= 0 up to rounding, -inf, or NaN.
        return lambda u: u if u != u else exp_float32(u)
    # float64 keeps libm's exp: the gradchecks need it exact.
    return lambda u: np.exp(u)
