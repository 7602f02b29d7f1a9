"""Deterministic, backprop-free warm starts (``docs/WARM_START_AND_SAFU.md``).

* :class:`BitCipher` / :func:`bit_cipher`: binary codes per token type, frequent types first;
* :func:`cooccurrence_vectors`: log co-occurrence vectors built from cipher vectors;
* :func:`explicit_softmax_weights`: the closed-form solution of a softmax layer.

Pure NumPy / SciPy: nothing here needs Tensors, so the module sits below data/train and is
usable on its own.
"""
from .bit_cipher import (BitCipher, bit_cipher, bits_needed, capacity, cipher_code_matrix,
                         cipher_code_sets)
from .cooccurrence import (cooccurrence_counts, cooccurrence_offsets, cooccurrence_raw,
                           cooccurrence_vectors)
from .explicit import explicit_softmax_weights, feature_target_counts

__all__ = ["BitCipher", "bit_cipher", "bits_needed", "capacity", "cipher_code_matrix",
           "cipher_code_sets", "cooccurrence_counts", "cooccurrence_offsets",
           "cooccurrence_raw", "cooccurrence_vectors", "explicit_softmax_weights",
           "feature_target_counts"]
