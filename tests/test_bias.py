"""CPU bias kernels (tinyfw/backend/cpu/bias.py) against NumPy, their reference: the row add in
place and the column sum, on the kernels' inputs and on everything that falls back to NumPy."""
import numpy as np
import pytest

from tinyfw.backend import cpu as cpu_backend
from tinyfw.backend.cpu import bias

TOL = {np.float32: dict(rtol=2e-6, atol=1e-5), np.float64: dict(rtol=1e-13, atol=1e-12)}


def rng(seed=0):
    return np.random.default_rng(seed)


def test_the_backend_uses_them():
    assert cpu_backend.iadd is bias.iadd and cpu_backend.sum is bias.sum


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
