"""CPU bias kernels (tinyfw/backend/cpu/bias.py) against NumPy, their reference: the row add in
place and the column sum, on the kernels' inputs and on everything that falls back to NumPy."""
import numpy as np
import pytest

from tinyfw.backend import cpu as cpu_backend
from tinyfw.backend.cpu import bias
from tinyfw.backend.cpu.runtime.blas import gemm

TOL = {np.float32: dict(rtol=2e-6, atol=1e-5), np.float64: dict(rtol=1e-13, atol=1e-12)}


def rng(seed=0):
    return np.random.default_rng(seed)


def test_the_backend_uses_them():
    assert cpu_backend.iadd is bias.iadd and cpu_backend.sum is bias.sum
    assert cpu_backend.addmm is bias.addmm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(768, 512), (3, 64, 33), (4097,), (1, 5000)])
def test_iadd_of_a_row_equals_numpy(dtype, shape):
    target = rng(0).standard_normal(shape).astype(dtype)
    row = rng(1).standard_normal(shape[-1]).astype(dtype)
    want = target + row
    alias = target
    bias.iadd(target, row)
    assert target is alias
    np.testing.assert_array_equal(target, want)     # one rounding, as NumPy's


@pytest.mark.parametrize("make", [
    lambda t: t.T.copy().T,                                   # not C-contiguous
    lambda t: t.astype(np.float64),                           # dtype differs from the row's
    lambda t: t[:2],                                          # too small for the kernel
])
def test_iadd_falls_back_to_numpy(make):
    target = make(rng(0).standard_normal((100, 64)).astype(np.float32))
    row = rng(1).standard_normal(64).astype(np.float32)
    want = target + row
    bias.iadd(target, row)
    np.testing.assert_array_equal(target, want)


def test_iadd_of_a_full_array_and_of_a_scalar():
    target = rng(0).standard_normal((128, 64)).astype(np.float32)
    other = rng(1).standard_normal((128, 64)).astype(np.float32)
    want = target + other + 2
    bias.iadd(target, other)
    bias.iadd(target, np.float32(2))
    np.testing.assert_allclose(target, want, rtol=1e-6)


def test_iadd_into_a_read_only_array_is_numpys_error():
    target = np.zeros((100, 64), dtype=np.float32)
    target.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        bias.iadd(target, np.ones(64, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(768, 512), (33, 129), (100, 41), (4096, 1)])
def test_column_sum_equals_the_float64_sum(dtype, shape):
    x = rng(2).standard_normal(shape).astype(dtype)
    got = bias.sum(x, axis=0)
    assert got.dtype == dtype and got.shape == (shape[1],)
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=0), **TOL[dtype])


def test_column_sum_is_at_least_as_accurate_as_numpys():
    x = (rng(3).standard_normal((4096, 64)) + 100).astype(np.float32)
    exact = x.astype(np.float64).sum(axis=0)
    assert np.abs(bias.sum(x, 0) - exact).max() <= np.abs(x.sum(axis=0) - exact).max()


@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), (0, True), ((0, 1), False),
                                           (-1, True)])
def test_other_sums_are_numpys(axis, keepdims):
    x = rng(4).standard_normal((100, 64)).astype(np.float32)
    np.testing.assert_array_equal(bias.sum(x, axis=axis, keepdims=keepdims),
                                  np.sum(x, axis=axis, keepdims=keepdims))


def test_sums_of_ints_and_non_contiguous_arrays_are_numpys():
    ints = np.arange(100 * 64).reshape(100, 64)
    np.testing.assert_array_equal(bias.sum(ints, 0), ints.sum(0))
    x = rng(5).standard_normal((64, 100)).astype(np.float32).T
    np.testing.assert_array_equal(bias.sum(x, 0), x.sum(0))


# ------------------------------------------------------------------------------------- addmm

def _within_dot_product_bound(got, c, a, b):
    """|got - (c + a @ b)| within the rounding bound of a K-term dot product and one add,
    4 (K + 1) eps (|c| + |a| @ |b|), the exact value taken in float64 (float32) or long double."""
    wide = np.longdouble if got.dtype == np.float64 else np.float64
    exact = c.astype(wide) + a.astype(wide) @ b.astype(wide)
    scale = np.abs(c).astype(wide) + np.abs(a).astype(wide) @ np.abs(b).astype(wide)
    bound = 4 * (a.shape[1] + 1) * np.finfo(got.dtype).eps * scale
    assert np.all(np.abs(got.astype(wide) - exact) <= bound)


def _strided_rows(x):
    """x as a view whose rows lie further apart than their length (a column slice)."""
    wide = np.zeros((x.shape[0], x.shape[1] + 5), dtype=x.dtype)
    wide[:, :x.shape[1]] = x
    return wide[:, :x.shape[1]]


B_LAYOUTS = {
    "contiguous": lambda b: b,
    "transposed (Linear's weight.T)": lambda b: np.ascontiguousarray(b.T).T,
    "strided rows": _strided_rows,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", list(B_LAYOUTS))
@pytest.mark.parametrize("shape", [(64, 33, 70), (130, 700, 40), (2, 5, 2048)])
def test_addmm_goes_to_gemm_and_equals_bias_plus_product(dtype, layout, shape, monkeypatch):
    M, K, N = shape
    g = rng(6)
    a = g.standard_normal((M, K)).astype(dtype)
    b = B_LAYOUTS[layout](g.standard_normal((K, N)).astype(dtype))
    c = g.standard_normal(N).astype(dtype)
    calls = []
    monkeypatch.setattr(bias, "gemm", lambda *args: calls.append(1) or gemm(*args))
    got = bias.addmm(c, a, b)
    assert calls == [1]
    assert got.shape == (M, N) and got.dtype == dtype and got.flags.c_contiguous
    _within_dot_product_bound(got, c, a, b)


def test_addmm_takes_a_transposed_left_operand(monkeypatch):
    g = rng(7)
    a = np.ascontiguousarray(g.standard_normal((40, 64))).T     # (64, 40), Fortran order
    b, c = g.standard_normal((40, 90)), g.standard_normal(90)
    calls = []
    monkeypatch.setattr(bias, "gemm", lambda *args: calls.append(args[2]) or gemm(*args))
    _within_dot_product_bound(bias.addmm(c, a, b), c, a, b)
    assert calls == [True]      # a went to BLAS as its transpose


@pytest.mark.parametrize("case", ["one row", "small", "no contraction", "every other column",
                                  "mixed dtypes", "a bias matrix"])
def test_addmm_falls_back_to_numpy(case, monkeypatch):
    g = rng(8)
    a, b = g.standard_normal((64, 30)), g.standard_normal((30, 100))
    c = g.standard_normal(100)
    if case == "one row":
        a = a[:1]
    elif case == "small":
        a, b, c = a[:3, :5], b[:5, :7], c[:7]
    elif case == "no contraction":
        a, b = a[:, :0], b[:0]
    elif case == "every other column":
        b = g.standard_normal((30, 200))[:, ::2]
    elif case == "mixed dtypes":
        a, b = a.astype(np.float32), b.astype(np.float32)
    elif case == "a bias matrix":
        c = g.standard_normal((64, 100))
    monkeypatch.setattr(bias, "gemm", lambda *args: pytest.fail("gemm was called"))
    got = bias.addmm(c, a, b)
    want = c + a @ b
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_linear_with_a_bias_equals_numpy_through_addmm():
    import tinyfw as fw
    import tinyfw.nn.functional as F
    g = rng(9)
    x, w, c = g.standard_normal((2, 40, 33)), g.standard_normal((70, 33)), g.standard_normal(70)
    got = F.linear(fw.tensor(x), fw.tensor(w), fw.tensor(c)).numpy()
    np.testing.assert_allclose(got, x @ w.T + c, rtol=1e-12, atol=1e-12)
