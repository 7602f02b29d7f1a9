"""tinyfw.safetensors: round trips for every dtype, the exact byte layout, corrupted files, and
fw.save / fw.load on .safetensors paths."""
import json
import os
import struct

import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn as nn
from tinyfw import safetensors as st

NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64,
                "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}


def _sample(dtype, shape, rng):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("code", sorted(NUMPY_DTYPES))
def test_round_trip_every_dtype(tmp_path, code):
    rng = np.random.default_rng(0)
    tensors = {f"t{i}": _sample(NUMPY_DTYPES[code], shape, rng)
               for i, shape in enumerate([(3, 5), (7,), (), (0, 4), (2, 3, 4)])}
    path = tmp_path / "x.safetensors"
    st.save_file(tensors, path)
    with st.SafetensorsFile(path) as f:
        assert {f.dtype(n) for n in f.keys()} == {code}
    back = st.load_file(path)
    assert list(back) == sorted(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape
        np.testing.assert_array_equal(back[name], a)


def test_bf16_round_trip_and_rounding(tmp_path):
    exact = np.array([0.0, -0.0, 1.0, -2.5, 3.140625, 2.0 ** 100, np.inf, -np.inf], np.float32)
    rounding = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -9], np.float32)  # ties, above tie
    path = tmp_path / "b.safetensors"
    st.save_file({"exact": exact, "rounding": rounding, "nan": np.array([np.nan], np.float32)},
                 path, dtypes={"exact": "BF16", "rounding": "BF16", "nan": "BF16"})
    with st.SafetensorsFile(path) as f:
        assert f.dtype("exact") == "BF16"
        as64 = f.read("exact", dtype=np.float64)
    back = st.load_file(path)
    assert back["exact"].dtype == np.float32
    np.testing.assert_array_equal(back["exact"], exact)
    np.testing.assert_array_equal(as64, exact.astype(np.float64))
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0);
    # 1 + 3 * 2^-9 is above the halfway point: up to 1 + 2^-7
    np.testing.assert_array_equal(back["rounding"], [1.0, 1.0 + 2.0 ** -7])
    assert np.isnan(back["nan"][0])


def test_layout_header_sorted_aligned_and_little_endian(tmp_path):
    path = tmp_path / "l.safetensors"
    st.save_file({"b": np.array([1, 2], np.int16), "a": np.array([1.5], np.float32)}, path,
                 metadata={"format": "pt"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0 and raw[8 + n - 1:8 + n] in (b"}", b" ")
    header = json.loads(raw[8:8 + n])
    assert list(header) == ["__metadata__", "a", "b"]
    assert header["a"] == {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    assert header["b"] == {"dtype": "I16", "shape": [2], "data_offsets": [4, 8]}
    assert raw[8 + n:] == struct.pack("<f", 1.5) + struct.pack("<hh", 1, 2)
    assert st.read_metadata(path) == {"format": "pt"}


def test_read_transposed_and_converted_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "COPY_BLOCK_BYTES", 64)      # many blocks of 2 rows
    a = np.arange(7 * 8, dtype=np.float32).reshape(7, 8)
    path = tmp_path / "t.safetensors"
    st.save_file({"a": a, "v": np.arange(100, dtype=np.int64)}, path)
    with st.SafetensorsFile(path) as f:
        t = f.read("a", transpose=True, dtype=np.float64)
        assert t.flags.c_contiguous and t.dtype == np.float64
        np.testing.assert_array_equal(t, a.T)
        np.testing.assert_array_equal(f.read("a"), a)
        np.testing.assert_array_equal(f.read("v"), np.arange(100))
        with pytest.raises(st.SafetensorsError, match="'v'.*only a 2-D tensor"):
            f.read("v", transpose=True)
        with pytest.raises(st.SafetensorsError, match="'nope'.*no such tensor"):
            f.read("nope")


def test_reads_a_file_of_the_reference_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "ref.safetensors"
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "i": np.array([5], np.int64)}
    safetensors_numpy.save_file(arrays, str(path), metadata={"format": "np"})
    back = st.load_file(path)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    mine = tmp_path / "mine.safetensors"
    st.save_file(arrays, mine)
    for k, v in safetensors_numpy.load_file(str(mine)).items():
        np.testing.assert_array_equal(v, arrays[k])


# ------------------------------------------------------------------------------ corrupted files
def _write_raw(path, header, data=b"", pad=True):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _good(tmp_path):
    path = tmp_path / "good.safetensors"
    st.save_file({"a": np.ones((4, 4), np.float32), "b": np.zeros(3, np.int32)}, path)
    return path


def test_truncated_file_names_file_and_tensor(tmp_path):
    path = _good(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(st.SafetensorsError, match=r"good\.safetensors: tensor 'b': .*run past "
                       r"the end of the data"):
        st.load_file(path)
    path.write_bytes(raw[:20])          # cut inside the header
    with pytest.raises(st.SafetensorsError, match=r"good\.safetensors: the header length \d+ "
                       "runs past the end"):
        st.load_file(path)
    path.write_bytes(raw[:5])
    with pytest.raises(st.SafetensorsError, match="too few for the 8-byte header length"):
        st.load_file(path)


def test_offsets_past_the_end(tmp_path):
    path = _write_raw(tmp_path / "o.safetensors",
                      {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    with pytest.raises(st.SafetensorsError, match=r"o\.safetensors: tensor 'w': data_offsets "
                       r"\[0, 16\] run past the end of the data \(8 bytes"):
        st.SafetensorsFile(path)


def test_unknown_dtype(tmp_path):
    path = _write_raw(tmp_path / "d.safetensors",
                      {"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}},
                      b"\0" * 16)
    with pytest.raises(st.SafetensorsError, match=r"d\.safetensors: tensor 'w': unknown dtype "
                       "'F128'"):
        st.load_file(path)


def test_bad_json(tmp_path):
    path = _write_raw(tmp_path / "j.safetensors", b'{"w": {"dtype": "F32",', b"")
    with pytest.raises(st.SafetensorsError, match=r"j\.safetensors: the header is not valid "
                       "UTF-8 JSON"):
        st.load_file(path)
    path = _write_raw(tmp_path / "k.safetensors", b"[1, 2]")
    with pytest.raises(st.SafetensorsError, match="must be a JSON object"):
        st.load_file(path)


def test_size_disagrees_with_shape(tmp_path):
    path = _write_raw(tmp_path / "s.safetensors",
                      {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}},
                      b"\0" * 20)
    with pytest.raises(st.SafetensorsError, match=r"s\.safetensors: tensor 'w': 20 bytes of "
                       r"data for shape \[2, 3\] of F32, which needs 24"):
        st.load_file(path)


def test_overlaps_holes_and_trailing_bytes(tmp_path):
    overlap = {"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
               "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}
    with pytest.raises(st.SafetensorsError, match="tensor 'b': its bytes 2:6 overlap those of "
                       "'a'"):
        st.load_file(_write_raw(tmp_path / "p.safetensors", overlap, b"\0" * 6))
    hole = {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}
    with pytest.raises(st.SafetensorsError, match="tensor 'b': bytes 2:4 of the data belong to "
                       "no tensor"):
        st.load_file(_write_raw(tmp_path / "h.safetensors", hole, b"\0" * 6))
    with pytest.raises(st.SafetensorsError, match="the data has 8 bytes but the tensors cover 6"):
        st.load_file(_write_raw(tmp_path / "e.safetensors", hole | {
            "c": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, b"\0" * 8))


def test_bad_entries_and_metadata(tmp_path):
    cases = [({"w": {"dtype": "F32", "shape": [1]}}, "must have dtype, shape and data_offsets"),
             ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}},
              "shape must be a list of non-negative integers"),
             ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}},
              "are not 0 <= begin <= end"),
             ({"__metadata__": {"a": 1}}, "__metadata__ must map strings to strings")]
    for i, (header, message) in enumerate(cases):
        with pytest.raises(st.SafetensorsError, match=message):
            st.load_file(_write_raw(tmp_path / f"c{i}.safetensors", header, b""))


def test_bool_bytes_other_than_0_and_1(tmp_path):
    path = _write_raw(tmp_path / "b.safetensors",
                      {"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x07")
    with pytest.raises(st.SafetensorsError, match="tensor 'm': a BOOL tensor holds bytes"):
        st.load_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        st.SafetensorsFile(tmp_path / "none.safetensors")


def test_writer_rejects_bad_input_and_keeps_previous_file(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"tensor 'x': dtype complex128 has no safetensors"):
        st.save_file({"x": np.ones(2, np.complex128)}, path)
    with pytest.raises(ValueError, match="names must be non-empty strings"):
        st.save_file({"__metadata__": np.ones(2)}, path)
    with pytest.raises(ValueError, match="metadata must be a dict of strings"):
        st.save_file({"x": np.ones(2)}, path, metadata={"format": 1})
    with pytest.raises(ValueError, match="'x': BF16 needs float data"):
        st.save_file({"x": np.ones(2, np.int32)}, path, dtypes={"x": "BF16"})
    with pytest.raises(ValueError, match="dtypes names tensors that are not saved"):
        st.save_file({"x": np.ones(2)}, path, dtypes={"y": "F16"})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.safetensors"]


# ------------------------------------------------------------------------- fw.save / fw.load
def test_fw_save_load_state_dict(tmp_path):
    fw.manual_seed(0)
    layer = nn.Linear(4, 3)
    path = tmp_path / "lin.safetensors"
    fw.save(layer.state_dict(), path)
    back = fw.load(path)
    assert set(back) == {"weight", "bias"}
    for k, v in layer.state_dict().items():
        assert isinstance(back[k], fw.Tensor) and back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k].numpy(), v.numpy())
    fresh = nn.Linear(4, 3)
    fresh.load_state_dict(back)
    np.testing.assert_array_equal(fresh.weight.numpy(), layer.weight.numpy())


def test_fw_save_safetensors_rejects_non_tensors(tmp_path):
    with pytest.raises(TypeError, match="'step' is a int; a .safetensors file holds tensors"):
        fw.save({"w": np.ones(2), "step": 3}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="holds a dict name -> tensor"):
        fw.save([np.ones(2)], tmp_path / "x.safetensors")
    assert not os.path.exists(tmp_path / "x.safetensors")
