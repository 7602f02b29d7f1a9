"""Backend-level tests of the fast-weight kernels (sum rule and delta rule).

What defines correctness (docs/FAST_WEIGHTS.md, "Tests that define correctness"), here at the
level of raw arrays, before any Tensor is involved:
  1. recurrent == masked quadratic form (sum rule);
  2. chunked == recurrent (outputs, final states, residuals, all gradients), several chunk sizes,
     L not divisible by C, non-zero initial state;
  3. the reference backward == central finite differences of the reference forward;
  4. delta-rule invariants; 5. causality; 6. state carry-over;
  7. Numba CPU kernels == NumPy reference (float64 and float32).
"""
import numpy as np
import pytest

from tinyfw.backend import cpu, reference

BACKENDS = {"reference": reference, "cpu": cpu}


def make_inputs(B=2, H=3, L=13, Dk=4, Dv=5, dtype=np.float64, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, L, Dk))
    k = rng.standard_normal((B, H, L, Dk)) * 0.5
    if positive:
        q, k = np.abs(q), np.abs(k)
    v = rng.standard_normal((B, H, L, Dv))
    beta = rng.uniform(0.05, 0.95, (B, H, L))
    s0 = rng.standard_normal((B, H, Dk, Dv))
    do = rng.standard_normal((B, H, L, Dv))
    ds = rng.standard_normal((B, H, Dk, Dv))
    return [x.astype(dtype) for x in (q, k, v, beta, s0, do, ds)]


def assert_all_close(got, want, atol, rtol=0.0, names=None):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        name = names[i] if names else i
        assert a.shape == b.shape, (name, a.shape, b.shape)
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg=f"output {name}")


# ---------------------------------------------------------------------------------------------
# 1. sum rule == masked quadratic form
# ---------------------------------------------------------------------------------------------

def quadratic_sum_rule(q, k, v, s0, normalize=False, z0=None, eps=1e-6):
    """Y = tril(Q K^T) V + Q S0, optionally divided by tril(Q K^T) 1 + Q z0 + eps."""
    L = q.shape[2]
    scores = np.einsum("bhtd,bhsd->bhts", q, k) * np.tril(np.ones((L, L)))
    num = scores @ v + q @ s0
    if not normalize:
        return num
    den = scores.sum(-1) + np.einsum("bhtd,bhd->bht", q, z0) + eps
    return num / den[..., None]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_sum_rule_equals_masked_quadratic_form(backend):
    b = BACKENDS[backend]
    q, k, v, _, s0, _, _ = make_inputs()
    o, s = b.linear_attention_forward(q, k, v, s0)
    np.testing.assert_allclose(o, quadratic_sum_rule(q, k, v, s0), atol=1e-12)
    np.testing.assert_allclose(s, s0 + np.einsum("bhtk,bhtv->bhkv", k, v), atol=1e-12)
    # zero initial state given as None
    o, _ = b.linear_attention_forward(q, k, v, None)
    np.testing.assert_allclose(o, quadratic_sum_rule(q, k, v, 0 * s0), atol=1e-12)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_normaliser_by_a_column_of_ones(backend):
    """Appending ones to v makes the kernel compute q_t . z_t: how the op normalises."""
    b = BACKENDS[backend]
    q, k, v, _, s0, _, _ = make_inputs(positive=True)
    z0 = np.abs(s0[..., 0])
    v_aug = np.concatenate([v, np.ones(v.shape[:-1] + (1,))], axis=-1)
    s_aug = np.concatenate([s0, z0[..., None]], axis=-1)
    o_aug, s_final = b.linear_attention_forward(q, k, v_aug, s_aug)
    y = o_aug[..., :-1] / (o_aug[..., -1:] + 1e-6)
    np.testing.assert_allclose(y, quadratic_sum_rule(q, k, v, s0, True, z0), atol=1e-12)
    np.testing.assert_allclose(s_final[..., -1], z0 + k.sum(2), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 2. chunked == recurrent
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [1, 3, 4, 8, 13, 64])
def test_sum_rule_chunked_equals_recurrent(chunk_size):
    q, k, v, _, s0, do, ds = make_inputs(L=13)
    want = reference.linear_attention_forward(q, k, v, s0)
    got = reference.linear_attention_chunked_forward(q, k, v, s0, chunk_size)
    assert_all_close(got, want, atol=1e-10, names=["o", "s_final"])
    want = reference.linear_attention_backward(do, ds, q, k, v, s0)
    got = reference.linear_attention_chunked_backward(do, ds, q, k, v, s0, chunk_size)
    assert_all_close(got, want, atol=1e-10, names=["dq", "dk", "dv", "ds0"])
    # without an initial state / final-state gradient
    want = reference.linear_attention_backward(do, None, q, k, v, None)
    got = reference.linear_attention_chunked_backward(do, None, q, k, v, None, chunk_size)
    assert_all_close(got, want, atol=1e-10, names=["dq", "dk", "dv", "ds0"])


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 8, 13, 64])
def test_delta_rule_chunked_equals_recurrent(chunk_size):
    q, k, v, beta, s0, do, ds = make_inputs(L=13)
    want = reference.delta_rule_forward(q, k, v, beta, s0)
    got = reference.delta_rule_chunked_forward(q, k, v, beta, s0, chunk_size)
    assert_all_close(got, want, atol=1e-10, names=["o", "s_final", "r"])
    r = want[2]
    want = reference.delta_rule_backward(do, ds, q, k, v, beta, s0, r)
    got = reference.delta_rule_chunked_backward(do, ds, q, k, v, beta, s0, r, chunk_size)
    assert_all_close(got, want, atol=1e-10, names=["dq", "dk", "dv", "dbeta", "ds0"])
    want = reference.delta_rule_backward(do, None, q, k, v, beta, None, r)
    got = reference.delta_rule_chunked_backward(do, None, q, k, v, beta, None, r, chunk_size)
    assert_all_close(got, want, atol=1e-10, names=["dq", "dk", "dv", "dbeta", "ds0"])


def test_delta_rule_chunked_with_large_keys_and_beta_one():
    """Un-normalised keys make A far from the identity; the solve must still be exact."""
    q, k, v, beta, s0, do, ds = make_inputs(L=10, Dk=3)
    k = k * 2.0
    beta = np.ones_like(beta)
    want = reference.delta_rule_forward(q, k, v, beta, s0)
    got = reference.delta_rule_chunked_forward(q, k, v, beta, s0, 4)
    scale = max(np.abs(w).max() for w in want)
    assert_all_close(got, want, atol=1e-10 * scale)


def test_chunk_size_must_be_positive():
    q, k, v, beta, s0, _, _ = make_inputs(L=4)
    with pytest.raises(ValueError, match="chunk_size"):
        reference.linear_attention_chunked_forward(q, k, v, s0, 0)


# ---------------------------------------------------------------------------------------------
# 3. the reference backward against finite differences of the reference forward
# ---------------------------------------------------------------------------------------------

def numerical_gradient(f, args, index, eps=1e-6):
    x = args[index]
    grad = np.zeros_like(x)
    for pos in np.ndindex(x.shape):
        old = x[pos]
        x[pos] = old + eps
        plus = f(*args)
        x[pos] = old - eps
        minus = f(*args)
        x[pos] = old
        grad[pos] = (plus - minus) / (2 * eps)
    return grad


def test_sum_rule_backward_matches_finite_differences():
    q, k, v, _, s0, do, ds = make_inputs(B=1, H=2, L=6, Dk=3, Dv=2)

    def loss(q, k, v, s0):
        o, s = reference.linear_attention_forward(q, k, v, s0)
        return np.sum(o * do) + np.sum(s * ds)

    grads = reference.linear_attention_backward(do, ds, q, k, v, s0)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g, numerical_gradient(loss, [q, k, v, s0], i), atol=1e-7)


def test_delta_rule_backward_matches_finite_differences():
    q, k, v, beta, s0, do, ds = make_inputs(B=1, H=2, L=6, Dk=3, Dv=2)

    def loss(q, k, v, beta, s0):
        o, s, _ = reference.delta_rule_forward(q, k, v, beta, s0)
        return np.sum(o * do) + np.sum(s * ds)

    r = reference.delta_rule_forward(q, k, v, beta, s0)[2]
    grads = reference.delta_rule_backward(do, ds, q, k, v, beta, s0, r)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(
            g, numerical_gradient(loss, [q, k, v, beta, s0], i), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# 4. delta-rule invariants
# ---------------------------------------------------------------------------------------------

DELTA_FORMS = {
    "reference": reference.delta_rule_forward,
    "cpu": cpu.delta_rule_forward,
    "chunked": lambda q, k, v, beta, s0: reference.delta_rule_chunked_forward(q, k, v, beta, s0, 3),
}


@pytest.mark.parametrize("form", sorted(DELTA_FORMS))
def test_delta_rule_beta_zero_leaves_state_unchanged(form):
    q, k, v, beta, s0, _, _ = make_inputs()
    o, s, _ = DELTA_FORMS[form](q, k, v, np.zeros_like(beta), s0)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_allclose(o, q @ s0, atol=1e-12)


@pytest.mark.parametrize("form", sorted(DELTA_FORMS))
def test_delta_rule_orthonormal_keys_equal_sum_rule(form):
    B, H, L, D, Dv = 2, 2, 6, 6, 3
    rng = np.random.default_rng(1)
    keys = np.linalg.qr(rng.standard_normal((B, H, D, D)))[0]       # orthonormal columns
    k = np.swapaxes(keys, -1, -2)[:, :, :L]                          # L distinct orthonormal keys
    q = rng.standard_normal((B, H, L, D))
    v = rng.standard_normal((B, H, L, Dv))
    o, s, _ = DELTA_FORMS[form](q, k, v, np.ones((B, H, L)), None)
    o_sum, s_sum = reference.linear_attention_forward(q, k, v, None)
    np.testing.assert_allclose(o, o_sum, atol=1e-12)
    np.testing.assert_allclose(s, s_sum, atol=1e-12)


@pytest.mark.parametrize("form", sorted(DELTA_FORMS))
def test_delta_rule_same_unit_key_twice_keeps_second_value(form):
    rng = np.random.default_rng(2)
    B, H, D, Dv = 1, 2, 4, 3
    key = rng.standard_normal((B, H, D))
    key /= np.linalg.norm(key, axis=-1, keepdims=True)
    k = np.stack([key, key], axis=2)
    v = rng.standard_normal((B, H, 2, Dv))
    s0 = rng.standard_normal((B, H, D, Dv))
    q = rng.standard_normal((B, H, 2, D))
    _, s, _ = DELTA_FORMS[form](q, k, v, np.ones((B, H, 2)), s0)
    np.testing.assert_allclose(np.einsum("bhkv,bhk->bhv", s, key), v[:, :, 1], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 5. causality and 6. state carry-over, for every form
# ---------------------------------------------------------------------------------------------

def forward_forms():
    """name -> f(q, k, v, beta, s0) -> (o, s_final) for every forward implementation."""
    forms = {}
    for bname, b in BACKENDS.items():
        forms[f"sum-{bname}"] = (lambda b: lambda q, k, v, beta, s0:
                                 b.linear_attention_forward(q, k, v, s0))(b)
        forms[f"delta-{bname}"] = (lambda b: lambda q, k, v, beta, s0:
                                   b.delta_rule_forward(q, k, v, beta, s0)[:2])(b)
    forms["sum-chunked"] = lambda q, k, v, beta, s0: reference.linear_attention_chunked_forward(
        q, k, v, s0, 4)
    forms["delta-chunked"] = lambda q, k, v, beta, s0: reference.delta_rule_chunked_forward(
        q, k, v, beta, s0, 4)[:2]
    return forms


FORWARD_FORMS = forward_forms()


@pytest.mark.parametrize("form", sorted(FORWARD_FORMS))
def test_causality(form):
    f = FORWARD_FORMS[form]
    q, k, v, beta, s0, _, _ = make_inputs(L=11)
    o, _ = f(q, k, v, beta, s0)
    t = 6
    q2, k2, v2, beta2 = q.copy(), k.copy(), v.copy(), beta.copy()
    rng = np.random.default_rng(5)
    for x in (q2, k2, v2, beta2):
        x[:, :, t:] = rng.uniform(0.1, 0.9, x[:, :, t:].shape)
    o2, _ = f(q2, k2, v2, beta2, s0)
    np.testing.assert_array_equal(o2[:, :, :t], o[:, :, :t])
    assert not np.allclose(o2[:, :, t:], o[:, :, t:])


@pytest.mark.parametrize("form", sorted(FORWARD_FORMS))
def test_state_carry_over(form):
    f = FORWARD_FORMS[form]
    q, k, v, beta, s0, _, _ = make_inputs(L=11)
    o, s = f(q, k, v, beta, s0)
    t = 5
    o1, s1 = f(q[:, :, :t], k[:, :, :t], v[:, :, :t], beta[:, :, :t], s0)
    o2, s2 = f(q[:, :, t:], k[:, :, t:], v[:, :, t:], beta[:, :, t:], s1)
    np.testing.assert_allclose(np.concatenate([o1, o2], axis=2), o, atol=1e-12)
    np.testing.assert_allclose(s2, s, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 7. Numba CPU kernels == NumPy reference
# ---------------------------------------------------------------------------------------------

TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_state", [True, False])
def test_cpu_sum_rule_kernels_match_reference(dtype, with_state):
    q, k, v, _, s0, do, ds = make_inputs(dtype=dtype)
    if not with_state:
        s0 = ds = None
    got = cpu.linear_attention_forward(q, k, v, s0)
    want = reference.linear_attention_forward(q, k, v, s0)
    assert all(g.dtype == dtype for g in got)
    assert_all_close(got, want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    got = cpu.linear_attention_backward(do, ds, q, k, v, s0)
    want = reference.linear_attention_backward(do, ds, q, k, v, s0)
    assert all(g.dtype == dtype for g in got)
    assert_all_close(got, want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype],
                     names=["dq", "dk", "dv", "ds0"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_state", [True, False])
def test_cpu_delta_rule_kernels_match_reference(dtype, with_state):
    q, k, v, beta, s0, do, ds = make_inputs(dtype=dtype)
    if not with_state:
        s0 = ds = None
    got = cpu.delta_rule_forward(q, k, v, beta, s0)
    want = reference.delta_rule_forward(q, k, v, beta, s0)
    assert all(g.dtype == dtype for g in got)
    assert_all_close(got, want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype],
                     names=["o", "s_final", "r"])
    r = want[2]
    got = cpu.delta_rule_backward(do, ds, q, k, v, beta, s0, r)
    want = reference.delta_rule_backward(do, ds, q, k, v, beta, s0, r)
    assert all(g.dtype == dtype for g in got)
    assert_all_close(got, want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype],
                     names=["dq", "dk", "dv", "dbeta", "ds0"])


def test_cpu_kernels_accept_non_contiguous_inputs():
    q, k, v, beta, s0, do, ds = make_inputs()
    qt = np.ascontiguousarray(np.swapaxes(q, 1, 2)).swapaxes(1, 2)   # same values, other strides
    assert not qt.flags.c_contiguous
    assert_all_close(cpu.delta_rule_forward(qt, k, v, beta, s0),
                     reference.delta_rule_forward(q, k, v, beta, s0), atol=1e-12)
    assert_all_close(cpu.linear_attention_forward(qt, k, v, s0),
                     reference.linear_attention_forward(q, k, v, s0), atol=1e-12)


def test_cpu_kernels_do_not_modify_inputs():
    q, k, v, beta, s0, do, ds = make_inputs()
    copies = [x.copy() for x in (q, k, v, beta, s0, do, ds)]
    _, _, r = cpu.delta_rule_forward(q, k, v, beta, s0)
    cpu.delta_rule_backward(do, ds, q, k, v, beta, s0, r)
    cpu.linear_attention_forward(q, k, v, s0)
    cpu.linear_attention_backward(do, ds, q, k, v, s0)
    for x, c in zip((q, k, v, beta, s0, do, ds), copies):
        np.testing.assert_array_equal(x, c)
