"""fw.save / fw.load: round trips, atomic writes, clear errors on bad files."""
import os

import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn as nn


def test_round_trip_nested(tmp_path):
    obj = {"model": nn.Linear(3, 2).state_dict(), "step": 7, "best": float("inf"),
           "name": "x", "ids": [1, 2, (3, 4)], "none": None, 5: np.arange(3),
           "f64": fw.tensor(np.ones(2))}
    path = tmp_path / "c.npz"
    fw.save(obj, path)
    back = fw.load(path)
    assert back["step"] == 7 and back["best"] == float("inf") and back["name"] == "x"
    assert back["ids"] == [1, 2, (3, 4)] and back["none"] is None
    np.testing.assert_array_equal(back[5], np.arange(3))
    assert back["f64"].dtype == fw.float64
    for k, v in obj["model"].items():
        np.testing.assert_array_equal(back["model"][k].numpy(), v.numpy())


def test_no_temp_files_left_and_previous_file_survives_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    fw.save({"a": np.ones(3)}, path)

    def broken_savez(f, **members):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space"):
        fw.save({"a": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(fw.load(path)["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["c.npz"]


def test_truncated_file(tmp_path):
    path = tmp_path / "c.npz"
    fw.save({"a": np.ones(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a tinyfw file"):
        fw.load(path)


def test_foreign_files(tmp_path):
    npz = tmp_path / "plain.npz"
    np.savez(npz, x=np.ones(2))
    with pytest.raises(ValueError, match="not a tinyfw file"):
        fw.load(npz)
    txt = tmp_path / "t.npz"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="not a tinyfw file"):
        fw.load(txt)
    with pytest.raises(FileNotFoundError, match="load: no such file: .*missing.npz"):
        fw.load(tmp_path / "missing.npz")


def test_unsupported_object():
    with pytest.raises(TypeError, match="cannot save an object of type object"):
        fw.save({"x": object()}, "unused.npz")


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, __tinyfw__=np.frombuffer(b'{"format": "tinyfw-checkpoint", "version": 1, '
                                            b'"tree": {"__array__": 0}}', dtype=np.uint8),
             a0=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match=r"load: .*p.npz is corrupt or not a tinyfw file "
                                         r"\(Object arrays cannot be loaded"):
        fw.load(path)


def test_a_tied_weight_is_stored_once_and_loads_under_both_names(tmp_path):
    """The state dict of a tied model lists the embedding under two names; the file holds its
    data once, and the loaded state rebuilds the model exactly."""
    import zipfile
    from tinyfw.nn.models import LanguageModel, ModelConfig
    cfg = ModelConfig(vocab_size=300, d_model=32, n_layers=1, n_heads=2, tie_weights=True)
    fw.manual_seed(0)
    model = LanguageModel(cfg)
    state = model.state_dict()
    assert "head.weight" in state and "tok_emb.weight" in state
    path = tmp_path / "tied.npz"
    fw.save({"model": state, "copy": fw.tensor(state["head.weight"].numpy())}, path)
    members = [n for n in zipfile.ZipFile(path).namelist() if n != "__tinyfw__.npy"]
    assert len(members) == len(state)       # one fewer than the names, plus the separate copy
    loaded = fw.load(path)
    fw.manual_seed(1)
    again = LanguageModel(cfg)
    again.load_state_dict(loaded["model"])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name].numpy(), value.numpy())
    np.testing.assert_array_equal(loaded["copy"].numpy(), state["head.weight"].numpy())
