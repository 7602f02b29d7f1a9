"""The explicit SAFU solve's kernels (backend/cpu/warmstart_counts.py) against their NumPy
definitions (warmstart/explicit_steps.py), on random inputs of several shapes and on the edge
cases (empty inputs, unseen classes, windows of one position, ties, all-zero vectors), their bad
input, and the whole solve (``explicit_train``) against the solve as it was written before the
kernels (a copy below: separate loss and gradient passes over the full softmax, features
recomputed, counts through ``explicit_softmax_weights``).
"""
import math

import numpy as np
import pytest
import scipy.sparse as sp
from numba import njit

from conftest import launch_path
import tinyfw as fw
from tinyfw.autograd import no_grad
from tinyfw.backend.cpu import warmstart_counts as kernels
from tinyfw.nn import init
from tinyfw.nn.safu import SAFU, SAFULanguageModel
from tinyfw.warmstart import explicit_steps as ref
from tinyfw.warmstart import explicit_training
from tinyfw.warmstart.explicit import explicit_softmax_weights, weights_from_counts
from tinyfw.warmstart.explicit_training import (explicit_train, explicit_train_safu,
                                                stream_windows)
from tinyfw.warmstart.init import cipher_embeddings

TOL = dict(rtol=1e-12, atol=1e-13)
# float32 passes against their float64 definitions: the sums of ~2000 exps and the products carry
# float32 rounding (~1e-7 relative per operation)
TOL32 = dict(rtol=2e-5, atol=2e-6)


@pytest.fixture(params=["serial", "split", "parallel"])
def path(request, monkeypatch):
    """Run the kernels on the calling thread, split with helper threads, or through the prange
    drivers, whatever the size (the kernels use launch's ROWS policy, as the core kernels do)."""
    return launch_path(monkeypatch, "ROWS", request.param)


def sparse_rows(rng, shape, density=0.3):
    """Non-negative values, most of them zero (like cipher vectors and their contexts)."""
    return rng.random(shape) * (rng.random(shape) < density)


# ------------------------------------------------------------------------------ target counts
@pytest.mark.parametrize("M,d,n_out", [(1, 1, 1), (7, 3, 5), (200, 13, 40), (3000, 36, 500)])
def test_target_counts_match_reference(path, M, d, n_out):
    rng = np.random.default_rng(M)
    X = sparse_rows(rng, (M, d))
    targets = rng.integers(0, max(1, n_out // 2), M)        # the upper half of classes unseen
    F = kernels.target_counts(X, targets, n_out)
    np.testing.assert_allclose(F, ref.target_counts(X, targets, n_out), **TOL)
    assert F.shape == (d, n_out) and F.flags.c_contiguous
    if n_out > 1:
        assert not F[:, n_out // 2 + 1:].any()                 # unseen classes count nothing
    np.testing.assert_allclose(F.sum(axis=1), X.sum(axis=0), **TOL)


def test_target_counts_by_hand_and_empty():
    X = np.array([[1.0, 0.0], [0.5, 2.0], [0.0, 3.0]])
    F = kernels.target_counts(X, np.array([2, 0, 2]), 3)
    np.testing.assert_array_equal(F, [[0.5, 0.0, 1.0], [2.0, 0.0, 3.0]])
    for f in (kernels.target_counts, ref.target_counts):
        np.testing.assert_array_equal(f(np.zeros((0, 4)), np.zeros(0, np.int64), 3),
                                      np.zeros((4, 3)))


def test_explicit_softmax_weights_unchanged_by_the_count_kernel():
    """Dense X with integer targets goes through the kernel, anything else through the sparse
    product; both give the closed form of explicit.py."""
    rng = np.random.default_rng(1)
    X = sparse_rows(rng, (400, 9))
    targets = rng.integers(0, 6, 400)
    onehot = np.eye(8)[targets]
    W = explicit_softmax_weights(X, targets, n_out=8, eps=0.1)
    np.testing.assert_allclose(W, explicit_softmax_weights(X, onehot, eps=0.1), **TOL)
    np.testing.assert_allclose(W, explicit_softmax_weights(sp.csr_matrix(X), targets, n_out=8,
                                                           eps=0.1), **TOL)
    K = X.sum() / len(X)
    np.testing.assert_allclose(W, weights_from_counts(X.T @ onehot, K, eps=0.1), **TOL)
    with pytest.raises(ValueError, match="weights_from_counts: eps"):
        weights_from_counts(X.T @ onehot, K, eps=0.0)
    with pytest.raises(ValueError, match="weights_from_counts: the input norm K"):
        weights_from_counts(X.T @ onehot, 0.0)
    with pytest.raises(ValueError, match="weights_from_counts: F must be finite"):
        weights_from_counts(-np.ones((2, 2)), 1.0)


# ---------------------------------------------------------------- softmax cross-entropy rows
def logits_and_targets(rng, n, V, scale=5.0):
    return rng.standard_normal((n, V)) * scale, rng.integers(0, V, n)


@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize("n,V", [(1, 1), (3, 2), (17, 9), (300, 257), (64, 2000)])
def test_softmax_rows_match_reference(path, gradient, n, V):
    rng = np.random.default_rng(n * V)
    S, t = logits_and_targets(rng, n, V)
    a, b = S.copy(), S.copy()
    loss = kernels.softmax_cross_entropy_rows(a, t, gradient)
    np.testing.assert_allclose(loss, ref.softmax_cross_entropy_rows(b, t, gradient), **TOL)
    np.testing.assert_allclose(a, b, **TOL)
    if not gradient:
        np.testing.assert_array_equal(a, S)                    # the logits are only read
    else:
        np.testing.assert_allclose(a.sum(axis=1), 0.0, atol=1e-12)   # p - y sums to zero


def test_softmax_rows_against_logsumexp_and_extremes():
    from scipy.special import logsumexp
    rng = np.random.default_rng(3)
    S, t = logits_and_targets(rng, 50, 30, scale=30.0)
    expected = logsumexp(S, axis=1) - S[np.arange(50), t]
    np.testing.assert_allclose(kernels.softmax_cross_entropy_rows(S, t), expected, rtol=1e-13)
    # a target far below the rest: p underflows, the loss stops at -log(1e-300)
    S = np.array([[0.0, -1e4, 5.0], [1e4, 1e4 - 1.0, -1e4]])
    t = np.array([1, 2])
    for f in (kernels.softmax_cross_entropy_rows, ref.softmax_cross_entropy_rows):
        np.testing.assert_allclose(f(S.copy(), t), [-math.log(1e-300)] * 2)
        np.testing.assert_allclose(f(S.copy(), t, True), [-math.log(1e-300)] * 2)
    g = S.copy()
    kernels.softmax_cross_entropy_rows(g, t, True)
    np.testing.assert_allclose(g[1], [1.0 / (1.0 + math.exp(-1.0)), 1.0 / (1.0 + math.e), -1.0])


def csr_of(A, offset=0):
    """A dense (n, k) as (indptr, indices, values) whose indptr starts ``offset`` entries into
    indices/values (a block of rows of a larger matrix)."""
    C = sp.csr_matrix(A)
    pad_i, pad_v = np.full(offset, 7, np.int64), np.full(offset, 99.0, C.data.dtype)
    return (C.indptr.astype(np.int64) + offset,
            np.concatenate([pad_i, C.indices.astype(np.int64)]),
            np.concatenate([pad_v, C.data]))


@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize("n,k,V,offset", [(1, 1, 1, 0), (5, 3, 4, 2), (40, 17, 33, 0),
                                          (100, 60, 500, 5)])
def test_softmax_rows_with_a_sparse_part(path, gradient, n, k, V, offset):
    rng = np.random.default_rng(k)
    S, t = logits_and_targets(rng, n, V, scale=1.0)
    A = sparse_rows(rng, (n, k), density=0.2)
    A[0] = 0.0                                                 # a row with nothing to add
    W = rng.standard_normal((k, V))
    indptr, indices, values = csr_of(A, offset)
    a, b, full = S.copy(), S.copy(), S + A @ W
    loss = kernels.softmax_cross_entropy_rows(a, t, gradient, (indptr, indices, values, W))
    np.testing.assert_allclose(
        loss, ref.softmax_cross_entropy_rows(b, t, gradient, (indptr, indices, values, W)),
        **TOL)
    np.testing.assert_allclose(a, b, **TOL)
    expected = full.copy()
    np.testing.assert_allclose(loss, ref.softmax_cross_entropy_rows(expected, t, gradient),
                               **TOL)
    np.testing.assert_allclose(a, expected, **TOL)             # logits (or p - y) of S + A W


@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize("n,k,V", [(1, 1, 1), (17, 5, 9), (64, 12, 2000)])
def test_float32_softmax_rows_match_the_float64_definition(path, gradient, n, k, V):
    """float32 logits (and sparse part) give the losses and p - y of the float64 definition on
    the same float32 numbers, to float32 rounding; the logits are never widened in place."""
    rng = np.random.default_rng(n + V)
    S, t = logits_and_targets(rng, n, V)
    A = sparse_rows(rng, (n, k), density=0.3)
    W = rng.standard_normal((k, V))
    sparse32 = csr_of(A.astype(np.float32)) + (W.astype(np.float32),)
    a = S.astype(np.float32)
    b = a.copy()
    loss = kernels.softmax_cross_entropy_rows(a, t, gradient, sparse32)
    expected = ref.softmax_cross_entropy_rows(b, t, gradient, sparse32)
    assert a.dtype == np.float32 and loss.dtype == np.float64
    np.testing.assert_allclose(loss, expected, **TOL32)
    np.testing.assert_allclose(a, b, **TOL32)
    if gradient:
        np.testing.assert_allclose(a.sum(axis=1), 0.0, atol=1e-5)
    # logits far apart: no NaN, the capped loss where p underflows
    far = np.array([[0.0, -1e4, 5.0], [80.0, 79.0, -80.0]], dtype=np.float32)
    out = kernels.softmax_cross_entropy_rows(far.copy(), np.array([1, 2]))
    np.testing.assert_allclose(out, [-math.log(1e-300), 160.0 + math.log1p(math.exp(-1.0))],
                               rtol=1e-6)


def test_float32_inputs_must_not_mix_dtypes():
    S = np.zeros((2, 3), np.float32)
    sparse = (np.zeros(3, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((1, 3)))
    for module in (kernels, ref):
        with pytest.raises(TypeError, match="softmax_cross_entropy_rows: the sparse part's W "
                                            "must have the dtype of the other inputs"):
            module.softmax_cross_entropy_rows(S, np.zeros(2, np.int64), False, sparse)
        with pytest.raises(TypeError, match="listed_products: W must have the dtype"):
            module.listed_products(S, np.zeros((1, 3)), np.array([0, 0, 0]), np.zeros(0, int))
        with pytest.raises(TypeError, match="softmax_cross_entropy_rows: S must be float32 or "
                                            "float64, got int64"):
            module.softmax_cross_entropy_rows(np.zeros((2, 3), np.int64), np.zeros(2, np.int64))


def test_softmax_rows_empty():
    for f in (kernels.softmax_cross_entropy_rows, ref.softmax_cross_entropy_rows):
        assert f(np.zeros((0, 5)), np.zeros(0, np.int64), True).shape == (0,)


def test_exp_float64_agrees_with_numpy():
    @njit
    def exps(u):
        out = np.empty_like(u)
        for i in range(u.shape[0]):
            out[i] = kernels._exp_float64(u[i])
        return out

    u = np.concatenate([np.linspace(-708.0, 700.0, 100_001), [0.0, -1e-300, 1e-17, -0.5,
                                                               np.log(2.0)]])
    np.testing.assert_allclose(exps(u), np.exp(u), rtol=4e-16, atol=0)
    np.testing.assert_array_equal(exps(np.array([-709.0, -1e4, -np.inf])), 0.0)
    # inside the kernels' reassociated sum the exp keeps its accuracy (its own fastmath flags)
    one = np.array([-700.0, -355.5, -40.25, -1.0])
    sums = [kernels._exp_shifted_sum(one[i:i + 1], 0.0) for i in range(len(one))]
    np.testing.assert_allclose(sums, np.exp(one), rtol=4e-16, atol=0)


def test_float32_exps_inside_the_row_sum_keep_their_accuracy():
    """The float32 rows take ``fastmath.exp_float32`` through ``_exp``, compiled on its own, so
    the reassociating sum around it does not merge the two parts of ln 2."""
    u = np.concatenate([np.linspace(-87.0, 0.0, 10_001), [-1e-30, -0.5, -80.0]]).astype(
        np.float32)
    sums = [kernels._exp_shifted_sum(u[i:i + 1], np.float32(0.0)) for i in range(len(u))]
    np.testing.assert_allclose(sums, np.exp(u.astype(np.float64)), rtol=2.4e-7, atol=0)
    assert kernels._exp_shifted_sum(np.array([-87.5, -1e4, -np.inf], np.float32),
                                    np.float32(0.0)) == 0.0


# ------------------------------------------------------------------- the differential criterion
@pytest.mark.parametrize("N,L,d,block", [(1, 1, 1, 1), (2, 5, 3, 1), (3, 9, 4, 2),
                                         (4, 20, 6, 5), (2, 4, 3, 9), (30, 64, 36, 8)])
def test_offset_choices_and_counts_match_reference(path, N, L, d, block):
    rng = np.random.default_rng(N * L + block)
    X = sparse_rows(rng, (N, L, d), density=0.4)
    X[0, L // 2] = 0.0                                         # an all-zero input (unknown token)
    G = rng.standard_normal((N, L, d))
    choice, keep = kernels.offset_choices(X, G, block)
    choice_ref, keep_ref = ref.offset_choices(X, G, block)
    np.testing.assert_array_equal(choice, choice_ref)
    np.testing.assert_array_equal(keep, keep_ref)
    assert (choice <= np.arange(L)).all() and (choice < block).all()
    if block == 1 or L == 1:
        assert not keep.any()                                  # a window of one: no choice
    assert not keep[:, 0].any() and not keep[0, L // 2]
    F = kernels.choice_counts(X, choice, keep)
    np.testing.assert_allclose(F, ref.choice_counts(X, choice, keep), **TOL)
    assert F.shape == (d, d)


def test_offset_choices_by_hand_ties_go_to_the_nearest():
    # window of 3, scores x_{t-k} . g_t with x_0 == x_1: position 1 sees (k=0: 0, k=1: 0),
    # a tie -> 0; position 2 sees (1, -2, -2) -> 1; position 3 (0, 1, 1) -> 0
    X = np.array([[[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    G = np.array([[[0.0, 0.0], [5.0, 0.0], [1.0, -2.0], [1.0, 1.0]]])
    for f in (kernels.offset_choices, ref.offset_choices):
        choice, keep = f(X, G, 3)
        np.testing.assert_array_equal(choice, [[0, 0, 1, 0]])
        np.testing.assert_array_equal(keep, [[False, True, True, False]])   # x_3 is all zero
    F = kernels.choice_counts(X, *kernels.offset_choices(X, G, 3))
    # kept: t=1 chose itself (x_1 x_1^T), t=2 chose t=1 (x_2 x_1^T)
    np.testing.assert_array_equal(F, [[0.0, 1.0], [0.0, 1.0]])


@pytest.mark.parametrize("n,k,V", [(1, 1, 1), (6, 4, 9), (120, 36, 300)])
def test_listed_products_match_reference(path, n, k, V):
    rng = np.random.default_rng(n + k)
    D, W = rng.standard_normal((n, V)), rng.standard_normal((k, V))
    listed = rng.random((n, k)) < 0.3
    listed[0] = False                                          # a row with nothing listed
    indptr = np.concatenate([[0], np.cumsum(listed.sum(axis=1))]).astype(np.int64)
    cols = np.nonzero(listed)[1]
    out = kernels.listed_products(D, W, indptr, cols)
    np.testing.assert_allclose(out, ref.listed_products(D, W, indptr, cols), **TOL)
    np.testing.assert_allclose(out, np.where(listed, D @ W.T, 0.0), **TOL)
    with pytest.raises(ValueError, match="listed_products: cols must lie"):
        kernels.listed_products(D[:1], W, np.array([0, 1]), np.array([k]))
    with pytest.raises(ValueError, match="listed_products: indptr must be"):
        kernels.listed_products(D[:1], W, np.array([0, 2]), np.array([0]))
    D32, W32 = D.astype(np.float32), W.astype(np.float32)
    out32 = kernels.listed_products(D32, W32, indptr, cols)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref.listed_products(D32, W32, indptr, cols), rtol=1e-5,
                               atol=1e-5)


def test_large_empty_shapes():
    small, large = kernels.large_empty((3, 4)), kernels.large_empty((1 << 20, 5))
    assert small.shape == (3, 4) and large.shape == (1 << 20, 5)
    assert small.dtype == large.dtype == np.float64 and large.flags.writeable
    large[-1] = 2.0
    assert large[-1].sum() == 10.0


def test_split_columns_rebuilds_the_product():
    rng = np.random.default_rng(5)
    Z = rng.random((500, 12)) * (rng.random((500, 12)) < np.linspace(0.01, 0.9, 12))
    W = rng.standard_normal((12, 7))
    dense_cols, dense, sparse_cols, (indptr, indices, values) = kernels.split_columns(Z)
    assert len(sparse_cols) and len(dense_cols)
    assert np.array_equal(np.sort(np.concatenate([dense_cols, sparse_cols])), np.arange(12))
    A = sp.csr_matrix((values, indices, indptr), shape=(500, len(sparse_cols)))
    np.testing.assert_array_equal(A.toarray(), Z[:, sparse_cols])
    np.testing.assert_array_equal(dense, Z[:, dense_cols])
    np.testing.assert_allclose(dense @ W[dense_cols] + A @ W[sparse_cols], Z @ W, **TOL)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("module", [kernels, ref], ids=["numba", "reference"])
def test_bad_input_names_the_function(module):
    X = np.ones((4, 3))
    with pytest.raises(TypeError, match="target_counts: X must be float64"):
        module.target_counts(X.astype(np.float32), np.zeros(4, np.int64), 2)
    with pytest.raises(ValueError, match=r"target_counts: targets must lie in \[0, 2\)"):
        module.target_counts(X, np.array([0, 1, 2, 0]), 2)
    with pytest.raises(ValueError, match="target_counts: targets of shape"):
        module.target_counts(X, np.zeros(3, np.int64), 2)
    with pytest.raises(ValueError, match="target_counts: n_out"):
        module.target_counts(X, np.zeros(4, np.int64), 0)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy_rows: targets must lie"):
        module.softmax_cross_entropy_rows(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="softmax_cross_entropy_rows: S must have at least"):
        module.softmax_cross_entropy_rows(np.zeros((2, 0)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="softmax_cross_entropy_rows: the sparse part's W"):
        module.softmax_cross_entropy_rows(np.zeros((2, 3)), np.zeros(2, np.int64), False,
                                          (np.zeros(3, np.int64), np.zeros(0, np.int64),
                                           np.zeros(0), np.zeros((1, 4))))
    with pytest.raises(ValueError, match="offset_choices: G"):
        module.offset_choices(np.ones((1, 3, 2)), np.ones((1, 3, 3)), 2)
    with pytest.raises(ValueError, match="offset_choices: block"):
        module.offset_choices(np.ones((1, 3, 2)), np.ones((1, 3, 2)), 0)
    with pytest.raises(ValueError, match="choice_counts: every kept choice"):
        module.choice_counts(np.ones((1, 3, 2)), np.array([[0, 2, 0]]),
                             np.array([[False, True, False]]))
    with pytest.raises(ValueError, match="choice_counts: keep must be a bool"):
        module.choice_counts(np.ones((1, 3, 2)), np.zeros((1, 3), np.int64),
                             np.zeros((1, 3), np.int64))


def test_gradient_rows_need_a_writeable_contiguous_block():
    S = np.zeros((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="softmax_cross_entropy_rows: S is overwritten"):
        kernels.softmax_cross_entropy_rows(S, np.zeros(4, np.int64), True)


# ------------------------------------------------------- the whole solve against the original
class OriginalSolver:
    """The solve's steps as written before the kernels (the reference path)."""

    def __init__(self, layer, X, T, eps, chunk=256):
        self.layer, self.X, self.T, self.eps, self.chunk = layer, X, T, eps, chunk
        self.flat_T = T.reshape(-1)
        self.dtype = next(layer.parameters()).dtype

    def get(self, name):
        return getattr(self.layer, name).numpy().astype(np.float64)

    def set(self, name, value):
        init.copy_(getattr(self.layer, name), value)

    @no_grad()
    def features(self):
        out = [self.layer.features(fw.tensor(self.X[s:s + self.chunk], dtype=self.dtype))
               .numpy().astype(np.float64) for s in range(0, self.X.shape[0], self.chunk)]
        z = np.concatenate(out, axis=0)
        return z.reshape(-1, z.shape[-1])

    def predict(self, Z):
        hid = self.layer.hidden
        w = (self.get("w_1"), self.get("w_2")) if hid else (self.get("w_o"),)
        for start in range(0, Z.shape[0], 512):
            z = Z[start:start + 512]
            if hid:
                u = explicit_training._softmax(z @ w[0])
                yield slice(start, start + len(z)), explicit_training._softmax(u @ w[1]), u, w
            else:
                yield slice(start, start + len(z)), explicit_training._softmax(z @ w[0]), None, w

    def loss(self, Z):
        total = 0.0
        for rows, p, _, _ in self.predict(Z):
            t = self.flat_T[rows]
            total -= np.log(np.maximum(p[np.arange(len(t)), t], 1e-300)).sum()
        return total / Z.shape[0]

    def solve_output(self, Z, hidden_targets=None):
        V = self.layer.vocab_size
        if self.layer.hidden is None:
            self.set("w_o", explicit_softmax_weights(Z, self.flat_T, n_out=V, eps=self.eps))
            return None
        H = self.layer.hidden
        if hidden_targets is None:
            hidden_targets = explicit_training.hidden_targets_by_rank(self.flat_T, H, V)
        w1 = explicit_softmax_weights(Z, hidden_targets, n_out=H, eps=self.eps)
        self.set("w_1", w1)
        U = explicit_training._softmax(Z @ w1)
        self.set("w_2", explicit_softmax_weights(U, self.flat_T, n_out=V, eps=self.eps))
        return hidden_targets

    def gradients(self, Z):
        G = np.empty_like(Z)
        new_hidden = np.empty(Z.shape[0], dtype=np.int64) if self.layer.hidden else None
        for rows, p, u, w in self.predict(Z):
            t = self.flat_T[rows]
            p[np.arange(len(t)), t] -= 1.0
            if u is None:
                G[rows] = p @ w[0].T
            else:
                gu = p @ w[1].T
                new_hidden[rows] = np.argmin(gu, axis=1)
                ds = u * (gu - (u * gu).sum(axis=1, keepdims=True))
                G[rows] = ds @ w[0].T
        return G, new_hidden

    def solve_attention(self, G):
        layer, X = self.layer, self.X
        N, L, d = X.shape
        g = G[:, layer.segments()["block"]].reshape(N, L, d)
        best = np.full((N, L), np.inf)
        choice = np.zeros((N, L), dtype=np.int64)
        for k in range(min(layer.block, L)):
            c = np.einsum("nld,nld->nl", X[:, :L - k], g[:, k:])
            better = c < best[:, k:]
            best[:, k:] = np.where(better, c, best[:, k:])
            choice[:, k:] = np.where(better, k, choice[:, k:])
        decides = np.broadcast_to(np.arange(L) >= 1, (N, L))
        n_idx, t_idx = np.nonzero(decides)
        if len(n_idx) == 0:
            return False
        inputs = X[n_idx, t_idx]
        chosen = X[n_idx, t_idx - choice[n_idx, t_idx]]
        keep = (inputs.sum(axis=1) > 0) & (chosen.sum(axis=1) > 0)
        if not keep.any():
            return False
        self.set("w_a", explicit_softmax_weights(inputs[keep], chosen[keep], n_out=d,
                                                 eps=self.eps))
        return True


def original_explicit_train_safu(layer, X, T, rounds, eps):
    """The stages and the last stage's parameters of the original procedure (keep_best=False)."""
    solver = OriginalSolver(layer, X.astype(np.float64), T.astype(np.int64), eps)
    stages = []
    if layer.block:
        solver.set("w_a", np.zeros((layer.d_in, layer.d_in)))
    Z = solver.features()
    hidden_targets = solver.solve_output(Z)
    stages.append(("uniform attention", solver.loss(Z)))
    for r in range(1, rounds + 1):
        G, new_hidden = solver.gradients(Z)
        changed = layer.block > 1 and solver.solve_attention(G)
        if changed:
            Z = solver.features()
        if new_hidden is not None:
            hidden_targets = new_hidden
        if changed or new_hidden is not None:
            solver.solve_output(Z, hidden_targets)
            stages.append((f"round {r}", solver.loss(Z)))
    return stages


def params(module):
    return {n: p.numpy().astype(np.float64) for n, p in module.named_parameters()}


def random_safu_problem(seed, N=24, L=16, d=6, V=11):
    rng = np.random.default_rng(seed)
    X = sparse_rows(rng, (N, L, d), density=0.35)
    X[:, 3] = 0.0                                              # unknown tokens somewhere
    T = rng.integers(0, V, (N, L))
    return X, T


@pytest.mark.parametrize("options", [dict(block=4, radial=2, use_document=True),
                                     dict(block=6, radial=0, use_document=False),
                                     dict(block=1, radial=3, use_document=True),
                                     dict(block=0, radial=2, use_document=True),
                                     dict(block=5, radial=1, use_document=True, hidden=4)])
@pytest.mark.parametrize("rounds", [0, 1, 2])
def test_explicit_train_safu_matches_the_original_solve(options, rounds):
    X, T = random_safu_problem(rounds + 10 * options["block"])
    fw.manual_seed(0)
    new = SAFU(6, 11, dtype=np.float64, **options)
    fw.manual_seed(0)
    old = SAFU(6, 11, dtype=np.float64, **options)
    report = explicit_train_safu(new, X, T, rounds=rounds, eps=0.05, keep_best=False)
    stages = original_explicit_train_safu(old, X, T, rounds, eps=0.05)
    assert [s[0] for s in report["stages"]] == [s[0] for s in stages]
    np.testing.assert_allclose([s[1] for s in report["stages"]], [s[1] for s in stages],
                               rtol=1e-12)
    a, b = params(new), params(old)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-12, err_msg=name)


def zipf_language_model_problem(dtype):
    rng = np.random.default_rng(0)
    V = 60
    stream = rng.zipf(1.3, 6000) % V
    ids, targets = stream_windows(stream, 39)

    def model():
        fw.manual_seed(1)
        m = SAFULanguageModel(V, 8, block=5, radial=3, use_document=True, dtype=dtype)
        m.set_embedding(cipher_embeddings(stream, V, 8).astype(dtype))
        return m
    return model, ids, targets


def solve_with_the_definitions(monkeypatch, model, ids, targets):
    """explicit_train with every kernel swapped for its NumPy definition."""
    class References:                     # the definitions, plus the (exact) column split
        target_counts = staticmethod(ref.target_counts)
        softmax_cross_entropy_rows = staticmethod(ref.softmax_cross_entropy_rows)
        offset_choices = staticmethod(ref.offset_choices)
        choice_counts = staticmethod(ref.choice_counts)
        listed_products = staticmethod(ref.listed_products)
        split_columns = staticmethod(kernels.split_columns)
        large_empty = staticmethod(kernels.large_empty)

    with monkeypatch.context() as patch:
        patch.setattr(explicit_training, "counts", References)
        return explicit_train(model, ids, targets, rounds=1, eps=0.1, keep_best=False)


@pytest.mark.parametrize("dtype, loss_rtol, param_tol", [
    (np.float64, 1e-12, dict(rtol=1e-10, atol=1e-12)),
    # float32 passes: float32 sums of exps, and the parameters' last float32 bit (~6e-8)
    (np.float32, 1e-6, dict(rtol=1e-5, atol=1e-6))])
def test_language_model_solve_matches_the_original_and_the_definitions(monkeypatch, dtype,
                                                                         loss_rtol, param_tol):
    """A SAFULanguageModel with cipher vectors, float64 and the default float32: its passes run
    in its own dtype (the logits blocks), and its stage losses and parameters are those of the
    original (float64) solve of the same numbers, and of the solve with every kernel swapped
    for its NumPy definition, to the rounding of that dtype."""
    model, ids, targets = zipf_language_model_problem(dtype)
    new = model()
    seen = []
    original_rows = kernels.softmax_cross_entropy_rows

    def recording_rows(S, *args, **kwargs):
        seen.append(S.dtype)
        return original_rows(S, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(kernels, "softmax_cross_entropy_rows", recording_rows)
        report = explicit_train(new, ids, targets, rounds=1, eps=0.1, keep_best=False)
    assert seen and set(seen) == {np.dtype(dtype)}
    old = model()
    with no_grad():
        X = old.layer_inputs(fw.tensor(ids), 0).numpy()
    stages = original_explicit_train_safu(old.layers[0], X, targets, 1, eps=0.1)
    np.testing.assert_allclose([s[1] for s in report["layers"][0]["stages"]],
                               [s[1] for s in stages], rtol=loss_rtol)
    a, b = params(new), params(old)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], err_msg=name, **param_tol)
    again = model()
    report_ref = solve_with_the_definitions(monkeypatch, again, ids, targets)
    np.testing.assert_allclose(report_ref["loss"], report["loss"], rtol=loss_rtol)
    c = params(again)
    for name in a:
        np.testing.assert_allclose(c[name], a[name], err_msg=name, **param_tol)
    assert np.abs(a["layers.0.w_a"]).max() > 0                # the attention was solved
