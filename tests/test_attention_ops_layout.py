"""The attention op's outputs in its inputs' memory layout: when q, k, v are heads split from a
(B, L, H, Dh) array with ``transpose(1, 2)``, o is a transposed view of a (B, L, H, Dh) array
(so ``o.transpose(1, 2).reshape(B, L, H Dh)`` is a view) and dq, dk, dv lie as q, k, v do.
Values and gradients equal those of the op without ``out=`` (the backend allocating C-ordered
arrays, as before) and the NumPy reference; backends without ``out=`` still work.
"""
import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn.functional as F
from tinyfw.backend import cpu
from tinyfw.backend.reference import attention as ref
from tinyfw.autograd import grad as autograd_grad
from tinyfw.gradcheck import gradcheck
from tinyfw.ops import attention as attention_ops
from tinyfw.ops.attention import causal_attention, scaled_dot_product_attention as sdpa

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _user_heads(x, n_heads):
    """x (B, L, 3C) -> q, k, v (B, H, L, Dh) as a user writes it: split, reshape, transpose."""
    B, L, C3 = x.shape
    C = C3 // 3
    return [t.reshape(B, L, n_heads, C // n_heads).transpose(1, 2) for t in x.split(C, dim=2)]


def _step(x, n_heads, causal=True, seed=1):
    """The user's attention block up to the merged heads, and a loss with fixed weights."""
    B, L, C3 = x.shape
    q, k, v = _user_heads(x, n_heads)
    y = sdpa(q, k, v, is_causal=causal)
    merged = y.transpose(1, 2).reshape(B, L, C3 // 3)
    w = np.random.default_rng(seed).standard_normal(merged.shape)
    return y, merged, (merged * fw.tensor(w, dtype=x.dtype, device=x.device)).sum()


def _without_out(monkeypatch):
    """Make the op call the backend without ``out=``: the behaviour before the layouts."""
    monkeypatch.setattr(attention_ops, "_takes_out", lambda fn: False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, n_heads, causal", [
    ((2, 5, 36), 3, True), ((1, 9, 24), 2, False), ((3, 4, 12), 1, True), ((1, 1, 48), 4, True),
])
def test_values_and_gradients_equal_those_without_out(monkeypatch, dtype, shape, n_heads, causal):
    x0 = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    results = []
    for use_out in (True, False):
        with monkeypatch.context() as m:
            if not use_out:
                _without_out(m)
            x = fw.tensor(x0, requires_grad=True)
            _, merged, loss = _step(x, n_heads, causal)
            loss.backward()
            results.append((merged.numpy(), x.grad.numpy()))
    (y_new, g_new), (y_old, g_old) = results
    np.testing.assert_allclose(y_new, y_old, **TOL[dtype])
    np.testing.assert_allclose(g_new, g_old, **TOL[dtype])


def test_values_and_gradients_equal_the_numpy_reference():
    B, L, H, Dh = 2, 6, 3, 4
    x0 = np.random.default_rng(2).standard_normal((B, L, 3 * H * Dh))
    x = fw.tensor(x0, requires_grad=True)
    y, merged, loss = _step(x, H, causal=True)
    loss.backward()
    heads = [a.reshape(B, L, H, Dh).transpose(0, 2, 1, 3) for a in np.split(x0, 3, axis=2)]
    o, lse = ref.attention_forward(*heads, 1 / np.sqrt(Dh), True, 0)
    np.testing.assert_allclose(y.numpy(), o, rtol=1e-12, atol=1e-13)
    w = np.random.default_rng(1).standard_normal((B, L, H * Dh))
    do = w.reshape(B, L, H, Dh).transpose(0, 2, 1, 3)
    grads = ref.attention_backward(do, *heads, o, lse, 1 / np.sqrt(Dh), True, 0)
    expected = np.concatenate([g.transpose(0, 2, 1, 3).reshape(B, L, H * Dh) for g in grads], 2)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-11, atol=1e-12)


def test_output_of_transposed_heads_merges_without_a_copy():
    B, L, H, Dh = 2, 5, 3, 4
    x = fw.tensor(np.random.default_rng(3).standard_normal((B, L, 3 * H * Dh)),
                  dtype=np.float32, requires_grad=True)
    y, merged, _ = _step(x, H)
    assert y.shape == (B, H, L, Dh)
    assert y.data.transpose(0, 2, 1, 3).flags.c_contiguous      # o lies as (B, L, H, Dh)
    assert np.shares_memory(merged.data, y.data)                 # the merge is a view
    assert merged.data.base is not None


def test_gradients_lie_as_the_inputs():
    """dq, dk, dv (the gradients reaching the transposed heads) are transposed views of
    (B, L, H, Dh) arrays, so the backward of the transpose and the reshape copies nothing."""
    B, L, H, Dh = 2, 5, 3, 4
    x = fw.tensor(np.random.default_rng(4).standard_normal((B, L, 3 * H * Dh)),
                  requires_grad=True)
    q, k, v = _user_heads(x, H)
    y = sdpa(q, k, v, is_causal=True)
    dq, dk, dv = autograd_grad([y], [q, k, v], [np.ones(y.shape)])
    for g in (dq, dk, dv):
        assert g.shape == (B, H, L, Dh)
        assert g.data.transpose(0, 2, 1, 3).flags.c_contiguous
        assert not g.data.flags.c_contiguous


def test_contiguous_inputs_keep_contiguous_outputs():
    q, k, v = (fw.tensor(np.random.default_rng(i).standard_normal((2, 3, 5, 4)),
                         requires_grad=True) for i in range(3))
    y = sdpa(q, k, v, is_causal=True)
    assert y.data.flags.c_contiguous
    dq, dk, dv = autograd_grad([y], [q, k, v], [np.ones(y.shape)])
    assert all(g.data.flags.c_contiguous for g in (dq, dk, dv))


def test_mixed_layouts_each_gradient_follows_its_input():
    """q transposed heads, k and v plain C order, Lq != Lk (a KV-cache step)."""
    B, H, Lq, Lk, D = 1, 2, 3, 6, 4
    rng = np.random.default_rng(5)
    q_src = fw.tensor(rng.standard_normal((B, Lq, H, D)), requires_grad=True)
    k = fw.tensor(rng.standard_normal((B, H, Lk, D)), requires_grad=True)
    v = fw.tensor(rng.standard_normal((B, H, Lk, D)), requires_grad=True)
    q = q_src.transpose(1, 2)
    y = causal_attention(q, k, v)
    assert y.data.transpose(0, 2, 1, 3).flags.c_contiguous
    dq, dk, dv = autograd_grad([y], [q, k, v], [np.ones(y.shape)])
    assert dq.data.transpose(0, 2, 1, 3).flags.c_contiguous
    assert dk.data.flags.c_contiguous and dv.data.flags.c_contiguous
    assert gradcheck(lambda a, b, c: causal_attention(a.transpose(1, 2), b, c),
                     (q_src, k, v))


def test_gradcheck_on_transposed_heads():
    x = fw.tensor(np.random.default_rng(6).standard_normal((1, 4, 12)), requires_grad=True)
    assert gradcheck(lambda t: _step(t, 2)[1], (x,))


def test_a_backend_without_out_gets_no_out(monkeypatch):
    """The reference attention functions take no ``out=``: the op calls them as they are."""
    monkeypatch.setattr(cpu, "attention_forward", ref.attention_forward)
    monkeypatch.setattr(cpu, "attention_backward", ref.attention_backward)
    x = fw.tensor(np.random.default_rng(7).standard_normal((2, 3, 12)), requires_grad=True)
    y, merged, loss = _step(x, 2)
    loss.backward()
    assert y.data.flags.c_contiguous             # the backend's own array
    with monkeypatch.context() as m:
        _without_out(m)
        x2 = fw.tensor(x.numpy(), requires_grad=True)
        _step(x2, 2)[2].backward()
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape, strides_order, expected", [
    ((2, 3, 5, 4), (0, 1, 2, 3), (0, 1, 2, 3)),
    ((2, 3, 5, 4), (0, 2, 1, 3), (0, 2, 1, 3)),     # heads of a (B, L, H, D) array
    ((2, 3, 5, 4), (2, 0, 1, 3), (2, 0, 1, 3)),     # an (L, B, H, D) array
    ((1, 3, 5, 4), (0, 2, 1, 3), (0, 2, 1, 3)),     # B = 1: its stride says nothing
    ((2, 1, 5, 4), (0, 2, 1, 3), (0, 1, 2, 3)),     # H = 1: already in C order
])
def test_memory_order(shape, strides_order, expected):
    base = np.zeros(tuple(shape[i] for i in strides_order))
    a = base.transpose(np.argsort(strides_order))
    assert a.shape == shape
    assert attention_ops._memory_order(a) == expected
    out = attention_ops._new_in_layout_of(cpu, a, shape[:-1] + (7,))
    if expected == tuple(range(4)):
        assert out is None
    else:
        assert out.shape == shape[:-1] + (7,)
        assert out.transpose(expected).flags.c_contiguous


def test_the_last_axis_stays_last():
    """A q whose last axis is not its innermost still gets rows with adjacent elements."""
    a = np.zeros((2, 3, 4, 5)).transpose(0, 1, 3, 2)   # (2, 3, 5, 4), last axis strided
    assert attention_ops._memory_order(a)[-1] == 3
    q = fw.tensor(np.random.default_rng(8).standard_normal((2, 3, 4, 5)), requires_grad=True)
    k = fw.tensor(np.random.default_rng(9).standard_normal((2, 3, 5, 4)), requires_grad=True)
    assert gradcheck(lambda a, b: sdpa(a.transpose(2, 3), b, b, is_causal=True), (q, k))


def test_the_user_gpt_attention_block_uses_the_functional_path():
    """F.scaled_dot_product_attention is this op."""
    x = fw.tensor(np.random.default_rng(10).standard_normal((1, 3, 12)), dtype=np.float32)
    q, k, v = _user_heads(x, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert y.data.transpose(0, 2, 1, 3).flags.c_contiguous


def test_cuda_backend_without_out_gives_the_cpu_numbers():
    """The CUDA attention takes no ``out=`` (the simulator without a GPU): transposed heads
    there give the CPU's values and gradients."""
    from numba import cuda
    if not cuda.is_available():
        pytest.skip("numba.cuda is unavailable; run with NUMBA_ENABLE_CUDASIM=1")
    x0 = np.random.default_rng(11).standard_normal((1, 3, 12))
    results = []
    for device in ("cpu", "cuda"):
        x = fw.tensor(x0, device=device, requires_grad=True)
        _, merged, loss = _step(x, 2)
        loss.backward()
        results.append((merged.numpy(), x.grad.numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)
