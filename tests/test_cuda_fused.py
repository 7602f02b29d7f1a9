"""The CUDA backend's fused kernels against the NumPy reference (``backend/reference``), on the
same inputs, in float32 and float64 -- run in Numba's simulator without a GPU.

Every fused name of the reference is checked, whether it has a CUDA kernel or is still a host
round trip (``tinyfw.backend.cuda.HOST_FALLBACKS``, pinned below so a new kernel or a new
fallback shows up here).
"""
import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("numba.cuda is unavailable (no GPU); run with NUMBA_ENABLE_CUDASIM=1 to use the "
                "simulator", allow_module_level=True)

from tinyfw.backend import cuda as G  # noqa: E402
from tinyfw.backend import reference as R  # noqa: E402
from tinyfw.backend.cuda import runtime  # noqa: E402
from tinyfw.backend.cuda.host_fallback import REFERENCE_NAMES  # noqa: E402
from tinyfw.backend.interface import FUSED  # noqa: E402

pytestmark = pytest.mark.cuda

FLOATS = [np.float32, np.float64]
# float32: the kernels keep row statistics in float64 and add atomically in any order, so they
# differ from NumPy's float32 arithmetic by a few ulps.
TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6),
       np.dtype(np.float64): dict(rtol=1e-11, atol=1e-12)}

#: fused names without a CUDA kernel yet (served by a host round trip)
EXPECTED_HOST_FALLBACKS = []


def to_device(value):
    if isinstance(value, np.ndarray):
        return G.from_numpy(value)
    return value


def compare(got, want, dtype):
    """Results (an array, None, or a tuple of them) of the CUDA and the reference function."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            compare(g, w, dtype)
        return
    if want is None:
        assert got is None
        return
    assert runtime.is_device_array(got), type(got)
    got, want = G.to_numpy(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, **TOL[np.dtype(dtype)])


def check(name, dtype, *args):
    compare(getattr(G, name)(*[to_device(a) for a in args]), getattr(R, name)(*args), dtype)


def randn(g, shape, dtype, scale=1.0):
    return (scale * g.standard_normal(shape)).astype(dtype)


def test_every_reference_name_is_defined_and_the_fallbacks_are_known():
    assert set(FUSED) <= set(REFERENCE_NAMES)
    assert [name for name in REFERENCE_NAMES if not hasattr(G, name)] == []
    assert G.HOST_FALLBACKS == sorted(EXPECTED_HOST_FALLBACKS)
    for name in REFERENCE_NAMES:
        function = getattr(G, name)
        if name not in G.HOST_FALLBACKS:  # a kernel's launcher, written in the CUDA backend
            assert function.__module__.startswith("tinyfw.backend.cuda."), name


# ----------------------------------------------------------------------------------------------
# Core: softmax, log-softmax, cross-entropy, embedding, GELU, ELU + 1, Adam
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_forward_backward(op, dtype):
    g = np.random.default_rng(0)
    for shape in [(5,), (2, 3, 4), (3, 70)]:  # 70 columns: threads loop, then a block tree
        x = randn(g, shape, dtype, 3.0)
        dy = randn(g, shape, dtype)
        check(f"{op}_forward", dtype, x)
        y = getattr(R, f"{op}_forward")(x)
        check(f"{op}_backward", dtype, y, dy)


def test_softmax_handles_extreme_rows():
    x = np.array([[1e4, -1e4, 0.0], [-np.inf, 0.0, 1.0], [5.0, 5.0, 5.0]])
    check("softmax_forward", np.float64, x)
    check("log_softmax_forward", np.float64, x)


def test_softmax_errors_match_the_reference():
    with pytest.raises(TypeError, match="softmax_forward: x must be float32 or float64"):
        G.softmax_forward(G.from_numpy(np.ones((2, 2), np.int64)))
    with pytest.raises(ValueError, match="softmax_backward: shapes must match"):
        G.softmax_backward(G.from_numpy(np.ones((2, 2))), G.from_numpy(np.ones((2, 3))))


@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy(dtype):
    g = np.random.default_rng(1)
    for n, c in [(6, 7), (3, 40)]:
        logits = randn(g, (n, c), dtype, 2.0)
        target = g.integers(0, c, n)
        target[1] = -100
        loss, lse = R.cross_entropy_forward(logits, target, -100)
        check("cross_entropy_forward", dtype, logits, target, -100)
        dloss = randn(g, (n,), dtype)
        check("cross_entropy_backward", dtype, dloss, logits, target, lse, -100)


def test_cross_entropy_accepts_host_targets_and_rejects_bad_ones():
    logits = np.random.default_rng(2).standard_normal((3, 4))
    target = np.array([0, 3, 1])
    compare(G.cross_entropy_forward(G.from_numpy(logits), target, -1),
            R.cross_entropy_forward(logits, target, -1), np.float64)
    with pytest.raises(ValueError, match="cross_entropy_forward: target value 4 is out of range"):
        G.cross_entropy_forward(G.from_numpy(logits), G.from_numpy(np.array([0, 4, 1])), -1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_embedding_backward(dtype):
    g = np.random.default_rng(3)
    ids = g.integers(0, 5, (3, 4))
    ids[0, :3] = 2  # repeated ids accumulate
    check("embedding_backward", dtype, ids, randn(g, (3, 4, 6), dtype), 5)
    with pytest.raises(ValueError, match="embedding_backward: id 7 is out of range"):
        G.embedding_backward(G.from_numpy(np.array([7])), G.from_numpy(np.ones((1, 2))), 5)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate, dtype):
    g = np.random.default_rng(4)
    x = randn(g, (3, 50), dtype, 3.0)
    check("gelu_forward", dtype, x, approximate)
    check("gelu_backward", dtype, x, randn(g, (3, 50), dtype), approximate)
    with pytest.raises(ValueError, match="gelu_forward: approximate must be one of"):
        G.gelu_forward(G.from_numpy(x), "exact")


@pytest.mark.parametrize("dtype", FLOATS)
def test_elu_plus_one(dtype):
    g = np.random.default_rng(6)
    x = randn(g, (3, 50), dtype, 4.0)
    x[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1e4]
    dy = randn(g, (3, 50), dtype)
    dy[1, :3] = [np.inf, -np.inf, np.nan]
    y = R.elu_plus_one_forward(x)
    got = G.to_numpy(G.elu_plus_one_forward(G.from_numpy(x)))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, y, **TOL[np.dtype(dtype)])     # NaN where the reference's
    # the backward is a select and one product: exact in float64 and rounded once for float32
    got = G.to_numpy(G.elu_plus_one_backward(G.from_numpy(dy), G.from_numpy(y)))
    np.testing.assert_array_equal(got, R.elu_plus_one_backward(dy, y))
    check("elu_plus_one_forward", dtype, np.zeros((0, 4), dtype))
    check("elu_plus_one_backward", dtype, np.zeros((2, 0), dtype), np.zeros((2, 0), dtype))
    with pytest.raises(ValueError, match="elu_plus_one_backward: shapes must match"):
        G.elu_plus_one_backward(G.from_numpy(dy), G.from_numpy(y[:2]))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("decoupled,weight_decay", [(False, 0.0), (False, 0.1), (True, 0.1)])
def test_adam_step_in_place(decoupled, weight_decay, dtype):
    g = np.random.default_rng(5)
    param, grad, exp_avg = (randn(g, (40,), dtype) for _ in range(3))
    exp_avg_sq = np.abs(randn(g, (40,), dtype))
    device = [G.from_numpy(a) for a in (param, grad, exp_avg, exp_avg_sq)]
    for step in (1, 2, 3):
        assert G.adam_step(*device, 1e-2, 0.9, 0.999, 1e-8, weight_decay, step, decoupled) is None
        R.adam_step(param, grad, exp_avg, exp_avg_sq, 1e-2, 0.9, 0.999, 1e-8, weight_decay, step,
                    decoupled)
    for got, want in zip(device, (param, grad, exp_avg, exp_avg_sq)):
        compare(got, want, dtype)


def test_adam_step_rejects_mixed_dtypes_and_bad_steps():
    arrays = [G.from_numpy(np.ones(3)) for _ in range(4)]
    with pytest.raises(ValueError, match="adam_step: step is the 1-based step count"):
        G.adam_step(*arrays, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0, False)
    arrays[1] = G.from_numpy(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="adam_step: inputs must share one dtype"):
        G.adam_step(*arrays, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False)


# ----------------------------------------------------------------------------------------------
# Norms
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(affine, dtype):
    g = np.random.default_rng(6)
    for shape in [(3, 5), (2, 3, 40)]:
        d = shape[-1]
        x = randn(g, shape, dtype, 2.0) + 1.0
        w = randn(g, (d,), dtype) if affine else None
        b = randn(g, (d,), dtype) if affine else None
        check("layer_norm_forward", dtype, x, w, b, 1e-5)
        _, mean, rstd = R.layer_norm_forward(x, w, b, 1e-5)
        check("layer_norm_backward", dtype, randn(g, shape, dtype), x, w, mean, rstd)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm(affine, dtype):
    g = np.random.default_rng(7)
    for shape in [(3, 5), (2, 3, 40)]:
        x = randn(g, shape, dtype, 2.0)
        w = randn(g, (shape[-1],), dtype) if affine else None
        check("rms_norm_forward", dtype, x, w, 1e-6)
        _, rstd = R.rms_norm_forward(x, w, 1e-6)
        check("rms_norm_backward", dtype, randn(g, shape, dtype), x, w, rstd)


# ----------------------------------------------------------------------------------------------
# Softmax attention
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal,lq,lk,offset,dtype", [
    (False, 3, 5, 0, np.float32), (False, 3, 5, 0, np.float64), (True, 4, 4, 0, np.float64),
    (True, 3, 5, 0, np.float32), (True, 3, 5, 2, np.float64)])
def test_attention(causal, lq, lk, offset, dtype):
    g = np.random.default_rng(8)
    q = randn(g, (1, 2, lq, 4), dtype)
    k = randn(g, (1, 2, lk, 4), dtype)
    v = randn(g, (1, 2, lk, 3), dtype)
    scale = 0.5
    check("attention_forward", dtype, q, k, v, scale, causal, offset)
    check("attention_probabilities", dtype, q, k, scale, causal, offset)
    o, lse = R.attention_forward(q, k, v, scale, causal, offset)
    do = randn(g, o.shape, dtype)
    check("attention_backward", dtype, do, q, k, v, o, lse, scale, causal, offset)


# ----------------------------------------------------------------------------------------------
# Fast weights: sum rule and delta rule
# ----------------------------------------------------------------------------------------------

def _fast_weight_inputs(g, dtype, with_state):
    B, H, L, Dk, Dv = 1, 2, 5, 3, 4
    q = randn(g, (B, H, L, Dk), dtype, 0.5)
    k = randn(g, (B, H, L, Dk), dtype, 0.5)
    v = randn(g, (B, H, L, Dv), dtype)
    beta = (1 / (1 + np.exp(-g.standard_normal((B, H, L))))).astype(dtype)
    s0 = randn(g, (B, H, Dk, Dv), dtype, 0.3) if with_state else None
    ds = randn(g, (B, H, Dk, Dv), dtype) if with_state else None
    do = randn(g, (B, H, L, Dv), dtype)
    return q, k, v, beta, s0, ds, do


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("with_state", [False, True])
def test_linear_attention(with_state, dtype):
    q, k, v, _, s0, ds, do = _fast_weight_inputs(np.random.default_rng(9), dtype, with_state)
    check("linear_attention_forward", dtype, q, k, v, s0)
    check("linear_attention_backward", dtype, do, ds, q, k, v, s0)
    check("linear_attention_chunked_forward", dtype, q, k, v, s0, 2)
    check("linear_attention_chunked_backward", dtype, do, ds, q, k, v, s0, 2)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("with_state", [False, True])
def test_delta_rule(with_state, dtype):
    q, k, v, beta, s0, ds, do = _fast_weight_inputs(np.random.default_rng(10), dtype, with_state)
    check("delta_rule_forward", dtype, q, k, v, beta, s0)
    _, _, r = R.delta_rule_forward(q, k, v, beta, s0)
    check("delta_rule_backward", dtype, do, ds, q, k, v, beta, s0, r)
    check("delta_rule_chunked_forward", dtype, q, k, v, beta, s0, 2)
    check("delta_rule_chunked_backward", dtype, do, ds, q, k, v, beta, s0, r, 2)


# ----------------------------------------------------------------------------------------------
# SAFU
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("block", [1, 3, 7])
def test_safu_block_attention(block, dtype):
    g = np.random.default_rng(11)
    x = randn(g, (2, 5, 3), dtype)
    w_a = randn(g, (3, 3), dtype)
    q = (x @ w_a).astype(dtype)
    check("safu_block_attention_forward", dtype, x, q, block)
    check("safu_block_attention_uncached", dtype, x, w_a, block)
    _, a = R.safu_block_attention_forward(x, q, block)
    dh = randn(g, x.shape, dtype)
    check("safu_block_attention_backward", dtype, dh, None, x, q, a, block)
    check("safu_block_attention_backward", dtype, dh, randn(g, a.shape, dtype), x, q, a, block)


@pytest.mark.parametrize("dtype", FLOATS)
def test_safu_running_mean_and_score_tables(dtype):
    g = np.random.default_rng(12)
    x = randn(g, (2, 5, 3), dtype)
    check("safu_running_mean_forward", dtype, x, None, 0)
    check("safu_running_mean_forward", dtype, x, randn(g, (2, 3), dtype), 4)
    check("safu_running_mean_backward", dtype, randn(g, x.shape, dtype), 0)
    check("safu_running_mean_backward", dtype, randn(g, x.shape, dtype), 4)
    vectors = randn(g, (4, 3), dtype)
    w_a = randn(g, (3, 3), dtype)
    check("safu_score_table", dtype, vectors, w_a)
    table = R.safu_score_table(vectors, w_a)
    ids = g.integers(0, 4, (2, 5))
    check("safu_block_scores_from_table", dtype, ids, table, 3)
    check("safu_block_scores_from_table", dtype, ids, table, 7)


def test_safu_bad_inputs_raise():
    table = G.from_numpy(np.zeros((4, 4)))
    with pytest.raises(IndexError, match="safu_block_scores_from_table: an id is out of range"):
        G.safu_block_scores_from_table(np.array([[0, 4]]), table, 2)
    x = G.from_numpy(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="block must be an int >= 1"):
        G.safu_block_attention_forward(x, x, 0)
