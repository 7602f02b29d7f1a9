"""Drawing the next token from a model's logits (shared by every language model's ``generate``)."""
import numpy as np

from .. import random as _random


def sample_next(logits, temperature=1.0, top_k=None):
    """One token per row of ``logits`` ``(B, V)``, drawn from the global generator."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    logits = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    rng = _random.generator()
    return np.array([rng.choice(p.shape[-1], p=row) for row in p], dtype=np.int64)


__all__ = ["sample_next"]
