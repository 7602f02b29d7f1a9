"""Tokenizers: text <-> lists of integer ids.

Three kinds share one interface:

- ``CharTokenizer``: one id per character (the sorted set of characters seen in training).
- ``WordTokenizer``: words, whitespace runs and punctuation marks; rare ones map to ``<unk>``.
- ``ByteBPETokenizer``: byte-level byte-pair encoding (the GPT-2 scheme): 256 byte tokens plus
  learned merges, so any text whatsoever round-trips exactly.

Every tokenizer has::

    tok.encode(text) -> list[int]
    tok.decode(ids) -> str
    tok.vocab_size          # ids are in [0, vocab_size)
    tok.kind                # 'char' | 'word' | 'bpe'
    tok.to_dict() / Cls.from_dict(d)   # JSON-serialisable
    tok.save(path)          # atomic JSON file; read back with load_tokenizer(path)

``build_tokenizer(kind, text, **options)`` trains one by name. Nothing here imports a Tensor:
the data layer is plain Python and NumPy.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from pathlib import Path

from ..fileio import atomic_write

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "ByteBPETokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "TOKENIZER_FORMAT",
    "TOKENIZER_VERSION",
]

# Marker written into every saved tokenizer, so a foreign JSON file is recognised as such.
TOKENIZER_FORMAT = "tinyfw.tokenizer"
TOKENIZER_VERSION = 1

# How many characters / positions an error message lists before saying "...".
_SHOW = 5


def _check_text(op: str, text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{op}: expected a str, got {type(text).__name__}")
    return text


def _check_ids(op: str, ids, vocab_size: int) -> list[int]:
    """Turn ids (list, tuple, 1-D NumPy array, ...) into Python ints, all in [0, vocab_size).

    The explicit range check matters: a negative id would otherwise silently index from the end
    of a Python list.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{op}: expected a sequence of ints, got {type(ids).__name__}")
    try:
        out = [int(i) for i in ids]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{op}: expected a sequence of ints ({exc})") from None
    bad = [(pos, i) for pos, i in enumerate(out) if not 0 <= i < vocab_size]
    if bad:
        shown = ", ".join(f"{i} at position {pos}" for pos, i in bad[:_SHOW])
        more = " ..." if len(bad) > _SHOW else ""
        raise ValueError(
            f"{op}: {len(bad)} id(s) outside [0, {vocab_size}): {shown}{more}"
        )
    return out


def _atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and os.replace,
    so a crash mid-write never leaves a half-written file under the final name."""
    atomic_write(path, lambda fh: fh.write(text), mode="w", encoding="utf-8")


class Tokenizer:
    """Base class: the shared interface, serialisation and checks."""

    kind: str = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    # -- serialisation ---------------------------------------------------------------------
    def _payload(self) -> dict:
        """The kind-specific part of ``to_dict``."""
        raise NotImplementedError

    @classmethod
    def _from_payload(cls, d: dict) -> "Tokenizer":
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A JSON-serialisable description from which ``from_dict`` rebuilds this tokenizer."""
        d = {"format": TOKENIZER_FORMAT, "version": TOKENIZER_VERSION, "kind": self.kind}
        d.update(self._payload())
        return d

    @classmethod
    def from_dict(cls, d) -> "Tokenizer":
        """Rebuild a tokenizer from ``to_dict`` output. Called on the base class it dispatches on
        ``d['kind']``; called on a subclass the kind must match. Malformed input -> ValueError."""
        if not isinstance(d, dict):
            raise ValueError(
                f"{cls.__name__}.from_dict: expected a dict, got {type(d).__name__}"
            )
        if d.get("format") != TOKENIZER_FORMAT:
            raise ValueError(
                f"{cls.__name__}.from_dict: not a tinyfw tokenizer "
                f"(format field is {d.get('format')!r}, expected {TOKENIZER_FORMAT!r})"
            )
        if d.get("version") != TOKENIZER_VERSION:
            raise ValueError(
                f"{cls.__name__}.from_dict: unsupported tokenizer version {d.get('version')!r} "
                f"(this tinyfw reads version {TOKENIZER_VERSION})"
            )
        kind = d.get("kind")
        target = _KINDS.get(kind)
        if target is None:
            raise ValueError(
                f"{cls.__name__}.from_dict: unknown tokenizer kind {kind!r} "
                f"(known: {sorted(_KINDS)})"
            )
        if cls is not Tokenizer and target is not cls:
            raise ValueError(
                f"{cls.__name__}.from_dict: the data describes a {kind!r} tokenizer, "
                f"not a {cls.kind!r} one"
            )
        try:
            return target._from_payload(d)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{target.__name__}.from_dict: corrupt tokenizer data ({type(exc).__name__}: {exc})"
            ) from None

    def save(self, path) -> None:
        """Write the tokenizer as JSON to ``path`` atomically (temp file + os.replace)."""
        # ensure_ascii keeps the file pure ASCII, so any str (even a lone surrogate) survives.
        _atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# Character level
# ---------------------------------------------------------------------------------------------


class CharTokenizer(Tokenizer):
    """One id per character; id ``i`` is the ``i``-th character of ``chars``.

    ``train`` uses the sorted set of characters in the text, so the ids are deterministic.
    Encoding a character outside the vocabulary raises ValueError (there is no unknown id:
    a character model that silently drops characters would be hard to debug).
    """

    kind = "char"

    def __init__(self, chars):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: vocabulary entries must be single characters, got {c!r}")
        if not chars:
            raise ValueError("CharTokenizer: the vocabulary is empty")
        if len(set(chars)) != len(chars):
            dup = sorted(c for c, n in Counter(chars).items() if n > 1)
            raise ValueError(f"CharTokenizer: duplicate characters in the vocabulary: {dup[:_SHOW]!r}")
        self.chars: list[str] = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        _check_text("CharTokenizer.train", text)
        if not text:
            raise ValueError("CharTokenizer.train: the training text is empty")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def tokens(self) -> list[str]:
        """The token strings, indexed by id."""
        return list(self.chars)

    def encode(self, text: str) -> list[int]:
        _check_text("CharTokenizer.encode", text)
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass
        # Slow path, only to build a helpful message.
        unknown = [(pos, c) for pos, c in enumerate(text) if c not in stoi]
        kinds = sorted({c for _, c in unknown})
        shown = ", ".join(f"{c!r} at position {pos}" for pos, c in unknown[:_SHOW])
        more = " ..." if len(unknown) > _SHOW else ""
        raise ValueError(
            f"CharTokenizer.encode: {len(unknown)} character(s) not in the vocabulary "
            f"({len(kinds)} distinct: {''.join(kinds[:_SHOW * 4])!r}): {shown}{more}"
        )

    def decode(self, ids) -> str:
        chars = self.chars
        return "".join(chars[i] for i in _check_ids("CharTokenizer.decode", ids, len(chars)))

    def _payload(self) -> dict:
        return {"chars": list(self.chars)}

    @classmethod
    def _from_payload(cls, d: dict) -> "CharTokenizer":
        chars = d["chars"]
        if not isinstance(chars, list):
            raise ValueError("CharTokenizer.from_dict: corrupt tokenizer data ('chars' is not a list)")
        return cls(chars)


# ---------------------------------------------------------------------------------------------
# Word level
# ---------------------------------------------------------------------------------------------

# The word scheme. A token is one of
#   - a maximal run of word characters (letters, digits, underscore: regex \w),
#   - a maximal run of whitespace (spaces, tabs, newlines: regex \s), or
#   - a single other character (punctuation, symbols, emoji).
# The three classes partition all characters, so the tokens of a text concatenate back to
# exactly that text: decode(encode(text)) == text whenever every token is in the vocabulary.
_WORD_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Split ``text`` into word tokens (see the scheme above); ``''.join`` of them is ``text``."""
    return _WORD_PATTERN.findall(text)


class WordTokenizer(Tokenizer):
    """Words, whitespace runs and punctuation marks as tokens (scheme in ``split_words``).

    Id 0 is the unknown token (``'<unk>'`` by default); the known tokens follow, most frequent
    first (ties in string order), so ids are deterministic. A token never seen in training, or
    seen fewer than ``min_count`` times, encodes to id 0 and decodes as the unknown string.
    """

    kind = "word"
    unk_id = 0

    def __init__(self, tokens, unk_token: str = "<unk>"):
        tokens = list(tokens)
        if not isinstance(unk_token, str) or not unk_token:
            raise ValueError(f"WordTokenizer: unk_token must be a non-empty str, got {unk_token!r}")
        if not tokens or tokens[0] != unk_token:
            raise ValueError(
                f"WordTokenizer: the first token must be the unknown token {unk_token!r}, "
                f"got {tokens[:1]!r}"
            )
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise ValueError(f"WordTokenizer: tokens must be non-empty strings, got {t!r}")
        if len(set(tokens)) != len(tokens):
            dup = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"WordTokenizer: duplicate tokens in the vocabulary: {dup[:_SHOW]!r}")
        self.unk_token = unk_token
        self._itos: list[str] = tokens
        self._stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def train(cls, text: str, min_count: int = 1, unk_token: str = "<unk>",
              max_size: int | None = None) -> "WordTokenizer":
        """The tokens seen at least ``min_count`` times, most frequent first; ``max_size`` keeps
        only the ``max_size - 1`` most frequent (the unknown token is the last id)."""
        _check_text("WordTokenizer.train", text)
        if not text:
            raise ValueError("WordTokenizer.train: the training text is empty")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"WordTokenizer.train: min_count must be an int >= 1, got {min_count!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)
                                     or max_size < 2):
            raise ValueError(f"WordTokenizer.train: max_size must be None or an int >= 2 (the "
                             f"unknown token and one word), got {max_size!r}")
        counts = Counter(split_words(text))
        # A text token equal to the unknown string simply shares id 0 (round trips stay exact).
        counts.pop(unk_token, None)
        kept = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - 1]
        return cls([unk_token] + kept, unk_token=unk_token)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def tokens(self) -> list[str]:
        """The token strings, indexed by id (``tokens[0]`` is the unknown token)."""
        return list(self._itos)

    def encode(self, text: str) -> list[int]:
        _check_text("WordTokenizer.encode", text)
        get = self._stoi.get
        return [get(t, 0) for t in split_words(text)]

    def decode(self, ids) -> str:
        itos = self._itos
        return "".join(itos[i] for i in _check_ids("WordTokenizer.decode", ids, len(itos)))

    def _payload(self) -> dict:
        return {"unk_token": self.unk_token, "tokens": list(self._itos)}

    @classmethod
    def _from_payload(cls, d: dict) -> "WordTokenizer":
        tokens = d["tokens"]
        if not isinstance(tokens, list):
            raise ValueError("WordTokenizer.from_dict: corrupt tokenizer data ('tokens' is not a list)")
        return cls(tokens, unk_token=d["unk_token"])


# ---------------------------------------------------------------------------------------------
# Byte-level BPE
# ---------------------------------------------------------------------------------------------

# GPT-2 style pre-split, written for the standard-library ``re`` (which has no \p{L}):
#   [^\W\d_]  letters (word characters that are neither digits nor underscore)
#   \d        digits
#   [^\s\w]|_ everything else that is not whitespace
# A chunk is an English contraction suffix, or an optional leading space followed by a run of
# letters / digits / other symbols, or whitespace. "\s+(?!\S)" leaves the last space of a
# whitespace run to start the next word, so " the" is one chunk. The final [\s\S] can never be
# reached (the classes above cover every character) but guarantees no character is ever skipped.
BPE_PATTERN = (
    r"'(?:s|t|re|ve|m|ll|d)"
    r"| ?[^\W\d_]+"
    r"| ?\d+"
    r"| ?(?:[^\s\w]|_)+"
    r"|\s+(?!\S)"
    r"|\s+"
    r"|[\s\S]"
)


def _merge_pair(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence (left to right) of ``a, b`` in ``ids``."""
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class ByteBPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0..255 are the raw UTF-8 bytes, id ``256 + r`` is the ``r``-th merge.

    Text is first cut into chunks with ``pattern`` (merges never cross a chunk boundary), each
    chunk is UTF-8 encoded, and the merges are applied in the order they were learned. Because
    every byte has an id, any str round-trips exactly (no unknown token).
    ``ByteBPETokenizer()`` with no merges is a plain byte tokenizer (vocab 256).
    """

    kind = "bpe"
    _CACHE_LIMIT = 200_000

    def __init__(self, merges=(), pattern: str = BPE_PATTERN):
        if not isinstance(pattern, str):
            raise ValueError(f"ByteBPETokenizer: pattern must be a str, got {type(pattern).__name__}")
        try:
            self._regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"ByteBPETokenizer: invalid pre-split pattern {pattern!r}: {exc}") from None
        self.pattern = pattern
        merges = [tuple(m) for m in merges]
        vocab = [bytes([b]) for b in range(256)]
        ranks: dict[tuple[int, int], int] = {}
        for r, m in enumerate(merges):
            if len(m) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in m):
                raise ValueError(f"ByteBPETokenizer: merge {r} must be a pair of ints, got {m!r}")
            a, b = m
            new_id = 256 + r
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(
                    f"ByteBPETokenizer: merge {r} = {m!r} refers to an id outside [0, {new_id})"
                )
            if m in ranks:
                raise ValueError(f"ByteBPETokenizer: merge {r} = {m!r} duplicates merge {ranks[m] - 256}")
            ranks[m] = new_id
            vocab.append(vocab[a] + vocab[b])
        self.merges: list[tuple[int, int]] = merges
        self._ranks = ranks  # pair -> id of the merged token; a lower id means an earlier merge
        self._bytes: list[bytes] = vocab
        self._cache: dict[str, list[int]] = {}

    # -- training --------------------------------------------------------------------------
    @classmethod
    def train(
        cls, text: str, vocab_size: int, min_frequency: int = 2, pattern: str = BPE_PATTERN
    ) -> "ByteBPETokenizer":
        """Learn ``vocab_size - 256`` merges from ``text``.

        Each step merges the most frequent adjacent pair of ids (ties: the smallest pair, so
        training is deterministic). Training stops early when no pair occurs at least
        ``min_frequency`` times, so ``vocab_size`` of the result can be below the request.

        Pair counts are updated incrementally: a merge only touches the distinct chunks that
        contain the merged pair, and a heap with lazy invalidation finds the next best pair,
        so cost scales with the work each merge does rather than with the corpus size.
        """
        _check_text("ByteBPETokenizer.train", text)
        if not text:
            raise ValueError("ByteBPETokenizer.train: the training text is empty")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(
                f"ByteBPETokenizer.train: vocab_size must be an int >= 256 (the byte tokens), "
                f"got {vocab_size!r}"
            )
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(
                f"ByteBPETokenizer.train: min_frequency must be an int >= 1, got {min_frequency!r}"
            )
        tok = cls(pattern=pattern)  # validates the pattern
        n_merges = vocab_size - 256

        # Distinct chunks with their multiplicities: the corpus is a bag of chunks.
        chunk_counts = Counter(tok._regex.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        weights = list(chunk_counts.values())

        pair_counts: dict[tuple[int, int], int] = {}
        where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of words that contain it
        for wi, w in enumerate(words):
            c = weights[wi]
            for p in zip(w, w[1:]):
                pair_counts[p] = pair_counts.get(p, 0) + c
                where.setdefault(p, set()).add(wi)

        heap = [(-c, p) for p, c in pair_counts.items()]
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges and heap:
            neg, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg:
                continue  # stale entry: the count changed after it was pushed
            if -neg < min_frequency:
                break
            a, b = pair
            new_id = 256 + len(merges)
            merges.append(pair)
            changed = set()
            for wi in where.pop(pair, ()):
                w = words[wi]
                if not any(x == a and y == b for x, y in zip(w, w[1:])):
                    continue  # an earlier merge already consumed this word's occurrence
                c = weights[wi]
                # Remove the word's old pairs, merge, add its new pairs: the net change touches
                # only pairs next to the merged one.
                for p in zip(w, w[1:]):
                    pair_counts[p] -= c
                    changed.add(p)
                w = _merge_pair(w, a, b, new_id)
                words[wi] = w
                for p in zip(w, w[1:]):
                    pair_counts[p] = pair_counts.get(p, 0) + c
                    where.setdefault(p, set()).add(wi)
                    changed.add(p)
            for p in changed:
                c = pair_counts[p]
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    del pair_counts[p]
        return cls(merges, pattern=pattern)

    # -- encoding / decoding ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def token_bytes(self, i: int) -> bytes:
        """The bytes that id ``i`` stands for."""
        (i,) = _check_ids("ByteBPETokenizer.token_bytes", [i], self.vocab_size)
        return self._bytes[i]

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = list(chunk.encode("utf-8"))
        ranks = self._ranks
        big = len(self._bytes)  # larger than every rank: "not a merge"
        # Applying the earliest applicable merge first, repeatedly, gives the same result as
        # replaying all merges in training order: a merge can only create pairs that contain
        # its new id, and every merge using that id was learned later.
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, big))
            new_id = ranks.get(best)
            if new_id is None:
                break
            ids = _merge_pair(ids, best[0], best[1], new_id)
        return ids

    def encode(self, text: str) -> list[int]:
        _check_text("ByteBPETokenizer.encode", text)
        cache = self._cache
        out: list[int] = []
        for chunk in self._regex.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(cache) >= self._CACHE_LIMIT:
                    cache.clear()  # bound memory on huge, diverse inputs
                cache[chunk] = ids
            out.extend(ids)
        return out

    def decode_bytes(self, ids) -> bytes:
        """The raw bytes of ``ids`` (may be invalid UTF-8 for arbitrary id sequences)."""
        table = self._bytes
        return b"".join(table[i] for i in _check_ids("ByteBPETokenizer.decode", ids, len(table)))

    def decode(self, ids) -> str:
        """Text of ``ids``. Ids produced by ``encode`` always give back the exact text; an
        arbitrary sequence (say, sampled from a model) can split a multi-byte character, and
        such invalid bytes decode as U+FFFD rather than raising."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def _payload(self) -> dict:
        return {"pattern": self.pattern, "merges": [list(m) for m in self.merges]}

    @classmethod
    def _from_payload(cls, d: dict) -> "ByteBPETokenizer":
        merges = d["merges"]
        if not isinstance(merges, list) or not all(isinstance(m, list) for m in merges):
            raise ValueError("ByteBPETokenizer.from_dict: corrupt tokenizer data ('merges' is not a list of pairs)")
        return cls(merges, pattern=d["pattern"])


_KINDS: dict[str, type[Tokenizer]] = {
    "char": CharTokenizer,
    "word": WordTokenizer,
    "bpe": ByteBPETokenizer,
}


def build_tokenizer(kind: str, text: str, **options) -> Tokenizer:
    """Train a tokenizer of ``kind`` ('char' | 'word' | 'bpe') on ``text``.

    Options go to the class's ``train``: ``min_count``, ``unk_token``, ``max_size`` for 'word';
    ``vocab_size`` (default 512), ``min_frequency``, ``pattern`` for 'bpe'.
    """
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"build_tokenizer: unknown tokenizer kind {kind!r} (choose from {sorted(_KINDS)})")
    if cls is ByteBPETokenizer:
        options.setdefault("vocab_size", 512)
    try:
        return cls.train(text, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"build_tokenizer({kind!r}): {exc}") from None
        raise


def load_tokenizer(path) -> Tokenizer:
    """Read a tokenizer written by ``Tokenizer.save``; returns an instance of the right class.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for anything
    that is not a complete, valid tinyfw tokenizer file: truncated, foreign or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_tokenizer: no such file: {str(path)!r}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"load_tokenizer: {str(path)!r} is not a tokenizer file (not UTF-8 text: "
            f"byte {exc.start} is {raw[exc.start:exc.start + 1]!r})"
        ) from None
    if not text.strip():
        raise ValueError(f"load_tokenizer: {str(path)!r} is empty")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"load_tokenizer: {str(path)!r} is truncated or not JSON ({exc})"
        ) from None
    try:
        return Tokenizer.from_dict(d)
    except ValueError as exc:
        raise ValueError(f"load_tokenizer: {str(path)!r}: {exc}") from None
