"""Tests of tinyfw.warmstart: bit cipher, co-occurrence vectors, explicit softmax solution."""
import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from tinyfw.warmstart import (BitCipher, bit_cipher, bits_needed, capacity, cipher_code_matrix,
                              cipher_code_sets, cooccurrence_counts, cooccurrence_offsets,
                              cooccurrence_raw, cooccurrence_vectors, explicit_softmax_weights,
                              feature_target_counts)


# ---------------------------------------------------------------------------- bit cipher codes

def test_b5_code_order_matches_worked_example():
    # The spec's worked example (docs/WARM_START_AND_SAFU.md, "Bit-cipher codes", step 3).
    expected = [{0}, {1}, {2}, {3}, {4}, {3, 4}, {2, 4}, {1, 4}, {0, 4}, {2, 3}, {1, 3}, {0, 3},
                {1, 2}, {0, 2}, {0, 1}]
    got = [set(code) for code in cipher_code_sets(5)[:len(expected)]]
    assert got == expected
    # The matrix form has the same rows.
    matrix = cipher_code_matrix(5, len(expected))
    assert matrix.dtype == np.uint8 and matrix.shape == (15, 5)
    for row, active in zip(matrix, expected):
        assert set(np.flatnonzero(row).tolist()) == active


@pytest.mark.parametrize("bits", range(1, 11))
def test_all_codes_distinct_and_ordered_by_weight(bits):
    sets = cipher_code_sets(bits)
    assert len(sets) == capacity(bits) == 2 ** bits - 1
    assert len(set(sets)) == len(sets)                    # no duplicates
    assert all(0 < len(c) and all(0 <= i < bits for i in c) for c in sets)
    weights = [len(c) for c in sets]
    assert weights == sorted(weights)                     # fewer ones first
    for k in range(1, bits + 1):                          # each level complete
        assert weights.count(k) == math.comb(bits, k)
    # n limits the output to a prefix of the full order
    assert cipher_code_sets(bits, min(3, len(sets))) == sets[:min(3, len(sets))]


def test_code_helpers_validate():
    with pytest.raises(ValueError, match="bits"):
        cipher_code_sets(0)
    with pytest.raises(TypeError, match="bits"):
        cipher_code_sets(2.5)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        cipher_code_sets(2, 4)
    assert [bits_needed(n) for n in (0, 1, 2, 3, 4, 7, 8, 15, 16)] == [1, 1, 2, 2, 3, 3, 4, 4, 5]


# ---------------------------------------------------------------------------- BitCipher

def test_ranking_by_frequency_ties_first_seen():
    tokens = ["c", "a", "b", "a", "d", "b", "e", "a"]
    # a:3, b:2, then c, d, e once each in first-seen order
    cipher = BitCipher().fit(tokens)
    assert cipher.vocab == ["a", "b", "c", "d", "e"]
    assert cipher.counts.tolist() == [3, 2, 1, 1, 1]
    assert cipher.index == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}


def test_capacity_default_bits_and_normalisation():
    for n_types in (1, 2, 3, 4, 7, 8, 31, 32, 100):
        tokens = [f"t{i}" for i in range(n_types)]
        cipher = bit_cipher(tokens)
        b = cipher.bits
        assert 2 ** b - 1 >= n_types                      # fits
        assert b == 1 or 2 ** (b - 1) - 1 < n_types       # and is the smallest that fits
        assert cipher.codes.shape == (n_types, b) and cipher.codes.dtype == np.uint8
        assert cipher.vectors.shape == (n_types, b)
        # L1-normalised: each active bit is 1/k, rows sum to one, inactive bits are zero
        np.testing.assert_allclose(cipher.vectors.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        ones = cipher.codes.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(cipher.vectors, cipher.codes / ones, rtol=0, atol=0)
        assert len({tuple(r) for r in cipher.codes.tolist()}) == n_types
        # most frequent (here: first seen) types get the one-hot codes
        assert (cipher.codes[:min(b, n_types)].sum(axis=1) == 1).all()


def test_bits_too_small_grows_with_a_warning():
    tokens = list("abcdefgh")                             # 8 types: 3 bits hold 7, 4 are needed
    with pytest.warns(UserWarning) as record:
        cipher = BitCipher(bits=3).fit(tokens)
    assert len(record) == 1
    message = str(record[0].message)
    # names the function, the requested bits, the vocabulary size and the bits used
    assert message.startswith("BitCipher.fit:")
    assert "bits=3" in message and "8 token types" in message and "using bits=4" in message
    assert record[0].filename == __file__                 # points at the caller's line
    assert cipher.requested_bits == 3 and cipher.bits == 4
    assert cipher.codes.shape == (8, 4) and cipher.vectors.shape == (8, 4)
    # the grown cipher is the one a fitting width gives: same codes, exact round trip
    np.testing.assert_array_equal(cipher.codes, BitCipher(bits=4).fit(tokens).codes)
    assert cipher.decode_many(cipher.encode_many(tokens)) == tokens


@pytest.mark.parametrize("n_types,bits,grown", [(2, 1, 2), (16, 4, 5), (100, 3, 7),
                                                 (1000, 8, 10)])
def test_grown_width_is_the_smallest_that_fits(n_types, bits, grown):
    with pytest.warns(UserWarning, match=rf"using bits={grown}\b"):
        cipher = bit_cipher(list(range(n_types)), bits=bits)
    assert cipher.bits == grown == bits_needed(n_types)
    assert capacity(grown) >= n_types > capacity(grown - 1)


def test_every_entry_point_names_itself_in_the_warning():
    tokens = list("abcdefgh")
    with pytest.warns(UserWarning, match=r"^bit_cipher: .*bits=3.*using bits=4") as record:
        bit_cipher(tokens, bits=3)
    assert record[0].filename == __file__
    with pytest.warns(UserWarning, match=r"^BitCipher\.from_vocab: .*8 token types.*bits=2"
                                         r".*using bits=4") as record:
        cipher = BitCipher.from_vocab(tokens, bits=2)
    assert record[0].filename == __file__
    assert cipher.bits == 4 and cipher.vocab == tokens


def test_strict_raises_with_a_clear_message():
    tokens = list("abcdefgh")
    pattern = (r"8 token types does not fit in bits=3 \(capacity 2\*\*3 - 1 = 7\); it needs "
               r"bits >= 4 \(strict=True")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # strict: an error, never a warning
        with pytest.raises(ValueError, match=r"^BitCipher\.fit: .*" + pattern):
            BitCipher(bits=3, strict=True).fit(tokens)
        with pytest.raises(ValueError, match=r"^bit_cipher: .*" + pattern):
            bit_cipher(tokens, bits=3, strict=True)
        with pytest.raises(ValueError, match=r"^BitCipher\.from_vocab: .*" + pattern):
            BitCipher.from_vocab(tokens, bits=3, strict=True)
        # a width that fits is used as given, strict or not, with no warning
        assert BitCipher(bits=3, strict=True).fit(tokens[:7]).bits == 3
        assert BitCipher(bits=6).fit(tokens).bits == 6
        assert BitCipher(bits=6, strict=True).fit(tokens).codes.shape == (8, 6)
        assert bit_cipher(tokens).bits == 4               # bits=None: smallest fitting width
    with pytest.raises(TypeError, match="strict must be a bool"):
        BitCipher(bits=3, strict="yes")


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        BitCipher().fit([])
    with pytest.raises(ValueError, match="bits must be >= 1"):
        BitCipher(bits=0)
    with pytest.raises(TypeError, match="bits must be an int"):
        BitCipher(bits="4")
    with pytest.raises(TypeError, match="hashable"):
        BitCipher().fit([[1], [2]])
    with pytest.raises(RuntimeError, match="fit"):
        BitCipher().encode("a")
    cipher = bit_cipher("abc")
    with pytest.raises(ValueError, match=r"\(2,\)"):
        cipher.decode(np.ones(3))


@pytest.mark.parametrize("n_types,bits", [(31, None), (31, 5), (40, 8), (3, 7)])
def test_encode_decode_round_trip_every_vocab_entry(n_types, bits):
    rng = np.random.default_rng(n_types)
    stream = rng.integers(0, n_types, size=20 * n_types).tolist() + list(range(n_types))
    cipher = BitCipher(bits=bits).fit(stream)
    assert len(cipher) == n_types
    for token in cipher.vocab:
        v = cipher.encode(token)
        np.testing.assert_array_equal(v, cipher.vectors[cipher.index[token]])
        assert cipher.decode(v) == token
    batch = cipher.encode_many(cipher.vocab)
    np.testing.assert_array_equal(batch, cipher.vectors)
    assert cipher.decode_many(batch) == cipher.vocab


def test_unknown_tokens_encode_to_zero_and_decode_to_none():
    cipher = bit_cipher(["x", "y", "x", "z"])
    assert "q" not in cipher and "x" in cipher
    np.testing.assert_array_equal(cipher.encode("q"), np.zeros(cipher.bits))
    out = cipher.encode_many(["x", "q", "z"])
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out[[0, 2]], cipher.vectors[[0, 2]])
    assert cipher.indices(["z", "q"]).tolist() == [2, -1]
    assert cipher.decode(np.zeros(cipher.bits)) is None
    # encode returns a copy: editing it does not change the cipher
    v = cipher.encode("x")
    v[:] = 7.0
    assert cipher.vectors[0].sum() == pytest.approx(1.0)


def test_decode_ties_go_to_the_fewer_bit_code():
    # A one-hot vector scores 1 on its own code and on every superset code; the earliest
    # (fewest ones, most frequent) wins, which is the token itself.
    cipher = BitCipher(bits=3).fit(list("abcdefg"))      # all 7 codes used
    for bit in range(3):
        e = np.zeros(3)
        e[bit] = 1.0
        assert cipher.decode(e) == cipher.vocab[bit]
    # an arbitrary positive vector decodes to the first maximiser of codes @ v
    v = np.array([0.2, 0.5, 0.3])
    scores = cipher.codes @ v
    assert cipher.decode(v) == cipher.vocab[int(np.argmax(scores))]


def test_numpy_token_ids_and_from_vocab():
    ids = np.array([3, 1, 3, 2, 3, 1])
    cipher = bit_cipher(ids)
    assert cipher.vocab == [3, 1, 2]
    np.testing.assert_array_equal(cipher.encode_many(np.array([2, 3, 9])),
                                  np.vstack([cipher.vectors[2], cipher.vectors[0], np.zeros(2)]))
    same = BitCipher.from_vocab([3, 1, 2])
    np.testing.assert_array_equal(same.codes, cipher.codes)
    with pytest.raises(ValueError, match="repeated"):
        BitCipher.from_vocab([1, 1])


def test_float32_vectors():
    cipher = BitCipher(dtype=np.float32).fit("abracadabra")
    assert cipher.vectors.dtype == np.float32 and cipher.encode("a").dtype == np.float32


# ---------------------------------------------------------------------------- co-occurrence

# Toy corpus, positions 0..5.  Frequencies a:3, b:2, c:1 -> vocab [a, b, c], 2 bits,
# codes a={0}, b={1}, c={0,1} -> vectors a=[1,0], b=[0,1], c=[.5,.5].
TOY = ["a", "b", "a", "c", "b", "a"]
A, B, C = 0, 1, 2


def _dense(counts):
    return [m.toarray() for m in counts]


def test_toy_cipher():
    cipher = bit_cipher(TOY)
    assert cipher.vocab == ["a", "b", "c"] and cipher.bits == 2
    np.testing.assert_array_equal(cipher.vectors, [[1, 0], [0, 1], [0.5, 0.5]])


def test_offsets():
    assert cooccurrence_offsets(2) == [-2, -1, 1, 2]
    assert cooccurrence_offsets(3, causal=True) == [-3, -2, -1]
    with pytest.raises(ValueError, match="window"):
        cooccurrence_offsets(0)


def test_cooccurrence_counts_by_hand_window_1():
    cipher = bit_cipher(TOY)
    offsets, counts = cooccurrence_counts(TOY, cipher, window=1)
    assert offsets == [-1, 1]
    assert all(sp.issparse(m) for m in counts)
    # offset -1, pairs (token at i, token at i-1) for i = 1..5:
    #   (b,a) (a,b) (c,a) (b,c) (a,b)
    minus1 = np.zeros((3, 3))
    minus1[A, B] = 2
    minus1[B, A] = 1
    minus1[C, A] = 1
    minus1[B, C] = 1
    # offset +1, pairs (token at i, token at i+1) for i = 0..4:
    #   (a,b) (b,a) (a,c) (c,b) (b,a)
    plus1 = np.zeros((3, 3))
    plus1[A, B] = 1
    plus1[B, A] = 2
    plus1[A, C] = 1
    plus1[C, B] = 1
    got = _dense(counts)
    np.testing.assert_array_equal(got[0], minus1)
    np.testing.assert_array_equal(got[1], plus1)


def test_cooccurrence_counts_by_hand_causal_window_2():
    cipher = bit_cipher(TOY)
    offsets, counts = cooccurrence_counts(TOY, cipher, window=2, causal=True)
    assert offsets == [-2, -1]
    # offset -2, pairs (token at i, token at i-2) for i = 2..5: (a,a) (c,b) (b,a) (a,c)
    minus2 = np.zeros((3, 3))
    minus2[A, A] = 1
    minus2[C, B] = 1
    minus2[B, A] = 1
    minus2[A, C] = 1
    got = _dense(counts)
    np.testing.assert_array_equal(got[0], minus2)
    assert got[1].sum() == 5                              # the five offset -1 pairs


def test_cooccurrence_raw_and_vectors_by_hand():
    cipher = bit_cipher(TOY)
    a, b, c = cipher.vectors
    # sum mode: A[t] = sum over both offsets of the neighbours' vectors
    #   a: neighbours b,b (at -1), b,c (at +1)  -> 3b + c = [.5, 3.5]
    #   b: neighbours a,c (at -1), a,a (at +1)  -> 3a + c = [3.5, .5]
    #   c: neighbours a (at -1), b (at +1)      -> a + b  = [1, 1]
    raw = cooccurrence_raw(TOY, cipher, window=1, mode="sum")
    np.testing.assert_allclose(raw, [3 * b + c, 3 * a + c, a + b], rtol=0, atol=1e-15)
    np.testing.assert_allclose(raw, [[0.5, 3.5], [3.5, 0.5], [1, 1]], rtol=0, atol=1e-15)
    # no zero entries here, so smoothing does nothing: normalise, then -log
    vec = cooccurrence_vectors(TOY, cipher, window=1, mode="sum")
    expected = -np.log(np.array([[1 / 8, 7 / 8], [7 / 8, 1 / 8], [0.5, 0.5]]))
    np.testing.assert_allclose(vec, expected, rtol=1e-14)

    # concat mode, segments [offset -1 | offset +1]:
    #   a: [2b | b + c] = [0, 2 | .5, 1.5];  b: [a + c | 2a] = [1.5, .5 | 2, 0];  c: [a | b]
    raw_cat = cooccurrence_raw(TOY, cipher, window=1, mode="concat")
    np.testing.assert_allclose(raw_cat, [[0, 2, .5, 1.5], [1.5, .5, 2, 0], [1, 0, 0, 1]],
                               rtol=0, atol=1e-15)
    s = 1e-3                                              # zeros -> smoothing, per segment
    probs = np.array([[s / (2 + s), 2 / (2 + s), .25, .75],
                      [.75, .25, 2 / (2 + s), s / (2 + s)],
                      [1 / (1 + s), s / (1 + s), s / (1 + s), 1 / (1 + s)]])
    vec_cat = cooccurrence_vectors(TOY, cipher, window=1, mode="concat", smoothing=s)
    np.testing.assert_allclose(vec_cat, -np.log(probs), rtol=1e-13)
    no_log = cooccurrence_vectors(TOY, cipher, window=1, mode="concat", smoothing=s, log=False)
    np.testing.assert_allclose(no_log, probs, rtol=1e-13)
    # each offset segment is a distribution before the log
    np.testing.assert_allclose(no_log.reshape(3, 2, 2).sum(axis=2), 1.0, rtol=1e-14)


def test_cooccurrence_counts_match_brute_force_loop():
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 12, size=300).tolist()
    cipher = bit_cipher(stream)
    for causal in (False, True):
        offsets, counts = cooccurrence_counts(stream, cipher, window=3, causal=causal)
        for r, matrix in zip(offsets, counts):
            expected = np.zeros((len(cipher), len(cipher)))
            for i in range(len(stream)):
                if 0 <= i + r < len(stream):
                    expected[cipher.index[stream[i]], cipher.index[stream[i + r]]] += 1
            np.testing.assert_array_equal(matrix.toarray(), expected)
        raw = cooccurrence_raw(stream, cipher, window=3, mode="concat", causal=causal)
        assert raw.shape == (len(cipher), len(offsets) * cipher.bits)
        summed = cooccurrence_raw(stream, cipher, window=3, mode="sum", causal=causal)
        np.testing.assert_allclose(raw.reshape(len(cipher), len(offsets), -1).sum(axis=1),
                                   summed, rtol=1e-12)


def test_cooccurrence_unknown_tokens_and_shapes():
    cipher = bit_cipher(["a", "b", "c"])
    offsets, counts = cooccurrence_counts(["a", "z", "b", "a"], cipher, window=1)
    # only the pair (b, a) at +1 and (a, b) at -1 survive; z is unknown to the cipher
    assert [m.sum() for m in counts] == [1, 1]
    assert counts[1][cipher.index["b"], cipher.index["a"]] == 1
    vec = cooccurrence_vectors(["a", "z", "b", "a"], cipher, window=2, mode="concat")
    assert vec.shape == (3, 4 * cipher.bits)
    assert np.all(np.isfinite(vec)) and np.all(vec >= 0)
    # a type never seen in this stream gets a uniform segment: -log(1/b) everywhere
    np.testing.assert_allclose(vec[cipher.index["c"]], np.log(cipher.bits), rtol=1e-14)
    with pytest.raises(ValueError, match="mode"):
        cooccurrence_vectors(["a"], cipher, mode="mean")
    with pytest.raises(ValueError, match="smoothing"):
        cooccurrence_vectors(["a"], cipher, smoothing=0.0)
    with pytest.raises(TypeError, match="fitted BitCipher"):
        cooccurrence_vectors(["a"], BitCipher())


def test_cooccurrence_deterministic_normalize_and_similarity():
    # "x" and "y" are used in identical contexts, "q" in different ones: after the log
    # representation x and y are (much) closer to each other than to q.
    stream = ("a x b . a y b . c q d . " * 20).split()
    cipher = bit_cipher(stream)
    v1 = cooccurrence_vectors(stream, cipher, window=2)
    v2 = cooccurrence_vectors(list(stream), cipher, window=2)
    np.testing.assert_array_equal(v1, v2)
    x, y, q = (v1[cipher.index[t]] for t in "xyq")
    assert np.linalg.norm(x - y) < 0.1 * np.linalg.norm(x - q)
    normed = cooccurrence_vectors(stream, cipher, window=2, mode="concat", normalize=True)
    np.testing.assert_allclose(normed.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(normed >= 0)


# ---------------------------------------------------------------------------- explicit solution

def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _gradient(X, W, Y):
    """dL/dW of the summed cross-entropy of softmax(X W) against Y: X^T (softmax(XW) - Y)."""
    return X.T @ (_softmax(X @ W) - Y)


def _one_hot_problem(seed, m=3000, n_in=6, n_out=5):
    rng = np.random.default_rng(seed)
    features = rng.integers(0, n_in, size=m)
    conditional = rng.dirichlet(np.ones(n_out), size=n_in)        # P(y | feature)
    targets = np.array([rng.choice(n_out, p=conditional[f]) for f in features])
    return np.eye(n_in)[features], targets, np.eye(n_out)[targets]


def test_explicit_solution_zero_gradient_one_hot():
    X, targets, Y = _one_hot_problem(1)
    eps = 1e-3
    W = explicit_softmax_weights(X, Y, eps=eps)
    assert W.shape == (6, 5) and W.dtype == np.float64
    g_explicit = np.abs(_gradient(X, W, Y)).max()
    rng = np.random.default_rng(2)
    g_random = np.abs(_gradient(X, rng.normal(size=W.shape), Y)).max()
    assert g_explicit < 1e-4 * g_random
    # exact bound: n_i |p_hat - p_emp| = eps |1 - N_out p_emp| n_i / (n_i + N_out eps) <= eps N_out
    assert g_explicit <= eps * Y.shape[1]
    # integer targets give the same weights as one-hot targets
    np.testing.assert_allclose(explicit_softmax_weights(X, targets, n_out=5, eps=eps), W,
                               rtol=0, atol=1e-14)


def test_explicit_solution_matches_empirical_conditional():
    X, targets, Y = _one_hot_problem(3, n_out=4)
    eps = 1e-3
    W = explicit_softmax_weights(X, targets, n_out=4, eps=eps)
    counts = X.T @ Y                                                 # (n_in, n_out)
    n_i = counts.sum(axis=1, keepdims=True)
    predicted = _softmax(W)                                          # row i: x = e_i
    np.testing.assert_allclose(predicted, (counts + eps) / (n_i + 4 * eps), rtol=1e-12)
    np.testing.assert_allclose(predicted, counts / n_i, rtol=0, atol=4 * eps / n_i.min())
    np.testing.assert_allclose(feature_target_counts(X, targets, n_out=4), counts)


def test_explicit_scale_is_mean_input_norm():
    # Every input is K * (one-hot): the 1/K solution is exactly right again, 1/1 is not.
    X, targets, Y = _one_hot_problem(4)
    K = 2.5
    W = explicit_softmax_weights(K * X, Y)
    # F scales with K, so with eps scaled alike the solution is the one-hot one divided by K
    np.testing.assert_allclose(explicit_softmax_weights(K * X, Y, eps=K * 1e-3) * K,
                               explicit_softmax_weights(X, Y, eps=1e-3), rtol=1e-13)
    g_scaled = np.abs(_gradient(K * X, W, Y)).max()
    g_unscaled = np.abs(_gradient(K * X, explicit_softmax_weights(K * X, Y, input_norm=1.0),
                                  Y)).max()
    assert g_scaled < 1e-3 * g_unscaled
    # K is the mean L1 row norm for general non-negative inputs
    rng = np.random.default_rng(5)
    Xm = rng.random((50, 4))
    W_multi = explicit_softmax_weights(Xm, targets[:50], n_out=5)
    K_multi = Xm.sum(axis=1).mean()
    np.testing.assert_allclose(
        explicit_softmax_weights(Xm, targets[:50], n_out=5, input_norm=K_multi), W_multi,
        rtol=1e-13)
    F = Xm.T @ np.eye(5)[targets[:50]] + 1e-3
    np.testing.assert_allclose(W_multi, np.log(F / F.sum(axis=1, keepdims=True)) / K_multi,
                               rtol=1e-12)


def test_explicit_sparse_matches_dense():
    X, targets, Y = _one_hot_problem(6, m=400)
    W = explicit_softmax_weights(X, Y)
    np.testing.assert_allclose(explicit_softmax_weights(sp.csr_matrix(X), targets, n_out=5), W,
                               rtol=1e-13)
    np.testing.assert_allclose(explicit_softmax_weights(X, sp.csr_matrix(Y)), W, rtol=1e-13)


def test_explicit_errors():
    X = np.abs(np.random.default_rng(0).normal(size=(4, 3)))
    y = np.array([0, 1, 1, 0])
    bad = X.copy()
    bad[1, 2] = -0.25
    with pytest.raises(ValueError, match=r"explicit_softmax_weights.*non-negative.*-0\.25"):
        explicit_softmax_weights(bad, y)
    with pytest.raises(ValueError, match=r"explicit_softmax_weights.*-0\.25"):
        explicit_softmax_weights(sp.csr_matrix(bad), y)
    with pytest.raises(ValueError, match=r"explicit_softmax_weights.*empty"):
        explicit_softmax_weights(np.zeros((0, 3)), np.zeros(0, dtype=int), n_out=2)
    with pytest.raises(ValueError, match="2-D"):
        explicit_softmax_weights(np.ones(3), y)
    with pytest.raises(ValueError, match="4 rows"):
        explicit_softmax_weights(X, y[:3])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        explicit_softmax_weights(X, np.array([0, 1, 2, 0]), n_out=2)
    with pytest.raises(ValueError, match="eps"):
        explicit_softmax_weights(X, y, eps=0.0)
    with pytest.raises(ValueError, match="all zeros"):
        explicit_softmax_weights(np.zeros((4, 3)), y)
    with pytest.raises(ValueError, match="n_out=3"):
        explicit_softmax_weights(X, np.eye(2)[y], n_out=3)
    with pytest.raises(TypeError, match="integers"):
        explicit_softmax_weights(X, np.array([0.5, 1, 1, 0]))
    # n_out defaults to max(target) + 1
    assert explicit_softmax_weights(X, y).shape == (3, 2)


def test_warmstart_pipeline_on_cipher_inputs():
    # End to end: cipher vectors as inputs, next token as target.  The explicit weights must
    # beat the uniform predictor in cross-entropy (they are a warm start, not exact, here).
    rng = np.random.default_rng(7)
    stream = rng.choice(list("abcdefgh"), p=[.3, .2, .15, .1, .1, .05, .05, .05], size=2000)
    stream = stream.tolist()
    cipher = bit_cipher(stream)
    X = cipher.encode_many(stream[:-1])
    targets = cipher.indices(stream[1:])
    W = explicit_softmax_weights(X, targets, n_out=len(cipher))
    probs = _softmax(X @ W)
    loss = -np.log(probs[np.arange(len(targets)), targets]).mean()
    assert loss < math.log(len(cipher))
