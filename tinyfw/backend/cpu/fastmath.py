"""Vectorisable float32 math for Numba kernels: functions that LLVM can inline into a loop and
run 8 lanes wide, where a libm call (``np.exp``, ``math.exp``) is a scalar call per element.

Shared by the float32 GELU, cross-entropy (``core_kernels.py``) and softmax attention
(``attention.py``). The error function family (``erf_float32``, ``erfc_float32``,
``normal_cdf_pdf_float32``) serves the exact float32 GELU.
"""
import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["exp_float32", "exp_of_dtype", "erfc_float32", "erf_float32",
           "normal_cdf_pdf_float32"]


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the int32 ``bits`` (a free register reinterpret)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _fma_float32(typingctx, a, b, c):
    """a * b + c for float32 with one rounding (LLVM's fma; a vfmadd on FMA hardware)."""
    if not (a == types.float32 and b == types.float32 and c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return types.float32(types.float32, types.float32, types.float32), codegen


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
    two_n = _float32_from_bits(np.int32(n * _F32(1 << 23) + _F32(127 << 23)))   # one exact FMA
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


# ----------------------------------------------------------------------------------------------
# The error function family
# ----------------------------------------------------------------------------------------------
# For z >= 0 the scaled complementary error function erfcx(z) = exp(z^2) erfc(z) falls smoothly
# from 1 at z = 0 to ~1 / (z sqrt(pi)) as z -> inf, and a rational function N(z) / D(z) with
# deg D = deg N + 1 follows it closely (the form of Cody's erfc approximations, Math. Comp. 23
# (1969) 631-637). Here N has degree 4 and D degree 5, fitted for this code by iteratively
# reweighted linear least squares on the relative error over z in [0, 10], in float64 against
# SciPy's erfcx: relative error 5.7e-9 before float32 rounding. All ten coefficients are
# positive, so for z >= 0 the float32 Horner sums cancel nothing; their roundings leave
# N(z) / D(z) within ~4e-7. Then
#
#     erfc(z) = erfcx(z) exp(-z^2)  for z >= 0,      erfc(-z) = 2 - erfc(z),
#     Phi(-z) = erfc(z / sqrt 2) / 2,                Phi(z) = 1 - Phi(-z),
#
# with no cancellation in either tail, and erf(x) = 1 - erfc(x) where that subtraction loses
# nothing (|x| >= 1/2, erf >= 0.52); below, erf(x) / x is a degree-4 polynomial in x^2 (a Remez
# fit of the relative error on [0, 1/4]: 1.4e-9). exp(-z^2) is exp_float32 of the float32
# rounding of -z^2, corrected to first order by the rounding error (exact through an FMA), so
# the exponent keeps its accuracy where z^2 is large. Each branch is a select: loops over these
# functions vectorise.
_ERFCX_N = tuple(_F32(c) for c in (
    1.000000006e+00, 1.237582798e+00, 7.307372957e-01, 2.288055908e-01, 3.270976798e-02))
_ERFCX_D = tuple(_F32(c) for c in (
    1.000000000e+00, 2.365962533e+00, 2.400430939e+00, 1.323750403e+00, 4.055741663e-01,
    5.797584086e-02))
_HALF_ERFCX_N = tuple(_F32(0.5) * c for c in _ERFCX_N)   # exact: a power of 2
_ERF_SMALL_MAX = _F32(0.5)
# erf(x) / x - 1 = R(x^2) on |x| < 1/2: x + x R(x^2) rounds the result once, where x P(x^2)
# would round P(x^2) ~ 1.1 and its leading coefficient 2 / sqrt(pi) first.
_ERF_SMALL = tuple(_F32(c) for c in (
    1.283791656e-01, -3.7612608573e-01, 1.1282822810e-01, -2.6757184283e-02, 4.7179900987e-03))
_ONE32, _TWO32 = _F32(1.0), _F32(2.0)
# Past |x| = 10, exp(-x^2) (< e^-100) is flushed to 0 by exp_float32: clamping there changes no
# result, keeps N and D far from overflow and x^2's rounding error finite for infinite x.
_ERFC_X_MAX = _F32(10.0)


@njit(inline="always", fastmath={"contract"})
def _clamp_abs(x, limit):
    """min(|x|, limit), NaN kept as NaN."""
    a = abs(x)
    return limit if a > limit else a


@njit(inline="always", fastmath={"contract"})
def _erfcx_float32(z, n):
    """exp(z^2) erfc(z) for float32 0 <= z <= 10: N(z) / D(z) (see above), times 1/2 with
    n = _HALF_ERFCX_N (N's coefficients halved) instead of n = _ERFCX_N."""
    d = _ERFCX_D
    num = n[0] + z * (n[1] + z * (n[2] + z * (n[3] + z * n[4])))
    den = d[0] + z * (d[1] + z * (d[2] + z * (d[3] + z * (d[4] + z * d[5]))))
    return num / den


@njit(inline="always", fastmath={"contract"})
def _exp_of_minus_square_float32(a, scale):
    """exp(-scale a^2) for float32 0 <= a <= 10 and scale 1 or 1/2 (so that -scale a is
    exact): -scale a^2 = u + u_rest with u its float32 rounding and u_rest the (exact, FMA)
    remainder, and exp(u + u_rest) = exp(u) (1 + u_rest) to first order."""
    m = -scale * a
    u = m * a
    u_rest = _fma_float32(m, a, -u)
    e = exp_float32(u)
    return e + e * u_rest


@njit(inline="always", fastmath={"contract"})
def erfc_float32(x):
    """erfc(x) for float32 x, vectorisable: N(|x|) / D(|x|) exp(-x^2) for x >= 0, 2 - that
    below (see the comment above). Relative error below 5e-7 (8 ulps) wherever erfc(x) is a
    normal float32 (x < 9.19); results below 2^-126 are denormals with absolute error below
    2^-126, or 0 past x ~ 9.3, where exp_float32 flushes. erfc(-inf) = 2, erfc(inf) = 0,
    erfc(NaN) = NaN. Bounds: over every float32 in [-14, 14] (tests/test_fastmath.py checks
    them on a dense grid)."""
    a = _clamp_abs(x, _ERFC_X_MAX)
    tail = _erfcx_float32(a, _ERFCX_N) * _exp_of_minus_square_float32(a, _ONE32)
    return tail if x >= _ZERO32 else _TWO32 - tail


@njit(inline="always", fastmath={"contract"})
def erf_float32(x):
    """erf(x) for float32 x, vectorisable: x + x R(x^2) for |x| < 1/2, sign(x) (1 -
    erfc_float32(|x|)) beyond (see the comment above). Error below 3 ulps of the result
    (relative 3e-7), denormal x included; erf(+-0) = +-0, erf(+-inf) = +-1, erf(NaN) = NaN.
    Bounds: over every float32 in [-14, 14] (tests/test_fastmath.py checks them on a dense
    grid)."""
    s = x * x
    c = _ERF_SMALL
    small = x + x * (c[0] + s * (c[1] + s * (c[2] + s * (c[3] + s * c[4]))))
    large = _ONE32 - erfc_float32(abs(x))
    if abs(x) < _ERF_SMALL_MAX:
        return small
    return large if x > _ZERO32 else -large


_SQRT_HALF32 = _F32(math.sqrt(0.5))
_INV_SQRT_2PI32 = _F32(1.0 / math.sqrt(2.0 * math.pi))
# Past |x| = 14, exp(-x^2 / 2) (< e^-98) is flushed to 0 by exp_float32; |x| / sqrt 2 stays
# below erfcx's 10.
_NORMAL_X_MAX = _F32(14.0)


@njit(inline="always", fastmath={"contract"})
def normal_cdf_pdf_float32(x):
    """(Phi(x), phi(x)), the standard normal distribution function and density, for float32
    x, vectorisable, sharing one exp: phi(x) = exp(-x^2 / 2) / sqrt(2 pi), and Phi(-|x|) =
    erfcx(|x| / sqrt 2) exp(-x^2 / 2) / 2, Phi(|x|) = 1 - Phi(-|x|) (see the comment above).
    Both keep their relative accuracy in the tails: relative error below 6e-7 for Phi and
    3e-7 for phi wherever the result is a normal float32; past |x| = 14 the tails are 0.
    x = inf gives (1, 0), -inf (0, 0), NaN (NaN, NaN). Bounds: over every float32 in
    [-14, 14] (tests/test_fastmath.py checks them on a dense grid)."""
    a = _clamp_abs(x, _NORMAL_X_MAX)
    gauss = _exp_of_minus_square_float32(a, _HALF32)
    half_erfc = _erfcx_float32(a * _SQRT_HALF32, _HALF_ERFCX_N) * gauss
    cdf = half_erfc if x < _ZERO32 else _ONE32 - half_erfc
    return cdf, _INV_SQRT_2PI32 * gauss
