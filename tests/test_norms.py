"""LayerNorm and RMSNorm: Numba kernels == NumPy reference, the reference == finite differences,
gradchecks of the ops (float64, with and without affine parameters, multi-dim shapes,
non-contiguous inputs), PyTorch parity when torch is importable, errors, and the nn modules.
"""
import numpy as np
import pytest

import tinyfw as fw
from conftest import launch_path
from tinyfw.backend.cpu import norms as kernels
from tinyfw.backend.cpu import rms_norm as rms_kernels
from tinyfw.backend.reference import norms as ref
from tinyfw.nn.normalization import LayerNorm, RMSNorm
from tinyfw.ops.norms import layer_norm, rms_norm

DTYPES = [np.float32, np.float64]
# kernel vs reference: both sum rows in the input dtype (kernel: SIMD partial sums; NumPy: pairwise)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
AFFINE = [(True, True), (True, False), (False, False), (False, True)]
SHAPES = [(1, 1), (7,), (3, 5), (2, 3, 17), (4, 1, 33), (0, 4)]


@pytest.fixture(params=["serial", "parallel"])
def path(request, monkeypatch):
    """Run the kernels on the calling thread or through the prange drivers, whatever the size."""
    return launch_path(monkeypatch, "NORMS", request.param)


def rng(seed=0):
    return np.random.default_rng(seed)


def make(shape, dtype, affine, seed=0):
    g = rng(seed)
    x = (2 * g.standard_normal(shape) + 0.5).astype(dtype)
    d = shape[-1]
    w = g.standard_normal(d).astype(dtype) if affine[0] else None
    b = g.standard_normal(d).astype(dtype) if affine[1] else None
    dy = g.standard_normal(shape).astype(dtype)
    return x, w, b, dy


def assert_close(got, want, dtype, what):
    if want is None:
        assert got is None, what
        return
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == dtype, (what, got.dtype)
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[dtype])


def numeric_vjp(f, x, dy, h=1e-6):
    """sum(dy * df/dx) by central differences, entry by entry (float64, small x)."""
    grad = np.zeros_like(x)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += h
        xm.flat[i] -= h
        grad.flat[i] = np.sum((f(xp) - f(xm)) * dy) / (2 * h)
    return grad


# ----------------------------------------------------------------------------------------------
# kernels == reference
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_kernels_match_reference(shape, affine, dtype, path):
    x, w, b, dy = make(shape, dtype, affine)
    want = ref.layer_norm_forward(x, w, b, 1e-5)
    got = kernels.layer_norm_forward(x, w, b, 1e-5)
    for g, r, name in zip(got, want, ("y", "mean", "rstd")):
        assert_close(g, r, dtype, name)
    mean, rstd = want[1], want[2]
    want = ref.layer_norm_backward(dy, x, w, mean, rstd)
    got = kernels.layer_norm_backward(dy, x, w, mean, rstd)
    for g, r, name in zip(got, want, ("dx", "dw", "db")):
        assert_close(g, r, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", AFFINE[:3])
@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm_kernels_match_reference(shape, affine, dtype, path):
    x, w, _, dy = make(shape, dtype, affine)
    want = ref.rms_norm_forward(x, w, 1e-6)
    got = rms_kernels.rms_norm_forward(x, w, 1e-6)
    for g, r, name in zip(got, want, ("y", "rstd")):
        assert_close(g, r, dtype, name)
    want = ref.rms_norm_backward(dy, x, w, want[1])
    got = rms_kernels.rms_norm_backward(dy, x, w, got[1])
    for g, r, name in zip(got, want, ("dx", "dw")):
        assert_close(g, r, dtype, name)


def test_kernels_accept_non_contiguous_inputs(path):
    x, w, b, dy = make((6, 9), np.float64, (True, True))
    xt, dyt = x.T, dy.T           # (9, 6) views with strides the kernels must not misread
    w6, b6 = w[:6].copy(), b[:6].copy()
    y, mean, rstd = kernels.layer_norm_forward(xt, w6, b6, 1e-5)
    yr, meanr, rstdr = ref.layer_norm_forward(np.ascontiguousarray(xt), w6, b6, 1e-5)
    np.testing.assert_allclose(y, yr, **TOL[np.float64])
    for g, r in zip(kernels.layer_norm_backward(dyt, xt, w6, mean, rstd),
                    ref.layer_norm_backward(np.ascontiguousarray(dyt), np.ascontiguousarray(xt),
                                            w6, meanr, rstdr)):
        np.testing.assert_allclose(g, r, **TOL[np.float64])
    y, rstd = rms_kernels.rms_norm_forward(xt, w6, 1e-6)
    np.testing.assert_allclose(y, ref.rms_norm_forward(np.ascontiguousarray(xt), w6, 1e-6)[0],
                               **TOL[np.float64])


def test_layer_norm_kernel_is_accurate_on_large_offsets_in_float32(path):
    """Rows with a large mean and a tiny spread: the kernel's shifted statistics (float32 sums of
    c = x - x[0] and c^2) give the float64 answer; an unshifted E[x^2] - E[x]^2 in float32 would
    return garbage here."""
    g = rng(3)
    x64 = 1e4 + 1e-2 * g.standard_normal((5, 64))
    x32 = x64.astype(np.float32)
    y32, _, _ = kernels.layer_norm_forward(x32, None, None, 1e-12)
    y64, _, _ = ref.layer_norm_forward(x32.astype(np.float64), None, None, 1e-12)
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-4)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_layer_norm_one_pass_variance_is_accurate_wherever_the_first_element_lies(offset, path):
    """The float32 kernel takes the variance in one pass from sums of x - x[0] and its square,
    which cancels when x[0] lies far from the row's mean; past VARIANCE_SHIFT_LIMIT it sums the
    centred squares instead. x[0] swept from -30 to 30 standard deviations covers both sides of
    the switch: rstd stays within a few ulps of float64 (measured: at most 6e-7 relative, where
    the two-pass version had 2e-7)."""
    g = rng(5)
    base = g.standard_normal((121, 64))
    base[:, 0] = np.linspace(-30, 30, 121)
    x32 = (offset + base).astype(np.float32)
    x64 = x32.astype(np.float64)   # the same values, for the exact statistics
    dmu = x64.mean(axis=1) - x64[:, 0]
    ratio = dmu ** 2 / x64.var(axis=1)
    limit = kernels.VARIANCE_SHIFT_LIMIT
    assert (ratio < 0.5 * limit).any() and (ratio > 2 * limit).any()   # both branches run
    y, mean, rstd = kernels.layer_norm_forward(x32, None, None, 1e-12)
    y64, mean64, rstd64 = ref.layer_norm_forward(x64, None, None, 1e-12)
    np.testing.assert_allclose(rstd, rstd64, rtol=2e-6)
    np.testing.assert_allclose(mean, mean64, rtol=2e-7, atol=1e-5)   # float32 sums of |c| <= 30
    np.testing.assert_allclose(y, y64, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_parameter_gradients_over_many_row_chunks(dtype, path):
    """dw, db summed over more rows than one partial sum covers (ROWS_PER_PARTIAL): the chunk
    partials (input dtype), added in float64, stay within a few ulps of the exact sums, relative to
    the sum of the magnitudes of the terms (a float32 sum with cancellation has no better bound;
    NumPy's row-by-row float32 sum is no closer)."""
    n = 5 * kernels.ROWS_PER_PARTIAL + 3
    x, w, b, dy = make((n, 24), dtype, (True, True), seed=4)
    bound = 1e-6 if dtype == np.float32 else 1e-14
    as64 = [a.astype(np.float64) for a in (dy, x, w)]

    _, mean, rstd = kernels.layer_norm_forward(x, w, b, 1e-5)
    xhat = (as64[1] - mean.astype(np.float64)[:, None]) * rstd.astype(np.float64)[:, None]
    _, dw, db = kernels.layer_norm_backward(dy, x, w, mean, rstd)
    for got, terms in ((dw, as64[0] * xhat), (db, as64[0])):
        assert got.dtype == dtype
        assert np.all(np.abs(got - terms.sum(0)) <= bound * np.abs(terms).sum(0))

    _, rstd = rms_kernels.rms_norm_forward(x, w, 1e-6)
    _, dw = rms_kernels.rms_norm_backward(dy, x, w, rstd)
    terms = as64[0] * as64[1] * rstd.astype(np.float64)[:, None]
    assert np.all(np.abs(dw - terms.sum(0)) <= bound * np.abs(terms).sum(0))


# ----------------------------------------------------------------------------------------------
# reference == definitions
# ----------------------------------------------------------------------------------------------

def test_layer_norm_reference_forward_matches_definition():
    x, w, b, _ = make((4, 10), np.float64, (True, True))
    y, mean, rstd = ref.layer_norm_forward(x, w, b, 1e-5)
    for r in range(4):
        mu = sum(x[r]) / 10
        var = sum((v - mu) ** 2 for v in x[r]) / 10
        np.testing.assert_allclose(y[r], (x[r] - mu) / np.sqrt(var + 1e-5) * w + b, rtol=1e-12)
        np.testing.assert_allclose([mean[r], rstd[r]], [mu, 1 / np.sqrt(var + 1e-5)], rtol=1e-12)


def test_rms_norm_reference_forward_matches_definition():
    x, w, _, _ = make((4, 10), np.float64, (True, False))
    y, rstd = ref.rms_norm_forward(x, w, 1e-6)
    for r in range(4):
        rms = np.sqrt(sum(v * v for v in x[r]) / 10 + 1e-6)
        np.testing.assert_allclose(y[r], x[r] / rms * w, rtol=1e-12)
        np.testing.assert_allclose(rstd[r], 1 / rms, rtol=1e-12)


@pytest.mark.parametrize("affine", AFFINE)
def test_layer_norm_reference_backward_matches_finite_differences(affine):
    x, w, b, dy = make((3, 6), np.float64, affine, seed=5)
    y, mean, rstd = ref.layer_norm_forward(x, w, b, 1e-5)
    dx, dw, db = ref.layer_norm_backward(dy, x, w, mean, rstd)
    np.testing.assert_allclose(dx, numeric_vjp(lambda a: ref.layer_norm_forward(a, w, b, 1e-5)[0],
                                               x, dy), rtol=1e-6, atol=1e-8)
    if w is not None:
        np.testing.assert_allclose(
            dw, numeric_vjp(lambda a: ref.layer_norm_forward(x, a, b, 1e-5)[0], w, dy),
            rtol=1e-6, atol=1e-8)
    else:
        assert dw is None
    bias = b if b is not None else np.zeros(6)
    np.testing.assert_allclose(
        db, numeric_vjp(lambda a: ref.layer_norm_forward(x, w, a, 1e-5)[0], bias, dy),
        rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_reference_backward_matches_finite_differences(with_weight):
    x, w, _, dy = make((3, 6), np.float64, (with_weight, False), seed=6)
    y, rstd = ref.rms_norm_forward(x, w, 1e-6)
    dx, dw = ref.rms_norm_backward(dy, x, w, rstd)
    np.testing.assert_allclose(dx, numeric_vjp(lambda a: ref.rms_norm_forward(a, w, 1e-6)[0],
                                               x, dy), rtol=1e-6, atol=1e-8)
    if with_weight:
        np.testing.assert_allclose(
            dw, numeric_vjp(lambda a: ref.rms_norm_forward(x, a, 1e-6)[0], w, dy),
            rtol=1e-6, atol=1e-8)
    else:
        assert dw is None


# ----------------------------------------------------------------------------------------------
# ops: gradchecks (float64)
# ----------------------------------------------------------------------------------------------

def t64(a, requires_grad=True):
    return fw.tensor(np.asarray(a, np.float64), dtype=fw.float64, requires_grad=requires_grad)


@pytest.mark.parametrize("affine", AFFINE)
def test_layer_norm_gradcheck(affine):
    x, w, b, _ = make((2, 3, 5), np.float64, affine, seed=7)
    inputs = (t64(x),) + tuple(t64(p) for p in (w, b) if p is not None)

    def fn(x, *params):
        it = iter(params)
        weight = next(it) if affine[0] else None
        bias = next(it) if affine[1] else None
        return layer_norm(x, 5, weight, bias)
    assert fw.gradcheck(fn, inputs)


@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_gradcheck(with_weight):
    x, w, _, _ = make((2, 3, 5), np.float64, (with_weight, False), seed=8)
    inputs = (t64(x),) + ((t64(w),) if with_weight else ())
    assert fw.gradcheck(lambda x, *p: rms_norm(x, (5,), p[0] if p else None), inputs)


def test_norm_gradchecks_on_multi_dim_normalized_shape_and_transposed_input():
    g = rng(9)
    base = t64(g.standard_normal((3, 4, 2)))
    w, b = t64(g.standard_normal((4, 3))), t64(g.standard_normal((4, 3)))
    # transpose(0, 2) makes the normalised block non-contiguous in memory
    assert fw.gradcheck(lambda x, w, b: layer_norm(x.transpose(0, 2), (4, 3), w, b),
                        (base, w, b))
    assert fw.gradcheck(lambda x, w: rms_norm(x.transpose(0, 2), (4, 3), w), (base, w))
    assert fw.gradcheck(lambda x: layer_norm(x.transpose(0, 1), 2), (base,))


def test_ops_run_on_float32_and_keep_the_dtype():
    x = fw.randn(3, 8)
    w, b = fw.ones(8, requires_grad=True), fw.zeros(8, requires_grad=True)
    y = layer_norm(x, 8, w, b)
    assert y.dtype == np.float32
    y.sum().backward()
    assert w.grad.dtype == np.float32 and b.grad.dtype == np.float32
    assert rms_norm(x, 8).dtype == np.float32


def test_layer_norm_output_is_normalised():
    y = layer_norm(fw.tensor(rng(1).standard_normal((6, 50)) * 7 + 3, dtype=fw.float64), 50,
                   eps=0.0).numpy()
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-12)
    r = rms_norm(fw.tensor(rng(2).standard_normal((6, 50)) * 7 + 3, dtype=fw.float64), 50,
                 eps=0.0).numpy()
    np.testing.assert_allclose((r * r).mean(-1), 1, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

def test_layer_norm_errors_name_the_op_and_shapes():
    x = fw.randn(2, 5)
    with pytest.raises(ValueError, match=r"layer_norm.*\(4,\).*\(2, 5\)"):
        layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"layer_norm: weight of shape \(4,\)"):
        layer_norm(x, 5, fw.ones(4))
    with pytest.raises(ValueError, match=r"layer_norm: bias of shape \(5, 1\)"):
        layer_norm(x, 5, None, fw.ones(5, 1))
    with pytest.raises(TypeError, match=r"layer_norm: weight dtype float64"):
        layer_norm(x, 5, fw.ones(5, dtype=fw.float64))
    with pytest.raises(ValueError, match="normalized_shape"):
        layer_norm(x, ())
    with pytest.raises(TypeError, match="floating point"):
        layer_norm(fw.tensor(np.arange(5)), 5)


def test_rms_norm_errors_name_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"rms_norm.*\(3, 5\).*\(5, 3\)"):
        rms_norm(fw.randn(5, 3), (3, 5))
    with pytest.raises(ValueError, match=r"rms_norm: weight of shape \(2,\)"):
        rms_norm(fw.randn(5, 3), 3, fw.ones(2))


def test_kernel_wrappers_reject_wrong_parameter_shapes():
    x = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"layer_norm_forward: weight must have shape \(5,\)"):
        kernels.layer_norm_forward(x, np.ones(4), None, 1e-5)
    with pytest.raises(ValueError, match=r"rms_norm_forward: weight must have shape \(5,\)"):
        rms_kernels.rms_norm_forward(x, np.ones((5, 1)), 1e-6)


# ----------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------

def test_layer_norm_module_parameters_and_forward():
    m = LayerNorm(6)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(m.weight.numpy(), np.ones(6))
    np.testing.assert_array_equal(m.bias.numpy(), np.zeros(6))
    m.weight.data[...] = rng(0).standard_normal(6)
    m.bias.data[...] = rng(1).standard_normal(6)
    x = fw.randn(2, 3, 6)
    np.testing.assert_allclose(m(x).numpy(), layer_norm(x, 6, m.weight, m.bias).numpy())
    m(x).sum().backward()
    assert m.weight.grad.shape == (6,) and m.bias.grad.shape == (6,)

    no_bias = LayerNorm(6, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]
    assert no_bias.bias is None
    assert list(LayerNorm(6, elementwise_affine=False).parameters()) == []
    assert set(LayerNorm((2, 3)).state_dict()) == {"weight", "bias"}


def test_rms_norm_module_parameters_and_forward():
    m = RMSNorm(6, eps=1e-5)
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    x = fw.randn(4, 6)
    np.testing.assert_allclose(m(x).numpy(), rms_norm(x, 6, m.weight, 1e-5).numpy())
    with pytest.raises(ValueError, match="RMSNorm"):
        RMSNorm(0)


# ----------------------------------------------------------------------------------------------
# PyTorch parity
# ----------------------------------------------------------------------------------------------

def _torch_parity(fw_fn, torch_fn, arrays):
    torch = pytest.importorskip("torch")
    ours = [t64(a) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, yt = fw_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = rng(11).standard_normal(y.shape)
    y.backward(up)
    yt.backward(torch.tensor(up))
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_layer_norm_matches_torch():
    torch = pytest.importorskip("torch")
    g = rng(12)
    x, w, b = g.standard_normal((3, 4, 8)) * 3 + 1, g.standard_normal(8), g.standard_normal(8)
    _torch_parity(lambda x, w, b: layer_norm(x, 8, w, b, eps=1e-5),
                  lambda x, w, b: torch.nn.functional.layer_norm(x, (8,), w, b, eps=1e-5),
                  [x, w, b])
    x2, w2 = g.standard_normal((5, 2, 3)), g.standard_normal((2, 3))
    _torch_parity(lambda x, w: layer_norm(x, (2, 3), w),
                  lambda x, w: torch.nn.functional.layer_norm(x, (2, 3), w), [x2, w2])


def test_rms_norm_matches_torch():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.nn.functional, "rms_norm"):
        pytest.skip("this torch has no rms_norm")
    g = rng(13)
    x, w = g.standard_normal((3, 4, 8)) * 3, g.standard_normal(8)
    _torch_parity(lambda x, w: rms_norm(x, 8, w, eps=1e-6),
                  lambda x, w: torch.nn.functional.rms_norm(x, (8,), w, eps=1e-6), [x, w])
    _torch_parity(lambda x: rms_norm(x, (4, 8), eps=1e-3),
                  lambda x: torch.nn.functional.rms_norm(x, (4, 8), eps=1e-3), [x])
