"""Unicode character classes for regular expressions of the standard library's ``re``.

``re`` has no ``\\p{L}`` (letters) or ``\\p{N}`` (numbers), and its ``\\s`` follows
``str.isspace``, which also counts the four separators U+001C..U+001F that Unicode's
White_Space property (the ``\\s`` of the ``regex`` package and of Oniguruma) leaves out. This
module builds the three classes explicitly, so a pattern written with them means the same in
``re`` as the ``\\p{..}`` / ``\\s`` pattern means in those engines:

- ``letter_ranges()`` / ``number_ranges()``: the code points whose general category in the
  running Python's ``unicodedata`` starts with ``L`` / ``N``, as sorted inclusive ranges.
  They follow that database's Unicode version (``unicodedata.unidata_version``); a code point
  assigned only in a later version is unassigned (category Cn) here and falls in neither class.
- ``WHITE_SPACE_RANGES``: Unicode's White_Space property, which ``unicodedata`` does not
  expose; its 25 code points have been the same since Unicode 6.3.
- ``class_body(ranges)``: the inside of a ``[...]`` class matching exactly those ranges, every
  code point written as an escape so no character is special inside the brackets.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

__all__ = ["letter_ranges", "number_ranges", "WHITE_SPACE_RANGES", "class_body", "ranges_of"]

# Unicode's White_Space property: tab..carriage return, space, next line, no-break space,
# Ogham space mark, en quad..hair space, line and paragraph separators, narrow no-break space,
# medium mathematical space, ideographic space.
WHITE_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0009, 0x000D), (0x0020, 0x0020), (0x0085, 0x0085), (0x00A0, 0x00A0),
    (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F),
    (0x205F, 0x205F), (0x3000, 0x3000),
)


def ranges_of(code_points) -> list[tuple[int, int]]:
    """Sorted inclusive ranges ``(first, last)`` covering exactly the given code points."""
    out: list[list[int]] = []
    for c in sorted(set(code_points)):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return [(a, b) for a, b in out]


@functools.lru_cache(maxsize=1)
def _category_ranges() -> dict[str, tuple[tuple[int, int], ...]]:
    """Ranges of the major categories L and N, from one pass over every code point."""
    category = unicodedata.category
    found: dict[str, list[int]] = {"L": [], "N": []}
    for c in range(sys.maxunicode + 1):
        major = category(chr(c))[0]
        if major in found:
            found[major].append(c)
    return {k: tuple(ranges_of(v)) for k, v in found.items()}


def letter_ranges() -> tuple[tuple[int, int], ...]:
    """Code points of general category L* (Lu, Ll, Lt, Lm, Lo) as inclusive ranges."""
    return _category_ranges()["L"]


def number_ranges() -> tuple[tuple[int, int], ...]:
    """Code points of general category N* (Nd, Nl, No) as inclusive ranges."""
    return _category_ranges()["N"]


def _escape(c: int) -> str:
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"


def class_body(ranges) -> str:
    """The text between ``[`` and ``]`` of a regular-expression class of ``ranges``."""
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)
