"""Tests of the fast-weight operations (``tinyfw/ops/fast_weights.py``, ``ops/feature_maps.py``).

The list in docs/FAST_WEIGHTS.md, at the level of Tensors: masked quadratic form, chunked ==
recurrent with gradients, float64 gradchecks through every feature map with a loss that uses the
final state, delta-rule invariants, causality, state carry-over; plus the feature maps' own facts
and the refusals of bad input. (Kernel-level parity lives in test_fast_weights_kernels.py.)
"""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.ops import fast_weights as FW
from tinyfw.ops import feature_maps as FM
from tinyfw.backend import cpu

F64 = fw.float64


def t(array, grad=False, dtype=F64):
    return fw.tensor(np.asarray(array), dtype=dtype, requires_grad=grad)


def rand(rng, *shape, grad=False, low=None, high=None):
    a = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
    return t(a, grad)


# ---------------------------------------------------------------------------------------------
# 1. the sum rule equals the masked quadratic form, through the op
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["recurrent", "chunked"])
@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_equals_masked_quadratic_form(method, normalize):
    rng = np.random.default_rng(0)
    B, H, L, Dk, Dv = 2, 2, 9, 4, 3
    q = np.abs(rng.standard_normal((B, H, L, Dk)))
    k = np.abs(rng.standard_normal((B, H, L, Dk)))
    v = rng.standard_normal((B, H, L, Dv))
    y = FW.linear_attention(t(q), t(k), t(v), normalize=normalize, method=method,
                            chunk_size=4).numpy()
    scores = np.einsum("bhtd,bhsd->bhts", q, k) * np.tril(np.ones((L, L)))
    want = scores @ v
    if normalize:
        want = want / (scores.sum(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, want, atol=1e-12)


def test_linear_attention_normaliser_with_initial_state():
    rng = np.random.default_rng(1)
    B, H, L, Dk, Dv = 1, 2, 6, 3, 2
    q, k = np.abs(rng.standard_normal((2, B, H, L, Dk)))
    v = rng.standard_normal((B, H, L, Dv))
    S0 = rng.standard_normal((B, H, Dk, Dv))
    z0 = np.abs(rng.standard_normal((B, H, Dk)))
    y, (S, z) = FW.linear_attention(t(q), t(k), t(v), initial_state=(t(S0), t(z0)),
                                    return_state=True, eps=1e-3)
    scores = np.einsum("bhtd,bhsd->bhts", q, k) * np.tril(np.ones((L, L)))
    num = scores @ v + q @ S0
    den = scores.sum(-1) + np.einsum("bhtd,bhd->bht", q, z0)
    np.testing.assert_allclose(y.numpy(), num / (den[..., None] + 1e-3), atol=1e-12)
    np.testing.assert_allclose(S.numpy(), S0 + np.einsum("bhtk,bhtv->bhkv", k, v), atol=1e-12)
    np.testing.assert_allclose(z.numpy(), z0 + k.sum(2), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 2. chunked == recurrent through the ops, gradients included
# ---------------------------------------------------------------------------------------------

def _run(fn, inputs):
    """Outputs and input gradients of sum(out * fixed random weights) over every output."""
    for x in inputs:
        x.grad = None
    outs = fn(*inputs)
    rng = np.random.default_rng(123)
    loss = None
    for o in outs:
        term = (o * t(rng.standard_normal(o.shape))).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    return [o.numpy() for o in outs], [x.grad.numpy() for x in inputs]


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_chunked_equals_recurrent(chunk_size, normalize):
    rng = np.random.default_rng(2)
    B, H, L, Dk, Dv = 2, 2, 11, 4, 3
    q, k = (t(np.abs(rng.standard_normal((B, H, L, Dk))), True) for _ in range(2))
    v = rand(rng, B, H, L, Dv, grad=True)
    S0 = rand(rng, B, H, Dk, Dv, grad=True)
    z0 = rand(rng, B, H, Dk, grad=True, low=0.5, high=1.5)

    def fn(method):
        def f(q, k, v, S0, z0=None):
            state = (S0, z0) if normalize else S0
            y, s = FW.linear_attention(q, k, v, normalize=normalize, initial_state=state,
                                       return_state=True, method=method, chunk_size=chunk_size)
            return (y,) + (tuple(s) if normalize else (s,))
        return f

    outs_r, grads_r = _run(fn("recurrent"), [q, k, v, S0, z0] if normalize else [q, k, v, S0])
    outs_c, grads_c = _run(fn("chunked"), [q, k, v, S0, z0] if normalize else [q, k, v, S0])
    for a, b in zip(outs_c + grads_c, outs_r + grads_r):
        np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
def test_delta_rule_chunked_equals_recurrent(chunk_size):
    rng = np.random.default_rng(3)
    B, H, L, Dk, Dv = 2, 2, 11, 4, 3
    q, k = (FM.sum_normalize(t(np.abs(rng.standard_normal((B, H, L, Dk))))).detach()
            for _ in range(2))
    q.requires_grad = k.requires_grad = True
    v = rand(rng, B, H, L, Dv, grad=True)
    beta = rand(rng, B, H, L, grad=True, low=0.05, high=0.95)
    S0 = rand(rng, B, H, Dk, Dv, grad=True)

    def fn(method):
        def f(q, k, v, beta, S0):
            return FW.delta_rule(q, k, v, beta, initial_state=S0, return_state=True,
                                 method=method, chunk_size=chunk_size)
        return f

    outs_r, grads_r = _run(fn("recurrent"), [q, k, v, beta, S0])
    outs_c, grads_c = _run(fn("chunked"), [q, k, v, beta, S0])
    for a, b in zip(outs_c + grads_c, outs_r + grads_r):
        np.testing.assert_allclose(a, b, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# 3. float64 gradchecks through every feature map, loss using the final state
# ---------------------------------------------------------------------------------------------

FEATURE_MAPS = {
    "elu": lambda x, w: FM.elu_plus_one(x),
    "dpfp1": lambda x, w: FM.dpfp(x, 1),
    "dpfp2": lambda x, w: FM.dpfp(x, 2),
    "favor": lambda x, w: FM.favor_features(x, w),
}
B_, H_, L_, D_, DV_ = 1, 2, 4, 3, 2


def _feature_dim(name):
    return {"elu": D_, "dpfp1": 2 * D_, "dpfp2": 4 * D_, "favor": 4}[name]


# every feature map through the recurrent form; the chunked form's gradients equal the recurrent
# ones (tests above), so one map suffices for it and keeps the suite fast
GRADCHECK_CASES = [(name, "recurrent") for name in sorted(FEATURE_MAPS)] + [("dpfp1", "chunked")]


@pytest.mark.parametrize("feature_map, method", GRADCHECK_CASES)
def test_gradcheck_linear_attention(feature_map, method):
    rng = np.random.default_rng(4)
    phi = FEATURE_MAPS[feature_map]
    Dk = _feature_dim(feature_map)
    q = rand(rng, B_, H_, L_, D_, grad=True)
    k = rand(rng, B_, H_, L_, D_, grad=True)
    v = rand(rng, B_, H_, L_, DV_, grad=True)
    w = t(FM.favor_projection(D_, 2, generator=rng, dtype=np.float64).numpy() * 0.5, True)
    S0 = rand(rng, B_, H_, Dk, DV_, grad=True)
    z0 = rand(rng, B_, H_, Dk, grad=True, low=0.5, high=1.0)

    def f(q, k, v, w, S0, z0):
        y, (S, z) = FW.linear_attention(phi(q, w), phi(k, w), v, initial_state=(S0, z0),
                                        return_state=True, method=method, chunk_size=3)
        return y, S, z

    assert fw.gradcheck(f, (q, k, v, w, S0, z0))

    def g(q, k, v, w, S0):
        y, S = FW.linear_attention(phi(q, w), phi(k, w), v, normalize=False, initial_state=S0,
                                   return_state=True, method=method, chunk_size=3)
        return y, S

    assert fw.gradcheck(g, (q, k, v, w, S0))


@pytest.mark.parametrize("feature_map, method", GRADCHECK_CASES)
def test_gradcheck_delta_rule(feature_map, method):
    rng = np.random.default_rng(5)
    phi = FEATURE_MAPS[feature_map]
    Dk = _feature_dim(feature_map)
    q = rand(rng, B_, H_, L_, D_, grad=True)
    k = rand(rng, B_, H_, L_, D_, grad=True)
    v = rand(rng, B_, H_, L_, DV_, grad=True)
    beta = rand(rng, B_, H_, L_, grad=True, low=0.1, high=0.9)
    w = t(FM.favor_projection(D_, 2, generator=rng, dtype=np.float64).numpy() * 0.5, True)
    S0 = rand(rng, B_, H_, Dk, DV_, grad=True)

    def f(q, k, v, beta, w, S0):
        qn, kn = FM.sum_normalize(phi(q, w)), FM.sum_normalize(phi(k, w))
        return FW.delta_rule(qn, kn, v, beta, initial_state=S0, return_state=True,
                             method=method, chunk_size=3)

    assert fw.gradcheck(f, (q, k, v, beta, w, S0))


def test_gradcheck_without_initial_state():
    rng = np.random.default_rng(6)
    q, k = (t(np.abs(rng.standard_normal((1, 2, 5, 3))) + 0.1, True) for _ in range(2))
    v = rand(rng, 1, 2, 5, 2, grad=True)
    beta = rand(rng, 1, 2, 5, grad=True, low=0.1, high=0.9)
    assert fw.gradcheck(lambda q, k, v: FW.linear_attention(q, k, v), (q, k, v))
    assert fw.gradcheck(lambda q, k, v, beta: FW.delta_rule(q, k, v, beta, return_state=True),
                        (q, k, v, beta))


def test_gradcheck_sum_normalize_on_other_dims():
    rng = np.random.default_rng(7)
    x = t(rng.uniform(0.2, 1.0, (3, 4, 2)), True)
    for dim in (0, 1, -1):
        assert fw.gradcheck(lambda x: FM.sum_normalize(x, dim=dim), (x,))


# ---------------------------------------------------------------------------------------------
# 4. delta-rule invariants, through the op
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["recurrent", "chunked"])
def test_delta_rule_invariants(method):
    rng = np.random.default_rng(8)
    B, H, L, D, Dv = 1, 2, 5, 5, 3
    q, v, S0 = rng.standard_normal((B, H, L, D)), rng.standard_normal((B, H, L, Dv)), \
        rng.standard_normal((B, H, D, Dv))
    k = np.abs(rng.standard_normal((B, H, L, D)))
    # beta = 0: nothing is written
    y, S = FW.delta_rule(t(q), t(k), t(v), t(np.zeros((B, H, L))), initial_state=t(S0),
                         return_state=True, method=method, chunk_size=2)
    np.testing.assert_array_equal(S.numpy(), S0)
    # orthonormal keys, beta = 1, zero state: the unnormalised sum rule
    ortho = np.swapaxes(np.linalg.qr(rng.standard_normal((B, H, D, D)))[0], -1, -2)[:, :, :L]
    y, S = FW.delta_rule(t(q), t(ortho), t(v), t(np.ones((B, H, L))), return_state=True,
                         method=method, chunk_size=2)
    y_sum, S_sum = FW.linear_attention(t(q), t(ortho), t(v), normalize=False, return_state=True)
    np.testing.assert_allclose(y.numpy(), y_sum.numpy(), atol=1e-12)
    np.testing.assert_allclose(S.numpy(), S_sum.numpy(), atol=1e-12)
    # the same unit key twice with beta = 1: only the second value is stored under it
    key = ortho[:, :, :1]
    _, S = FW.delta_rule(t(q[:, :, :2]), t(np.concatenate([key, key], 2)), t(v[:, :, :2]),
                         t(np.ones((B, H, 2))), initial_state=t(S0), return_state=True,
                         method=method, chunk_size=2)
    np.testing.assert_allclose(np.einsum("bhkv,bhk->bhv", S.numpy(), key[:, :, 0]),
                               v[:, :, 1], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 5. causality and 6. state carry-over, through the ops with feature maps
# ---------------------------------------------------------------------------------------------

def _ops():
    """name -> f(x_q, x_k, v, beta_logits, state, return_state) through feature maps."""
    def linear(normalize, method):
        def f(xq, xk, v, b, state=None):
            return FW.linear_attention(FM.dpfp(xq, 1), FM.dpfp(xk, 1), v, normalize=normalize,
                                       initial_state=state, return_state=True, method=method,
                                       chunk_size=4)
        return f

    def delta(method):
        def f(xq, xk, v, b, state=None):
            return FW.delta_rule(FM.sum_normalize(FM.elu_plus_one(xq)),
                                 FM.sum_normalize(FM.elu_plus_one(xk)), v, b.sigmoid(),
                                 initial_state=state, return_state=True, method=method,
                                 chunk_size=4)
        return f

    ops = {}
    for m in ("recurrent", "chunked"):
        ops[f"sum-normalized-{m}"] = linear(True, m)
        ops[f"sum-{m}"] = linear(False, m)
        ops[f"delta-{m}"] = delta(m)
    return ops


OPS = _ops()


def _sequence(rng, L=10):
    B, H, D, Dv = 2, 2, 3, 4
    return [rng.standard_normal((B, H, L, D)), rng.standard_normal((B, H, L, D)),
            rng.standard_normal((B, H, L, Dv)), rng.standard_normal((B, H, L))]


@pytest.mark.parametrize("name", sorted(OPS))
def test_causality(name):
    rng = np.random.default_rng(9)
    xs = _sequence(rng)
    y = OPS[name](*(t(x) for x in xs))[0].numpy()
    pos = 5
    changed = [x.copy() for x in xs]
    for x in changed:
        x[:, :, pos:] = rng.standard_normal(x[:, :, pos:].shape) * 3
    y2 = OPS[name](*(t(x) for x in changed))[0].numpy()
    np.testing.assert_array_equal(y2[:, :, :pos], y[:, :, :pos])
    assert not np.allclose(y2[:, :, pos:], y[:, :, pos:])


@pytest.mark.parametrize("name", sorted(OPS))
def test_state_carry_over(name):
    rng = np.random.default_rng(10)
    xs = _sequence(rng, L=11)
    y, state = OPS[name](*(t(x) for x in xs))
    cut = 6
    y1, state1 = OPS[name](*(t(x[:, :, :cut]) for x in xs))
    y2, state2 = OPS[name](*(t(x[:, :, cut:]) for x in xs), state=state1)
    np.testing.assert_allclose(np.concatenate([y1.numpy(), y2.numpy()], 2), y.numpy(),
                               atol=1e-12)
    flat = lambda s: [x.numpy() for x in (s if isinstance(s, tuple) else (s,))]  # noqa: E731
    for a, b in zip(flat(state2), flat(state)):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_token_by_token_equals_whole_sequence():
    rng = np.random.default_rng(11)
    xs = _sequence(rng, L=6)
    for name in ("sum-normalized-recurrent", "delta-recurrent"):
        y, _ = OPS[name](*(t(x) for x in xs))
        state, pieces = None, []
        for i in range(6):
            yi, state = OPS[name](*(t(x[:, :, i:i + 1]) for x in xs), state=state)
            pieces.append(yi.numpy())
        np.testing.assert_allclose(np.concatenate(pieces, 2), y.numpy(), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# float32, method choice
# ---------------------------------------------------------------------------------------------

def test_float32_close_to_float64_and_keeps_dtype():
    rng = np.random.default_rng(12)
    xs = _sequence(rng)
    for name in ("sum-normalized-recurrent", "delta-chunked", "delta-recurrent"):
        y64, _ = OPS[name](*(t(x) for x in xs))
        y32, s32 = OPS[name](*(t(x, dtype=fw.float32) for x in xs))
        assert y32.dtype == np.float32
        np.testing.assert_allclose(y32.numpy(), y64.numpy(), atol=1e-4, rtol=1e-4)


def test_choose_method():
    assert FW.choose_method("recurrent", cpu, 4096, 512, 512, 64) == "recurrent"
    assert FW.choose_method("chunked", cpu, 3, 2, 2, 64) == "chunked"
    assert FW.choose_method("auto", cpu, 1024, 16, 16, 64) == "recurrent"
    assert FW.choose_method("auto", cpu, 1024, 256, 256, 64) == "chunked"
    assert FW.choose_method("auto", cpu, 32, 256, 256, 64) == "recurrent"   # one chunk


# ---------------------------------------------------------------------------------------------
# feature maps
# ---------------------------------------------------------------------------------------------

def dpfp_numpy(x, nu):
    r = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], -1)
    return np.concatenate([r * np.roll(r, j, axis=-1) for j in range(1, nu + 1)], -1)


def test_dpfp_matches_formula_and_facts():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 5))
    for nu in (1, 2, 3, 4):
        phi = FM.dpfp(t(x), nu).numpy()
        assert phi.shape == (2, 3, 2 * 5 * nu)
        np.testing.assert_allclose(phi, dpfp_numpy(x, nu), atol=0)
        assert (phi >= 0).all()
    # why nu >= D is refused: block D is zero, blocks j and 2D - j hold the same products
    D = 5
    blocks = dpfp_numpy(x, 2 * D - 1).reshape(2, 3, 2 * D - 1, 2 * D)
    np.testing.assert_array_equal(blocks[:, :, D - 1], 0)
    for j in range(1, D):
        np.testing.assert_allclose(np.sort(blocks[:, :, j - 1], -1),
                                   np.sort(blocks[:, :, 2 * D - j - 1], -1))


def test_elu_plus_one_and_sum_normalize_values():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 6)) * 3
    want = np.where(x > 0, x + 1, np.exp(x))
    np.testing.assert_allclose(FM.elu_plus_one(t(x)).numpy(), want, atol=1e-15)
    y = FM.sum_normalize(FM.elu_plus_one(t(x)), eps=0).numpy()
    np.testing.assert_allclose(y.sum(-1), 1, atol=1e-14)
    assert FM.elu_plus_one(t(np.array([-1000.0, 1000.0]))).numpy().tolist() == [0.0, 1001.0]


def test_favor_features_estimate_the_softmax_kernel():
    rng = np.random.default_rng(15)
    # E[phi(x) . phi(y)] = exp(x . y); the relative standard error here is about 1%, so a wrong
    # constant (a factor 2), a missing exp(-|x|^2/2) or a sign error is far outside 5%
    D, m = 4, 16384
    x, y = rng.standard_normal((2, 6, D)) * 0.3
    w = FM.favor_projection(D, m, generator=rng, dtype=np.float64)
    phx = FM.favor_features(t(x), w).numpy()
    phy = FM.favor_features(t(y), w).numpy()
    assert phx.shape == (6, 2 * m) and (phx > 0).all()
    estimate = phx @ phy.T
    exact = np.exp(x @ y.T)
    assert np.abs(estimate / exact - 1).max() < 0.05


def test_favor_projection_blocks_are_orthogonal_and_seeded():
    w = FM.favor_projection(4, 10, generator=np.random.default_rng(0), dtype=np.float64).numpy()
    assert w.shape == (4, 10)
    for block in (w[:, :4], w[:, 4:8], w[:, 8:]):
        gram = block.T @ block
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-12)
    again = FM.favor_projection(4, 10, generator=np.random.default_rng(0), dtype=np.float64)
    np.testing.assert_array_equal(again.numpy(), w)
    fw.manual_seed(3)
    a = FM.favor_projection(4, 10).numpy()
    fw.manual_seed(3)
    np.testing.assert_array_equal(FM.favor_projection(4, 10).numpy(), a)
    # lengths follow chi(D): mean square length D
    big = FM.favor_projection(8, 20000, generator=np.random.default_rng(1), dtype=np.float64)
    assert abs((big.numpy() ** 2).sum(0).mean() - 8) < 0.2


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def _qkv(rng, B=1, H=2, L=4, Dk=3, Dv=2):
    return t(rng.random((B, H, L, Dk))), t(rng.random((B, H, L, Dk))), t(rng.random((B, H, L, Dv)))


def test_mismatched_shapes_are_refused_with_the_shapes():
    rng = np.random.default_rng(16)
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=r"linear_attention.*\(1, 2, 4, 3\).*\(1, 2, 4, 5\)"):
        FW.linear_attention(q, t(rng.random((1, 2, 4, 5))), v)
    with pytest.raises(ValueError, match=r"delta_rule.*v \(1, 2, 3, 2\)"):
        FW.delta_rule(q, k, t(rng.random((1, 2, 3, 2))), t(np.full((1, 2, 4), 0.5)))
    with pytest.raises(ValueError, match=r"linear_attention.*\(1, 2, 3\)"):
        FW.linear_attention(t(rng.random((1, 2, 3))), k, v)
    with pytest.raises(ValueError, match=r"linear_attention: state S must be \(1, 2, 3, 2\)"):
        FW.linear_attention(q, k, v, initial_state=(t(np.zeros((1, 2, 2, 3))),
                                                    t(np.zeros((1, 2, 3)))))
    with pytest.raises(ValueError, match=r"linear_attention: state z must be \(1, 2, 3\)"):
        FW.linear_attention(q, k, v, initial_state=(t(np.zeros((1, 2, 3, 2))),
                                                    t(np.zeros((1, 2, 2)))))
    with pytest.raises(ValueError, match=r"linear_attention: with normalize=True the state is"):
        FW.linear_attention(q, k, v, initial_state=t(np.zeros((1, 2, 3, 2))))
    with pytest.raises(ValueError, match=r"delta_rule: initial_state must be .* \(1, 2, 3, 2\).*got \(1, 2, 3\)"):
        FW.delta_rule(q, k, v, t(np.full((1, 2, 4), 0.5)), initial_state=t(np.zeros((1, 2, 3))))
    with pytest.raises(TypeError, match=r"linear_attention: inputs must share one dtype"):
        FW.linear_attention(q, k, t(rng.random((1, 2, 4, 2)), dtype=fw.float32))
    with pytest.raises(TypeError, match=r"delta_rule: q must be a Tensor"):
        FW.delta_rule(q.numpy(), k, v, t(np.full((1, 2, 4), 0.5)))


def test_bad_beta_is_refused():
    rng = np.random.default_rng(17)
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=r"delta_rule: beta must be \(B, H, L\) = \(1, 2, 4\).*"
                                         r"\(1, 2, 4, 1\)"):
        FW.delta_rule(q, k, v, t(np.full((1, 2, 4, 1), 0.5)))
    for bad in (1.5, -0.1):
        beta = np.full((1, 2, 4), 0.5)
        beta[0, 1, 2] = bad
        with pytest.raises(ValueError, match=r"delta_rule: beta must lie in \[0, 1\]"):
            FW.delta_rule(q, k, v, t(beta))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad):
    rng = np.random.default_rng(18)
    q, k, v = _qkv(rng)
    vv = v.numpy()
    vv[0, 0, 1, 1] = bad
    with pytest.raises(ValueError, match=r"linear_attention: v \(1, 2, 4, 2\) contains NaN"):
        FW.linear_attention(q, k, t(vv))
    kk = k.numpy()
    kk[0, 1, 0, 0] = bad
    with pytest.raises(ValueError, match=r"delta_rule: k .* contains NaN or Inf"):
        FW.delta_rule(q, t(kk), v, t(np.full((1, 2, 4), 0.5)))
    beta = np.full((1, 2, 4), 0.5)
    beta[0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"delta_rule: beta .* contains NaN or Inf"):
        FW.delta_rule(q, k, v, t(beta))


def test_bad_dpfp_nu_and_feature_map_input():
    x = t(np.ones((2, 4)))
    for nu in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"dpfp: nu must be an integer >= 1"):
            FM.dpfp(x, nu)
    with pytest.raises(ValueError, match=r"dpfp: nu=4 is too large for input dim D=4.*repeat"):
        FM.dpfp(x, 4)
    with pytest.raises(ValueError, match=r"favor_features: projection must be \(D, m\)"):
        FM.favor_features(x, t(np.ones((3, 2))))
    with pytest.raises(ValueError, match=r"sum_normalize: dim=2"):
        FM.sum_normalize(x, dim=2)
    with pytest.raises(TypeError, match=r"elu_plus_one: x must be floating point"):
        FM.elu_plus_one(fw.tensor(np.ones(3, dtype=np.int64)))


def test_bad_method_and_chunk_size():
    rng = np.random.default_rng(19)
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=r"linear_attention: method must be one of"):
        FW.linear_attention(q, k, v, method="fast")
    with pytest.raises(ValueError, match=r"delta_rule: chunk_size must be an integer >= 1"):
        FW.delta_rule(q, k, v, t(np.full((1, 2, 4), 0.5)), chunk_size=0)


# ---------------------------------------------------------------------------------------------
# nn.FastWeightAttention, the token mixer
# ---------------------------------------------------------------------------------------------

from tinyfw.nn.fast_weights import FastWeightAttention  # noqa: E402

LAYER_CONFIGS = [(fm, up) for fm in ("elu", "dpfp", "favor") for up in ("sum", "delta")]


def _layer(feature_map, update, **kw):
    fw.manual_seed(0)
    layer = FastWeightAttention(8, 2, feature_map=feature_map, nu=2, update=update,
                                dtype=np.float64, **kw)
    layer.eval()      # FAVOR+ keeps its projection fixed in eval mode
    return layer


@pytest.mark.parametrize("feature_map, update", LAYER_CONFIGS)
def test_layer_shapes_causality_and_carry_over(feature_map, update):
    layer = _layer(feature_map, update)
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 9, 8))
    y, state = layer(t(x), return_state=True)
    assert y.shape == (2, 9, 8) and y.dtype == np.float64
    for key, shape in layer.state_shapes(2).items():
        assert state[key].shape == shape
    # causality: later inputs leave earlier outputs bit-identical
    x2 = x.copy()
    x2[:, 5:] = rng.standard_normal((2, 4, 8))
    y2 = layer(t(x2)).numpy()
    np.testing.assert_array_equal(y2[:, :5], y.numpy()[:, :5])
    assert not np.allclose(y2[:, 5:], y.numpy()[:, 5:])
    # carry-over: [x1; x2] == x1, then x2 from x1's state; and token by token
    ya, sa = layer(t(x[:, :4]), return_state=True)
    yb, sb = layer(t(x[:, 4:]), state=sa, return_state=True)
    np.testing.assert_allclose(np.concatenate([ya.numpy(), yb.numpy()], 1), y.numpy(),
                               atol=1e-12)
    for key in state:
        np.testing.assert_allclose(sb[key].numpy(), state[key].numpy(), atol=1e-12)
    s, pieces = None, []
    for i in range(9):
        yi, s = layer(t(x[:, i:i + 1]), state=s, return_state=True)
        pieces.append(yi.numpy())
    np.testing.assert_allclose(np.concatenate(pieces, 1), y.numpy(), atol=1e-12)


@pytest.mark.parametrize("feature_map, update", [("dpfp", "delta"), ("elu", "sum"),
                                                 ("favor", "delta")])
def test_layer_gradcheck(feature_map, update):
    layer = _layer(feature_map, update)
    x = t(np.random.default_rng(21).standard_normal((1, 4, 8)), True)
    assert fw.gradcheck(lambda x: layer(x), (x,))


@pytest.mark.parametrize("feature_map, update", LAYER_CONFIGS)
def test_layer_parameter_gradcheck(feature_map, update):
    """Every parameter's gradient by value (qkv, beta, proj with their biases), on a layer small
    enough (D = 4, two heads) that the finite differences over all of them stay cheap."""
    fw.manual_seed(0)
    layer = FastWeightAttention(4, 2, feature_map=feature_map, nu=1, update=update,
                                dtype=np.float64)
    layer.eval()      # FAVOR+ keeps its projection fixed in eval mode
    rng = np.random.default_rng(23)
    for p in layer.parameters():           # O(1) weights: gradients well above the tolerance
        p.data = rng.normal(0.0, 0.5, p.shape)
    names = [name for name, _ in layer.named_parameters()]
    assert ("beta.weight" in names) == (update == "delta") and "proj.bias" in names
    x = t(rng.standard_normal((2, 3, 4)))
    w = t(rng.standard_normal((2, 3, 4)))
    params = list(layer.parameters())
    assert fw.gradcheck(lambda *_: (layer(x) * w).sum(), params)


def test_layer_favor_redraws_in_training_only():
    layer = _layer("favor", "sum")
    x = t(np.random.default_rng(22).standard_normal((1, 5, 8)))
    np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())
    layer.train()
    assert not np.allclose(layer(x).numpy(), layer(x).numpy())
    # a continued sequence keeps the projection it started with, also in training
    y, state = layer(t(x.numpy()[:, :3]), return_state=True)
    _, state2 = layer(t(x.numpy()[:, 3:]), state=state, return_state=True)
    assert state2["projection"] is state["projection"]
    assert "projection" in dict(layer.named_buffers())


def test_layer_in_language_model_generates():
    from tinyfw.nn import models
    for mixer in ("linear", "delta"):
        fw.manual_seed(0)
        cfg = models.ModelConfig(vocab_size=11, context_length=16, n_layers=2, n_heads=2,
                                 d_model=8, mixer=mixer)
        model = models.LanguageModel(cfg)
        model.eval()
        ids = fw.tensor(np.array([[1, 2, 3, 4, 5]]))
        logits = model(ids).numpy()
        # continuing from the state gives the same logits as the whole sequence
        out, state = model(fw.tensor(np.array([[1, 2, 3]])), return_state=True)
        out2, _ = model(fw.tensor(np.array([[4, 5]])), state=state, return_state=True)
        np.testing.assert_allclose(np.concatenate([out.numpy(), out2.numpy()], 1), logits,
                                   atol=1e-5)
        assert model.generate(ids, max_new_tokens=4).shape == (1, 9)
        # greedy decoding from the carried fast weights: each new token is the argmax of the
        # whole sequence's logits, as recomputing from scratch gives
        out = model.generate(ids, max_new_tokens=4, temperature=0).numpy()
        np.testing.assert_array_equal(out[:, :5], ids.numpy())
        for n in range(5, 9):
            np.testing.assert_array_equal(out[:, n],
                                          model(fw.tensor(out[:, :n])).numpy()[:, -1].argmax(-1))
        np.testing.assert_array_equal(model.generate(ids, 4, temperature=0, use_state=False)
                                      .numpy(), out)
        # top_k=1 keeps only the most likely token: sampling at any temperature is greedy
        np.testing.assert_array_equal(model.generate(ids, 4, temperature=3.0, top_k=1).numpy(),
                                      out)


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="FastWeightAttention: d_model=10 must be a positive "
                                         "multiple of n_heads=4"):
        FastWeightAttention(10, 4)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        FastWeightAttention(8, 2, feature_map="relu")
    with pytest.raises(ValueError, match="update must be one of"):
        FastWeightAttention(8, 2, update="hebb")
    with pytest.raises(ValueError, match=r"DPFP needs an integer nu with 1 <= nu < head_dim = 4"):
        FastWeightAttention(8, 2, feature_map="dpfp", nu=4)
    layer = _layer("elu", "sum")
    with pytest.raises(ValueError, match=r"input must be \(batch, length, 8\), got \(2, 8\)"):
        layer(t(np.zeros((2, 8))))
    with pytest.raises(ValueError, match=r"state must be the dict with keys \['S', 'z'\]"):
        layer(t(np.zeros((1, 3, 8))), state={"S": t(np.zeros((1, 2, 4, 4)))})
    with pytest.raises(ValueError, match=r"state\['S'\] must be \(1, 2, 4, 4\)"):
        layer(t(np.zeros((1, 3, 8))), state={"S": t(np.zeros((2, 2, 4, 4))),
                                             "z": t(np.zeros((1, 2, 4)))})
