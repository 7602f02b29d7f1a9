"""Bit-cipher token vectors: deterministic, backprop-free embeddings (Zhao & Williams, 2023).

Every token type gets a distinct non-zero binary code of ``b`` bits; the all-zero code is kept
for unknown tokens, so ``b`` bits hold ``2**b - 1`` types.  Frequent types get the codes with the
fewest ones: the ``b`` most frequent types are one-hot (mutually orthogonal, the easiest to tell
apart), the next ``C(b, 2)`` are two-hot, and so on.  A token's vector is its code divided by its
number of ones (L1-normalised), so every vector is a probability-like, non-negative input for the
explicit softmax solution (``explicit.py``).

Capacity: when a requested ``bits`` cannot hold the vocabulary, the width is raised to the
smallest that can (:func:`bits_needed`) and a ``UserWarning`` names the function, the requested
bits, the vocabulary size and the bits used; ``strict=True`` makes it a ``ValueError`` instead.

Order of the codes (the spec's procedure, see ``docs/WARM_START_AND_SAFU.md``):

* level 1 (one ``1`` bit): ``{0}, {1}, ..., {b-1}``;
* then the basis order is reversed once (``b-1, ..., 0``) and stays reversed;
* a finished level is reversed before it seeds the next level;
* level ``k``: for each basis bit (outer loop) and each code of the reversed level ``k-1``
  (inner loop), the code plus that bit is added if it is new (skipped if the bit is already in
  the code or the union was produced before).

For ``b = 5`` this gives ``{0},{1},{2},{3},{4},{3,4},{2,4},{1,4},{0,4},{2,3},{1,3},{0,3},{1,2},
{0,2},{0,1}, ...``.  Every ``k``-subset is some ``(k-1)``-subset plus one bit, so a complete level
``k-1`` produces a complete level ``k``: all ``2**b - 1`` codes appear, each exactly once.
"""
import warnings

import numpy as np

__all__ = ["capacity", "bits_needed", "cipher_code_sets", "cipher_code_matrix", "BitCipher",
           "bit_cipher"]


def capacity(bits):
    """Number of token types ``bits`` bits can hold: ``2**bits - 1`` (zero code = unknown)."""
    return (1 << int(bits)) - 1


def bits_needed(n_types):
    """Smallest ``b >= 1`` with ``2**b - 1 >= n_types``."""
    n_types = int(n_types)
    if n_types < 0:
        raise ValueError(f"bits_needed: n_types must be >= 0, got {n_types}")
    # 2**b - 1 >= n  <=>  2**b >= n + 1  <=>  b >= log2(n + 1); int.bit_length avoids float error.
    return max(1, n_types.bit_length())


def _check_bits(bits, where):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{where}: bits must be an int, got {type(bits).__name__}")
    if bits < 1:
        raise ValueError(f"{where}: bits must be >= 1, got {bits}")
    return int(bits)


def cipher_code_sets(bits, n=None):
    """The first ``n`` codes (default: all ``2**bits - 1``) as sorted tuples of active bit indices.

    Follows the spec's level-by-level procedure (module docstring).  Generation stops as soon as
    ``n`` codes exist, so a small vocabulary with a large ``bits`` stays cheap.
    """
    bits = _check_bits(bits, "cipher_code_sets")
    total = capacity(bits)
    n = total if n is None else int(n)
    if n < 0 or n > total:
        raise ValueError(f"cipher_code_sets: n must be in [0, {total}] for bits={bits}, got {n}")

    # Codes are Python-int bit masks while generating (bit i set <=> basis vector i active).
    order = []
    level = [1 << i for i in range(bits)]           # level 1, basis order 0..b-1
    order.extend(level[:n])
    basis = list(range(bits))[::-1]                  # reversed once, after level 1
    used = set(level)
    while len(order) < n:
        seeds = level[::-1]                          # a finished level is reversed to seed
        level = []
        for bit in basis:                            # outer loop: basis bits
            mask_bit = 1 << bit
            for code in seeds:                       # inner loop: previous level's codes
                if code & mask_bit:
                    continue                         # bit already on: not a code of this level
                new = code | mask_bit
                if new in used:
                    continue                         # produced earlier from another seed
                used.add(new)
                level.append(new)
                order.append(new)
                if len(order) == n:
                    break
            if len(order) == n:
                break
    return [tuple(i for i in range(bits) if (mask >> i) & 1) for mask in order]


def cipher_code_matrix(bits, n=None):
    """The codes of :func:`cipher_code_sets` as a ``uint8`` matrix ``(n, bits)`` of zeros/ones."""
    sets = cipher_code_sets(bits, n)
    codes = np.zeros((len(sets), int(bits)), dtype=np.uint8)
    for row, active in enumerate(sets):
        codes[row, list(active)] = 1
    return codes


def _as_token_list(tokens, where):
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 1:
            raise ValueError(f"{where}: tokens must be a 1-D sequence, got an array of shape "
                             f"{tokens.shape}")
        return tokens.tolist()                       # NumPy scalars -> Python scalars (hashable)
    try:
        return list(tokens)
    except TypeError:
        raise TypeError(f"{where}: tokens must be an iterable of hashable token types, got "
                        f"{type(tokens).__name__}") from None


class BitCipher:
    """Bit-cipher vocabulary: token type <-> binary code <-> L1-normalised vector.

    ``BitCipher(bits=None, strict=False, dtype=np.float64).fit(tokens)``

    Parameters
    ----------
    bits : int or None
        Code width ``b``.  ``None`` picks the smallest ``b`` whose capacity ``2**b - 1`` holds the
        vocabulary.
    strict : bool
        What to do when a given ``bits`` is too small for the vocabulary: ``False`` (default)
        raises ``b`` to the smallest width that fits and says so with ``warnings.warn`` (the
        spec's rule); ``True`` raises ``ValueError``.
    dtype : NumPy float dtype of ``.vectors`` and of what ``encode`` returns.

    Attributes after ``fit``
    ------------------------
    vocab   : list of token types, most frequent first (ties: first seen first); row order of
              everything below.
    requested_bits : the ``bits`` argument (None: smallest fitting width).
    bits    : the code width actually used (``> requested_bits`` when the width grew).
    codes   : ``uint8`` ``(V, bits)`` binary codes.
    vectors : ``(V, bits)`` codes divided by their number of ones (rows sum to 1).
    index   : dict token -> row.
    counts  : ``int64`` ``(V,)`` frequency of each vocab entry in the fitted stream.
    """

    def __init__(self, bits=None, strict=False, dtype=np.float64):
        if bits is not None:
            bits = _check_bits(bits, "BitCipher")
        if not isinstance(strict, (bool, np.bool_)):
            raise TypeError(f"BitCipher: strict must be a bool, got {strict!r}")
        self.requested_bits = bits
        self.strict = bool(strict)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"BitCipher: dtype must be a float dtype, got {self.dtype}")
        self.bits = bits
        self.vocab = None
        self.codes = None
        self.vectors = None
        self.index = None
        self.counts = None

    # ------------------------------------------------------------------ building
    def fit(self, tokens):
        """Rank the types of the token stream ``tokens`` and hand out codes.  Returns ``self``."""
        return self._fit(tokens, "BitCipher.fit", stacklevel=3)

    def _fit(self, tokens, where, stacklevel):
        """``fit`` on behalf of ``where`` (the name errors and warnings give); ``stacklevel``
        counts from this frame to the user's (``warnings.warn`` convention)."""
        stream = _as_token_list(tokens, where)
        frequency = {}                               # dicts keep first-seen order
        try:
            for token in stream:
                frequency[token] = frequency.get(token, 0) + 1
        except TypeError:
            raise TypeError(f"{where}: tokens must be hashable, got "
                            f"{type(token).__name__}") from None
        if not frequency:
            raise ValueError(f"{where}: the token stream is empty; nothing to encode")
        # sorted() is stable, so equal counts keep their first-seen order.
        ranked = sorted(frequency.items(), key=lambda item: -item[1])
        self._build([token for token, _ in ranked], np.array([c for _, c in ranked], np.int64),
                    where, stacklevel + 1)
        return self

    @classmethod
    def from_vocab(cls, vocab, bits=None, strict=False, dtype=np.float64):
        """A cipher whose ``vocab`` is given already ranked (most frequent first); no counting.

        ``bits`` and ``strict`` as in the constructor: a ``bits`` too small for ``len(vocab)``
        grows with a warning, or raises ``ValueError`` with ``strict=True``.
        """
        cipher = cls(bits=bits, strict=strict, dtype=dtype)
        vocab = _as_token_list(vocab, "BitCipher.from_vocab")
        if not vocab:
            raise ValueError("BitCipher.from_vocab: the vocabulary is empty")
        if len(set(vocab)) != len(vocab):
            raise ValueError("BitCipher.from_vocab: the vocabulary has repeated entries")
        cipher._build(vocab, None, "BitCipher.from_vocab", stacklevel=3)
        return cipher

    def _resolve_bits(self, n_types, where, stacklevel):
        """The width used for ``n_types`` types: the requested one if it fits, else (with a
        warning, or ``ValueError`` when strict) the smallest that does."""
        needed = bits_needed(n_types)
        requested = self.requested_bits
        if requested is None:
            return needed
        if capacity(requested) >= n_types:
            return requested
        problem = (f"{where}: a vocabulary of {n_types} token types does not fit in "
                   f"bits={requested} (capacity 2**{requested} - 1 = {capacity(requested)})")
        if self.strict:
            raise ValueError(f"{problem}; it needs bits >= {needed} (strict=True; with "
                             "strict=False the width grows to fit, with a warning)")
        # stacklevel (the caller's frame, counted from here) points the warning at the line
        # that asked for the cipher, not at this helper.
        warnings.warn(f"{problem}; using bits={needed}, the smallest width that fits "
                      "(pass strict=True to make this an error)", UserWarning,
                      stacklevel=stacklevel)
        return needed

    def _build(self, vocab, counts, where, stacklevel):
        n_types = len(vocab)
        bits = self._resolve_bits(n_types, where, stacklevel + 1)
        self.bits = bits
        self.vocab = list(vocab)
        self.index = {token: row for row, token in enumerate(self.vocab)}
        self.counts = counts
        self.codes = cipher_code_matrix(bits, n_types)
        ones = self.codes.sum(axis=1, keepdims=True)
        self.vectors = (self.codes / ones).astype(self.dtype)
        # One extra all-zero row so that row -1 (unknown token) encodes to the zero vector.
        self._padded = np.vstack([self.vectors, np.zeros((1, bits), self.dtype)])

    def _require_fit(self, where):
        if self.vocab is None:
            raise RuntimeError(f"BitCipher.{where}: call fit(tokens) first")

    # ------------------------------------------------------------------ using
    def __len__(self):
        self._require_fit("__len__")
        return len(self.vocab)

    def __contains__(self, token):
        self._require_fit("__contains__")
        try:
            return token in self.index
        except TypeError:
            return False

    def __repr__(self):
        if self.vocab is None:
            return f"BitCipher(bits={self.requested_bits}, unfitted)"
        return f"BitCipher(bits={self.bits}, vocab={len(self.vocab)})"

    def indices(self, tokens):
        """Rows of ``tokens`` in ``vocab`` as ``int64`` ``(N,)``; ``-1`` for unknown tokens."""
        self._require_fit("indices")
        stream = _as_token_list(tokens, "BitCipher.indices")
        get = self.index.get
        return np.fromiter((get(t, -1) for t in stream), dtype=np.int64, count=len(stream))

    def encode(self, token):
        """The vector ``(bits,)`` of one token; the zero vector for an unknown token."""
        self._require_fit("encode")
        try:
            row = self.index.get(token, -1)
        except TypeError:
            row = -1                                 # unhashable: certainly not in the vocab
        return self._padded[row].copy()

    def encode_many(self, tokens):
        """Vectors ``(N, bits)`` of a token sequence (zero rows for unknown tokens)."""
        return self._padded[self.indices(tokens)]

    def scores(self, vector):
        """``codes @ vector``: for each vocab entry, the mass of ``vector`` on its active bits.

        ``vector`` is ``(bits,)`` or a batch ``(N, bits)``; returns ``(V,)`` or ``(N, V)``.
        """
        self._require_fit("scores")
        v = np.asarray(vector, dtype=np.float64)
        if v.ndim not in (1, 2) or v.shape[-1] != self.bits:
            raise ValueError(f"BitCipher.scores: expected a vector of shape ({self.bits},) or "
                             f"(N, {self.bits}), got {v.shape}")
        return v @ self.codes.T.astype(np.float64)

    def decode(self, vector):
        """The token whose code best matches ``vector``: ``argmax_t (codes @ vector)_t``.

        Ties go to the earliest (most frequent) vocab entry.  This is what makes decoding an
        encoded vector exact: a vector puts all its mass on its own code's bits, so its own code
        and every code that contains it (a superset) score the maximum 1; supersets have more
        ones, so they come later in the order, and the first maximum is the token itself.  A
        vector with no positive score (e.g. the zero vector, the unknown token's code) decodes
        to ``None``.
        """
        s = self.scores(vector)
        if s.ndim != 1:
            raise ValueError(f"BitCipher.decode: expected one vector ({self.bits},), got "
                             f"{np.shape(vector)}; use decode_many for a batch")
        row = int(np.argmax(s))
        return self.vocab[row] if s[row] > 0 else None

    def decode_many(self, vectors):
        """:meth:`decode` for each row of ``vectors`` ``(N, bits)``; returns a list."""
        s = self.scores(vectors)
        if s.ndim != 2:
            raise ValueError(f"BitCipher.decode_many: expected (N, {self.bits}), got "
                             f"{np.shape(vectors)}")
        rows = np.argmax(s, axis=1)
        best = s[np.arange(len(rows)), rows]
        return [self.vocab[r] if b > 0 else None for r, b in zip(rows.tolist(), best.tolist())]


def bit_cipher(tokens, bits=None, strict=False, dtype=np.float64):
    """Convenience: ``BitCipher(bits, strict=strict, dtype=dtype).fit(tokens)``; a too small
    ``bits`` grows with a warning (``ValueError`` with ``strict=True``)."""
    return BitCipher(bits=bits, strict=strict, dtype=dtype)._fit(tokens, "bit_cipher",
                                                                   stacklevel=3)
