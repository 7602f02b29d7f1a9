"""Co-occurrence vectors: bit-cipher step two (Zhao & Williams, 2023).

Bit-cipher vectors tell token types apart but say nothing about which types are used alike.  A
co-occurrence vector summarises a type by the cipher vectors of its neighbours: for every type
``t``, every relative offset ``r`` of the window and every occurrence ``i`` of ``t``::

    A[t, r, :] += cipher(w[i + r])

so two types seen in similar contexts get similar rows.

tinyfw's choices (see ``docs/WARM_START_AND_SAFU.md``; all are parameters):

* offsets ``[-m, ..., -1, 1, ..., m]`` in that order (``m = window``); ``causal=True`` keeps only
  ``[-m, ..., -1]`` (context that precedes the token, usable by a left-to-right model);
* positions whose neighbour at offset ``r`` falls outside the stream contribute nothing, and
  tokens unknown to the cipher (zero code) contribute nothing either as centre or neighbour;
* ``mode='sum'`` adds the offsets -> ``(V, b)``; ``mode='concat'`` keeps them side by side in
  offset order -> ``(V, len(offsets) * b)``;
* every entry that is exactly zero is replaced by ``smoothing`` (1e-3), then each offset segment
  of ``b`` columns (the whole row in sum mode) is divided by its sum, and ``-log`` is taken
  (``log=False`` stops before the log).  After ``-log`` the entries are non-negative
  (probabilities are <= 1) and small where a bit is common in the context;
* ``normalize=True`` finally L1-normalises each row (SAFU expects L1-normalised inputs); off by
  default so the output is the spec's log co-occurrence representation as is.

The counts are built per offset as a ``scipy.sparse`` type-by-type matrix ``C_r[t, u]`` (number of
positions with ``t`` at ``i`` and ``u`` at ``i + r``), so a 50k-type vocabulary costs memory in
proportion to the distinct pairs seen, not ``V**2``; then ``A[:, r, :] = C_r @ cipher.vectors``.
Everything is deterministic.
"""
import numpy as np
import scipy.sparse as sp

__all__ = ["cooccurrence_offsets", "cooccurrence_counts", "cooccurrence_raw",
           "cooccurrence_vectors"]

_MODES = ("sum", "concat")


def cooccurrence_offsets(window=5, causal=False):
    """The relative offsets used: ``[-window..-1, 1..window]``, or ``[-window..-1]`` if causal."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"cooccurrence: window must be an int, got {type(window).__name__}")
    if window < 1:
        raise ValueError(f"cooccurrence: window must be >= 1, got {window}")
    window = int(window)
    before = list(range(-window, 0))
    return before if causal else before + list(range(1, window + 1))


def _check_cipher(cipher, where):
    if getattr(cipher, "vocab", None) is None or getattr(cipher, "vectors", None) is None:
        raise TypeError(f"{where}: cipher must be a fitted BitCipher (has .vocab, .vectors, "
                        f".indices), got {type(cipher).__name__}")


def cooccurrence_counts(tokens, cipher, window=5, causal=False):
    """Raw type-by-type counts per offset.

    Returns ``(offsets, counts)``: ``offsets`` a list of ints, ``counts`` a list of
    ``scipy.sparse.csr_matrix`` ``(V, V)`` (``V = len(cipher.vocab)``, rows and columns in
    ``cipher.vocab`` order) with ``counts[k][t, u]`` = number of positions ``i`` where token
    ``t`` is at ``i`` and token ``u`` at ``i + offsets[k]``.
    """
    _check_cipher(cipher, "cooccurrence_counts")
    offsets = cooccurrence_offsets(window, causal)
    ids = cipher.indices(tokens)
    n, n_types = len(ids), len(cipher.vocab)
    counts = []
    for r in offsets:
        # centre positions i whose neighbour i + r lies inside the stream
        start, stop = max(0, -r), min(n, n - r)
        centre = ids[start:stop]
        neighbour = ids[start + r:stop + r]
        known = (centre >= 0) & (neighbour >= 0)
        centre, neighbour = centre[known], neighbour[known]
        # coo -> csr adds the duplicates, which is exactly the counting.
        matrix = sp.coo_matrix((np.ones(len(centre), dtype=np.float64), (centre, neighbour)),
                               shape=(n_types, n_types)).tocsr()
        counts.append(matrix)
    return offsets, counts


def _check_mode(mode, where):
    if mode not in _MODES:
        raise ValueError(f"{where}: mode must be one of {_MODES}, got {mode!r}")


def cooccurrence_raw(tokens, cipher, window=5, mode="sum", causal=False):
    """The accumulated neighbour vectors before smoothing, normalisation and log.

    Returns float64 ``(V, b)`` (``mode='sum'``) or ``(V, len(offsets) * b)`` (``'concat'``, one
    block of ``b`` columns per offset, in :func:`cooccurrence_offsets` order).
    """
    _check_mode(mode, "cooccurrence_raw")
    _, counts = cooccurrence_counts(tokens, cipher, window, causal)
    vectors = np.asarray(cipher.vectors, dtype=np.float64)
    if mode == "sum":
        total = counts[0]
        for matrix in counts[1:]:
            total = total + matrix
        return np.asarray(total @ vectors)
    return np.hstack([np.asarray(matrix @ vectors) for matrix in counts])


def cooccurrence_vectors(tokens, cipher, window=5, mode="sum", causal=False, smoothing=1e-3,
                         log=True, normalize=False):
    """Log co-occurrence vectors, one row per ``cipher.vocab`` entry.

    Parameters
    ----------
    tokens : the token stream (any sequence the cipher can look up).
    cipher : a fitted :class:`BitCipher`; its ``vectors`` ``(V, b)`` are accumulated.
    window : ``m``, the largest offset.
    mode : ``'sum'`` -> ``(V, b)``; ``'concat'`` -> ``(V, n_offsets * b)``.
    causal : only negative offsets (preceding context).
    smoothing : value that replaces zero entries before normalising; must be > 0 when
        ``log=True`` (the log of zero is -inf) and >= 0 otherwise.
    log : return ``-log`` of the normalised segments (default) or the normalised segments.
    normalize : L1-normalise each final row.

    Returns an ndarray of ``cipher.vectors.dtype``.
    """
    _check_mode(mode, "cooccurrence_vectors")
    smoothing = float(smoothing)
    if not np.isfinite(smoothing) or smoothing < 0 or (log and smoothing == 0):
        raise ValueError("cooccurrence_vectors: smoothing must be finite and > 0 (>= 0 with "
                         f"log=False), got {smoothing}")
    raw = cooccurrence_raw(tokens, cipher, window, mode, causal)
    bits = cipher.vectors.shape[1]
    n_types = raw.shape[0]
    segments = raw.reshape(n_types, -1, bits)        # (V, n_segments, b); 1 segment in sum mode
    segments = np.where(segments == 0.0, smoothing, segments)
    sums = segments.sum(axis=2, keepdims=True)
    # Only reachable with smoothing == 0: an all-zero segment stays zero instead of 0/0.
    segments = np.divide(segments, sums, out=np.zeros_like(segments), where=sums > 0)
    if log:
        segments = -np.log(segments)
    out = segments.reshape(n_types, -1)
    if normalize:
        norms = out.sum(axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return out.astype(cipher.vectors.dtype, copy=False)
