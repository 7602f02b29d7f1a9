"""Corpora and batching: the built-in corpus, careful file reading, token files, splits and
language-model batches."""

import os

import numpy as np
import pytest

from tinyfw.data import (
    ByteBPETokenizer,
    CharTokenizer,
    builtin_corpus,
    encode_corpus,
    get_batch,
    load_corpus,
    load_tokens,
    read_text,
    save_tokens,
    shared_data_path,
    token_dtype,
    train_val_split,
)

# --------------------------------------------------------------------------------- corpora


def test_builtin_corpus_nonempty_and_deterministic():
    text = builtin_corpus()
    assert isinstance(text, str)
    assert len(text) > 100_000
    assert builtin_corpus() == text
    builtin_corpus.cache_clear()
    assert builtin_corpus() == text  # recomputed from scratch: same string
    from pydoc_data.topics import topics

    first, last = min(topics), max(topics)
    assert text.startswith(topics[first])
    assert text.endswith(topics[last])
    assert all(topics[k] in text for k in topics)
    assert load_corpus() == text and load_corpus("builtin") == text


def test_read_text_exact(tmp_path):
    content = "line one\r\nligne deux — été\n\U0001F600 tail"
    path = tmp_path / "c.txt"
    path.write_bytes(content.encode("utf-8"))
    assert read_text(path) == content  # no newline translation
    assert read_text(str(path)) == content
    assert load_corpus(path) == content
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))
    assert read_text(path) == content  # BOM dropped


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_text(empty)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf".encode() + "é!".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not valid UTF-8: byte offset 3 \(b'\\xe9'"):
        read_text(bad)
    with pytest.raises(IsADirectoryError, match="read_text: .* is a directory, not a text file"):
        read_text(tmp_path)


def test_shared_data_path(tmp_path, monkeypatch):
    assert shared_data_path("no_such_file_anywhere_0123.txt") is None
    with pytest.raises(ValueError, match="shared_data_path: expected a relative file name, "
                                         "got ''"):
        shared_data_path("")
    # found relative to the current directory: <cwd>/../shared/data/<name>
    (tmp_path / "shared" / "data").mkdir(parents=True)
    target = tmp_path / "shared" / "data" / "tinyfw_test_corpus_xyz.txt"
    target.write_text("hi")
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    found = shared_data_path("tinyfw_test_corpus_xyz.txt")
    assert found is not None and found.resolve() == target.resolve()


def test_shared_data_real_corpus_if_present():
    path = shared_data_path("tinyshakespeare.txt")
    if path is None:
        pytest.skip("shared data not present")
    text = read_text(path)
    assert len(text) > 0


# --------------------------------------------------------------------------------- token files


class _FakeTokenizer:
    """Maps each character to a fixed large id; enough to exercise dtypes."""

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def encode(self, text):
        return [(ord(c) * 7919) % self.vocab_size for c in text]


def test_token_dtype_boundaries():
    assert token_dtype(2) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert token_dtype(65537) == np.uint32
    with pytest.raises(ValueError, match="vocab_size"):
        token_dtype(0)


def test_encode_corpus_dtypes_and_values():
    text = builtin_corpus()[:2000]
    tok = CharTokenizer.train(text)
    ids = encode_corpus(text, tok)
    assert ids.dtype == np.uint16 and ids.ndim == 1
    assert ids.tolist() == tok.encode(text)

    fake = _FakeTokenizer(100_000)
    big = encode_corpus(text, fake)
    assert big.dtype == np.uint32
    assert big.tolist() == fake.encode(text)
    assert big.max() >= 65536  # would have wrapped around in uint16

    with pytest.raises(ValueError, match="outside"):
        encode_corpus("abc", _BrokenTokenizer())
    with pytest.raises(TypeError, match="encode_corpus"):
        encode_corpus(b"abc", tok)


class _BrokenTokenizer:
    vocab_size = 10

    def encode(self, text):
        return [3, 10]


def test_encode_corpus_saves_and_loads(tmp_path):
    text = "hello wörld \U0001F600 " * 50
    tok = ByteBPETokenizer.train(text, vocab_size=280)
    path = tmp_path / "tokens.npy"
    ids = encode_corpus(text, tok, path=path)
    assert os.listdir(tmp_path) == ["tokens.npy"]  # no temp file left behind
    for mmap in (False, True):
        loaded = load_tokens(path, mmap=mmap)
        assert loaded.dtype == ids.dtype
        np.testing.assert_array_equal(loaded, ids)
    assert tok.decode(load_tokens(path)) == text


def test_save_tokens_exact_name(tmp_path):
    path = tmp_path / "train.bin"
    save_tokens(np.arange(5, dtype=np.uint16), path)
    assert os.listdir(tmp_path) == ["train.bin"]
    np.testing.assert_array_equal(load_tokens(path), np.arange(5))
    with pytest.raises(ValueError, match="1-D"):
        save_tokens(np.zeros((2, 2), dtype=np.uint16), path)


def test_load_tokens_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.npy"):
        load_tokens(tmp_path / "gone.npy")

    good = tmp_path / "good.npy"
    save_tokens(np.arange(1000, dtype=np.uint16), good)
    raw = good.read_bytes()
    trunc = tmp_path / "trunc.npy"
    for cut in (len(raw) - 10, 100, 20, 3):
        trunc.write_bytes(raw[:cut])
        for mmap in (False, True):
            with pytest.raises(ValueError, match="load_tokens.*trunc.npy"):
                load_tokens(trunc, mmap=mmap)

    foreign = tmp_path / "foreign.npy"
    foreign.write_bytes(b"just some text, not numpy")
    with pytest.raises(ValueError, match="not a .npy token file"):
        load_tokens(foreign)

    npz = tmp_path / "arch.npz"
    np.savez(npz, a=np.arange(3))
    with pytest.raises(ValueError, match="not a .npy token file"):
        load_tokens(npz)

    floats = tmp_path / "floats.npy"
    np.save(floats, np.ones(4))
    with pytest.raises(ValueError, match="unsigned-integer.*float64"):
        load_tokens(floats)

    matrix = tmp_path / "matrix.npy"
    np.save(matrix, np.ones((2, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"1-D.*\(2, 3\)"):
        load_tokens(matrix)


# --------------------------------------------------------------------------------- split


def test_train_val_split_contiguous():
    ids = np.arange(1000, dtype=np.uint16)
    train, val = train_val_split(ids)
    assert len(train) == 900 and len(val) == 100
    np.testing.assert_array_equal(train, ids[:900])
    np.testing.assert_array_equal(val, ids[900:])

    train, val = train_val_split(list(range(10)), val_fraction=0.3)
    assert train.tolist() == list(range(7)) and val.tolist() == [7, 8, 9]
    train, val = train_val_split(ids, val_fraction=0.0)
    assert len(train) == 1000 and len(val) == 0


def test_train_val_split_errors():
    for bad in (-0.1, 1.0, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(np.arange(10), val_fraction=bad)
    with pytest.raises(ValueError, match=r"1-D.*\(2, 5\)"):
        train_val_split(np.zeros((2, 5), dtype=np.uint16))


# --------------------------------------------------------------------------------- batches


def test_get_batch_shapes_and_shift():
    data = (np.arange(5000) * 7 % 65521).astype(np.uint16)  # distinct values: windows are identifiable
    rng = np.random.default_rng(0)
    x, y = get_batch(data, batch_size=6, block_size=17, rng=rng)
    assert x.shape == (6, 17) and y.shape == (6, 17)
    assert x.dtype == np.int64 and y.dtype == np.int64
    assert x.flags.c_contiguous and y.flags.c_contiguous
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    lookup = {int(v): i for i, v in enumerate(data)}
    for b in range(6):
        s = lookup[int(x[b, 0])]
        np.testing.assert_array_equal(x[b], data[s:s + 17])
        np.testing.assert_array_equal(y[b], data[s + 1:s + 18])


def test_get_batch_deterministic_under_seed():
    data = np.arange(10_000, dtype=np.uint32)
    x1, y1 = get_batch(data, 4, 8, np.random.default_rng(123))
    x2, y2 = get_batch(data, 4, 8, np.random.default_rng(123))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, _ = get_batch(data, 4, 8, np.random.default_rng(124))
    assert not np.array_equal(x1, x3)
    # consecutive draws from one generator differ
    rng = np.random.default_rng(5)
    assert not np.array_equal(get_batch(data, 4, 8, rng)[0], get_batch(data, 4, 8, rng)[0])


def test_get_batch_covers_all_valid_starts():
    data = np.arange(12, dtype=np.uint16)
    block = 4
    x, y = get_batch(data, 2000, block, np.random.default_rng(1))
    starts = set(x[:, 0].tolist())
    # every start in [0, N - block - 1] appears, and none beyond (y must stay inside data)
    assert starts == set(range(len(data) - block))
    assert y.max() == len(data) - 1


def test_get_batch_exact_length_and_memmap(tmp_path):
    data = np.arange(9, dtype=np.uint16)
    x, y = get_batch(data, 3, 8, np.random.default_rng(0))
    assert (x == np.arange(8)).all() and (y == np.arange(1, 9)).all()

    path = tmp_path / "t.npy"
    save_tokens(np.arange(100, dtype=np.uint16), path)
    mm = load_tokens(path, mmap=True)
    x, y = get_batch(mm, 2, 10, np.random.default_rng(0))
    assert type(x) is np.ndarray and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)


def test_get_batch_errors():
    rng = np.random.default_rng(0)
    data = np.arange(8, dtype=np.uint16)
    with pytest.raises(ValueError, match=r"8 tokens, fewer than block_size \+ 1 = 9"):
        get_batch(data, 2, 8, rng)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        get_batch(data, 2, 4, 0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        get_batch(data, 2, 4, np.random.RandomState(0))
    for bs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            get_batch(data, bs, 4, rng)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(data, 2, 0, rng)
    with pytest.raises(ValueError, match=r"1-D.*\(2, 4\)"):
        get_batch(data.reshape(2, 4), 2, 2, rng)
    with pytest.raises(ValueError, match="integer.*float"):
        get_batch(np.ones(20), 2, 4, rng)


def test_end_to_end_builtin_pipeline():
    text = builtin_corpus()
    tok = CharTokenizer.train(text)
    ids = encode_corpus(text, tok)
    assert len(ids) == len(text)
    train, val = train_val_split(ids, 0.1)
    x, y = get_batch(val, 4, 32, np.random.default_rng(0))
    assert x.max() < tok.vocab_size
    # decoded windows are substrings of the validation text
    val_text = tok.decode(val)
    assert text.endswith(val_text)
    for b in range(4):
        window = tok.decode(x[b]) + tok.decode(y[b, -1:])
        assert window in val_text
