"""The one random source of tinyfw. ``manual_seed(n)`` makes every random draw reproducible.

Everything random in tinyfw (``randn``, parameter initialisation, dropout masks, FAVOR+
projections, batch sampling in the training loop) draws from ``generator()``, a NumPy
``Generator``; arrays are made on the host and moved to the device.
"""
import numpy as np

_generator = np.random.default_rng(0)
_seed = 0


def manual_seed(seed):
    """Re-seed the global generator (and return it)."""
    global _generator, _seed
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
    _seed = int(seed)
    _generator = np.random.default_rng(_seed)
    return _generator


def initial_seed():
    return _seed


def generator():
    return _generator


def get_rng_state():
    """The generator's state as a JSON-serialisable dict (saved in checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state
