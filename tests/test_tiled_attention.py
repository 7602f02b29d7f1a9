"""The tiled (FlashAttention-style) NumPy reference == the plain reference, for every way the
tiles can fall: one tile, blocks smaller than the sequences, uneven last blocks, the causal
diagonal crossing tiles, KV-cache offsets, Lq != Lk, no queries; and the CPU kernels, which run
the same algorithm, == both at the same tilings."""
import numpy as np
import pytest

from tinyfw.backend.cpu import attention as kernels
from tinyfw.backend.reference import attention as plain
from tinyfw.backend.reference import tiled_attention as tiled

# (B, H, Lq, Lk, D, Dv, causal, offset)
CASES = [
    (2, 3, 9, 9, 4, 4, True, 0),
    (2, 3, 9, 9, 4, 5, False, 0),
    (1, 2, 3, 7, 4, 6, True, 4),      # KV-cache step: the 3 queries are the last 3 of 7 keys
    (1, 2, 7, 3, 5, 2, True, 0),      # more queries than keys
    (2, 1, 1, 9, 8, 8, True, 8),      # one new token against a cache
    (1, 1, 11, 6, 3, 3, False, 0),
    (1, 2, 13, 13, 4, 4, True, 2),    # offset inside a square: every query sees 2 keys ahead
    (1, 1, 0, 4, 3, 3, True, 0),      # no queries
]
# (block_q, block_k)
TILINGS = [(1, 1), (3, 2), (2, 5), (4, 4), (64, 128)]


def make(case, dtype, seed=0):
    B, H, Lq, Lk, D, Dv, _, _ = case
    g = np.random.default_rng(seed)
    q = g.standard_normal((B, H, Lq, D)).astype(dtype)
    k = g.standard_normal((B, H, Lk, D)).astype(dtype)
    v = g.standard_normal((B, H, Lk, Dv)).astype(dtype)
    do = g.standard_normal((B, H, Lq, Dv)).astype(dtype)
    return q, k, v, do


@pytest.mark.parametrize("tiling", TILINGS, ids=lambda t: f"{t[0]}x{t[1]}")
@pytest.mark.parametrize("case", CASES)
def test_tiled_reference_equals_the_plain_reference(case, tiling):
    q, k, v, do = make(case, np.float64)
    causal, offset = case[6], case[7]
    o_want, lse_want = plain.attention_forward(q, k, v, 0.4, causal, offset)
    o, lse = tiled.tiled_attention_forward(q, k, v, 0.4, causal, offset, *tiling)
    np.testing.assert_allclose(o, o_want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lse, lse_want, rtol=1e-12, atol=1e-13)
    want = plain.attention_backward(do, q, k, v, o_want, lse_want, 0.4, causal, offset)
    got = tiled.tiled_attention_backward(do, q, k, v, o, lse, 0.4, causal, offset, *tiling)
    for g, w, name in zip(got, want, ("dq", "dk", "dv")):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("tiling", [(3, 2), (2, 5)], ids=lambda t: f"{t[0]}x{t[1]}")
@pytest.mark.parametrize("case", CASES[:4])
def test_cpu_kernels_equal_the_tiled_reference_at_the_same_tiling(case, tiling, monkeypatch):
    monkeypatch.setattr(kernels, "QUERY_BLOCK", tiling[0])
    monkeypatch.setattr(kernels, "KEY_BLOCK", tiling[1])
    monkeypatch.setattr(kernels, "SHORT_QUERIES", 0)
    q, k, v, do = make(case, np.float64, seed=1)
    causal, offset = case[6], case[7]
    o_want, lse_want = tiled.tiled_attention_forward(q, k, v, 0.4, causal, offset, *tiling)
    o, lse = kernels.attention_forward(q, k, v, 0.4, causal, offset)
    np.testing.assert_allclose(o, o_want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lse, lse_want, rtol=1e-12, atol=1e-13)
    want = tiled.tiled_attention_backward(do, q, k, v, o, lse, 0.4, causal, offset, *tiling)
    for g, w in zip(kernels.attention_backward(do, q, k, v, o, lse, 0.4, causal, offset), want):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


def test_tiled_reference_keeps_float32_and_is_stable_for_huge_scores():
    """Scores of +-1e4: the running max keeps every exp <= 1, so the result is finite and the
    winning key's value comes out, as from the plain form."""
    q, k, v, do = make((1, 2, 6, 6, 3, 3, True, 0), np.float32, seed=2)
    o, lse = tiled.tiled_attention_forward(q, k, v, 1e4, True, 0, 2, 2)
    assert o.dtype == np.float32 and lse.dtype == np.float32
    o_want, lse_want = plain.attention_forward(q, k, v, 1e4, True, 0)
    np.testing.assert_allclose(o, o_want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, lse_want, rtol=1e-5)
    grads = tiled.tiled_attention_backward(do, q, k, v, o, lse, 1e4, True, 0, 2, 2)
    assert all(g.dtype == np.float32 and np.isfinite(g).all() for g in grads)


def test_tiled_forward_never_visits_a_tile_above_the_diagonal(monkeypatch):
    """Causal: the key blocks a query block visits end at its last visible key, so the number of
    score entries computed is close to half of Lq * Lk, not all of it."""
    computed = []
    visible = tiled._visible

    def counting(i0, i1, j0, j1, causal, offset):
        computed.append((i1 - i0) * (j1 - j0))
        return visible(i0, i1, j0, j1, causal, offset)
    monkeypatch.setattr(tiled, "_visible", counting)
    q, k, v, _ = make((1, 1, 64, 64, 4, 4, True, 0), np.float64)
    tiled.tiled_attention_forward(q, k, v, 0.5, True, 0, 8, 8)
    assert sum(computed) == 8 * 9 // 2 * 64          # the 36 tiles on or below the diagonal
