"""Core fused kernels: Numba CPU kernels == NumPy reference, and the reference == an independent
definition (finite differences of the forward for the backwards, scipy / plain Python loops,
PyTorch when it is importable, and a hand-computed Adam example).
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import launch_path
import tinyfw as fw
from tinyfw.backend import cpu as cpu_backend
from tinyfw.backend.cpu import core_kernels as kernels
from tinyfw.backend.cpu.runtime import launch
from tinyfw.backend.interface import CORE_FUSED
from tinyfw.backend.reference import core as ref

BACKENDS = [pytest.param(ref, id="reference"), pytest.param(kernels, id="numba")]
DTYPES = [np.float32, np.float64]
# kernel vs reference: the kernels sum rows in float64 and evaluate Adam (and float64 / tanh GELU)
# in float64, and float32 exact GELU with their own float32 erfc and exp, so in float32 they
# differ from NumPy by a few ulps; in float64 by rounding only.
TOL = {np.float32: dict(rtol=2e-6, atol=2e-7), np.float64: dict(rtol=1e-13, atol=1e-14)}
SHAPES = [(1,), (7,), (3, 5), (2, 3, 17), (4, 1, 33)]


@pytest.fixture(params=["serial", "split", "parallel"])
def path(request, monkeypatch):
    """Run the kernels on the calling thread, split with helper threads, or through the prange
    drivers, whatever the size."""
    return launch_path(monkeypatch, "ROWS", request.param)


def rng(seed=0):
    return np.random.default_rng(seed)


def numeric_vjp(f, x, dy, h=1e-6):
    """sum(dy * df/dx) by central differences, one input entry at a time (float64, small x)."""
    grad = np.zeros_like(x)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += h
        xm.flat[i] -= h
        grad.flat[i] = np.sum((f(xp) - f(xm)) * dy) / (2 * h)
    return grad


def torch_or_skip():
    return pytest.importorskip("torch")


def test_numba_module_defines_every_core_fused_name_and_the_backend_uses_it():
    assert set(CORE_FUSED) == set(kernels.__all__)
    for name in CORE_FUSED:
        assert getattr(cpu_backend, name) is getattr(kernels, name), name


@pytest.mark.parametrize("threshold,want", [(0, ["parallel"]), (1 << 62, [])])
def test_threshold_chooses_between_the_thread_and_the_parallel_driver(monkeypatch, threshold,
                                                                       want):
    calls = []
    driver = launch._driver

    def spy(kernel, template):
        calls.append("parallel")
        return driver(kernel, template)

    monkeypatch.setattr(launch, "_driver", spy)
    monkeypatch.setattr(launch, "ROWS", launch.ROWS._replace(pool_min_work=threshold))
    x = rng(0).standard_normal((6, 5))
    np.testing.assert_allclose(kernels.softmax_forward(x), ref.softmax_forward(x),
                               **TOL[np.float64])
    assert calls == want


def test_tiny_inputs_run_on_the_calling_thread_by_default():
    assert launch.pool_threads(launch.ROWS, 3 * 4, 3 * 4 * 5) == 1


# ----------------------------------------------------------------------------------------------
# softmax / log-softmax
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_kernels_match_reference(op, shape, dtype, path):
    g = rng(1)
    x = (3 * g.standard_normal(shape)).astype(dtype)
    dy = g.standard_normal(shape).astype(dtype)
    forward_ref, forward_k = getattr(ref, f"{op}_forward"), getattr(kernels, f"{op}_forward")
    backward_ref, backward_k = getattr(ref, f"{op}_backward"), getattr(kernels, f"{op}_backward")
    y_ref, y_k = forward_ref(x), forward_k(x)
    assert y_k.dtype == dtype and y_k.shape == shape
    np.testing.assert_allclose(y_k, y_ref, **TOL[dtype])
    dx_ref, dx_k = backward_ref(y_ref, dy), backward_k(y_ref, dy)
    assert dx_k.dtype == dtype and dx_k.shape == shape
    np.testing.assert_allclose(dx_k, dx_ref, **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_rows_are_stable(backend, dtype, path):
    x = np.array([[1e4, -1e4, -np.inf, 0.0],
                  [-1e4, -1e4, -1e4, -1e4],
                  [1e4, 1e4, -np.inf, -np.inf]], dtype=dtype)
    y = backend.softmax_forward(x)
    np.testing.assert_array_equal(y, np.array([[1, 0, 0, 0], [.25, .25, .25, .25], [.5, .5, 0, 0]],
                                              dtype=dtype))
    logy = backend.log_softmax_forward(x)
    assert not np.isnan(logy).any()
    expected = [[0.0, -2e4, -np.inf, -1e4],
                [-math.log(4)] * 4,
                [-math.log(2), -math.log(2), -np.inf, -np.inf]]
    np.testing.assert_allclose(logy, np.array(expected, dtype=dtype), rtol=1e-6)
    # the backwards stay finite too (exp(-inf) = 0 in the log-softmax one)
    dy = np.ones_like(x)
    assert np.isfinite(backend.softmax_backward(y, dy)).all()
    assert np.isfinite(backend.log_softmax_backward(logy, dy)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_kernels_accept_non_contiguous_input(dtype, path):
    g = rng(2)
    base = g.standard_normal((6, 10)).astype(dtype)
    base_dy = g.standard_normal((6, 10)).astype(dtype)
    for view in (lambda a: a[:, ::2], lambda a: a.T, lambda a: a[::2, 1:]):
        x, dy = view(base), view(base_dy)
        assert not x.flags.c_contiguous
        for op in ("softmax", "log_softmax"):
            y = getattr(ref, f"{op}_forward")(x)
            np.testing.assert_allclose(getattr(kernels, f"{op}_forward")(x), y, **TOL[dtype])
            np.testing.assert_allclose(getattr(kernels, f"{op}_backward")(y.T.copy().T, dy),
                                       getattr(ref, f"{op}_backward")(y, dy), **TOL[dtype])


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_backward_reference_is_the_vjp_of_its_forward(op):
    g = rng(3)
    x = g.standard_normal((2, 3, 5))
    dy = g.standard_normal(x.shape)
    forward, backward = getattr(ref, f"{op}_forward"), getattr(ref, f"{op}_backward")
    np.testing.assert_allclose(backward(forward(x), dy), numeric_vjp(forward, x, dy),
                               rtol=1e-6, atol=1e-8)


def test_softmax_reference_matches_the_textbook_formula_and_torch():
    x = rng(4).standard_normal((3, 7))
    e = np.exp(x)
    np.testing.assert_allclose(ref.softmax_forward(x), e / e.sum(-1, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(ref.log_softmax_forward(x), x - logsumexp(x, -1, keepdims=True),
                               rtol=1e-13)
    torch = torch_or_skip()
    t = torch.from_numpy(x)
    np.testing.assert_allclose(ref.softmax_forward(x), torch.softmax(t, -1).numpy(), rtol=1e-13)
    np.testing.assert_allclose(ref.log_softmax_forward(x), torch.log_softmax(t, -1).numpy(),
                               rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_rejects_integer_and_mixed_dtypes(backend):
    with pytest.raises(TypeError, match="softmax_forward.*int64"):
        backend.softmax_forward(np.arange(6).reshape(2, 3))
    y = np.full((2, 3), 1 / 3)
    with pytest.raises(TypeError, match="softmax_backward"):
        backend.softmax_backward(y, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"log_softmax_backward.*\(2, 3\).*\(3, 2\)"):
        backend.log_softmax_backward(y, y.T.copy())
    with pytest.raises(ValueError, match=r"log_softmax_forward.*\(4, 0\)"):
        backend.log_softmax_forward(np.zeros((4, 0)))


# ----------------------------------------------------------------------------------------------
# cross-entropy
# ----------------------------------------------------------------------------------------------

def ce_case(dtype, n=9, c=13, ignore_index=-100, seed=5):
    g = rng(seed)
    logits = (4 * g.standard_normal((n, c))).astype(dtype)
    target = g.integers(0, c, size=n).astype(np.int64)
    target[[1, n - 3]] = ignore_index
    return logits, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_cross_entropy_kernels_match_reference(dtype, ignore_index, path):
    logits, target = ce_case(dtype, ignore_index=ignore_index)
    logits[2, :] = [1e4] + [-1e4] * 11 + [-np.inf]     # extreme but finite max
    logits[3, target[3]] = -1e4                         # target logit very unlikely
    dloss = rng(6).standard_normal(len(target)).astype(dtype)
    loss_ref, lse_ref = ref.cross_entropy_forward(logits, target, ignore_index)
    loss_k, lse_k = kernels.cross_entropy_forward(logits, target, ignore_index)
    assert loss_k.dtype == lse_k.dtype == dtype and loss_k.shape == lse_k.shape == target.shape
    np.testing.assert_allclose(loss_k, loss_ref, **TOL[dtype])
    np.testing.assert_allclose(lse_k, lse_ref, **TOL[dtype])
    assert np.isfinite(loss_k).all() and (loss_k[target == ignore_index] == 0).all()
    d_ref = ref.cross_entropy_backward(dloss, logits, target, lse_ref, ignore_index)
    d_k = kernels.cross_entropy_backward(dloss, logits, target, lse_ref, ignore_index)
    assert d_k.dtype == dtype and d_k.shape == logits.shape
    np.testing.assert_allclose(d_k, d_ref, **TOL[dtype])
    assert (d_k[target == ignore_index] == 0).all()


@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_cross_entropy_reference_matches_independent_definitions(ignore_index):
    logits, target = ce_case(np.float64, n=6, c=5, ignore_index=ignore_index, seed=7)
    loss, lse = ref.cross_entropy_forward(logits, target, ignore_index)
    expected_lse = logsumexp(logits, axis=1)
    np.testing.assert_allclose(lse, expected_lse, rtol=1e-13)
    for i, t in enumerate(target):
        want = 0.0 if t == ignore_index else expected_lse[i] - logits[i, t]
        assert loss[i] == pytest.approx(want, rel=1e-12, abs=1e-13)
    # backward == the finite-difference gradient of sum(dloss * loss(logits))
    dloss = rng(8).standard_normal(len(target))
    forward_loss = lambda z: ref.cross_entropy_forward(z, target, ignore_index)[0]  # noqa: E731
    np.testing.assert_allclose(ref.cross_entropy_backward(dloss, logits, target, lse, ignore_index),
                               numeric_vjp(forward_loss, logits, dloss), rtol=1e-6, atol=1e-8)
    torch = torch_or_skip()
    want = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target),
                                             ignore_index=ignore_index, reduction="none")
    np.testing.assert_allclose(loss, want.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [13, 20, -1])
def test_cross_entropy_rejects_out_of_range_targets(backend, bad):
    logits, target = ce_case(np.float64)
    target[4] = bad
    lse = np.zeros(len(target))
    with pytest.raises(ValueError, match=rf"cross_entropy.*{bad}.*C=13"):
        backend.cross_entropy_forward(logits, target, -100)
    with pytest.raises(ValueError, match=rf"cross_entropy.*{bad}.*C=13"):
        backend.cross_entropy_backward(np.ones(len(target)), logits, target, lse, -100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_rejects_bad_shapes_and_dtypes(backend):
    logits, target = ce_case(np.float64)
    with pytest.raises(TypeError, match="cross_entropy.*float"):
        backend.cross_entropy_forward(logits, target.astype(np.float64), -100)
    with pytest.raises(ValueError, match=r"cross_entropy.*\(9, 13\)"):
        backend.cross_entropy_forward(logits, target[:5], -100)
    with pytest.raises(ValueError, match="cross_entropy.*logits must be"):
        backend.cross_entropy_forward(logits[None], target, -100)
    with pytest.raises(ValueError, match=r"cross_entropy.*\(9, 0\)"):
        backend.cross_entropy_forward(logits[:, :0], np.full(9, -100), -100)


# ----------------------------------------------------------------------------------------------
# embedding backward
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids_shape", [(11,), (3, 5), (1,)])
def test_embedding_backward_kernel_matches_reference_and_a_python_loop(dtype, ids_shape, path):
    g = rng(9)
    num_embeddings, d = 7, 5
    ids = g.integers(0, 4, size=ids_shape)      # ids 4..6 never used; many repeats
    ids.flat[0] = 6
    dout = g.standard_normal(ids_shape + (d,)).astype(dtype)
    want = np.zeros((num_embeddings, d))
    for i, k in enumerate(ids.reshape(-1)):
        want[k] += dout.reshape(-1, d)[i]
    got_ref = ref.embedding_backward(ids, dout, num_embeddings)
    got_k = kernels.embedding_backward(ids, dout, num_embeddings)
    assert got_k.dtype == dtype and got_k.shape == (num_embeddings, d)
    np.testing.assert_allclose(got_ref, want, **TOL[dtype])
    np.testing.assert_allclose(got_k, got_ref, **TOL[dtype])
    assert (got_k[4:6] == 0).all()


def test_embedding_backward_kernel_many_repeats_and_non_contiguous_dout(path):
    g = rng(10)
    ids = g.integers(0, 3, size=500)
    dout = g.standard_normal((16, 500)).T       # (500, 16), non-contiguous
    np.testing.assert_allclose(kernels.embedding_backward(ids, dout, 50),
                               ref.embedding_backward(ids, dout, 50), rtol=1e-12, atol=1e-12)
    empty = kernels.embedding_backward(np.zeros(0, np.int64), np.zeros((0, 4)), 3)
    np.testing.assert_array_equal(empty, np.zeros((3, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_backward_rejects_bad_ids(backend):
    dout = np.ones((3, 2))
    with pytest.raises(ValueError, match="embedding_backward.*id 9.*num_embeddings=5"):
        backend.embedding_backward(np.array([1, 9, 2]), dout, 5)
    with pytest.raises(ValueError, match="embedding_backward.*id -1"):
        backend.embedding_backward(np.array([1, -1, 2]), dout, 5)
    with pytest.raises(TypeError, match="embedding_backward.*ids"):
        backend.embedding_backward(np.array([1.0, 0.0, 2.0]), dout, 5)
    with pytest.raises(ValueError, match=r"embedding_backward.*\(4,\).*\(3, 2\)"):
        backend.embedding_backward(np.array([1, 0, 2, 3]), dout, 5)


# ----------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (13,), (3, 7, 5)])
def test_gelu_kernels_match_reference(shape, approximate, dtype, path):
    g = rng(11)
    x = (3 * g.standard_normal(shape)).astype(dtype)
    x.flat[0] = -30.0                            # far tail: 0 / tiny, no NaN
    dy = g.standard_normal(shape).astype(dtype)
    y_k = kernels.gelu_forward(x, approximate)
    assert y_k.dtype == dtype and y_k.shape == shape
    np.testing.assert_allclose(y_k, ref.gelu_forward(x, approximate), **TOL[dtype])
    dx_k = kernels.gelu_backward(x, dy, approximate)
    assert dx_k.dtype == dtype and dx_k.shape == shape
    np.testing.assert_allclose(dx_k, ref.gelu_backward(x, dy, approximate), **TOL[dtype])
    xt = x.T if x.ndim > 1 else x[::-1]          # non-contiguous (or reversed) input
    np.testing.assert_allclose(kernels.gelu_forward(xt, approximate),
                               ref.gelu_forward(xt, approximate), **TOL[dtype])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_kernels_hold_the_tolerance_everywhere(approximate, path):
    """float32 exact GELU has its own erfc and exp (see core_kernels): check them densely over
    the range where GELU is neither ~0 nor ~x, around the root of Phi + x phi (x ~ -0.75, where
    the backward cancels), where exp flushes to 0, on huge values and on inf / NaN."""
    special = [-np.inf, np.inf, np.nan, -3e38, 3e38, -1e30, 1e30, -0.0, 0.0, 1e-40, -1e-40,
               -87.0, -13.2, -13.3, -30.0, 30.0]
    x = np.concatenate([np.linspace(-14, 14, 200_001), np.linspace(-0.8, -0.7, 20_001),
                        special]).astype(np.float32)
    dy = rng(13).standard_normal(x.shape).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):   # the reference's inf * 0 = NaN
        y_ref = ref.gelu_forward(x, approximate)
        dx_ref = ref.gelu_backward(x, dy, approximate)
    np.testing.assert_allclose(kernels.gelu_forward(x, approximate), y_ref, **TOL[np.float32])
    np.testing.assert_allclose(kernels.gelu_backward(x, dy, approximate), dx_ref,
                               **TOL[np.float32])


def test_gelu_float32_erf_kernels_at_extreme_inputs(path):
    """float32 exact GELU where its Phi and phi saturate or flush (fastmath clamps |x| at 14,
    exp flushes below e^-87): GELU(x) is x itself from x = 6 up to the largest float32 and 0
    from x = -14 down, the backward dy and 0 there, as the float64 reference rounds them; signed
    zeros keep their sign; infinities and NaN give the reference's NaN (inf * 0) or inf."""
    big = np.float32(np.finfo(np.float32).max)
    top = np.array([6.0, 7.5, 13.9, 14.0, 14.01, 100.0, 1e20, 1e30, big], dtype=np.float32)
    x = np.concatenate([top, -top, [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    dy = np.full(x.shape, 0.75, dtype=np.float32)
    y = kernels.gelu_forward(x, "none")
    dx = kernels.gelu_backward(x, dy, "none")
    n = top.size
    np.testing.assert_array_equal(y[:n], top)
    np.testing.assert_array_equal(dx[:n], 0.75)
    np.testing.assert_array_equal(y[n:2 * n][3:], 0.0)         # x <= -14: Phi flushed to 0
    np.testing.assert_array_equal(dx[n:2 * n][3:], 0.0)
    assert y[2 * n] == 0 and not np.signbit(y[2 * n]) and y[2 * n + 1] == 0
    assert np.signbit(y[2 * n + 1])
    np.testing.assert_array_equal(dx[2 * n:2 * n + 2], 0.375)   # Phi(0) = 1/2
    assert y[-3] == np.inf and np.isnan(y[-2]) and np.isnan(y[-1])
    assert np.isnan(dx[-3:]).all()
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_allclose(y, ref.gelu_forward(x, "none"), **TOL[np.float32])
        np.testing.assert_allclose(dx, ref.gelu_backward(x, dy, "none"), **TOL[np.float32])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_reference_backward_is_the_derivative_of_its_forward(approximate):
    g = rng(12)
    x = 2 * g.standard_normal((4, 5))
    dy = g.standard_normal(x.shape)
    np.testing.assert_allclose(ref.gelu_backward(x, dy, approximate),
                               numeric_vjp(lambda z: ref.gelu_forward(z, approximate), x, dy),
                               rtol=1e-6, atol=1e-8)


def test_gelu_reference_matches_the_normal_cdf_and_torch():
    x = np.linspace(-5, 5, 41)
    phi = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])   # Phi(x) via erfc
    np.testing.assert_allclose(ref.gelu_forward(x, "none"), x * phi, rtol=1e-12, atol=1e-15)
    torch = torch_or_skip()
    t = torch.from_numpy(x).requires_grad_(True)
    for approximate in ("none", "tanh"):
        y = torch.nn.functional.gelu(t, approximate=approximate)
        (dx,) = torch.autograd.grad(y.sum(), t)
        np.testing.assert_allclose(ref.gelu_forward(x, approximate), y.detach().numpy(),
                                   rtol=1e-12, atol=1e-15)
        # atol: 0.5 (1 + t) cancels to ~1e-5 at x = -5, leaving ~1e-16 absolute rounding
        np.testing.assert_allclose(ref.gelu_backward(x, np.ones_like(x), approximate),
                                   dx.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gelu_rejects_unknown_approximation(backend):
    x = np.zeros(3)
    with pytest.raises(ValueError, match="gelu_forward.*'erf'"):
        backend.gelu_forward(x, "erf")
    with pytest.raises(ValueError, match="gelu_backward.*None"):
        backend.gelu_backward(x, x, None)


# ----------------------------------------------------------------------------------------------
# ELU + 1
# ----------------------------------------------------------------------------------------------

def composed_elu_plus_one_backward(g, x, y):
    """The derivative as a function of x: g * (1 if x > 0 else y), what the backward replaces."""
    return g * np.where(x > 0, 1, y).astype(y.dtype)


def elu_specials(dtype):
    """x with every special case, and a gradient with its own specials."""
    info = np.finfo(dtype)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, info.tiny, -info.tiny, info.eps / 4,
                  -info.eps / 4, 1e-30, -1e-30, -80.0, -87.5, -100.0, -745.0, -1e4, 1e4,
                  info.max, -info.max, 88.0, 1.0, -1.0], dtype=dtype)
    g = rng(13).standard_normal(x.shape).astype(dtype)
    g[:3] = [np.inf, -np.inf, np.nan]           # inf * 0 at x = -inf, NaN everywhere
    return x, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (13,), (3, 7, 5), (2, 40, 65)])
def test_elu_plus_one_kernels_match_reference(shape, dtype, path):
    g = rng(14)
    x = (4 * g.standard_normal(shape)).astype(dtype)
    dy = g.standard_normal(shape).astype(dtype)
    y_k = kernels.elu_plus_one_forward(x)
    assert y_k.dtype == dtype and y_k.shape == shape
    y_r = ref.elu_plus_one_forward(x)
    np.testing.assert_allclose(y_k, y_r, **TOL[dtype])
    dx_k = kernels.elu_plus_one_backward(dy, y_r)
    assert dx_k.dtype == dtype and dx_k.shape == shape
    # the backward is one select and one product in the input dtype: bit for bit the reference
    np.testing.assert_array_equal(dx_k, ref.elu_plus_one_backward(dy, y_r))
    np.testing.assert_array_equal(dx_k, composed_elu_plus_one_backward(dy, x, y_r))


@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_plus_one_kernels_take_strided_views(dtype, path):
    g = rng(15)
    qkv = g.standard_normal((2, 9, 3, 4, 8)).astype(dtype)   # (B, L, 3, H, D), as a projection
    for x in (qkv[:, :, 0], qkv[:, :, 1].transpose(0, 2, 1, 3), qkv[..., ::-2],
              qkv[0, :, 2, 0]):
        dy = g.standard_normal(x.shape).astype(dtype)
        y = kernels.elu_plus_one_forward(x)
        assert y.shape == x.shape
        np.testing.assert_allclose(y, ref.elu_plus_one_forward(x), **TOL[dtype])
        y_view = np.empty(x.shape[::-1], dtype).T    # a transposed y and a broadcast g
        y_view[...] = y
        g_bcast = np.broadcast_to(dy[..., :1], x.shape)
        np.testing.assert_array_equal(kernels.elu_plus_one_backward(g_bcast, y_view),
                                      ref.elu_plus_one_backward(g_bcast, y_view))


@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_plus_one_special_values(dtype):
    x, g = elu_specials(dtype)
    with np.errstate(all="ignore"):
        want = np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))   # the composed definition
        for backend in (ref, kernels):
            y = backend.elu_plus_one_forward(x)
            assert y.dtype == dtype
            # float32 exp below -87 is 0 in the kernel, a denormal (< 1.2e-38) in NumPy
            np.testing.assert_allclose(y, want, rtol=TOL[dtype]["rtol"], atol=np.finfo(dtype).tiny)
            assert np.isnan(y[0]) and y[1] == np.inf and y[2] == 0 and y[3] == y[4] == 1
            # dx from y alone equals g * (1 if x > 0 else y) everywhere, NaN and inf included
            np.testing.assert_array_equal(backend.elu_plus_one_backward(g, want),
                                          composed_elu_plus_one_backward(g, x, want))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0,), (3, 0, 2)])
def test_elu_plus_one_zero_size(backend, shape):
    x = np.zeros(shape, np.float32)
    assert backend.elu_plus_one_forward(x).shape == shape
    assert backend.elu_plus_one_backward(x, x).shape == shape


def test_elu_plus_one_reference_is_elu_plus_one_and_its_backward_the_derivative():
    x = np.linspace(-6, 6, 49) + 0.01                 # no kink at a sample point
    want = np.array([v + 1 if v > 0 else math.exp(v) for v in x])   # elu(x) = e^x - 1 for x <= 0
    np.testing.assert_allclose(ref.elu_plus_one_forward(x), want, rtol=1e-15)
    dy = rng(16).standard_normal(x.shape)
    np.testing.assert_allclose(ref.elu_plus_one_backward(dy, ref.elu_plus_one_forward(x)),
                               numeric_vjp(ref.elu_plus_one_forward, x, dy), rtol=1e-7,
                               atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_elu_plus_one_rejects_bad_input(backend):
    with pytest.raises(TypeError, match="elu_plus_one_forward: x must be float32 or float64"):
        backend.elu_plus_one_forward(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="elu_plus_one_backward: inputs must share one dtype"):
        backend.elu_plus_one_backward(np.zeros(3), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"elu_plus_one_backward: shapes must match.*\(2,\)"):
        backend.elu_plus_one_backward(np.zeros(3), np.zeros(2))


# ----------------------------------------------------------------------------------------------
# Adam / AdamW
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_two_steps_by_hand(backend, dtype):
    """lr 0.1, betas (0.9, 0.999), eps 1e-8, gradients 0.5 then -0.25, worked out by hand.

    Step 1 (m0 = v0 = 0): m = 0.05, v = 0.00025, bias corrections 0.1 and 0.001, so the update is
    lr * 0.5 / (0.5 + eps): every first Adam step moves by ~lr.
    Step 2: m = 0.9 * 0.05 + 0.1 * g2, v = 0.999 * 0.00025 + 0.001 * g2^2, corrections 0.19 and
    0.001999. Plain Adam (wd 0) from 1.0: g2 = -0.25 -> m = 0.02, v = 0.00031225.
    AdamW (wd 0.1) from 2.0: decay first, 2 * 0.99 = 1.98, then the same moments as plain Adam.
    Adam with L2 (wd 0.1) from 2.0: g1 = 0.5 + 0.2 = 0.7, p1 = 2 - 0.1 * 0.7 / (0.7 + eps) ~ 1.9,
    g2 = -0.25 + 0.1 * p1 ~ -0.06 -> m ~ 0.063 - 0.006 = 0.057, v ~ 0.00048951 + 0.0000036.
    """
    eps = 1e-8
    cases = [  # (p0, weight_decay, decoupled, p1, p2)
        (1.0, 0.0, False, 1 - 0.1 * 0.5 / (0.5 + eps),
         0.8733662987078462),
        (2.0, 0.1, True, 2 * 0.99 - 0.1 * 0.5 / (0.5 + eps),
         (2 * 0.99 - 0.1 * 0.5 / (0.5 + eps)) * 0.99
         - 0.1 / 0.19 * 0.02 / (math.sqrt(0.00031225) / math.sqrt(0.001999) + eps)),
        (2.0, 0.1, False, 2 - 0.1 * 0.7 / (0.7 + eps),
         1.8395973867971893),
    ]
    # the plain-Adam literal is the same second-step formula, spelled out
    assert cases[0][4] == pytest.approx(
        cases[0][3] - 0.1 / 0.19 * 0.02 / (math.sqrt(0.00031225) / math.sqrt(0.001999) + eps),
        rel=1e-15)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for p0, wd, decoupled, p1, p2 in cases:
        param = np.array([p0], dtype=dtype)
        m, v = np.zeros_like(param), np.zeros_like(param)
        for step, grad, want in ((1, 0.5, p1), (2, -0.25, p2)):
            out = backend.adam_step(param, np.array([grad], dtype=dtype), m, v, 0.1, 0.9, 0.999,
                                    eps, wd, step, decoupled)
            assert out is None
            np.testing.assert_allclose(param, [want], rtol=rtol)
        if wd == 0.0 or decoupled:
            np.testing.assert_allclose(m, [0.02], rtol=rtol)
            np.testing.assert_allclose(v, [0.00031225], rtol=rtol)


def adam_case(dtype, shape=(5, 7), seed=13):
    g = rng(seed)
    param = g.standard_normal(shape).astype(dtype)
    grads = [g.standard_normal(shape).astype(dtype) for _ in range(3)]
    return param, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.05, False), (0.05, True)])
def test_adam_kernel_matches_reference_over_three_steps(dtype, weight_decay, decoupled, path):
    param, grads = adam_case(dtype)
    states = {}
    for name, backend in (("ref", ref), ("numba", kernels)):
        p, m, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
        for step, grad in enumerate(grads, start=1):
            backend.adam_step(p, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, weight_decay, step, decoupled)
        assert p.dtype == m.dtype == v.dtype == dtype
        states[name] = (p, m, v)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for got, want in zip(states["numba"], states["ref"]):
        np.testing.assert_allclose(got, want, **tol)
    assert not np.allclose(states["ref"][0], param)   # it did move


def test_adam_kernel_updates_non_contiguous_state_in_place(path):
    base_p, grads = adam_case(np.float64, shape=(4, 6))
    want_p, want_m, want_v = base_p.copy(), np.zeros_like(base_p), np.zeros_like(base_p)
    big_p = np.zeros((4, 12))
    big_p[:, ::2] = base_p
    p = big_p[:, ::2]                            # a strided view: updates must land in big_p
    m, v = np.zeros((6, 4)).T, np.zeros((6, 4)).T
    for step, grad in enumerate(grads, start=1):
        ref.adam_step(want_p, grad, want_m, want_v, 1e-2, 0.9, 0.99, 1e-8, 0.1, step, True)
        kernels.adam_step(p, grad.T.copy().T, m, v, 1e-2, 0.9, 0.99, 1e-8, 0.1, step, True)
    np.testing.assert_allclose(big_p[:, ::2], want_p, rtol=1e-12)
    assert (big_p[:, 1::2] == 0).all()
    np.testing.assert_allclose(m, want_m, rtol=1e-12)
    np.testing.assert_allclose(v, want_v, rtol=1e-12)


@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.05, False), (0.05, True)])
def test_adam_reference_matches_torch(weight_decay, decoupled):
    torch = torch_or_skip()
    param, grads = adam_case(np.float64)
    p, m, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
    tp = torch.nn.Parameter(torch.from_numpy(param.copy()))
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = cls([tp], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    for step, grad in enumerate(grads, start=1):
        ref.adam_step(p, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, weight_decay, step, decoupled)
        tp.grad = torch.from_numpy(grad.copy())
        opt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    state = opt.state[tp]
    np.testing.assert_allclose(m, state["exp_avg"].numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(v, state["exp_avg_sq"].numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_rejects_bad_input(backend):
    p = np.zeros(3)
    with pytest.raises(ValueError, match=r"adam_step.*\(3,\).*\(4,\)"):
        backend.adam_step(p, np.zeros(4), np.zeros(3), np.zeros(3), 1e-3, .9, .999, 1e-8, 0, 1,
                          False)
    with pytest.raises(TypeError, match="adam_step.*float32"):
        backend.adam_step(p, np.zeros(3, np.float32), np.zeros(3), np.zeros(3), 1e-3, .9, .999,
                          1e-8, 0, 1, False)
    with pytest.raises(ValueError, match="adam_step.*step"):
        backend.adam_step(p, np.zeros(3), np.zeros(3), np.zeros(3), 1e-3, .9, .999, 1e-8, 0, 0,
                          False)


def test_importing_tinyfw_selects_the_workqueue_threading_layer():
    """OpenMP's spinning idle threads made a 2-thread training step 3x slower
    (backend/cpu/runtime/environment.py)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    code = ("import numba, numpy as np, tinyfw\n"
            "from tinyfw.backend.cpu import core_kernels as k\n"
            "from tinyfw.backend.cpu.runtime import launch\n"
            "launch.ROWS = launch.ROWS._replace(pool_min_work=0)\n"
            "numba.set_num_threads(2) if numba.config.NUMBA_NUM_THREADS > 1 else None\n"
            "k.softmax_forward(np.ones((64, 8)))\n"
            "print(numba.threading_layer())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "workqueue"


def test_malloc_tuning_is_applied_on_glibc_and_can_be_switched_off(monkeypatch):
    import platform
    from tinyfw.backend.cpu.runtime import environment
    monkeypatch.setenv("TINYFW_MALLOC_TUNING", "0")
    assert environment.tune_malloc() is False
    monkeypatch.delenv("TINYFW_MALLOC_TUNING")
    assert environment.tune_malloc() is (platform.libc_ver()[0] == "glibc")


def _heap_ranges():
    with open("/proc/self/maps") as f:
        return [tuple(int(x, 16) for x in line.split()[0].split("-"))
                for line in f if line.rstrip().endswith("[heap]")]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
def test_a_block_larger_than_any_mmap_threshold_comes_from_the_heap():
    """glibc would map a 64 MB block on its own (its threshold is at most 32 MB) and unmap it on
    free; with the tuning (applied when tinyfw loads) it lies in the heap."""
    import platform
    from tinyfw.backend.cpu.runtime import environment
    if not environment.configure().malloc_tuned:
        pytest.skip(f"malloc is not tuned here ({platform.libc_ver()[0] or 'not glibc'})")
    block = np.ones(64 << 20, dtype=np.uint8)
    address = block.ctypes.data
    assert any(lo <= address < hi for lo, hi in _heap_ranges())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_tensor_copies_large_arrays_onto_64_byte_boundaries(dtype):
    """``tinyfw.tensor`` copies an array of ALIGN_MIN_BYTES or more into 64-byte aligned memory
    (the memory-bound kernels load whole cache lines; see allocator.py), C-contiguous, equal,
    not shared; smaller arrays are plain copies. The offset view makes NumPy's own alignment
    irrelevant: the source starts 8 bytes past a line."""
    from tinyfw.backend.cpu.runtime import allocator
    big = allocator.ALIGN_MIN_BYTES // 8 + 5
    raw = allocator.empty_aligned((2 * big + 8,), np.float64)
    raw[:] = np.arange(raw.size)
    source = raw[1:1 + 2 * big].reshape(2, big)[:, ::2].astype(dtype)   # (2, ceil(big / 2))
    source = np.asfortranarray(np.tile(source, (4, 1)))                 # Fortran order
    t = fw.tensor(source)
    assert t.data.ctypes.data % allocator.ALIGNMENT == 0
    assert t.data.flags.c_contiguous and t.dtype == np.dtype(dtype)
    assert not np.shares_memory(t.data, source)
    np.testing.assert_array_equal(t.data, source)
    t32 = fw.tensor(source, dtype=fw.float32)
    assert t32.data.ctypes.data % allocator.ALIGNMENT == 0 and t32.dtype == np.float32
    np.testing.assert_array_equal(t32.data, source.astype(np.float32))
    small = fw.tensor(np.arange(10, dtype=dtype))
    np.testing.assert_array_equal(small.data, np.arange(10, dtype=dtype))
