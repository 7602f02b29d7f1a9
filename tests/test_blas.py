"""backend/cpu/runtime/blas.py: gemm on row-major views with any row stride == NumPy's product."""
import numpy as np
import pytest
from numba import njit

from tinyfw.backend.cpu.runtime import blas
from tinyfw.backend.cpu.runtime.blas import gemm, gemm_scratch, rows_are_contiguous

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-13, atol=1e-13)}


@njit(cache=True)
def _gemm(alpha, a, trans_a, b, trans_b, beta, c):
    gemm(alpha, a, trans_a, b, trans_b, beta, c, gemm_scratch(c))


def _operand(rng, rows, cols, dtype, strided):
    """(rows, cols), C-contiguous or a view with rows 3 * cols + 1 apart."""
    if not strided:
        return rng.standard_normal((rows, cols)).astype(dtype)
    return rng.standard_normal((rows, 3 * cols + 1)).astype(dtype)[:, 1:cols + 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("m,n,k", [(5, 7, 3), (1, 4, 6), (4, 1, 1), (6, 5, 0)])
def test_gemm_equals_numpy(dtype, trans_a, trans_b, strided, m, n, k):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = _operand(rng, *((k, m) if trans_a else (m, k)), dtype, strided)
    b = _operand(rng, *((n, k) if trans_b else (k, n)), dtype, strided)
    c = _operand(rng, m, n, dtype, strided)
    want = 0.5 * ((a.T if trans_a else a) @ (b.T if trans_b else b)) + 2.0 * c
    _gemm(dtype(0.5), a, trans_a, b, trans_b, dtype(2.0), c)
    np.testing.assert_allclose(c, want, **TOL[dtype])


def test_gemm_into_a_single_row_whose_stride_is_meaningless():
    a = np.ones((1, 3))
    b = np.arange(6.0).reshape(3, 2)
    c = np.zeros((1, 2))
    c = np.lib.stride_tricks.as_strided(c, strides=(0, 8))     # numpy allows any stride here
    _gemm(1.0, a, False, b, False, 0.0, c)
    np.testing.assert_array_equal(c, [[6.0, 9.0]])


def test_gemm_with_nothing_to_compute_leaves_c_alone():
    c = np.full((0, 3), 7.0)
    _gemm(1.0, np.ones((0, 2)), False, np.ones((2, 3)), False, 0.0, c)
    assert c.shape == (0, 3)


def test_rows_are_contiguous():
    x = np.zeros((4, 6, 8), dtype=np.float32)
    assert rows_are_contiguous(x, x[:, :, :5], x[1], x.transpose(1, 0, 2))
    assert not rows_are_contiguous(x[:, :, ::2])              # elements of a row apart
    assert not rows_are_contiguous(x.transpose(0, 2, 1))      # rows are columns
    assert not rows_are_contiguous(x[:, ::-1])                # negative leading dimension
    assert not rows_are_contiguous(np.zeros(5))               # not a matrix
    assert rows_are_contiguous(x[:, :1], x[:, :, :1])          # a single row or column


def test_one_blas_thread_runs_blas_on_one_thread_and_restores_the_count():
    controls = blas.blas_thread_controls()
    if controls is None:
        pytest.skip("SciPy's BLAS exposes no thread controls here (not its bundled OpenBLAS)")
    get, set_ = controls
    before = get()
    set_(2)
    try:
        with blas.one_blas_thread():
            assert get() == 1
        assert get() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with blas.one_blas_thread():
                raise RuntimeError("inside")
        assert get() == 2                                      # restored on an exception too
    finally:
        set_(before)


def test_loaded_openblas_paths_reads_the_process_mappings(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /opt/conda/lib/libopenblasp-r0.3.21.so\n"
        "7f01-7f02 r--p 00001000 08:01 1 /opt/conda/lib/libopenblasp-r0.3.21.so\n"
        "7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/libm.so.6\n"
        "7f03-7f04 rw-p 00000000 00:00 0 [heap]\n"
        "7f04-7f05 r-xp 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libopenblas.so.0\n")
    assert blas._loaded_openblas_paths(str(maps)) == [
        "/opt/conda/lib/libopenblasp-r0.3.21.so", "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"]
    assert blas._loaded_openblas_paths(str(tmp_path / "missing")) == []
