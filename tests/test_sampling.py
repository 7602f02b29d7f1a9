"""The next-token distribution (``tinyfw.nn.sampling``): temperature, top-k, top-p (nucleus)
checked on known distributions, and bad input."""
import math

import numpy as np
import pytest

from tinyfw import random as fw_random
from tinyfw.nn.sampling import next_token_probabilities, sample_next

P = np.array([0.4, 0.3, 0.2, 0.1])
LOGITS = np.log(P)[None, :] + 3.0          # any shift of the logits gives the same softmax


def probs(**kw):
    return next_token_probabilities(LOGITS, **kw)[0]


def test_plain_softmax_is_the_distribution():
    np.testing.assert_allclose(probs(), P, rtol=1e-12)


def test_temperature_raises_the_probabilities_to_one_over_t():
    expected = P ** 0.5 / (P ** 0.5).sum()
    np.testing.assert_allclose(probs(temperature=2.0), expected, rtol=1e-12)


@pytest.mark.parametrize("top_k, expected", [
    (1, [1.0, 0, 0, 0]),
    (2, [4 / 7, 3 / 7, 0, 0]),
    (3, [4 / 9, 3 / 9, 2 / 9, 0]),
    (4, P),
    (10, P),                                 # more than the vocabulary: nothing removed
])
def test_top_k_keeps_the_k_most_probable_and_renormalises(top_k, expected):
    np.testing.assert_allclose(probs(top_k=top_k), expected, rtol=1e-12, atol=1e-15)


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = np.log(np.array([[0.1, 0.3, 0.3, 0.3]]))
    p = next_token_probabilities(logits, top_k=2)[0]
    np.testing.assert_allclose(p, [0, 1 / 3, 1 / 3, 1 / 3], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("top_p, expected", [
    (0.05, [1.0, 0, 0, 0]),
    (0.4, [1.0, 0, 0, 0]),                   # the first token alone reaches 0.4 exactly
    (0.5, [4 / 7, 3 / 7, 0, 0]),
    (0.7, [4 / 7, 3 / 7, 0, 0]),             # 0.4 + 0.3 is 0.7 up to rounding: reached
    (0.75, [4 / 9, 3 / 9, 2 / 9, 0]),
    (0.95, P),
    (1.0, P),
])
def test_top_p_keeps_the_smallest_nucleus_reaching_p(top_p, expected):
    np.testing.assert_allclose(probs(top_p=top_p), expected, rtol=1e-12, atol=1e-15)


def test_top_p_breaks_ties_by_token_order():
    logits = np.zeros((1, 4))                # four tokens of probability 0.25
    np.testing.assert_allclose(next_token_probabilities(logits, top_p=0.5)[0],
                               [0.5, 0.5, 0, 0], atol=1e-15)
    # Shuffled rows: the kept tokens are still the lowest ids among equals.
    logits = np.log(np.array([[0.1, 0.3, 0.3, 0.3]]))
    np.testing.assert_allclose(next_token_probabilities(logits, top_p=0.5)[0],
                               [0, 0.5, 0.5, 0], atol=1e-15)


def test_top_k_applies_before_top_p():
    # top-k 2 leaves [4/7, 3/7]; 4/7 alone then reaches 0.5. top-p 0.5 alone would keep two.
    np.testing.assert_allclose(probs(top_k=2, top_p=0.5), [1, 0, 0, 0], atol=1e-15)
    np.testing.assert_allclose(probs(top_p=0.5), [4 / 7, 3 / 7, 0, 0], rtol=1e-12, atol=1e-15)


def test_rows_are_filtered_independently():
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]]))
    p = next_token_probabilities(logits, top_p=0.5)
    np.testing.assert_allclose(p, [[4 / 7, 3 / 7, 0, 0], [0, 0, 3 / 7, 4 / 7]], rtol=1e-12,
                               atol=1e-15)


def test_sample_next_draws_only_from_the_nucleus_in_proportion():
    fw_random.manual_seed(0)
    logits = np.repeat(LOGITS, 4000, axis=0)
    draws = sample_next(logits, temperature=1.0, top_p=0.7)
    assert draws.dtype == np.int64 and draws.shape == (4000,)
    assert set(np.unique(draws)) == {0, 1}
    assert abs(np.mean(draws == 0) - 4 / 7) < 0.03
    draws = sample_next(logits, temperature=1.0, top_k=3)
    assert set(np.unique(draws)) == {0, 1, 2}


def test_temperature_zero_takes_the_most_likely_token():
    logits = np.array([[0.0, 2.0, 1.0], [5.0, 5.0, 1.0]])
    np.testing.assert_array_equal(sample_next(logits, temperature=0), [1, 0])


def test_a_tiny_temperature_does_not_overflow():
    fw_random.manual_seed(1)
    draws = sample_next(np.repeat(LOGITS, 50, axis=0), temperature=1e-300)
    assert (draws == 0).all()


@pytest.mark.parametrize("kw, match", [
    ({"temperature": math.nan}, "temperature must be a finite number >= 0, got nan"),
    ({"temperature": math.inf}, "temperature must be a finite number >= 0, got inf"),
    ({"temperature": -0.5}, "temperature must be a finite number >= 0, got -0.5"),
    ({"top_k": 0}, "top_k must be a positive int or None, got 0"),
    ({"top_k": 2.5}, "top_k must be a positive int or None, got 2.5"),
    ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\] or None, got 0.0"),
    ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\] or None, got 1.5"),
    ({"top_p": math.nan}, r"top_p must be a number in \(0, 1\] or None, got nan"),
])
def test_bad_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        sample_next(LOGITS, **kw)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_logits_are_refused_clearly(bad):
    logits = LOGITS.copy()
    logits[0, 2] = bad
    with pytest.raises(ValueError, match="logits hold NaN or \\+Inf"):
        sample_next(logits, temperature=0.8)


def test_minus_infinity_logits_are_banned_tokens():
    fw_random.manual_seed(2)
    logits = np.repeat(np.array([[0.0, -np.inf, 0.0]]), 200, axis=0)
    assert 1 not in set(sample_next(logits, temperature=1.0))


def test_safu_generate_passes_top_p_through():
    """A nucleus smaller than any token's probability keeps only the most likely token, so
    top_p=1e-6 generates what temperature 0 does; top_p=1 keeps the plain distribution."""
    import tinyfw as fw
    from tinyfw.nn.safu import SAFULanguageModel
    fw.manual_seed(0)
    model = SAFULanguageModel(20, 8)
    ids = fw.tensor([[1, 2, 3]])
    greedy = model.generate(ids, 6, temperature=0).numpy()
    np.testing.assert_array_equal(model.generate(ids, 6, top_p=1e-6).numpy(), greedy)
    fw_random.manual_seed(5)
    plain = model.generate(ids, 6).numpy()
    fw_random.manual_seed(5)
    np.testing.assert_array_equal(model.generate(ids, 6, top_p=1.0).numpy(), plain)
