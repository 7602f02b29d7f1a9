"""The GPT-2 tokenizer: OpenAI's byte-level BPE, read from its vocabulary and merges files.

``GPT2Tokenizer.from_files('encoder.json', 'vocab.bpe')`` reads OpenAI's file names,
``GPT2Tokenizer.from_pretrained(folder)`` a Hugging Face folder (``vocab.json`` + ``merges.txt``,
the same two files under other names). Encoding follows the GPT-2 scheme step by step:

1. Special tokens (``<|endoftext|>``, id 50256 in GPT-2) are cut out of the text first; see
   ``allowed_special`` below.
2. The pre-tokenizer cuts each remaining piece into chunks with GPT-2's pattern::

       's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

   (case-sensitive: ``"DON'T"`` keeps ``'T`` out of the contraction alternatives). Merges
   never cross a chunk boundary.
3. Each chunk's UTF-8 bytes become byte tokens, written in GPT-2's byte-to-unicode alphabet
   (``bytes_to_unicode``), and the merges apply in rank order: the earliest-ranked adjacent
   pair is merged everywhere in the chunk (left to right, without overlap), until no adjacent
   pair is a merge. A chunk's ids are cached, so a repeated word costs one dict lookup.

``decode`` joins the tokens' bytes and reads them as UTF-8 (an id sequence that splits a
character, say one sampled from a model, gives U+FFFD there instead of raising), so
``decode(encode(text)) == text`` for every str without lone surrogates.

Special tokens: ``encode(text)`` treats the literal text ``<|endoftext|>`` as the special token
(``allowed_special='all'``, the default), as Hugging Face's GPT-2 tokenizer does; with
``allowed_special=()`` (or a collection that leaves it out) the same characters are ordinary
text and encode as several ordinary tokens, as in OpenAI's original encoder.

The pattern engine: the optional ``regex`` package when it is installed (``engine='auto'``),
otherwise the standard library's ``re`` with the letter / number / white-space classes spelt
out (``unicode_classes``). The two give identical chunks on every code point assigned in the
running Python's ``unicodedata`` (Unicode ``unicodedata.unidata_version``); a code point
assigned only in a later Unicode version, which ``regex`` may know, is an unassigned symbol for
the ``re`` engine.
"""

from __future__ import annotations

import functools
import heapq
import json
import re
from pathlib import Path

from ..fileio import atomic_write
from .tokenizers import _KINDS, Tokenizer, _check_ids, _check_text
from .unicode_classes import WHITE_SPACE_RANGES, class_body, letter_ranges, number_ranges

__all__ = [
    "GPT2Tokenizer",
    "bytes_to_unicode",
    "GPT2_PATTERN",
    "stdlib_gpt2_pattern",
    "ENDOFTEXT",
    "ENGINES",
]

# GPT-2's pre-tokenizer pattern, in the syntax of the ``regex`` package.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-2's end-of-text token: the one special token of its vocabulary.
ENDOFTEXT = "<|endoftext|>"

# Pattern engines: 'auto' is 'regex' when that package is installed, else 're'.
ENGINES = ("auto", "regex", "re")

# File names: Hugging Face's in a pretrained folder, OpenAI's as the fallback there.
HF_VOCAB, HF_MERGES = "vocab.json", "merges.txt"
OPENAI_VOCAB, OPENAI_MERGES = "encoder.json", "vocab.bpe"
MERGES_HEADER = "#version: 0.2"

# How many items an error message lists before saying "...".
_SHOW = 5


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-unicode table: byte value -> one printable character.

    The 188 bytes that are printable characters in Latin-1 ('!'..'~', U+00A1..U+00AC,
    U+00AE..U+00FF) stand for themselves; the other 68 (control characters, space, U+00A0,
    U+00AD) take U+0100, U+0101, ... in byte order, so a space is 'Ġ' (U+0120) and a newline
    'Ċ' (U+010A). Vocabulary files spell every token in this alphabet.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(0xA1, 0xAC + 1))
        + list(range(0xAE, 0xFF + 1))
    )
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def stdlib_gpt2_pattern() -> str:
    """``GPT2_PATTERN`` for the standard library's ``re``: ``\\p{L}``, ``\\p{N}`` and ``\\s``
    written as explicit classes (``unicode_classes``)."""
    letters = class_body(letter_ranges())
    numbers = class_body(number_ranges())
    space = class_body(WHITE_SPACE_RANGES)
    return (
        r"'s|'t|'re|'ve|'m|'ll|'d"
        f"| ?[{letters}]+"
        f"| ?[{numbers}]+"
        f"| ?[^{space}{letters}{numbers}]+"
        f"|[{space}]+(?![^{space}])"
        f"|[{space}]+"
    )


def _regex_package():
    """The optional ``regex`` package, or None when it is not installed."""
    try:
        import regex
    except ImportError:
        return None
    return regex


@functools.lru_cache(maxsize=None)
def _compiled_pattern(engine: str):
    if engine == "regex":
        return _regex_package().compile(GPT2_PATTERN)
    return re.compile(stdlib_gpt2_pattern())


def _resolve_engine(op: str, engine) -> str:
    if engine not in ENGINES:
        raise ValueError(f"{op}: engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "regex" if _regex_package() is not None else "re"
    if engine == "regex" and _regex_package() is None:
        raise ValueError(
            f"{op}: engine='regex' needs the optional 'regex' package, which is not installed "
            "(pip install regex, or use engine='re')"
        )
    return engine


# -- reading the files -----------------------------------------------------------------------


def _read_utf8(op: str, path: Path, what: str) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{op}: no such {what} file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{op}: {str(path)!r} is a directory, not a {what} file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{op}: {str(path)!r} is not a {what} file (not UTF-8 text: byte offset {exc.start} "
            f"is {raw[exc.start:exc.start + 1]!r})"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs):
    """json ``object_pairs_hook``: a dict, refusing a key that appears twice (``json`` itself
    silently keeps the last value)."""
    d = {}
    for key, value in pairs:
        if key in d:
            raise _DuplicateKey(key)
        d[key] = value
    return d


def _read_encoder(op: str, path: Path) -> dict:
    text = _read_utf8(op, path, "vocabulary")
    if not text.strip():
        raise ValueError(f"{op}: the vocabulary file {str(path)!r} is empty")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise ValueError(
            f"{op}: {str(path)!r}: the token {exc.args[0]!r} appears twice as a key"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{op}: {str(path)!r} is truncated or not JSON ({exc})") from None


def _read_merges(op: str, path: Path) -> tuple[list[tuple[str, str]], list[int]]:
    """The merges of a ``vocab.bpe`` / ``merges.txt`` file and the line number of each.

    One merge a line, two symbols separated by one space; an optional ``#version`` first line;
    blank lines only at the end.
    """
    text = _read_utf8(op, path, "merges")
    lines = text.split("\n")
    while lines and not lines[-1].rstrip("\r"):
        lines.pop()  # the newline that ends the file (and any blank lines after it)
    merges: list[tuple[str, str]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if number == 1 and line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(
                f"{op}: {str(path)!r}: line {number} is not a merge (two symbols separated by "
                f"one space): {line!r}"
            )
        merges.append((parts[0], parts[1]))
        line_numbers.append(number)
    return merges, line_numbers


# -- the tokenizer ---------------------------------------------------------------------------


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE tokenizer (the scheme is in the module docstring).

    ``GPT2Tokenizer(encoder, merges)``: ``encoder`` maps each token string (in the
    ``bytes_to_unicode`` alphabet) to its id, the ids numbering the tokens 0..n-1; ``merges`` is
    the list of symbol pairs ``(a, b)``, earliest first, each of ``a``, ``b`` and ``a + b`` a
    token. ``special_tokens``: the tokens that are cut out of the text before pre-tokenizing;
    None means ``<|endoftext|>`` when the vocabulary has it. ``engine``: the pattern engine,
    'auto' | 'regex' | 're'.

    Saving: ``save(path)`` / ``load_tokenizer(path)`` and ``to_dict`` / ``Tokenizer.from_dict``
    as for the other tokenizers (the whole vocabulary and merges: about 1.5 MB of JSON for
    GPT-2); ``save_pretrained(folder)`` writes ``vocab.json`` and ``merges.txt``.
    """

    kind = "gpt2"
    _CACHE_LIMIT = 200_000

    def __init__(self, encoder, merges, *, special_tokens=None, engine: str = "auto"):
        self._setup(
            "GPT2Tokenizer", encoder, merges, special_tokens, engine,
            vocab_where="the encoder", merge_where=lambda r: f"merge {r}",
        )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_files(cls, encoder_json, vocab_bpe, *, special_tokens=None,
                   engine: str = "auto") -> "GPT2Tokenizer":
        """Read OpenAI's ``encoder.json`` (token -> id) and ``vocab.bpe`` (the merges)."""
        return cls._from_paths("GPT2Tokenizer.from_files", Path(encoder_json), Path(vocab_bpe),
                               special_tokens, engine)

    @classmethod
    def from_pretrained(cls, folder, *, special_tokens=None,
                        engine: str = "auto") -> "GPT2Tokenizer":
        """Read a Hugging Face GPT-2 folder: ``vocab.json`` and ``merges.txt`` (OpenAI's names
        ``encoder.json`` and ``vocab.bpe`` are used when the folder has those instead)."""
        op = "GPT2Tokenizer.from_pretrained"
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"{op}: no such folder: {str(folder)!r}")
        if not folder.is_dir():
            raise NotADirectoryError(
                f"{op}: {str(folder)!r} is a file; expected a folder with {HF_VOCAB} and "
                f"{HF_MERGES} (use GPT2Tokenizer.from_files for single files)"
            )
        for vocab_name, merges_name in ((HF_VOCAB, HF_MERGES), (OPENAI_VOCAB, OPENAI_MERGES)):
            if (folder / vocab_name).exists() or (folder / merges_name).exists():
                break
        else:
            vocab_name, merges_name = HF_VOCAB, HF_MERGES
        for name in (vocab_name, merges_name):
            if not (folder / name).exists():
                raise FileNotFoundError(
                    f"{op}: {str(folder)!r} has no {name} (a GPT-2 tokenizer folder holds "
                    f"{HF_VOCAB} and {HF_MERGES})"
                )
        return cls._from_paths(op, folder / vocab_name, folder / merges_name,
                               special_tokens, engine)

    @classmethod
    def train(cls, text, **options):
        """Not available: GPT-2's merges are OpenAI's, read with ``from_files`` /
        ``from_pretrained`` (``build_tokenizer('gpt2', ...)`` ends here)."""
        raise ValueError(
            "GPT2Tokenizer.train: the GPT-2 tokenizer is not trained here; read OpenAI's "
            "vocabulary with GPT2Tokenizer.from_files(encoder_json, vocab_bpe) or "
            "GPT2Tokenizer.from_pretrained(folder), or train a 'bpe' tokenizer"
        )

    @classmethod
    def _from_paths(cls, op, vocab_path, merges_path, special_tokens, engine):
        encoder = _read_encoder(op, vocab_path)
        merges, line_numbers = _read_merges(op, merges_path)
        tok = cls.__new__(cls)
        tok._setup(
            op, encoder, merges, special_tokens, engine,
            vocab_where=repr(str(vocab_path)),
            merge_where=lambda r: f"{str(merges_path)!r}: line {line_numbers[r]}",
        )
        return tok

    def _setup(self, op, encoder, merges, special_tokens, engine, vocab_where, merge_where):
        """Validate and index the vocabulary and merges. ``vocab_where`` / ``merge_where(r)``
        name the vocabulary / the ``r``-th merge in error messages (a file and a line when
        they come from files)."""
        self.engine = _resolve_engine(op, engine)
        tokens = self._check_encoder(op, encoder, vocab_where)
        encoder = {t: i for i, t in enumerate(tokens)}
        specials = self._check_special_tokens(op, special_tokens, encoder, vocab_where)

        byte_char = bytes_to_unicode()
        char_byte = {c: b for b, c in byte_char.items()}
        token_bytes = []
        for i, t in enumerate(tokens):
            if t in specials:
                token_bytes.append(t.encode("utf-8"))
                continue
            outside = [c for c in t if c not in char_byte]
            if outside:
                raise ValueError(
                    f"{op}: {vocab_where}: the token {t!r} (id {i}) has the character "
                    f"{outside[0]!r}, which is outside GPT-2's byte alphabet: not a GPT-2 "
                    "byte-level vocabulary"
                )
            token_bytes.append(bytes(char_byte[c] for c in t))
        missing = [b for b in range(256) if byte_char[b] not in encoder]
        if missing:
            shown = ", ".join(f"{byte_char[b]!r} (byte 0x{b:02x})" for b in missing[:_SHOW])
            raise ValueError(
                f"{op}: {vocab_where}: not a GPT-2 byte-level vocabulary: {len(missing)} of the "
                f"256 byte tokens are missing: {shown}{' ...' if len(missing) > _SHOW else ''}"
            )

        if isinstance(merges, (str, bytes)) or not hasattr(merges, "__iter__"):
            raise TypeError(f"{op}: merges must be a sequence of symbol pairs, got "
                            f"{type(merges).__name__}")
        merges = list(merges)
        ranks: dict[tuple[int, int], int] = {}
        by_rank: list[tuple[int, int, int]] = []
        pairs: list[tuple[str, str]] = []
        for r, m in enumerate(merges):
            if (not isinstance(m, (tuple, list)) or len(m) != 2
                    or not all(isinstance(s, str) and s for s in m)):
                raise ValueError(f"{op}: {merge_where(r)}: a merge must be a pair of non-empty "
                                 f"strings, got {m!r}")
            a, b = m
            for symbol in (a, b, a + b):
                if symbol not in encoder:
                    role = "the merged token" if symbol == a + b else "the symbol"
                    raise ValueError(f"{op}: {merge_where(r)}: {role} {symbol!r} of the merge "
                                     f"{a!r} {b!r} is not in the vocabulary {vocab_where}")
            pair = (encoder[a], encoder[b])
            if pair in ranks:
                raise ValueError(f"{op}: {merge_where(r)}: the merge {a!r} {b!r} repeats "
                                 f"{merge_where(ranks[pair])}")
            ranks[pair] = r
            by_rank.append((pair[0], pair[1], encoder[a + b]))
            pairs.append((a, b))

        self._tokens: list[str] = tokens
        self._encoder: dict[str, int] = encoder
        self._token_bytes: list[bytes] = token_bytes
        self._byte_ids: list[int] = [encoder[byte_char[b]] for b in range(256)]
        self.merges: list[tuple[str, str]] = pairs
        self._ranks = ranks      # (id, id) -> rank: lower merges earlier
        self._by_rank = by_rank  # rank -> (left id, right id, id of the merged token)
        self._specials: dict[str, int] = {t: encoder[t] for t in specials}
        self._special_patterns: dict[tuple[str, ...], re.Pattern] = {}
        self._pattern = _compiled_pattern(self.engine)
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def _check_encoder(op, encoder, where) -> list[str]:
        """The token strings indexed by id, after checking ``encoder`` is a GPT-2 vocabulary."""
        if not isinstance(encoder, dict):
            kind = {list: "an array", str: "a string", int: "a number", float: "a number",
                    bool: "a boolean", type(None): "null"}.get(type(encoder), type(encoder).__name__)
            raise ValueError(f"{op}: {where}: expected a JSON object mapping token strings to "
                             f"integer ids, got {kind}")
        if not encoder:
            raise ValueError(f"{op}: {where}: the vocabulary is empty")
        n = len(encoder)
        tokens: list[str | None] = [None] * n
        for key, value in encoder.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"{op}: {where}: tokens must be non-empty strings, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{op}: {where}: the token {key!r} has the id {value!r}, "
                                 "which is not an integer")
            if not 0 <= value < n:
                raise ValueError(f"{op}: {where}: the token {key!r} has the id {value}, outside "
                                 f"[0, {n}) (the {n} tokens must have the ids 0..{n - 1})")
            if tokens[value] is not None:
                raise ValueError(f"{op}: {where}: the id {value} belongs to two tokens, "
                                 f"{tokens[value]!r} and {key!r}")
            tokens[value] = key
        return tokens  # every id in [0, n) is used once: n distinct ids below n

    @staticmethod
    def _check_special_tokens(op, special_tokens, encoder, where) -> tuple[str, ...]:
        if special_tokens is None:
            return (ENDOFTEXT,) if ENDOFTEXT in encoder else ()
        if isinstance(special_tokens, str):
            special_tokens = (special_tokens,)
        special_tokens = tuple(special_tokens)
        for t in special_tokens:
            if not isinstance(t, str) or t not in encoder:
                raise ValueError(f"{op}: the special token {t!r} is not in the vocabulary {where}")
        return special_tokens

    # -- the vocabulary ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def tokens(self) -> list[str]:
        """The token strings, indexed by id, in the ``bytes_to_unicode`` alphabet."""
        return list(self._tokens)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token -> id (``{'<|endoftext|>': 50256}`` for GPT-2)."""
        return dict(self._specials)

    @property
    def eot_id(self) -> int:
        """The id of ``<|endoftext|>``."""
        if ENDOFTEXT not in self._specials:
            raise ValueError(f"GPT2Tokenizer.eot_id: {ENDOFTEXT!r} is not a special token of "
                             "this vocabulary")
        return self._specials[ENDOFTEXT]

    def token_to_id(self, token: str) -> int:
        """The id of ``token`` (a string in the ``bytes_to_unicode`` alphabet, or a special
        token)."""
        try:
            return self._encoder[token]
        except (KeyError, TypeError):
            raise ValueError(f"GPT2Tokenizer.token_to_id: {token!r} is not in the vocabulary") from None

    def token_bytes(self, i: int) -> bytes:
        """The bytes that id ``i`` stands for."""
        (i,) = _check_ids("GPT2Tokenizer.token_bytes", [i], self.vocab_size)
        return self._token_bytes[i]

    # -- encoding ----------------------------------------------------------------------------
    def pretokenize(self, text: str) -> list[str]:
        """The chunks GPT-2's pattern cuts ``text`` into (special tokens get no special
        treatment here); ``''.join`` of them is ``text``."""
        _check_text("GPT2Tokenizer.pretokenize", text)
        return self._pattern.findall(text)

    def _bpe(self, chunk: str) -> list[int]:
        """The ids of one chunk: its byte tokens, merged in rank order.

        The definition: merge every occurrence (left to right, without overlap) of the
        lowest-ranked adjacent pair, and repeat until no adjacent pair is a merge. It runs in
        O(n log n) for a chunk of n bytes: the symbols form a linked list (``after`` /
        ``before``; a merged-away symbol becomes -1) and a heap holds (rank, position) of the
        adjacent pairs that are merges. All entries of the lowest rank are taken off the heap
        together, in position order, before any pair they create is considered; an entry whose
        pair has changed since it was pushed is skipped.
        """
        symbols = [self._byte_ids[b] for b in chunk.encode("utf-8")]
        n = len(symbols)
        if n < 2:
            return symbols
        rank_of, by_rank = self._ranks.get, self._by_rank
        after = list(range(1, n + 1))
        after[-1] = -1
        before = list(range(-1, n - 1))
        heap = [(r, i) for i, pair in enumerate(zip(symbols, symbols[1:]))
                if (r := rank_of(pair)) is not None]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            a, b, merged = by_rank[rank]
            positions = []
            while heap and heap[0][0] == rank:
                positions.append(heapq.heappop(heap)[1])
            for i in positions:
                j = after[i]
                if symbols[i] != a or j < 0 or symbols[j] != b:
                    continue  # stale: a merge since the push changed this pair
                symbols[i], symbols[j] = merged, -1
                k = after[j]
                after[i] = k
                if k >= 0:
                    before[k] = i
                    r = rank_of((merged, symbols[k]))
                    if r is not None:
                        heapq.heappush(heap, (r, i))
                h = before[i]
                if h >= 0:
                    r = rank_of((symbols[h], merged))
                    if r is not None:
                        heapq.heappush(heap, (r, h))
        return [s for s in symbols if s >= 0]

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache = self._cache
        for chunk in self._pattern.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._bpe(chunk)
                if len(cache) >= self._CACHE_LIMIT:
                    cache.clear()  # bounds memory on huge, diverse inputs
                cache[chunk] = ids
            out.extend(ids)

    def _allowed(self, allowed_special) -> tuple[str, ...]:
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return tuple(self._specials)
            raise ValueError(
                "GPT2Tokenizer.encode: allowed_special must be 'all' or a collection of special "
                f"tokens (such as {{{ENDOFTEXT!r}}} or ()), got the string {allowed_special!r}"
            )
        try:
            allowed = tuple(allowed_special)
        except TypeError:
            raise ValueError("GPT2Tokenizer.encode: allowed_special must be 'all' or a collection "
                             f"of special tokens, got {allowed_special!r}") from None
        for t in allowed:
            if t not in self._specials:
                raise ValueError(f"GPT2Tokenizer.encode: allowed_special names {t!r}, which is "
                                 f"not a special token (special tokens: {list(self._specials)})")
        return allowed

    def encode(self, text: str, allowed_special="all") -> list[int]:
        """The ids of ``text``.

        ``allowed_special``: 'all' (default: every special token written in the text, such as
        ``<|endoftext|>``, encodes to its id, as in Hugging Face's GPT-2 tokenizer), or a
        collection of the special tokens to recognise; the others, and all of them with
        ``()``, encode as ordinary text. A lone surrogate (no UTF-8 form) raises ValueError.
        """
        _check_text("GPT2Tokenizer.encode", text)
        allowed = self._allowed(allowed_special)
        out: list[int] = []
        try:
            if not any(t in text for t in allowed):
                self._encode_ordinary(text, out)
                return out
            key = tuple(sorted(set(allowed)))
            special = self._special_patterns.get(key)
            if special is None:
                # Longest first: where two special tokens start at the same place, the longer wins.
                special = re.compile("|".join(re.escape(t) for t in sorted(key, key=len, reverse=True)))
                self._special_patterns[key] = special
            start = 0
            for m in special.finditer(text):
                self._encode_ordinary(text[start:m.start()], out)
                out.append(self._specials[m.group()])
                start = m.end()
            self._encode_ordinary(text[start:], out)
            return out
        except UnicodeEncodeError:
            pos = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
            raise ValueError(
                f"GPT2Tokenizer.encode: the text has a lone surrogate U+{ord(text[pos]):04X} at "
                f"position {pos}, which has no UTF-8 encoding"
            ) from None

    # -- decoding ----------------------------------------------------------------------------
    def decode_bytes(self, ids) -> bytes:
        """The raw bytes of ``ids`` (may be invalid UTF-8 for arbitrary id sequences)."""
        table = self._token_bytes
        return b"".join(table[i] for i in _check_ids("GPT2Tokenizer.decode", ids, len(table)))

    def decode(self, ids) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 (an id sequence that splits a
        character) decode as U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- saving ------------------------------------------------------------------------------
    def save_pretrained(self, folder) -> None:
        """Write ``vocab.json`` and ``merges.txt`` into ``folder`` (created if needed), each
        atomically: the files ``from_pretrained`` and Hugging Face's GPT-2 tokenizer read."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"GPT2Tokenizer.save_pretrained: {str(folder)!r} is a file")
        vocab = json.dumps(self._encoder, ensure_ascii=False)
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        atomic_write(folder / HF_VOCAB, lambda f: f.write(vocab), mode="w", encoding="utf-8")
        atomic_write(folder / HF_MERGES, lambda f: f.write(f"{MERGES_HEADER}\n{merges}"),
                     mode="w", encoding="utf-8")

    def _payload(self) -> dict:
        return {
            "tokens": list(self._tokens),
            "merges": [f"{a} {b}" for a, b in self.merges],
            "special_tokens": list(self._specials),
        }

    @classmethod
    def _from_payload(cls, d: dict) -> "GPT2Tokenizer":
        tokens, merges, specials = d["tokens"], d["merges"], d["special_tokens"]
        if not isinstance(tokens, list) or not isinstance(merges, list) or not all(
                isinstance(m, str) for m in merges):
            raise ValueError("GPT2Tokenizer.from_dict: corrupt tokenizer data ('tokens' or "
                             "'merges' is not a list of strings)")
        encoder = {}
        for i, t in enumerate(tokens):
            if t in encoder:
                raise ValueError(f"GPT2Tokenizer.from_dict: the token {t!r} appears twice")
            encoder[t] = i
        return cls(encoder, [tuple(m.split(" ")) for m in merges], special_tokens=specials)

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(vocab_size={self.vocab_size}, engine={self.engine!r})"


# Saved GPT-2 tokenizers (Tokenizer.save, checkpoints) load back through Tokenizer.from_dict and
# load_tokenizer, which look the kind up in this registry of the tokenizers module.
_KINDS[GPT2Tokenizer.kind] = GPT2Tokenizer
