"""Text corpora: the built-in default corpus and careful file reading.

``builtin_corpus()`` needs no download and no data directory: it is the English documentation
that every CPython installation carries in ``pydoc_data.topics`` (the text ``help('if')``
prints), about 0.47 MB. It makes ``tinyfw train`` and the tests work on a fresh machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["builtin_corpus", "read_text", "shared_data_path", "load_corpus", "BUILTIN_CORPUS_NAME"]

# The name under which the built-in corpus is selected (e.g. on the command line).
BUILTIN_CORPUS_NAME = "builtin"


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> str:
    """The built-in corpus: the standard library's ``pydoc_data.topics`` texts, joined with a
    newline in sorted key order (so it is the same string on every call and every machine with
    the same Python version). Roughly 465k characters of English prose and code examples.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # a stripped-down Python without pydoc_data
        raise RuntimeError(
            "builtin_corpus: this Python installation lacks pydoc_data.topics; "
            "pass a text file instead"
        ) from exc
    text = "\n".join(topics[key] for key in sorted(topics))
    if not text:
        raise RuntimeError("builtin_corpus: pydoc_data.topics is empty in this Python installation")
    return text


def read_text(path) -> str:
    """Read a UTF-8 text file exactly (no newline translation; a leading BOM is dropped).

    Errors name the file: FileNotFoundError when it does not exist, IsADirectoryError for a
    directory, ValueError when it is empty or is not valid UTF-8 (with the byte offset).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"read_text: no such file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"read_text: {str(path)!r} is a directory, not a text file")
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"read_text: {str(path)!r} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.end]
        raise ValueError(
            f"read_text: {str(path)!r} is not valid UTF-8: byte offset {exc.start} "
            f"({bad!r}: {exc.reason})"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        raise ValueError(f"read_text: {str(path)!r} is empty (only a byte-order mark)")
    return text


def _repo_root() -> Path:
    # tinyfw/data/corpora.py -> the directory that holds the tinyfw package
    return Path(__file__).resolve().parents[2]


def shared_data_path(name: str) -> Path | None:
    """Path of ``../shared/data/<name>`` next to the repository root (or next to the current
    directory) when that file exists, else None. Optional data for demos and tests; nothing
    may require it."""
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise ValueError(f"shared_data_path: expected a relative file name, got {name!r}")
    for base in (_repo_root(), Path.cwd()):
        candidate = (base / ".." / "shared" / "data" / name).resolve()
        if candidate.is_file():
            return candidate
    return None


def load_corpus(source=None) -> str:
    """The text of ``source``: the built-in corpus for None or ``'builtin'``, else the file at
    that path (read with ``read_text``)."""
    if source is None or source == BUILTIN_CORPUS_NAME:
        return builtin_corpus()
    return read_text(source)
