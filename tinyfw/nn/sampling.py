"""Drawing the next token from a model's logits (shared by every language model's ``generate``).

The distribution a token is drawn from, in order: the logits divided by ``temperature``
(0 picks the most likely token instead), softmax, then ``top_k`` keeps the k most probable tokens
(every token tied with the k-th too), then ``top_p`` (nucleus sampling) keeps the smallest set of
most probable tokens whose probabilities add up to at least ``top_p``; what is kept is
renormalised to sum to 1.
"""
import math
from numbers import Integral, Real

import numpy as np

from .. import random as _random

# Cumulative sums of float64 probabilities are off by a few ulps: a prefix that reaches top_p
# within this tolerance counts as reaching it (0.5 + 0.3 is 0.7999999999999999, not 0.8).
_TOP_P_TOLERANCE = 1e-12


def _check_options(temperature, top_k, top_p):
    if isinstance(temperature, bool) or not isinstance(temperature, Real) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"sample_next: temperature must be a finite number >= 0, got "
                         f"{temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral)
                              or top_k < 1):
        raise ValueError(f"sample_next: top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, Real)
                              or not 0.0 < top_p <= 1.0):
        raise ValueError(f"sample_next: top_p must be a number in (0, 1] or None, got "
                         f"{top_p!r}")


def _check_logits(logits):
    if logits.ndim != 2 or logits.shape[-1] == 0:
        raise ValueError(f"sample_next: expected logits of shape (B, V) with V >= 1, got "
                         f"{logits.shape}")
    if np.isnan(logits).any() or np.isposinf(logits).any() \
            or not np.isfinite(logits).any(axis=-1).all():
        raise ValueError("sample_next: the logits hold NaN or +Inf (or a row is all -Inf): the "
                         "model's weights or inputs are not finite")


def next_token_probabilities(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution the next token is drawn from, ``(B, V)`` float64, each row summing to 1,
    for logits ``(B, V)`` and ``temperature > 0`` (see the module docstring for the order)."""
    _check_options(temperature, top_k, top_p)
    if temperature == 0:
        raise ValueError("next_token_probabilities: temperature 0 has no distribution (it picks "
                         "the most likely token; sample_next does that)")
    logits = np.asarray(logits, dtype=np.float64)
    _check_logits(logits)
    # Subtracting the maximum before dividing keeps a tiny temperature from overflowing.
    scaled = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    p = np.exp(scaled)
    p /= p.sum(axis=-1, keepdims=True)
    V = p.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.sort(p, axis=-1)[:, -top_k][:, None]
        p = np.where(p < kth, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        # Most probable first; equal probabilities in token order (a stable sort), so ties at
        # the edge of the nucleus are broken the same way every time.
        order = np.argsort(-p, axis=-1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(p, order, axis=-1), axis=-1)
        n_keep = np.minimum((cumulative < top_p - _TOP_P_TOLERANCE).sum(axis=-1) + 1, V)
        keep_sorted = np.arange(V)[None, :] < n_keep[:, None]
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def sample_next(logits, temperature=1.0, top_k=None, top_p=None):
    """One token per row of ``logits`` ``(B, V)``, drawn from the global generator; returns
    int64 ``(B,)``. ``temperature`` 0 takes the most likely token (ties: the lowest id)."""
    _check_options(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    _check_logits(logits)
    if temperature == 0:
        return logits.argmax(axis=-1)
    p = next_token_probabilities(logits, temperature, top_k, top_p)
    rng = _random.generator()
    return np.array([rng.choice(p.shape[-1], p=row) for row in p], dtype=np.int64)


__all__ = ["sample_next", "next_token_probabilities"]
