"""Token arrays and language-model batches (plain NumPy).

    ids = encode_corpus(text, tokenizer, path="train.npy")   # 1-D uint16 / uint32
    train, val = train_val_split(ids, val_fraction=0.1)        # contiguous: first 90% train
    x, y = get_batch(train, batch_size=8, block_size=64, rng=np.random.default_rng(0))
    # x, y: int64 (8, 64); y[b, t] == x[b, t + 1] for t < 63 (next-token targets)
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

# Every .npy file starts with these bytes (the NumPy format specification).
_NPY_MAGIC = b"\x93NUMPY"

__all__ = ["token_dtype", "encode_corpus", "save_tokens", "load_tokens", "train_val_split", "get_batch"]


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids in ``[0, vocab_size)``: uint16 when the
    vocabulary has at most 65536 entries, else uint32 (half the memory of int32 for the usual
    vocabularies)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, Integral) or vocab_size < 1:
        raise ValueError(f"token_dtype: vocab_size must be a positive int, got {vocab_size!r}")
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"token_dtype: vocab_size {vocab_size} does not fit in uint32")


def save_tokens(ids: np.ndarray, path) -> None:
    """Write a 1-D token array to ``path`` in .npy format atomically (temp file in the same
    directory + os.replace). The name is used as given (no '.npy' is appended)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"save_tokens: expected a 1-D array of ids, got shape {ids.shape}")
    atomic_write(path, lambda fh: np.save(fh, ids, allow_pickle=False))


def encode_corpus(text: str, tokenizer, path=None) -> np.ndarray:
    """Encode ``text`` with ``tokenizer`` into a 1-D array of ids, shape ``(N,)``, dtype from
    ``token_dtype(tokenizer.vocab_size)``. When ``path`` is given the array is also saved there
    (atomically, .npy format) for ``load_tokens``."""
    if not isinstance(text, str):
        raise TypeError(f"encode_corpus: expected text as a str, got {type(text).__name__}")
    dtype = token_dtype(tokenizer.vocab_size)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
        raise ValueError(
            f"encode_corpus: the tokenizer produced ids outside [0, {tokenizer.vocab_size}) "
            f"(min {ids.min()}, max {ids.max()})"
        )
    ids = ids.astype(dtype)
    if path is not None:
        save_tokens(ids, path)
    return ids


def load_tokens(path, mmap: bool = False) -> np.ndarray:
    """Read a token array written by ``encode_corpus`` / ``save_tokens``.

    ``mmap=True`` maps the file read-only instead of loading it (for corpora larger than
    memory). Raises FileNotFoundError for a missing file and ValueError naming the file when it
    is not a complete 1-D unsigned-integer .npy array (truncated, foreign or corrupt).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_tokens: no such file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"load_tokens: {str(path)!r} is a directory, not a token file")
    # Check the .npy magic first: otherwise np.load guesses other formats (pickle, .npz)
    # and its complaints would be about those.
    with open(path, "rb") as fh:
        magic = fh.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise ValueError(
            f"load_tokens: {str(path)!r} is not a .npy token file "
            f"(starts with {magic!r}, expected {_NPY_MAGIC!r})"
        )
    try:
        ids = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"load_tokens: {str(path)!r} is truncated or corrupt: {exc}"
        ) from None
    if ids.ndim != 1 or ids.dtype.kind != "u":
        raise ValueError(
            f"load_tokens: {str(path)!r} is not a token file: expected a 1-D unsigned-integer "
            f"array, got shape {ids.shape} dtype {ids.dtype}"
        )
    return ids


def train_val_split(ids, val_fraction: float = 0.1):
    """Split a 1-D id array into contiguous ``(train, val)`` parts: the first
    ``N - round(N * val_fraction)`` ids train, the rest validate. Contiguous rather than
    shuffled so no validation window overlaps a training one. Returns views, not copies."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"train_val_split: expected a 1-D array of ids, got shape {ids.shape}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in [0, 1), got {val_fraction!r}")
    n = len(ids)
    n_val = int(round(n * val_fraction))
    n_train = n - n_val
    return ids[:n_train], ids[n_train:]


def _positive_int(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def get_batch(data, batch_size: int, block_size: int, rng: np.random.Generator):
    """Random contiguous windows of ``data`` for next-token prediction.

    data: 1-D ids, shape ``(N,)`` with ``N >= block_size + 1``.
    Returns ``(x, y)``, both int64 of shape ``(batch_size, block_size)``:
    ``x[b] = data[s_b : s_b + block_size]`` and ``y[b] = data[s_b + 1 : s_b + block_size + 1]``
    for start offsets ``s_b`` drawn uniformly from ``[0, N - block_size - 1]`` by ``rng``.
    """
    op = "get_batch"
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{op}: rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    batch_size = _positive_int(op, "batch_size", batch_size)
    block_size = _positive_int(op, "block_size", block_size)
    if not isinstance(data, np.ndarray):
        data = np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"{op}: expected 1-D token data, got shape {data.shape}")
    if data.dtype.kind not in "iu":
        raise ValueError(f"{op}: expected integer token data, got dtype {data.dtype}")
    n = len(data)
    if n < block_size + 1:
        raise ValueError(
            f"{op}: the data has {n} tokens, fewer than block_size + 1 = {block_size + 1}; "
            f"use a smaller block_size or more text"
        )
    starts = rng.integers(0, n - block_size, size=batch_size)  # high is exclusive
    window = starts[:, None] + np.arange(block_size + 1)        # (B, T + 1)
    chunk = np.asarray(data[window], dtype=np.int64)            # works on memmaps too
    # Separate contiguous arrays: callers (and kernels) may assume C order.
    return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])
