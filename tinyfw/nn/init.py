"""Parameter initialisers (in place, no graph), drawing from tinyfw's global generator.

    with skip_init():                 # build a model whose weights come from a file next
        model = LanguageModel(cfg)    # parameters allocated (zeros / ones), nothing drawn

Inside ``skip_init()`` every initialiser here except ``copy_`` leaves its tensor as allocated
and draws no random numbers, so the global generator's state is untouched and no float64
scratch arrays are made. That is for weights that are overwritten straight away (loading a
saved model); the values left are the constructors' placeholders, not a usable initialisation.
"""
import contextlib
import math

import numpy as np

from ..backend import backend_for
from .. import random as _random

# How many skip_init() blocks are open (they nest).
_skip_depth = 0


@contextlib.contextmanager
def skip_init():
    """Within the block, ``uniform_``, ``normal_``, ``zeros_``, ``ones_``, ``constant_`` and the
    initialisers built on them do nothing: parameters keep the memory they were allocated with
    (untouched pages of ``zeros``) and the global generator is not advanced. ``copy_`` still
    copies."""
    global _skip_depth
    _skip_depth += 1
    try:
        yield
    finally:
        _skip_depth -= 1


def skipping_init():
    """True inside a ``skip_init()`` block."""
    return _skip_depth > 0


def _fill(t, array):
    t.data = backend_for(t.device).from_numpy(np.asarray(array, dtype=t.dtype))
    return t


def uniform_(t, a=0.0, b=1.0):
    if skipping_init():
        return t
    return _fill(t, _random.generator().uniform(a, b, size=t.shape))


def normal_(t, mean=0.0, std=1.0):
    if skipping_init():
        return t
    return _fill(t, _random.generator().normal(mean, std, size=t.shape))


def zeros_(t):
    if skipping_init():
        return t
    return _fill(t, np.zeros(t.shape))


def ones_(t):
    if skipping_init():
        return t
    return _fill(t, np.ones(t.shape))


def constant_(t, value):
    if skipping_init():
        return t
    return _fill(t, np.full(t.shape, value))


def copy_(t, array):
    """Set ``t`` from an array of the same shape (e.g. warm-start vectors)."""
    array = np.asarray(array)
    if array.shape != t.shape:
        raise ValueError(f"copy_: array of shape {array.shape} does not fit a tensor of shape "
                         f"{t.shape}")
    return _fill(t, array)


def fan_in_and_fan_out(t):
    if t.ndim < 2:
        raise ValueError(f"fan in/out needs at least 2 dims, got shape {t.shape}")
    receptive = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def kaiming_uniform_(t, a=math.sqrt(5)):
    """PyTorch's default for Linear weights: U(-b, b), b = sqrt(6 / ((1 + a^2) fan_in))."""
    fan_in, _ = fan_in_and_fan_out(t)
    bound = math.sqrt(6.0 / ((1 + a * a) * fan_in))
    return uniform_(t, -bound, bound)


def xavier_uniform_(t, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)
