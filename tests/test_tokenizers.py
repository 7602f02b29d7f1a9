"""Tokenizers: exact round trips, unknown handling, BPE training against a naive reference,
serialisation and its error paths."""

import json
import os
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyfw.data import (
    ByteBPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    builtin_corpus,
    load_tokenizer,
)
from tinyfw.data.tokenizers import BPE_PATTERN, split_words

MIXED = (
    "Hello, world!  Héllo wörld -- naïve café.\n"
    "\tTabs\tand\r\nCRLF lines; numbers 12345 and 3.14, under_scores.\n\n"
    "Emoji: \U0001F600\U0001F680 and CJK 漢字かな, Greek αβγ, combining e\u0301.\n"
    "It's they're we'll I'd you've\n"
)


@pytest.fixture(scope="module")
def small_corpus():
    # A few KB of the built-in corpus keeps BPE training fast.
    return builtin_corpus()[:6000]


# --------------------------------------------------------------------------------- char


def test_char_roundtrip_and_sorted_vocab():
    tok = CharTokenizer.train(MIXED)
    assert tok.kind == "char"
    assert tok.chars == sorted(set(MIXED))
    assert tok.vocab_size == len(set(MIXED))
    ids = tok.encode(MIXED)
    assert len(ids) == len(MIXED)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == MIXED
    # ids follow the sorted order of characters
    assert tok.encode("".join(tok.chars)) == list(range(tok.vocab_size))
    assert tok.decode(np.array(ids, dtype=np.uint16)) == MIXED


def test_char_unknown_character_names_chars_and_positions():
    tok = CharTokenizer.train("abc ")
    with pytest.raises(ValueError) as info:
        tok.encode("ab zc!")
    msg = str(info.value)
    assert "CharTokenizer.encode" in msg
    assert "'z' at position 3" in msg
    assert "'!' at position 5" in msg
    assert "2 character(s)" in msg


def test_char_unknown_lists_only_first_few():
    tok = CharTokenizer.train("a")
    with pytest.raises(ValueError, match=r"100 character\(s\).*\.\.\."):
        tok.encode("b" * 100)


def test_char_errors():
    tok = CharTokenizer.train("ab")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.train("")
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"ab")
    with pytest.raises(ValueError, match=r"outside \[0, 2\).*-1 at position 1"):
        tok.decode([0, -1])
    with pytest.raises(ValueError, match=r"outside \[0, 2\).*2 at position 0"):
        tok.decode([2])
    with pytest.raises(TypeError, match="CharTokenizer.decode: expected a sequence of ints, got "
                                        "str"):
        tok.decode("ab")
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer(["a", "a"])


# --------------------------------------------------------------------------------- word


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_word_split_covers_text_exactly(text):
    assert "".join(split_words(text)) == text


def test_word_split_scheme():
    assert split_words("Hi,  there!\n\nok_1") == ["Hi", ",", "  ", "there", "!", "\n\n", "ok_1"]


def test_word_roundtrip_with_known_words():
    tok = WordTokenizer.train(MIXED)
    assert tok.kind == "word"
    ids = tok.encode(MIXED)
    assert 0 not in ids  # every token was seen in training
    assert tok.decode(ids) == MIXED
    # a new text made only of known tokens also round-trips exactly
    text = "Hello world!  numbers and  Greek\n\n"
    ids = tok.encode(text)
    assert 0 not in ids
    assert tok.decode(ids) == text


def test_word_unknown_and_min_count():
    text = "the cat sat on the mat . the end ."
    tok = WordTokenizer.train(text, min_count=2)
    assert tok.tokens[0] == "<unk>"
    # 'the' (3), ' ' (9) and '.' (2) survive min_count=2; 'cat', 'sat', ... do not
    assert set(tok.tokens) == {"<unk>", "the", " ", "."}
    # most frequent first
    assert tok.tokens[1] == " "
    ids = tok.encode("the dog .")
    assert ids == [tok.tokens.index("the"), tok.tokens.index(" "), 0,
                   tok.tokens.index(" "), tok.tokens.index(".")]
    assert tok.decode(ids) == "the <unk> ."

    tok1 = WordTokenizer.train(text)
    assert tok1.decode(tok1.encode(text)) == text
    assert tok1.encode("zebra") == [0]


def test_word_custom_unk_and_unk_in_text():
    tok = WordTokenizer.train("a b UNK c", unk_token="UNK")
    assert tok.tokens[0] == "UNK"
    assert tok.tokens.count("UNK") == 1
    text = "a UNK b"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("a zz")) == "a UNK"


def test_word_errors():
    with pytest.raises(ValueError, match="min_count"):
        WordTokenizer.train("a b", min_count=0)
    with pytest.raises(ValueError, match="empty"):
        WordTokenizer.train("")
    tok = WordTokenizer.train("a b")
    with pytest.raises(ValueError, match="WordTokenizer.decode"):
        tok.decode([tok.vocab_size])


# --------------------------------------------------------------------------------- BPE


def _naive_bpe_merges(text, n_merges, min_frequency=2):
    """Reference trainer: recount every pair from scratch before each merge."""
    chunks = Counter(re.findall(BPE_PATTERN, text))
    words = [list(c.encode("utf-8")) for c in chunks]
    weights = list(chunks.values())
    merges = []
    for step in range(n_merges):
        counts = Counter()
        for w, c in zip(words, weights):
            for p in zip(w, w[1:]):
                counts[p] += c
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        new_id = 256 + step
        merges.append(best)
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


def _replay_encode(tok, text):
    """Reference encoder: apply every merge, in training order, to every chunk."""
    out = []
    for chunk in re.findall(tok.pattern, text):
        ids = list(chunk.encode("utf-8"))
        for r, (a, b) in enumerate(tok.merges):
            new, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    new.append(256 + r)
                    i += 2
                else:
                    new.append(ids[i])
                    i += 1
            ids = new
        out.extend(ids)
    return out


def test_bpe_training_matches_naive_reference(small_corpus):
    text = small_corpus[:3000] + MIXED
    tok = ByteBPETokenizer.train(text, vocab_size=256 + 120)
    assert tok.merges == _naive_bpe_merges(text, 120)
    assert tok.vocab_size == 256 + 120


def test_bpe_overlapping_pairs_match_reference():
    # runs of one repeated byte are where incremental pair counting goes wrong most easily
    text = "aaaa aaa aaaaaaa ab ab abab baaab " * 3 + "zzzzzzzzz"
    tok = ByteBPETokenizer.train(text, vocab_size=300)
    assert tok.merges == _naive_bpe_merges(text, 44)
    assert tok.decode(tok.encode(text)) == text


def test_bpe_encode_equals_replaying_merges(small_corpus):
    tok = ByteBPETokenizer.train(small_corpus, vocab_size=400)
    for text in (small_corpus[:2000], MIXED, "unseen words: zyzzyva quixotic"):
        assert tok.encode(text) == _replay_encode(tok, text)


def test_bpe_roundtrip_unicode(small_corpus):
    tok = ByteBPETokenizer.train(small_corpus + MIXED, vocab_size=400)
    assert tok.kind == "bpe"
    for text in (MIXED, small_corpus, "", "\n", "\r\n\r\n", "   x   ", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
                 "never seen: ŋ ʃ \u0000 \uffff \U0010FFFF"):
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # merges compress the training text well below one id per byte
    assert len(tok.encode(small_corpus)) < 0.7 * len(small_corpus.encode("utf-8"))


@given(st.text(max_size=200))
@settings(max_examples=150, deadline=None)
def test_bpe_roundtrip_any_text(text):
    tok = _HYPOTHESIS_BPE
    assert tok.decode(tok.encode(text)) == text


_HYPOTHESIS_BPE = ByteBPETokenizer.train(MIXED * 3, vocab_size=320)


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_bpe_pre_split_covers_text_exactly(text):
    assert "".join(re.findall(BPE_PATTERN, text)) == text


def test_bpe_pre_split_chunks():
    assert re.findall(BPE_PATTERN, "Hello world's  x12 !!") == ["Hello", " world", "'s", " ", " x", "12", " !!"]


def test_bpe_deterministic_and_cache_consistent(small_corpus):
    a = ByteBPETokenizer.train(small_corpus, vocab_size=330)
    b = ByteBPETokenizer.train(small_corpus, vocab_size=330)
    assert a.merges == b.merges
    first = a.encode(small_corpus)
    assert a.encode(small_corpus) == first  # second call served from the chunk cache
    assert ByteBPETokenizer(a.merges).encode(small_corpus) == first


def test_bpe_stops_early_and_byte_tokenizer():
    tok = ByteBPETokenizer.train("ab ab ab", vocab_size=1000)
    # pairs: (a,b) x3, (' ', a) x2 -> after two merges (' ', 'ab') x2, then nothing repeats
    assert tok.vocab_size < 1000
    assert tok.decode(tok.encode("ab ab ab")) == "ab ab ab"
    assert tok.token_bytes(256) == b"ab"

    plain = ByteBPETokenizer()
    assert plain.vocab_size == 256
    assert plain.encode("é") == list("é".encode("utf-8"))


def test_bpe_decode_invalid_utf8_replaces():
    tok = ByteBPETokenizer()
    first_byte = "é".encode("utf-8")[0]
    assert tok.decode([first_byte]) == "\ufffd"
    assert tok.decode_bytes([first_byte]) == bytes([first_byte])


def test_bpe_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        ByteBPETokenizer.train("abc", vocab_size=100)
    with pytest.raises(ValueError, match="empty"):
        ByteBPETokenizer.train("", vocab_size=300)
    with pytest.raises(ValueError, match="merge 0"):
        ByteBPETokenizer([(1, 256)])
    with pytest.raises(ValueError, match="duplicates"):
        ByteBPETokenizer([(1, 2), (1, 2)])
    with pytest.raises(ValueError, match="pattern"):
        ByteBPETokenizer(pattern="(")
    with pytest.raises(ValueError, match=r"outside \[0, 256\)"):
        ByteBPETokenizer().decode([256])


# --------------------------------------------------------------------------------- build / save / load


def _all_tokenizers(text):
    return [
        build_tokenizer("char", text),
        build_tokenizer("word", text, min_count=1),
        build_tokenizer("bpe", text, vocab_size=300),
    ]


def test_build_tokenizer_kinds_and_errors():
    toks = _all_tokenizers(MIXED)
    assert [t.kind for t in toks] == ["char", "word", "bpe"]
    assert [type(t) for t in toks] == [CharTokenizer, WordTokenizer, ByteBPETokenizer]
    assert build_tokenizer("bpe", MIXED * 20).vocab_size <= 512
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'"):
        build_tokenizer("sentencepiece", MIXED)
    with pytest.raises(TypeError, match="build_tokenizer"):
        build_tokenizer("char", MIXED, vocab_size=3)


def test_save_load_roundtrip(tmp_path):
    for tok in _all_tokenizers(MIXED):
        path = tmp_path / f"{tok.kind}.json"
        tok.save(path)
        loaded = load_tokenizer(path)
        assert type(loaded) is type(tok)
        assert loaded.to_dict() == tok.to_dict()
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.encode(MIXED) == tok.encode(MIXED)
        assert loaded.decode(tok.encode(MIXED)) == MIXED
        # to_dict is plain JSON and from_dict rebuilds it, via the base class or the subclass
        d = json.loads(json.dumps(tok.to_dict()))
        assert Tokenizer.from_dict(d).to_dict() == tok.to_dict()
        assert type(tok).from_dict(d).to_dict() == tok.to_dict()
    # atomic save leaves only the final files behind
    assert sorted(os.listdir(tmp_path)) == ["bpe.json", "char.json", "word.json"]


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "tok.json"
    CharTokenizer.train("ab").save(path)
    CharTokenizer.train("xyz").save(path)
    assert load_tokenizer(path).chars == ["x", "y", "z"]
    assert os.listdir(tmp_path) == ["tok.json"]


def test_load_truncated_file(tmp_path):
    for tok in _all_tokenizers(MIXED):
        path = tmp_path / "tok.json"
        tok.save(path)
        raw = path.read_bytes()
        for cut in (len(raw) // 2, len(raw) - 1, 1):
            path.write_bytes(raw[:cut])
            with pytest.raises(ValueError, match="load_tokenizer.*tok.json"):
                load_tokenizer(path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "expected a dict"),
        (b'{"vocab": ["a"]}', "not a tinyfw tokenizer"),
        (b'{"format": "tinyfw.tokenizer", "version": 99, "kind": "char", "chars": ["a"]}', "version"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "magic"}', "unknown tokenizer kind"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "char"}', "corrupt"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "char", "chars": "ab"}', "corrupt"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "char", "chars": ["ab"]}', "single characters"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "word", "unk_token": "<unk>", '
         b'"tokens": ["a", "<unk>"]}', "first token"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "bpe", "pattern": " ?\\\\w+", '
         b'"merges": [[1, 999]]}', "merge 0"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "bpe", "pattern": " ?\\\\w+", '
         b'"merges": [[1, 2, 3]]}', "merge 0"),
        (b'{"format": "tinyfw.tokenizer", "version": 1, "kind": "bpe", "merges": []}', "corrupt"),
    ],
)
def test_load_foreign_or_corrupt_file(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_tokenizer(path)


def test_load_missing_file_and_kind_mismatch(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")
    d = CharTokenizer.train("ab").to_dict()
    with pytest.raises(ValueError, match="'char' tokenizer"):
        WordTokenizer.from_dict(d)
