"""Softmax attention: Numba kernels == NumPy reference, the reference == a row-by-row definition
and finite differences, gradchecks of the ops (float64, causal / not, Lq != Lk, non-contiguous),
PyTorch parity when torch is importable, errors, and ``nn.CausalSelfAttention`` (causality, the
KV cache, attention maps).
"""
import math

import numpy as np
import pytest

from conftest import launch_path
import tinyfw as fw
from tinyfw.backend.cpu import attention as kernels
from tinyfw.backend.reference import attention as ref
from tinyfw.nn.attention import CausalSelfAttention, attention_probabilities as layer_probs
from tinyfw.ops.attention import (attention_probabilities, causal_attention,
                                  packed_causal_self_attention,
                                  scaled_dot_product_attention as sdpa)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}
# (B, H, Lq, Lk, D, Dv, causal, offset)
CASES = [
    (2, 3, 5, 5, 4, 4, True, 0),
    (2, 3, 5, 5, 4, 4, False, 0),
    (1, 2, 3, 7, 4, 6, True, 4),     # KV-cache step: the 3 queries are the last 3 of 7 keys
    (1, 2, 7, 3, 5, 2, True, 0),     # more queries than keys, PyTorch's top-left triangle
    (2, 1, 1, 9, 8, 8, True, 8),     # one new token against a cache
    (1, 1, 4, 6, 3, 3, False, 0),
    (3, 2, 17, 17, 16, 16, True, 0),
    (1, 1, 0, 4, 3, 3, True, 0),     # no queries
]


@pytest.fixture(params=["serial", "split", "parallel"])
def path(request, monkeypatch):
    """Run the kernels on the calling thread, split by heads with helper threads, or through the
    prange drivers, whatever the size."""
    return launch_path(monkeypatch, "ATTENTION", request.param)


# (QUERY_BLOCK, KEY_BLOCK, SHORT_QUERIES): one tile per head; blocks of a few rows, so every case
# spans several tiles in both directions (and a last, shorter one), crossing the causal diagonal
# in every way; and the short-context rule (query blocks of half QUERY_BLOCK up to SHORT_QUERIES)
TILINGS = {"one-tile": (1 << 30, 1 << 30, 0), "blocks-3x2": (3, 2, 0), "blocks-2x5": (2, 5, 0),
           "short-rule-6x4": (6, 4, 1 << 30)}


@pytest.fixture(params=list(TILINGS))
def layout(request, monkeypatch):
    """Run the kernels with the given tile sizes, whatever the length."""
    query_block, key_block, short_queries = TILINGS[request.param]
    monkeypatch.setattr(kernels, "QUERY_BLOCK", query_block)
    monkeypatch.setattr(kernels, "KEY_BLOCK", key_block)
    monkeypatch.setattr(kernels, "SHORT_QUERIES", short_queries)
    return request.param


def rng(seed=0):
    return np.random.default_rng(seed)


def make(case, dtype, seed=0):
    B, H, Lq, Lk, D, Dv, _, _ = case
    g = rng(seed)
    q = g.standard_normal((B, H, Lq, D)).astype(dtype)
    k = g.standard_normal((B, H, Lk, D)).astype(dtype)
    v = g.standard_normal((B, H, Lk, Dv)).astype(dtype)
    do = g.standard_normal((B, H, Lq, Dv)).astype(dtype)
    return q, k, v, do


def numeric_vjp(f, x, dy, h=1e-6):
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
@pytest.mark.parametrize("case", CASES)
def test_attention_kernels_match_reference(case, dtype, path, layout):
    q, k, v, do = make(case, dtype)
    causal, offset = case[6], case[7]
    scale = 1 / math.sqrt(q.shape[-1])
    o_ref, lse_ref = ref.attention_forward(q, k, v, scale, causal, offset)
    o, lse = kernels.attention_forward(q, k, v, scale, causal, offset)
    for got, want, name in ((o, o_ref, "o"), (lse, lse_ref, "lse")):
        assert got.dtype == dtype and got.shape == want.shape, name
        np.testing.assert_allclose(got, want, err_msg=name, **TOL[dtype])
    want = ref.attention_backward(do, q, k, v, o_ref, lse_ref, scale, causal, offset)
    got = kernels.attention_backward(do, q, k, v, o_ref, lse_ref, scale, causal, offset)
    for g, w, name in zip(got, want, ("dq", "dk", "dv")):
        assert g.dtype == dtype and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, err_msg=name, **TOL[dtype])


def test_attention_kernels_accept_non_contiguous_inputs(path, layout):
    g = rng(1)
    base = g.standard_normal((2, 6, 3, 4))                   # (B, L, H, D)
    q, k, v = (np.swapaxes(base * s, 1, 2) for s in (1.0, 0.5, 2.0))   # (B, H, L, D) views
    do = np.swapaxes(g.standard_normal((2, 6, 3, 4)), 1, 2)
    c = [np.ascontiguousarray(a) for a in (q, k, v, do)]
    o, lse = kernels.attention_forward(q, k, v, 0.5, True)
    o_ref, lse_ref = ref.attention_forward(*c[:3], 0.5, True)
    np.testing.assert_allclose(o, o_ref, **TOL[np.float64])
    for got, want in zip(kernels.attention_backward(do, q, k, v, o, lse, 0.5, True),
                         ref.attention_backward(c[3], *c[:3], o_ref, lse_ref, 0.5, True)):
        np.testing.assert_allclose(got, want, **TOL[np.float64])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN on purpose
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_kernels_propagate_nan_like_the_reference(dtype, layout):
    """A NaN in a query poisons its own row; a NaN in a key is masked away from the queries
    before it (causal) and poisons the rows that see it; -inf scores give what NumPy gives.
    Backward: the reference also spreads a NaN row's delta to keys that row cannot see (through
    0 * NaN at masked entries); the kernels may leave those finite, so there only the
    reference's finite entries are compared."""
    q, k, v, do = make((1, 2, 6, 6, 4, 4, True, 0), dtype, seed=5)
    q[0, 0, 2, 1] = np.nan
    k[0, 1, 4, 0] = np.nan
    q[0, 1, 0, :] = -np.inf
    o_ref, lse_ref = ref.attention_forward(q, k, v, 0.5, True)
    o, lse = kernels.attention_forward(q, k, v, 0.5, True)
    for got, want in ((o, o_ref), (lse, lse_ref)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, **TOL[dtype])
    want = ref.attention_backward(do, q, k, v, o_ref, lse_ref, 0.5, True)
    got = kernels.attention_backward(do, q, k, v, o_ref, lse_ref, 0.5, True)
    for g, w in zip(got, want):
        finite = np.isfinite(w)
        assert np.isfinite(g[finite]).all()
        np.testing.assert_allclose(g[finite], w[finite], **TOL[dtype])


@pytest.mark.parametrize("backend", [ref, kernels], ids=["reference", "numba"])
def test_attention_is_stable_for_huge_scores(backend, layout):
    """Scores of +-1e4 (a large scale): the max-subtracted softmax gives finite outputs and a
    one-hot attention where one key wins, instead of inf/inf = NaN."""
    q, k, v, do = make((1, 1, 4, 4, 3, 3, True, 0), np.float32, seed=2)
    o, lse = backend.attention_forward(q, k, v, 1e4, True)
    assert np.isfinite(o).all() and np.isfinite(lse).all()
    s = 1e4 * (q[0, 0].astype(np.float64) @ k[0, 0].T.astype(np.float64))
    for i in range(4):
        j = int(np.argmax(s[i, :i + 1]))
        np.testing.assert_allclose(o[0, 0, i], v[0, 0, j], rtol=1e-5, atol=1e-5)
    grads = backend.attention_backward(do, q, k, v, o, lse, 1e4, True)
    assert all(np.isfinite(gr).all() for gr in grads)


# ----------------------------------------------------------------------------------------------
# reference == definitions
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES[:6])
def test_reference_forward_matches_row_by_row_definition(case):
    q, k, v, _ = make(case, np.float64, seed=3)
    causal, offset = case[6], case[7]
    o, lse = ref.attention_forward(q, k, v, 0.7, causal, offset)
    p_all = ref.attention_probabilities(q, k, 0.7, causal, offset)
    B, H, Lq, Lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    for b in range(B):
        for h in range(H):
            for i in range(Lq):
                visible = [j for j in range(Lk) if not causal or j <= i + offset]
                s = np.array([0.7 * float(q[b, h, i] @ k[b, h, j]) for j in visible])
                p = np.exp(s - s.max())
                p /= p.sum()
                np.testing.assert_allclose(o[b, h, i], p @ v[b, h, visible], rtol=1e-12)
                np.testing.assert_allclose(lse[b, h, i], math.log(np.exp(s).sum()), rtol=1e-12)
                np.testing.assert_allclose(p_all[b, h, i, visible], p, rtol=1e-12)
                hidden = [j for j in range(Lk) if j not in visible]
                assert (p_all[b, h, i, hidden] == 0).all()


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]])
def test_reference_backward_matches_finite_differences(case):
    q, k, v, do = make(case, np.float64, seed=4)
    causal, offset = case[6], case[7]
    o, lse = ref.attention_forward(q, k, v, 0.6, causal, offset)
    dq, dk, dv = ref.attention_backward(do, q, k, v, o, lse, 0.6, causal, offset)

    def out(q_, k_, v_):
        return ref.attention_forward(q_, k_, v_, 0.6, causal, offset)[0]
    np.testing.assert_allclose(dq, numeric_vjp(lambda a: out(a, k, v), q, do), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dk, numeric_vjp(lambda a: out(q, a, v), k, do), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dv, numeric_vjp(lambda a: out(q, k, a), v, do), rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# ops: gradchecks (float64)
# ----------------------------------------------------------------------------------------------

def t64(a, requires_grad=True):
    return fw.tensor(np.asarray(a, np.float64), dtype=fw.float64, requires_grad=requires_grad)


@pytest.mark.parametrize("case", CASES[:6])
def test_sdpa_gradcheck(case):
    q, k, v, _ = make(case, np.float64, seed=5)
    causal, offset = case[6], case[7]
    if offset:
        fn = causal_attention                    # the bottom-right triangle of a KV-cache step
        assert offset == k.shape[2] - q.shape[2]
    else:
        def fn(q, k, v):
            return sdpa(q, k, v, is_causal=causal)
    assert fw.gradcheck(fn, (t64(q), t64(k), t64(v)))


def test_sdpa_gradcheck_on_transposed_inputs_and_other_ranks():
    g = rng(6)
    qkv = t64(g.standard_normal((2, 5, 3, 2, 4)))        # (B, L, 3, H, D) as a model builds it

    def heads(t):
        t = t.permute(2, 0, 3, 1, 4)                      # (3, B, H, L, D): non-contiguous
        return t[0], t[1], t[2]
    assert fw.gradcheck(lambda t: sdpa(*heads(t), is_causal=True, scale=0.3), (qkv,))
    # 3-D (N, L, D) and 2-D (L, D) inputs, as PyTorch allows
    q3, k3, v3 = (t64(g.standard_normal((3, 4, 2))) for _ in range(3))
    assert fw.gradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True), (q3, k3, v3))
    q2, k2, v2 = t64(g.standard_normal((4, 3))), t64(g.standard_normal((6, 3))), \
        t64(g.standard_normal((6, 2)))
    assert fw.gradcheck(lambda q, k, v: sdpa(q, k, v), (q2, k2, v2))
    assert sdpa(q2, k2, v2).shape == (4, 2)


def test_attention_probabilities_gradcheck_and_consistency():
    q, k, v, _ = make((1, 2, 4, 6, 3, 3, True, 2), np.float64, seed=7)
    assert fw.gradcheck(lambda q, k: attention_probabilities(q, k, is_causal=True, offset=2),
                        (t64(q), t64(k)))
    p = attention_probabilities(t64(q), t64(k), is_causal=True, offset=2)
    np.testing.assert_allclose(p.numpy().sum(-1), 1, rtol=1e-12)
    # p @ v is the attention output
    np.testing.assert_allclose((p @ t64(v)).numpy(),
                               causal_attention(t64(q), t64(k), t64(v)).numpy(), rtol=1e-12)


def test_sdpa_float32_keeps_dtype_and_backpropagates():
    q, k, v = (fw.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3))
    o = sdpa(q, k, v, is_causal=True)
    assert o.dtype == np.float32
    o.sum().backward()
    assert all(t.grad.dtype == np.float32 and t.grad.shape == t.shape for t in (q, k, v))


def test_causal_sdpa_first_row_attends_only_to_first_key():
    q, k, v, _ = make((1, 1, 4, 4, 3, 2, True, 0), np.float64, seed=8)
    o = sdpa(t64(q), t64(k), t64(v), is_causal=True).numpy()
    np.testing.assert_allclose(o[0, 0, 0], v[0, 0, 0], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

def test_attention_errors_name_the_op_and_shapes():
    q, k, v = fw.randn(1, 2, 3, 4), fw.randn(1, 2, 5, 4), fw.randn(1, 2, 5, 6)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention.*\(1, 2, 5, 3\)"):
        sdpa(q, fw.randn(1, 2, 5, 3), v)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention.*v \(1, 2, 4, 6\)"):
        sdpa(q, k, fw.randn(1, 2, 4, 6))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention.*\(2, 3, 4\)"):
        sdpa(q, k, fw.randn(2, 3, 4))
    with pytest.raises(ValueError, match="scaled_dot_product_attention.*k \\(1, 2, 0, 4\\)"):
        sdpa(q, fw.randn(1, 2, 0, 4), fw.randn(1, 2, 0, 6))
    with pytest.raises(TypeError, match="scaled_dot_product_attention.*float64"):
        sdpa(q, k, fw.randn(1, 2, 5, 6, dtype=fw.float64))
    with pytest.raises(ValueError, match=r"causal_attention: more queries than keys"):
        causal_attention(k, q, fw.randn(1, 2, 3, 6))
    with pytest.raises(ValueError, match="offset"):
        attention_probabilities(q, k, is_causal=True, offset=-1)
    with pytest.raises(ValueError, match="attention_forward: causal offset"):
        kernels.attention_forward(q.numpy(), k.numpy(), v.numpy(), 1.0, True, -1)


# ----------------------------------------------------------------------------------------------
# nn.CausalSelfAttention
# ----------------------------------------------------------------------------------------------

def test_causal_self_attention_shapes_and_parameters():
    m = CausalSelfAttention(12, 3)
    assert [n for n, _ in m.named_parameters()] == ["qkv.weight", "qkv.bias", "proj.weight",
                                                      "proj.bias"]
    assert m.qkv.weight.shape == (36, 12) and m.proj.weight.shape == (12, 12)
    assert [n for n, _ in CausalSelfAttention(12, 3, bias=False).named_parameters()] == \
        ["qkv.weight", "proj.weight"]
    x = fw.randn(2, 7, 12)
    assert m(x).shape == (2, 7, 12)
    with pytest.raises(ValueError, match="CausalSelfAttention.*n_heads=5"):
        CausalSelfAttention(12, 5)
    with pytest.raises(ValueError, match=r"CausalSelfAttention: input must be \(batch, length, 12"):
        m(fw.randn(2, 7, 10))


def test_causal_self_attention_is_causal():
    fw.manual_seed(1)
    m = CausalSelfAttention(8, 2, dtype=fw.float64)
    x = rng(9).standard_normal((1, 6, 8))
    y = m(t64(x, False)).numpy()
    x2 = x.copy()
    x2[:, 4:] += 10.0                                  # change the future only
    y2 = m(t64(x2, False)).numpy()
    np.testing.assert_allclose(y2[:, :4], y[:, :4], rtol=1e-12, atol=1e-14)
    assert not np.allclose(y2[:, 4:], y[:, 4:])


def test_kv_cache_continues_the_sequence_exactly():
    fw.manual_seed(2)
    m = CausalSelfAttention(8, 2, dtype=fw.float64)
    x = t64(rng(10).standard_normal((2, 7, 8)), False)
    full = m(x).numpy()
    pieces, state = [], None
    for start, stop in ((0, 3), (3, 4), (4, 7)):      # a prefix, one token, then two at once
        y, state = m(x[:, start:stop], state=state, return_state=True)
        pieces.append(y.numpy())
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-12, atol=1e-14)
    assert state["k"].shape == (2, 2, 7, 4) and state["v"].shape == (2, 2, 7, 4)
    with pytest.raises(ValueError, match="CausalSelfAttention: cached k"):
        m(x[:1, :1], state=state)


def test_causal_self_attention_gradcheck():
    fw.manual_seed(3)
    m = CausalSelfAttention(6, 2, dtype=fw.float64)
    x = t64(rng(11).standard_normal((2, 4, 6)))
    assert fw.gradcheck(lambda x: m(x), (x,))
    assert fw.gradcheck(lambda w: _with_weight(m, w, x), (t64(m.qkv.weight.numpy()),))


def _with_weight(m, w, x):
    """m(x) with the qkv weight replaced by the Tensor w (for a gradcheck over the weight)."""
    saved = m.qkv.weight
    try:
        m.qkv._parameters["weight"] = w
        return m(x)
    finally:
        m.qkv._parameters["weight"] = saved


def _split_attend_merge(qkv, n_heads):
    """packed_causal_self_attention written as separate ops: the definition it must equal."""
    B, L, three_d = qkv.shape
    heads = qkv.reshape(B, L, 3, n_heads, three_d // (3 * n_heads)).permute(2, 0, 3, 1, 4)
    y = sdpa(heads[0], heads[1], heads[2], is_causal=True)
    return y.transpose(1, 2).reshape(B, L, three_d // 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 2, 3), (3, 9, 1, 8)])  # B, L, H, Dh
def test_packed_self_attention_equals_split_attend_merge(shape, dtype, layout):
    B, L, H, Dh = shape
    g = rng(12)
    qkv = g.standard_normal((B, L, 3 * H * Dh)).astype(dtype)
    dy = g.standard_normal((B, L, H * Dh)).astype(dtype)
    grads, outs = [], []
    for f in (lambda t: packed_causal_self_attention(t, H), lambda t: _split_attend_merge(t, H)):
        t = fw.tensor(qkv, requires_grad=True)
        y = f(t)
        y.backward(fw.tensor(dy))
        outs.append(y.numpy())
        grads.append(t.grad.numpy())
    assert outs[0].shape == (B, L, H * Dh) and outs[0].dtype == dtype
    np.testing.assert_allclose(outs[0], outs[1], **TOL[dtype])
    np.testing.assert_allclose(grads[0], grads[1], **TOL[dtype])


def test_packed_self_attention_gradcheck(layout):
    x = t64(rng(13).standard_normal((2, 4, 12)))
    assert fw.gradcheck(lambda t: packed_causal_self_attention(t, 2), (x,))
    assert fw.gradcheck(lambda t: packed_causal_self_attention(t, 1, scale=0.3), (x,))
    # 7 positions: the kernels copy the packed rows they read on three passes or more
    x = t64(rng(14).standard_normal((1, 7, 12)))
    assert fw.gradcheck(lambda t: packed_causal_self_attention(t, 2), (x,))


def test_packed_self_attention_errors_name_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"packed_causal_self_attention: .*n_heads=2, got "
                                         r"\(2, 4, 9\)"):
        packed_causal_self_attention(fw.randn(2, 4, 9), 2)
    with pytest.raises(ValueError, match=r"packed_causal_self_attention: .*got \(4, 12\)"):
        packed_causal_self_attention(fw.randn(4, 12), 2)
    with pytest.raises(ValueError, match="packed_causal_self_attention: n_heads must be"):
        packed_causal_self_attention(fw.randn(2, 4, 12), 0)
    with pytest.raises(TypeError, match="packed_causal_self_attention: qkv must be floating"):
        packed_causal_self_attention(fw.tensor(np.ones((1, 2, 6), np.int64)), 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 2, 3), (3, 9, 1, 8)])  # B, L, H, Dh
def test_packed_kernels_equal_the_reference(shape, dtype, layout, path):
    B, L, H, Dh = shape
    g = rng(14)
    qkv = g.standard_normal((B, L, 3 * H * Dh)).astype(dtype)
    dy = g.standard_normal((B, L, H * Dh)).astype(dtype)
    y, lse = kernels.packed_attention_forward(qkv, H, 0.4)
    y_ref, lse_ref = ref.packed_attention_forward(qkv, H, 0.4)
    assert y.shape == (B, L, H * Dh) and y.dtype == dtype and lse.shape == (B, H, L)
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    np.testing.assert_allclose(lse, lse_ref, **TOL[dtype])
    d = kernels.packed_attention_backward(dy, qkv, y, lse, H, 0.4)
    assert d.shape == qkv.shape and d.dtype == dtype
    np.testing.assert_allclose(d, ref.packed_attention_backward(dy, qkv, y_ref, lse_ref, H, 0.4),
                               **TOL[dtype])


def test_packed_kernels_reject_a_bad_layout():
    for fn, args in ((kernels.packed_attention_forward, (np.ones((2, 4, 9)), 2, 1.0)),
                     (ref.packed_attention_forward, (np.ones((4, 12)), 2, 1.0))):
        with pytest.raises(ValueError, match=r"packed_attention_forward: qkv must be"):
            fn(*args)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_kernels_write_into_out_views(dtype, layout, path):
    """``out``: the outputs land in the caller's (strided) arrays, the same numbers as without."""
    q, k, v, do = (a.astype(dtype) for a in make(CASES[0], dtype, seed=5))
    o, lse = kernels.attention_forward(q, k, v, 0.3, True)
    grads = kernels.attention_backward(do, q, k, v, o, lse, 0.3, True)
    o_buffer = np.zeros(o.shape[:2] + (o.shape[2], 2 * o.shape[3]), dtype)
    o_out = o_buffer[..., 1::2] if dtype == np.float64 else o_buffer[..., :o.shape[3]]
    got, lse2 = kernels.attention_forward(q, k, v, 0.3, True, out=o_out)
    assert got is o_out
    np.testing.assert_allclose(o_out, o, **TOL[dtype])
    np.testing.assert_allclose(lse2, lse, **TOL[dtype])
    outs = tuple(np.zeros(g.shape[::-1], dtype).T for g in grads)     # transposed views
    got = kernels.attention_backward(do, q, k, v, o, lse, 0.3, True, out=outs)
    assert all(a is b for a, b in zip(got, outs))
    for a, b in zip(outs, grads):
        np.testing.assert_allclose(a, b, **TOL[dtype])


def test_attention_kernels_check_out_shapes():
    q, k, v, do = make(CASES[0], np.float32)
    with pytest.raises(ValueError, match="attention_forward: out must have the shapes"):
        kernels.attention_forward(q, k, v, 0.3, True, out=np.zeros((1, 1, 1, 1), np.float32))
    o, lse = kernels.attention_forward(q, k, v, 0.3, True)
    with pytest.raises(ValueError, match="attention_backward: out must have the shapes"):
        kernels.attention_backward(do, q, k, v, o, lse, 0.3, True, out=(q, k))


def test_causal_self_attention_layer_uses_the_packed_path_and_the_split_one_alike():
    """Without a state the layer takes the packed Function; with return_state the split ops.
    Both must give the same output."""
    fw.manual_seed(5)
    m = CausalSelfAttention(8, 2, dtype=fw.float64)
    x = t64(rng(14).standard_normal((2, 5, 8)), False)
    y_packed = m(x).numpy()
    y_split, _ = m(x, return_state=True)
    np.testing.assert_allclose(y_packed, y_split.numpy(), rtol=1e-12, atol=1e-14)


def test_attention_probabilities_of_a_layer():
    fw.manual_seed(4)
    m = CausalSelfAttention(8, 2, dtype=fw.float64)
    x = t64(rng(12).standard_normal((2, 5, 8)), False)
    p = layer_probs(m, x)
    assert p.shape == (2, 2, 5, 5) and not p.requires_grad
    p = p.numpy()
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-12)
    assert (np.triu(p, 1) == 0).all()
    # the probabilities reproduce the layer: (p @ v) merged over heads, then proj
    qkv = x.numpy() @ m.qkv.weight.numpy().T + m.qkv.bias.numpy()
    v = qkv[..., 16:].reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    merged = (p @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8)
    y = merged @ m.proj.weight.numpy().T + m.proj.bias.numpy()
    np.testing.assert_allclose(y, m(x).numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="attention_probabilities"):
        layer_probs(fw.nn.Linear(8, 8), x)


# ----------------------------------------------------------------------------------------------
# PyTorch parity
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lq,lk,causal,scale", [(5, 5, True, None), (5, 5, False, 0.3),
                                                 (3, 6, True, None), (6, 3, True, 0.5)])
def test_sdpa_matches_torch(lq, lk, causal, scale):
    torch = pytest.importorskip("torch")
    g = rng(13)
    arrays = [g.standard_normal((2, 3, lq, 4)), g.standard_normal((2, 3, lk, 4)),
              g.standard_normal((2, 3, lk, 5))]
    ours = [t64(a) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = sdpa(*ours, is_causal=causal, scale=scale)
    yt = torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=causal, scale=scale)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = g.standard_normal(y.shape)
    y.backward(up)
    yt.backward(torch.tensor(up))
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_causal_self_attention_matches_torch():
    """The module against the same computation in torch (nanoGPT's CausalSelfAttention)."""
    torch = pytest.importorskip("torch")
    fw.manual_seed(5)
    m = CausalSelfAttention(8, 2, dtype=fw.float64)
    x = rng(14).standard_normal((2, 6, 8))
    xt = torch.tensor(x, requires_grad=True)
    w_qkv, b_qkv, w_o, b_o = (torch.tensor(p.numpy(), requires_grad=True)
                              for p in (m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias))
    q, k, v = (xt @ w_qkv.T + b_qkv).split(8, dim=2)
    q, k, v = (t.view(2, 6, 2, 4).transpose(1, 2) for t in (q, k, v))
    yt = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    yt = yt.transpose(1, 2).reshape(2, 6, 8) @ w_o.T + b_o
    xs = t64(x)
    y = m(xs)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = rng(15).standard_normal((2, 6, 8))
    y.backward(up)
    yt.backward(torch.tensor(up))
    np.testing.assert_allclose(xs.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for ours, theirs in ((m.qkv.weight, w_qkv), (m.qkv.bias, b_qkv), (m.proj.weight, w_o),
                         (m.proj.bias, b_o)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-11)
