"""SAFU: block-context attention kernels (cached == uncached, Numba == NumPy), the ops' gradients
(float64 gradchecks), the nn modules (shapes, causality, chunked == whole), and bad input."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.backend import cpu, reference
from tinyfw.nn.safu import SAFU, SAFULanguageModel, SAFUMixer
from tinyfw.ops.safu import radial_context, running_mean, safu_block_attention

BACKENDS = {"reference": reference, "cpu": cpu}


def inputs(B=2, L=9, D=5, dtype=np.float64, seed=0, positive=True):
    rng = np.random.default_rng(seed)
    x = rng.random((B, L, D)) if positive else rng.standard_normal((B, L, D))
    w = rng.standard_normal((D, D))
    return x.astype(dtype), w.astype(dtype), rng


# ------------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("block", [1, 3, 9, 14])
def test_cached_equals_uncached(block):
    x, w, _ = inputs()
    h_ref, a_ref = reference.safu_block_attention_uncached(x, w, block)
    for name, be in BACKENDS.items():
        h, a = be.safu_block_attention_forward(x, x @ w, block)
        np.testing.assert_allclose(h, h_ref, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(a, a_ref, atol=1e-12, err_msg=name)


def test_cached_equals_dense_banded_softmax():
    """Independent oracle: a full L x L score matrix masked to the band (t - block, t]."""
    x, w, _ = inputs(B=1, L=11, D=4, seed=3)
    block = 4
    s = (x[0] @ w) @ x[0].T
    t, j = np.meshgrid(np.arange(11), np.arange(11), indexing="ij")
    s = np.where((j <= t) & (j > t - block), s, -np.inf)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h, a = cpu.safu_block_attention_forward(x, x @ w, block)
    np.testing.assert_allclose(h[0], p @ x[0], atol=1e-12)
    for k in range(block):
        np.testing.assert_allclose(a[0, k:, k], p[np.arange(k, 11), np.arange(0, 11 - k)],
                                   atol=1e-12)


def test_attention_rows_sum_to_one_and_padding_is_zero():
    x, w, _ = inputs(L=5)
    _, a = cpu.safu_block_attention_forward(x, x @ w, 7)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)
    for t in range(5):
        assert np.all(a[:, t, t + 1:] == 0.0)


def test_score_table_lookup_equals_scores():
    rng = np.random.default_rng(1)
    V, D, block = 7, 4, 3
    vectors, w = rng.random((V, D)), rng.standard_normal((D, D))
    ids = rng.integers(0, V, (2, 8))
    s = reference.safu_block_scores_from_table(ids, reference.safu_score_table(vectors, w), block)
    x = vectors[ids]
    q = x @ w
    for k in range(block):
        np.testing.assert_allclose(s[:, k:, k], np.einsum("bld,bld->bl", q[:, k:], x[:, :8 - k]))
        assert np.all(np.isneginf(s[:, :k, k]))


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("block", [1, 4, 12])
@pytest.mark.parametrize("with_da", [False, True])
def test_numba_kernels_equal_reference(dtype, atol, block, with_da):
    x, w, rng = inputs(dtype=dtype, positive=False)
    q = (x @ w).astype(dtype)
    h_r, a_r = reference.safu_block_attention_forward(x, q, block)
    h_c, a_c = cpu.safu_block_attention_forward(x, q, block)
    assert h_c.dtype == dtype and a_c.dtype == dtype
    np.testing.assert_allclose(h_c, h_r, atol=atol)
    np.testing.assert_allclose(a_c, a_r, atol=atol)
    dh = rng.standard_normal(x.shape).astype(dtype)
    da = rng.standard_normal(a_r.shape).astype(dtype) if with_da else None
    got = cpu.safu_block_attention_backward(dh, da, x, q, a_r, block)
    want = reference.safu_block_attention_backward(dh, da, x, q, a_r, block)
    for g, r in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, r, atol=atol * 10)


def test_reference_backward_matches_finite_differences():
    x, w, rng = inputs(B=1, L=6, D=3, positive=False)
    q = x @ w
    block = 3
    dh = rng.standard_normal(x.shape)

    def f(x_, q_):
        return float((reference.safu_block_attention_forward(x_, q_, block)[0] * dh).sum())

    _, a = reference.safu_block_attention_forward(x, q, block)
    dx, dq = reference.safu_block_attention_backward(dh, None, x, q, a, block)
    eps = 1e-6
    for arr, grad in ((x, dx), (q, dq)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = f(x, q)
            arr[idx] = old - eps
            down = f(x, q)
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num, atol=1e-7)


def test_running_mean_reference():
    x, _, rng = inputs()
    d = reference.safu_running_mean_forward(x)
    np.testing.assert_allclose(d[:, 4], x[:, :5].mean(1))
    prev = rng.random((2, 5))
    d2 = reference.safu_running_mean_forward(x, prev, 3)
    np.testing.assert_allclose(d2[:, 2], (prev + x[:, :3].sum(1)) / 6)


def test_kernel_errors():
    x, w, _ = inputs()
    with pytest.raises(ValueError, match="block"):
        cpu.safu_block_attention_forward(x, x @ w, 0)
    with pytest.raises(ValueError, match="shape"):
        cpu.safu_block_attention_forward(x, (x @ w)[:, :3], 2)
    with pytest.raises(TypeError, match="dtype"):
        cpu.safu_block_attention_forward(x, (x @ w).astype(np.float32), 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        reference.safu_block_attention_forward(x.astype(np.int64), x.astype(np.int64), 2)


# ---------------------------------------------------------------------------------- gradchecks
def t64(a, grad=True):
    return fw.tensor(a, dtype=fw.float64, requires_grad=grad)


@pytest.mark.parametrize("block", [1, 3, 7])
def test_gradcheck_block_attention(block):
    x, w, _ = inputs(B=1, L=5, D=3, positive=False)
    xt, qt = t64(x), t64(x @ w)

    def fn(x_, q_):
        h, a = safu_block_attention(x_, q_, block)
        return h, a

    assert fw.gradcheck(fn, (xt, qt))


def test_gradcheck_through_comparison_matrix():
    """x enters twice (compared and mixed) and W_A through the cached q = x W_A."""
    x, w, _ = inputs(B=1, L=6, D=3, positive=False)
    assert fw.gradcheck(lambda x_, w_: safu_block_attention(x_, x_ @ w_, 3)[0],
                        (t64(x), t64(w)))


def test_gradcheck_running_mean_and_radial():
    x, _, rng = inputs(B=2, L=4, D=3)
    prev = rng.random((2, 3))
    assert fw.gradcheck(lambda x_: running_mean(x_), (t64(x),))
    assert fw.gradcheck(lambda x_: running_mean(x_, prev, 5), (t64(x),))
    past = fw.tensor(rng.random((2, 1, 3)))
    assert fw.gradcheck(lambda x_: radial_context(x_, 3), (t64(x),))
    assert fw.gradcheck(lambda x_: radial_context(x_, 3, past), (t64(x),))


def cross_entropy_np(logits, targets):
    """Mean -log softmax(logits)[target] over all positions, in NumPy."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], -1).mean()


def assert_greedy(model, prompt, out):
    """``out`` continues ``prompt`` and each new token is the argmax of the model's logits."""
    seq = out.numpy()
    np.testing.assert_array_equal(seq[:, :prompt.shape[1]], prompt.numpy())
    for t in range(prompt.shape[1], seq.shape[1]):
        logits = model(fw.tensor(seq[:, :t]))
        logits = logits[0] if isinstance(logits, tuple) else logits
        np.testing.assert_array_equal(seq[:, t], logits.numpy()[:, -1].argmax(-1))


def assert_directional_derivative(loss_fn, params, eps=1e-6):
    """The gradients of ``loss_fn()`` (float64) along one random direction over all ``params``
    equal the central difference of the loss along it: every parameter's gradient by value
    in two forwards."""
    rng = np.random.default_rng(11)
    directions = [rng.standard_normal(p.shape) for p in params]
    for p in params:
        p.grad = None
    loss_fn().backward()
    analytical = sum(float((p.grad.numpy() * d).sum()) for p, d in zip(params, directions))
    base = [p.numpy().copy() for p in params]
    losses = []
    for sign in (1.0, -1.0):
        for p, b, d in zip(params, base, directions):
            p.data = b + sign * eps * d
        with fw.no_grad():
            losses.append(loss_fn().item())
    for p, b in zip(params, base):
        p.data = b
    numerical = (losses[0] - losses[1]) / (2 * eps)
    assert analytical == pytest.approx(numerical, rel=1e-5, abs=1e-9)


def gradcheck_parameter(module, name, call):
    """gradcheck of ``call()`` w.r.t. the parameter ``name`` of ``module`` (swapped for a leaf).

    The output is projected on a fixed random tensor (one backward per check instead of one per
    output element; a wrong gradient still shows, the projection being generic)."""
    owner_path, _, attr = name.rpartition(".")
    owner = module
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    original = owner._parameters[attr]

    probe = None

    def fn(value):
        nonlocal probe
        owner._parameters[attr] = value
        try:
            out = call()
            if probe is None:
                probe = fw.tensor(np.random.default_rng(7).standard_normal(out.shape),
                                  dtype=fw.float64)
            return (out * probe).sum()
        finally:
            owner._parameters[attr] = original

    return fw.gradcheck(fn, (t64(original.numpy()),))


@pytest.mark.parametrize("hidden", [None, 4])
def test_gradcheck_safu_layer(hidden):
    fw.manual_seed(0)
    layer = SAFU(3, 5, block=3, radial=2, use_document=True, hidden=hidden).double()
    x, _, _ = inputs(B=1, L=4, D=3)
    assert fw.gradcheck(lambda x_: fw.nn.functional.log_softmax(layer(x_)), (t64(x),))
    names = [n for n, _ in layer.named_parameters()]
    assert names == (["w_a", "w_o"] if hidden is None else ["w_a", "w_1", "w_2"])
    for name in names:
        assert gradcheck_parameter(layer, name, lambda: layer(fw.tensor(x)))


def test_gradcheck_safu_mixer():
    fw.manual_seed(1)
    mixer = SAFUMixer(4, block=3, radial=2, hidden=3).double()
    x = np.random.default_rng(2).standard_normal((1, 5, 4))
    assert fw.gradcheck(lambda x_: mixer(x_), (t64(x),))
    for name in ("w_a", "fc.weight", "proj.weight"):
        assert gradcheck_parameter(mixer, name, lambda: mixer(fw.tensor(x)))


def test_gradcheck_safu_language_model_trainable_embedding():
    fw.manual_seed(2)
    lm = SAFULanguageModel(6, 3, n_layers=2, block=2, radial=1, freeze_embedding=False).double()
    ids = fw.tensor(np.random.default_rng(3).integers(0, 6, (1, 4)))
    for name in ("emb.weight", "layers.0.w_a"):
        assert gradcheck_parameter(lm, name, lambda: lm(ids, ids)[1])


# ----------------------------------------------------------------------------------- modules
def test_safu_shapes_and_segments():
    layer = SAFU(6, 11, block=4, radial=3, use_document=True)
    assert layer.d_z == 6 * 5
    assert layer.segments() == {"block": slice(0, 6), "radial": slice(6, 24),
                                "document": slice(24, 30)}
    x = fw.rand(2, 7, 6)
    assert layer(x).shape == (2, 7, 11)
    z, a = layer.features(x, return_attention=True)
    assert z.shape == (2, 7, 30) and a.shape == (2, 7, 4)
    assert SAFU(6, 11, block=0, radial=1, use_document=False).d_z == 6
    assert SAFU(6, 11, hidden=5)(x).shape == (2, 7, 11)


def test_safu_features_match_definition():
    """z = [h; r; d] from the spec's formulas, computed independently in NumPy."""
    fw.manual_seed(0)
    layer = SAFU(3, 4, block=2, radial=2, use_document=True).double()
    x, _, _ = inputs(B=1, L=4, D=3)
    z = layer.features(fw.tensor(x)).numpy()[0]
    W = layer.w_a.numpy()
    X = x[0]
    for t in range(4):
        js = [j for j in (t - 1, t) if j >= 0]
        s = np.array([X[t] @ W @ X[j] for j in js])
        p = np.exp(s - s.max())
        p /= p.sum()
        h = sum(pi * X[j] for pi, j in zip(p, js))
        r = np.concatenate([X[t], X[t - 1] if t >= 1 else np.zeros(3)])
        d = X[:t + 1].mean(0)
        np.testing.assert_allclose(z[t], np.concatenate([h, r, d]), atol=1e-12)


@pytest.mark.parametrize("module", ["safu", "mixer"])
def test_causal(module):
    fw.manual_seed(0)
    m = (SAFU(4, 6, block=3, radial=2) if module == "safu" else SAFUMixer(4, 3, 2)).double()
    x, _, _ = inputs(B=1, L=8, D=4)
    y = m(fw.tensor(x)).numpy()
    x2 = x.copy()
    x2[0, 5] += 1.0
    y2 = m(fw.tensor(x2)).numpy()
    np.testing.assert_array_equal(y[0, :5], y2[0, :5])
    assert not np.allclose(y[0, 5:], y2[0, 5:])


@pytest.mark.parametrize("module", ["safu", "mixer"])
@pytest.mark.parametrize("cuts", [[3], [1, 2, 6], [7]])
def test_chunked_with_state_equals_whole(module, cuts):
    fw.manual_seed(0)
    m = (SAFU(4, 6, block=4, radial=3) if module == "safu"
         else SAFUMixer(4, 4, 3, hidden=5)).double()
    x, _, _ = inputs(B=2, L=9, D=4)
    whole = m(fw.tensor(x)).numpy()
    pieces, state, start = [], None, 0
    for stop in cuts + [9]:
        y, state = m(fw.tensor(x[:, start:stop]), state=state, return_state=True)
        pieces.append(y.numpy())
        start = stop
    np.testing.assert_allclose(np.concatenate(pieces, 1), whole, atol=1e-12)


def test_safu_language_model_forward_state_and_generate():
    fw.manual_seed(0)
    V, D = 12, 4
    emb = np.random.default_rng(0).random((V, D))
    emb /= emb.sum(1, keepdims=True)
    lm = SAFULanguageModel(V, D, n_layers=2, block=3, radial=2, hidden=None, embedding=emb)
    lm.double()
    ids = fw.tensor(np.random.default_rng(1).integers(0, V, (2, 7)))
    logits, loss = lm(ids, ids)
    assert logits.shape == (2, 7, V) and loss.shape == ()
    assert loss.item() == pytest.approx(cross_entropy_np(logits.numpy(), ids.numpy()), rel=1e-12)
    loss.backward()
    assert lm.emb.weight.grad is None                 # frozen by default
    trained = [p for n, p in lm.named_parameters() if n != "emb.weight"]
    assert len(trained) == 4                          # w_a and w_o of each of the two layers
    assert_directional_derivative(lambda: lm(ids, ids)[1], trained)
    first, state = lm(ids[:, :4], return_state=True)
    rest, _ = lm(ids[:, 4:], state=state, return_state=True)
    np.testing.assert_allclose(np.concatenate([first.numpy(), rest.numpy()], 1),
                               logits.numpy(), atol=1e-10)
    out = lm.generate(ids[:, :2], 4, temperature=0)
    assert out.shape == (2, 6)
    assert_greedy(lm, ids[:, :2], out)
    # layer 2's input: [token vector ; expected token vector of layer 1's prediction]
    x2 = lm.layer_inputs(ids, 1).numpy()
    assert x2.shape == (2, 7, 2 * D) and x2.min() >= 0
    np.testing.assert_allclose(x2[..., :D], emb[ids.numpy()], atol=1e-12)
    np.testing.assert_allclose(x2[..., D:].sum(-1), 1.0, atol=1e-12)
    # stack='mix': a residual mix that stays on the simplex
    mixed = SAFULanguageModel(V, D, n_layers=2, stack="mix", mix=0.3, embedding=emb).double()
    x2 = mixed.layer_inputs(ids, 1).numpy()
    assert x2.shape == (2, 7, D) and x2.min() >= 0
    np.testing.assert_allclose(x2.sum(-1), 1.0, atol=1e-12)
    assert mixed(ids).shape == (2, 7, V)


def test_mixer_in_language_model():
    from tinyfw.nn.models import LanguageModel, ModelConfig
    fw.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, context_length=16, n_layers=2, n_heads=2, d_model=8,
                      mixer="safu", mixer_options=dict(block=4, radial=2))
    model = LanguageModel(cfg).double()
    ids = fw.randint(0, 20, (2, 10))
    logits, loss = model(ids, ids)
    assert logits.shape == (2, 10, 20)
    assert loss.item() == pytest.approx(cross_entropy_np(logits.numpy(), ids.numpy()), rel=1e-12)
    # W_A's gradient by value, through both blocks, the final norm and the head
    for name in ("blocks.0.mixer.w_a", "blocks.1.mixer.w_a"):
        assert gradcheck_parameter(model, name, lambda: model(ids[:, :5], ids[:, :5])[1])
    out = model.generate(ids[:, :3], 4, temperature=0)
    assert out.shape == (2, 7)
    assert_greedy(model, ids[:, :3], out)
    # top_k=1 keeps only the most likely token: sampling at any temperature is greedy decoding
    np.testing.assert_array_equal(model.generate(ids[:, :3], 4, temperature=5.0,
                                                 top_k=1).numpy(), out.numpy())


# -------------------------------------------------------------------------------- bad input
def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match="no context"):
        SAFU(4, 5, block=0, radial=0, use_document=False)
    with pytest.raises(ValueError, match="block"):
        SAFU(4, 5, block=-1)
    with pytest.raises(ValueError, match="hidden"):
        SAFU(4, 5, hidden=0)
    with pytest.raises(ValueError, match="vocab_size"):
        SAFU(4, 0)
    layer = SAFU(4, 5)
    with pytest.raises(ValueError, match=r"\(batch, length, 4\)"):
        layer(fw.rand(2, 3, 5))
    with pytest.raises(TypeError, match="floating point"):
        layer(fw.randint(0, 4, (2, 3, 4)))
    with pytest.raises(ValueError, match="block"):
        safu_block_attention(fw.rand(1, 3, 2), fw.rand(1, 3, 2), 0)
    with pytest.raises(ValueError, match="shape"):
        safu_block_attention(fw.rand(1, 3, 2), fw.rand(1, 4, 2), 2)
    with pytest.raises(ValueError, match="prev_count"):
        running_mean(fw.rand(1, 3, 2), None, -1)
    lm = SAFULanguageModel(5, 4)
    with pytest.raises(ValueError, match="integer"):
        lm(fw.rand(2, 3))
    with pytest.raises(ValueError, match="mix"):
        SAFULanguageModel(5, 4, mix=1.5)
    with pytest.raises(ValueError, match="stack"):
        SAFULanguageModel(5, 4, stack="sum")
