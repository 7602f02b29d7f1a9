"""Warm starts used on models: explicit training of SAFU (uniform attention, differential
criterion, re-solve), the explicit solution at the optimum for one-hot inputs, the stacked SAFU
language model, init_language_model for both model kinds, and bad input."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.nn.safu import SAFU, SAFULanguageModel
from tinyfw.ops import nn as N
from tinyfw.warmstart.explicit_training import (evaluate_loss, explicit_train,
                                                explicit_train_safu, fine_tune,
                                                hidden_targets_by_rank, stream_windows)
from tinyfw.warmstart.init import (cipher_embeddings, cooccurrence_embeddings,
                                   init_embedding_, init_language_model, project_vectors,
                                   ranked_cipher)


# ------------------------------------------------------------------------------- toy corpora
def markov_stream(V=20, n=5000, concentration=0.1, seed=0):
    """A first-order Markov chain with peaked transitions: strong bigram structure."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, concentration), size=V)
    s = [0]
    for _ in range(n - 1):
        s.append(int(rng.choice(V, p=P[s[-1]])))
    return np.array(s, dtype=np.int64)


def copy_corpus(n_seq=150, L=24, seed=0):
    """Keys 0..4, fillers 5..14, query 15. A key, 1-4 fillers, the query, then the same key
    again: predicting the token after a query needs attention to the key (the distance varies,
    so a fixed-offset radial context cannot do it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_seq):
        s = []
        while len(s) < L + 1:
            key = int(rng.integers(0, 5))
            s += [key] + rng.integers(5, 15, int(rng.integers(1, 5))).tolist() + [15, key]
            s += rng.integers(5, 15, int(rng.integers(0, 3))).tolist()
        rows.append(s[:L + 1])
    a = np.array(rows, dtype=np.int64)
    return a[:, :-1], a[:, 1:]


def mean_loss(layer, X, T):
    logits = layer(fw.tensor(X))
    return N.cross_entropy(logits, fw.tensor(T)).item()


# ----------------------------------------------------------------------- explicit SAFU layer
def test_explicit_training_lowers_loss_vs_uniform_init():
    ids, T = stream_windows(markov_stream(V=16, n=4000), 32)
    X = np.eye(16)[ids]
    layer = SAFU(16, 16, block=6, radial=2, use_document=True).double()
    for p in layer.parameters():                     # uniform init: every prediction is 1/V
        p.data[...] = 0.0
    before = mean_loss(layer, X, T)
    assert before == pytest.approx(np.log(16))
    report = explicit_train_safu(layer, X, T, rounds=2)
    after = mean_loss(layer, X, T)
    assert after == pytest.approx(report["loss"], rel=1e-9)
    assert after < before - 1.0                 # log 16 = 2.77 -> about 1.5


def test_differential_criterion_attention_finds_the_key():
    ids, T = copy_corpus()
    X = np.eye(16)[ids]
    fw.manual_seed(0)
    layer = SAFU(16, 16, block=6, radial=1, use_document=False).double()
    report = explicit_train_safu(layer, X, T, rounds=1, keep_best=False)
    (first, uniform_loss), (second, round_loss) = report["stages"]
    assert (first, second) == ("uniform attention", "round 1")
    assert round_loss < uniform_loss - 0.03
    # at every query position, the weight on the key vs the uniform weight 1/window
    _, a = layer.features(fw.tensor(X), return_attention=True)
    a = a.numpy()
    on_key, uniform = [], []
    for n, t in zip(*np.nonzero(ids == 15)):
        k = next(k for k in range(min(6, t + 1)) if ids[n, t - k] < 5) if \
            any(ids[n, t - k] < 5 for k in range(min(6, t + 1))) else None
        if k is not None:
            on_key.append(a[n, t, k])
            uniform.append(1.0 / min(6, t + 1))
    assert np.mean(on_key) > 0.6 > 2 * np.mean(uniform)


def test_explicit_solution_is_at_the_optimum_for_one_hot_inputs():
    """radial=1 alone on one-hot inputs is a single softmax layer: the closed form is its
    optimum (the gradient is ~0, up to the eps smoothing), unlike a random initialisation."""
    stream = markov_stream(V=12, n=3000)
    ids, T = stream_windows(stream, 30)
    X = np.eye(12)[ids]
    fw.manual_seed(0)
    layer = SAFU(12, 12, block=0, radial=1, use_document=False).double()

    def grad_norm():
        layer.zero_grad()
        loss = N.cross_entropy(layer(fw.tensor(X)), fw.tensor(T))
        loss.backward()
        return float(np.linalg.norm(layer.w_o.grad.numpy()))

    random_grad = grad_norm()
    explicit_train_safu(layer, X, T, rounds=0, eps=1e-6)
    assert grad_norm() < 1e-4 * random_grad


def test_explicit_hidden_layer_lowers_loss():
    stream = markov_stream(V=20, n=4000)
    ids, T = stream_windows(stream, 32)
    X = np.eye(20)[ids]
    layer = SAFU(20, 20, block=4, radial=1, use_document=False, hidden=20).double()
    for p in layer.parameters():
        p.data[...] = 0.0
    before = mean_loss(layer, X, T)
    report = explicit_train_safu(layer, X, T, rounds=1)
    assert [s for s, _ in report["stages"]] == ["uniform attention", "round 1"]
    assert mean_loss(layer, X, T) < before - 0.5


def test_hidden_targets_by_rank():
    T = np.array([3, 3, 3, 1, 1, 0, 2])
    # ranks: 3 -> 0, 1 -> 1, 0 -> 2 (tie with 2 broken by id), 2 -> 3
    np.testing.assert_array_equal(hidden_targets_by_rank(T, 2, 4), [0, 0, 0, 1, 1, 0, 1])


# ----------------------------------------------------------------------- SAFU language model
def test_stacked_safu_language_model_explicit_then_adam():
    stream = markov_stream(V=16, n=3000)
    train, val = stream[:2400], stream[2400:]
    E = cipher_embeddings(train, 16, bits=16)
    fw.manual_seed(0)
    lm = SAFULanguageModel(16, 16, n_layers=2, block=4, radial=2, embedding=E)
    Xv, Tv = stream_windows(val, 32)
    cold = evaluate_loss(lm, Xv, Tv)
    report = explicit_train(lm, train)            # 1-D stream: windows of 64
    assert len(report["layers"]) == 2
    warm = evaluate_loss(lm, Xv, Tv)
    assert warm < cold - 0.5
    X, T = stream_windows(train, 32)
    history = fine_tune(lm, X, T, steps=6, batch_size=8, lr=3e-3, eval_every=3,
                        eval_fn=lambda m: evaluate_loss(m, Xv, Tv))
    assert history["steps"] == [0, 3, 6] and history["eval"][0] == pytest.approx(warm)
    assert len(history["train_loss"]) == 6


def test_init_language_model_safu_methods():
    stream = markov_stream(V=16, n=2000)
    Xv, Tv = stream_windows(stream[1500:], 32)
    losses = {}
    for method in ("random", "cipher", "cooc", "explicit"):
        fw.manual_seed(0)
        lm = SAFULanguageModel(16, 15, block=4, radial=2)
        report = init_language_model(lm, stream[:1500], method, window=2)
        assert report["method"] == method
        E = lm.emb.weight.numpy()
        if method != "random":
            assert E.min() >= 0
            np.testing.assert_allclose(E.sum(1), 1.0, rtol=1e-6)
        losses[method] = evaluate_loss(lm, Xv, Tv)
    assert losses["explicit"] < losses["random"] - 0.5


# ------------------------------------------------------------------------ embedding helpers
def test_ranked_cipher_and_embeddings():
    ids = np.array([5, 5, 5, 2, 2, 7])
    cipher = ranked_cipher(ids, 8, bits=4)
    assert cipher.vocab[:3] == [5, 2, 7]               # by frequency, then id order
    assert cipher.vocab[3:] == [0, 1, 3, 4, 6]         # unseen ids last, in id order
    E = cipher_embeddings(ids, 8, bits=4)
    np.testing.assert_array_equal(E[5], [1, 0, 0, 0])
    np.testing.assert_array_equal(E[2], [0, 1, 0, 0])
    np.testing.assert_allclose(E.sum(1), 1.0)
    assert len({tuple(r) for r in E}) == 8             # every id distinguishable


def test_cooccurrence_embeddings_carry_similarity():
    # 1 and 2 always follow 0; 3 and 4 always follow 5: similar contexts, similar vectors
    rng = np.random.default_rng(0)
    stream = []
    for _ in range(400):
        stream += [0, int(rng.integers(1, 3))] if rng.random() < 0.5 else \
            [5, int(rng.integers(3, 5))]
    V = 6
    C = cooccurrence_embeddings(stream, V, bits=4, window=1, include_cipher=False)
    assert C.shape == (V, 4)
    d = lambda i, j: np.abs(C[i] - C[j]).sum()       # noqa: E731
    assert d(1, 2) < 0.1 * d(1, 3)
    full = cooccurrence_embeddings(stream, V, bits=4, window=1)
    assert full.shape == (V, 8)
    assert len({tuple(np.round(r, 12)) for r in full}) == V   # the cipher half separates them


def test_project_vectors_widen_keeps_geometry_and_narrow_is_pca():
    rng = np.random.default_rng(0)
    v = rng.random((10, 4))
    wide = project_vectors(v, 9)
    assert wide.shape == (10, 9)
    np.testing.assert_allclose(wide @ wide.T, v @ v.T, atol=1e-12)
    narrow = project_vectors(rng.random((10, 6)), 2)
    assert narrow.shape == (10, 2)
    assert np.var(narrow[:, 0]) >= np.var(narrow[:, 1])
    with pytest.raises(ValueError, match="width"):
        project_vectors(v, 0)


def test_init_embedding_matches_scale():
    fw.manual_seed(0)
    emb = fw.nn.Embedding(8, 6)
    target = np.linalg.norm(emb.weight.numpy(), axis=1).mean()
    init_embedding_(emb, cipher_embeddings(np.arange(8), 8, bits=4))
    got = np.linalg.norm(emb.weight.numpy(), axis=1).mean()
    assert got == pytest.approx(target, rel=1e-5)
    with pytest.raises(ValueError, match="one row per"):
        init_embedding_(emb, np.ones((7, 4)))


# ---------------------------------------------------------------------- Transformer LM init
def _language_model(V, tie=False):
    from tinyfw.nn.models import LanguageModel, ModelConfig
    fw.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=V, context_length=16, n_layers=1, n_heads=2,
                                     d_model=16, tie_weights=tie))


def test_init_language_model_transformer_explicit_beats_random():
    stream = markov_stream(V=24, n=5000)
    train, val = stream[:4000], stream[4000:]
    Xv, Tv = stream_windows(val, 16)
    losses = {}
    for method in ("random", "cipher", "cooc", "explicit"):
        model = _language_model(24)
        report = init_language_model(model, train, method)
        losses[method] = evaluate_loss(model, Xv, Tv)
        if method == "explicit":
            assert 0.0 < report["fit_r2"] <= 1.0 and report["temperature"] > 0
    assert losses["explicit"] < losses["random"] - 0.4


def test_init_language_model_tied_weights_refuses_explicit():
    model = _language_model(10, tie=True)
    with pytest.raises(ValueError, match="tie_weights"):
        init_language_model(model, np.arange(50) % 10, "explicit")


# --------------------------------------------------------------------------------- bad input
def test_bad_inputs():
    lm = SAFULanguageModel(6, 3)
    with pytest.raises(ValueError, match="init_language_model: the training token stream is "
                                         "empty"):
        init_language_model(lm, np.array([], dtype=np.int64), "cipher")
    with pytest.raises(ValueError, match="explicit_train: no tokens to solve from"):
        explicit_train(lm, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match=r"init_language_model: token ids must lie in \[0, 6\), "
                                         r"got range \[0, 9\]"):    # unknown token ids
        init_language_model(lm, np.array([0, 1, 9]), "cipher")
    with pytest.raises(ValueError, match="init_language_model: method must be one of .*got "
                                         "'magic'"):
        init_language_model(lm, np.arange(6), "magic")
    with pytest.raises(ValueError, match="the codes of 40 token types do not fit in 4 bits"):
        init_language_model(SAFULanguageModel(40, 4), np.arange(40), "cipher", bits=4)
    layer = SAFU(3, 4, block=2)
    with pytest.raises(ValueError, match="explicit_train_safu: .*non-negative inputs .*minimum "
                                         "value -1.0"):
        explicit_train_safu(layer, -np.ones((2, 5, 3)), np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match=r"explicit_train: the model's token vectors have "
                                         r"negative entries \(min -1.0\)"):
        explicit_train(SAFULanguageModel(6, 3, embedding=-np.ones((6, 3))), np.arange(100) % 6)
    with pytest.raises(ValueError, match=r"explicit_train_safu: targets of shape \(2, 4\) do "
                                         r"not match inputs \(2, 5\)"):
        explicit_train_safu(layer, np.ones((2, 5, 3)), np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"explicit_train_safu: targets must lie in \[0, 4\), "
                                         r"got range \[4, 4\]"):
        explicit_train_safu(layer, np.ones((2, 5, 3)), np.full((2, 5), 4))
    with pytest.raises(ValueError, match="stream_windows: a stream of 3 tokens is too short for "
                                         "one window of 5"):
        stream_windows(np.arange(3), 5)
    with pytest.raises(TypeError, match="nn.SAFU or SAFULanguageModel"):
        explicit_train(object(), np.arange(10))
