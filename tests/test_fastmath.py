"""The vectorisable float32 error functions of tinyfw/backend/cpu/fastmath.py against float64
references (SciPy's erf / erfc, math's exp), over a dense grid of float32 bit patterns that
covers both tails, the denormals and the branch points, and at the special values.

Errors are measured in ulps of the float32 nearest to the float64 reference, or relative to it;
the bounds asserted are the ones the docstrings state."""
import math

import numpy as np
from numba import njit
from scipy.special import erf as erf64, erfc as erfc64

from tinyfw.backend.cpu.fastmath import erf_float32, erfc_float32, normal_cdf_pdf_float32

TINY32 = float(np.finfo(np.float32).tiny)       # 2^-126, the smallest normal float32
MAX32 = float(np.finfo(np.float32).max)


@njit
def _erf_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = erf_float32(x[i])
    return out


@njit
def _erfc_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = erfc_float32(x[i])
    return out


@njit
def _normal_all(x):
    cdf, pdf = np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        cdf[i], pdf[i] = normal_cdf_pdf_float32(x[i])
    return cdf, pdf


def float32_grid(limit, stride=509):
    """Every stride-th float32 in [-limit, limit] by bit pattern (so the grid is as dense in
    relative terms near 0, denormals included, as near the limit), both signs, plus the
    places where the functions change form."""
    top = int(np.array(limit, np.float32).view(np.int32))
    positive = np.arange(0, top + 1, stride, dtype=np.int32).view(np.float32)
    edges = []
    for v in (0.5, 9.19, 9.3, 10.0, 10.0 * math.sqrt(2.0), 14.0, 5.8, 0.75):
        centre = int(np.array(v, np.float32).view(np.int32))
        edges.append(np.arange(centre - 300, centre + 301, dtype=np.int32).view(np.float32))
    x = np.concatenate([positive] + edges)
    return np.concatenate([x, -x])


def ulps(value, reference):
    """|value - reference| in units of the spacing of float32 at the reference."""
    ref32 = np.abs(reference).astype(np.float32)
    spacing = np.spacing(ref32).astype(np.float64)
    return np.abs(value.astype(np.float64) - reference) / spacing


def relative(value, reference):
    return np.abs(value.astype(np.float64) - reference) / np.abs(reference)


def test_erf_is_within_3_ulps_everywhere():
    x = float32_grid(12.0)
    ref = erf64(x.astype(np.float64))
    err = ulps(_erf_all(x), ref)
    assert err.max() <= 3.0, f"erf_float32: {err.max():.2f} ulps at x = {x[err.argmax()]!r}"
    normal = np.abs(ref) >= TINY32
    assert relative(_erf_all(x)[normal], ref[normal]).max() <= 3e-7


def test_erfc_relative_error_where_the_result_is_normal():
    x = float32_grid(10.5)
    ref = erfc64(x.astype(np.float64))
    got = _erfc_all(x)
    normal = ref >= TINY32
    rel = relative(got[normal], ref[normal])
    assert rel.max() <= 5e-7, f"erfc_float32: {rel.max():.3g} at x = {x[normal][rel.argmax()]!r}"
    # below the normal range: denormals or 0, off by less than the smallest normal
    assert np.abs(got[~normal].astype(np.float64) - ref[~normal]).max() < TINY32
    assert (got[x >= 9.4] == 0).all()


def test_normal_cdf_and_pdf_relative_errors():
    x = float32_grid(14.5)
    xd = x.astype(np.float64)
    cdf_ref = 0.5 * erfc64(-xd / math.sqrt(2.0))
    pdf_ref = np.exp(-0.5 * xd * xd) / math.sqrt(2.0 * math.pi)
    cdf, pdf = _normal_all(x)
    for name, got, ref, bound in (("cdf", cdf, cdf_ref, 6e-7), ("pdf", pdf, pdf_ref, 3e-7)):
        normal = ref >= TINY32
        rel = relative(got[normal], ref[normal])
        assert rel.max() <= bound, f"{name}: {rel.max():.3g} at x = {x[normal][rel.argmax()]!r}"
        assert np.abs(got[~normal].astype(np.float64) - ref[~normal]).max() < TINY32
    assert (pdf[np.abs(x) >= 14] == 0).all() and (cdf[x <= -14] == 0).all()
    assert (cdf[x >= 6] == 1).all()


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, MAX32, -MAX32, 1e-45, -1e-45, 1e-40,
                     TINY32, -TINY32, 0.5, -0.5, 1e30, -1e30], dtype=np.float32)


def test_special_values():
    x = SPECIALS
    with np.errstate(invalid="ignore"):
        e, ec = _erf_all(x), _erfc_all(x)
        cdf, pdf = _normal_all(x)
    # signed zeros: erf keeps the sign, erfc(+-0) = 1, Phi(+-0) = 1/2
    assert e[0] == 0 and not np.signbit(e[0]) and e[1] == 0 and np.signbit(e[1])
    assert ec[0] == ec[1] == 1.0
    assert cdf[0] == cdf[1] == 0.5
    np.testing.assert_allclose(pdf[:2], 1 / math.sqrt(2 * math.pi), rtol=2e-7)
    # infinities and the largest finite values
    np.testing.assert_array_equal(e[[2, 3, 5, 6, 14, 15]], [1, -1, 1, -1, 1, -1])
    np.testing.assert_array_equal(ec[[2, 3, 5, 6, 14, 15]], [0, 2, 0, 2, 0, 2])
    np.testing.assert_array_equal(cdf[[2, 3, 5, 6, 14, 15]], [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(pdf[[2, 3, 5, 6, 14, 15]], 0)
    # NaN in, NaN out
    assert np.isnan(e[4]) and np.isnan(ec[4]) and np.isnan(cdf[4]) and np.isnan(pdf[4])
    # denormal and tiny inputs: erf(x) ~ 2x / sqrt(pi) to the denormal spacing
    ref = erf64(x[7:12].astype(np.float64))
    assert (np.abs(e[7:12].astype(np.float64) - ref) <= 2.0 ** -149 + 3e-7 * np.abs(ref)).all()
    assert np.array_equal(np.signbit(e[7:12]), np.signbit(x[7:12]))
