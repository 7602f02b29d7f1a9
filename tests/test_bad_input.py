"""Bad input at the command line and during training: every numeric flag, a loss that becomes
NaN or infinite, truncated or foreign checkpoints, a damaged token cache. Each gives a clear
message naming the flag, the step or the file, no traceback, and leaves good files alone."""
import io
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinyfw.train as train_module
from tinyfw import serialization
from tinyfw.cli import main
from tinyfw.data import load_tokens
from tinyfw.tensor import tensor
from tinyfw.train import (TrainConfig, TrainingDiverged, load_checkpoint, read_metrics,
                          save_checkpoint, train)

TEXT = "".join(f"a {w} is a {w}.\n" for w in ("cat", "dog", "bird", "fish")) * 60
TINY = ["--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context", "8",
        "--batch-size", "4", "--eval-iters", "1", "--sample-tokens", "0"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished 4-step run (checkpoints at steps 2 and 4), never modified by the tests."""
    base = tmp_path_factory.mktemp("good")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = base / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--steps", "4",
                 "--eval-every", "2", "--quiet", *TINY]) == 0
    return out


def snapshot(folder):
    """Every file under ``folder`` and its bytes."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def without_config(files):
    return {name: data for name, data in files.items() if name != "config.json"}


def weights(ckpt):
    return {k: v.numpy() for k, v in ckpt["model"].items()}


# ------------------------------------------------------------------------ numeric flags
TRAIN_BAD = [
    ("--lr", "nan", "a finite number > 0"), ("--lr", "inf", "a finite number > 0"),
    ("--lr", "0", "a finite number > 0"), ("--lr", "-0.001", "a finite number > 0"),
    ("--min-lr", "nan", "a finite number >= 0"), ("--min-lr", "-1e-4", "a finite number >= 0"),
    ("--weight-decay", "inf", "a finite number >= 0"),
    ("--weight-decay", "-0.1", "a finite number >= 0"),
    ("--grad-clip", "nan", "a finite number >= 0"), ("--grad-clip", "-1", "a finite number >= 0"),
    ("--dropout", "nan", "a number in [0, 1)"), ("--dropout", "1", "a number in [0, 1)"),
    ("--dropout", "-0.1", "a number in [0, 1)"),
    ("--temperature", "nan", "a finite number >= 0"),
    ("--temperature", "-inf", "a finite number >= 0"),
    ("--temperature", "-1", "a finite number >= 0"),
    ("--grad-accum", "0", "a positive integer"), ("--grad-accum", "nan", "a positive integer"),
    ("--grad-accum", "1.5", "a positive integer"),
    ("--batch-size", "-2", "a positive integer"), ("--steps", "inf", "a positive integer"),
    ("--train-fraction", "inf", "a number in (0, 1]"),
]
SAMPLE_BAD = [
    ("--temperature", "nan", "a finite number >= 0"),
    ("--temperature", "inf", "a finite number >= 0"),
    ("--temperature", "-0.5", "a finite number >= 0"),
    ("--top-k", "0", "a positive integer"), ("--top-k", "nan", "a positive integer"),
    ("--top-k", "-3", "a positive integer"),
    ("--top-p", "0", "a number in (0, 1]"), ("--top-p", "nan", "a number in (0, 1]"),
    ("--top-p", "1.5", "a number in (0, 1]"), ("--top-p", "-inf", "a number in (0, 1]"),
    ("--max-new-tokens", "-1", "an integer >= 0"),
]


def names_value(err, value):
    """Whether the message ends with "got <value>" (as typed, or as the number it parses to)."""
    shown = err.rsplit("got ", 1)[-1].strip().strip("'")
    if shown == value:
        return True
    try:
        a, b = float(shown), float(value)
    except ValueError:
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("flag, value, expected", TRAIN_BAD)
def test_train_numeric_flags_are_checked_at_parse_time(tmp_path, corpus, capsys, flag, value,
                                                       expected):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", corpus, "--out", str(tmp_path / "run"), f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected {expected}, got " in err
    assert names_value(err, value)
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, expected", SAMPLE_BAD)
def test_sample_numeric_flags_are_checked_at_parse_time(good_run, capsys, flag, value, expected):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--ckpt", str(good_run / "ckpt.npz"), f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected {expected}, got " in err
    assert names_value(err, value)
    assert "Traceback" not in err and "Probabilities" not in err


def test_a_negative_exponent_value_after_a_space_is_still_a_usage_error(capsys):
    # argparse reads "-1e-4" after a space as an option, so it names the flag but not the value.
    with pytest.raises(SystemExit) as e:
        main(["train", "--min-lr", "-1e-4"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --min-lr: expected one argument" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--lr", "1e-5"), ("--min-lr", "0"),
                                         ("--weight-decay", "0"), ("--grad-clip", "0"),
                                         ("--dropout", "0.5"), ("--temperature", "0"),
                                         ("--grad-accum", "2")])
def test_boundary_values_are_accepted(flag, value):
    from tinyfw.cli import build_parser, train_overrides
    args = build_parser().parse_args(["train", flag, value])
    overrides = train_overrides(args)
    assert float(value) in (overrides.get(flag[2:].replace("-", "_")),
                            overrides["model"].get(flag[2:]))


def test_sample_temperature_nan_from_a_shell_names_the_flag(good_run):
    proc = subprocess.run([sys.executable, "-m", "tinyfw", "sample", "--ckpt",
                           str(good_run / "ckpt.npz"), "--temperature", "nan"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "argument --temperature: expected a finite number >= 0, got nan" in proc.stderr
    assert "Traceback" not in proc.stderr and "Probabilities" not in proc.stderr


def test_sample_temperature_zero_is_greedy(good_run, capsys):
    outputs = []
    for seed in ("1", "2"):
        assert main(["sample", "--ckpt", str(good_run / "ckpt.npz"), "--prompt", "a c",
                     "--max-new-tokens", "12", "--temperature", "0", "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].startswith("a c")


# ------------------------------------------------------------------- NaN / Inf in training
def _poison_call(monkeypatch, name, on_call, value):
    """Make ``tinyfw.train.<name>`` return ``value`` on its ``on_call``-th call (1-based)."""
    real = getattr(train_module, name)
    calls = []

    def patched(*args, **kw):
        result = real(*args, **kw)
        calls.append(1)
        return value if len(calls) == on_call else result
    monkeypatch.setattr(train_module, name, patched)


def _stopped_run(tmp_path, corpus):
    """A run stopped at step 2 of 6 (checkpoint at step 2), and the bytes of its folder."""
    out = tmp_path / "run"
    assert main(["train", "--data", corpus, "--out", str(out), "--steps", "6", "--eval-every",
                 "2", "--stop-after", "2", "--quiet", *TINY]) == 0
    return out, snapshot(out)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_with_exit_3_and_keeps_the_checkpoint(tmp_path, corpus, capsys,
                                                                     monkeypatch, bad):
    out, before = _stopped_run(tmp_path, corpus)
    _poison_call(monkeypatch, "accumulate_gradients", 2, bad)     # step 4 of the resumed run
    code = main(["train", "--out", str(out), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert f"training diverged: the loss became {bad} at step 4" in err
    assert "ckpt.npz keeps step 2, the last good state" in err
    assert "Traceback" not in err
    # The checkpoints, metrics and token cache are the step-2 state, byte for byte (only
    # config.json is rewritten, by the resumed run before its first step).
    assert without_config(snapshot(out)) == without_config(before)
    assert load_checkpoint(str(out / "ckpt.npz"))["step"] == 2


def test_an_infinite_gradient_norm_stops_before_the_update(tmp_path, corpus, capsys,
                                                           monkeypatch):
    out, before = _stopped_run(tmp_path, corpus)
    _poison_call(monkeypatch, "clip_grad_norm_", 1, math.inf)
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "training diverged: the gradient norm became inf (loss " in err
    assert "at step 3" in err and "Traceback" not in err
    assert without_config(snapshot(out)) == without_config(before)


def test_a_non_finite_evaluation_writes_no_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    out, before = _stopped_run(tmp_path, corpus)
    _poison_call(monkeypatch, "estimate_loss", 2, math.inf)      # the val loss at step 4
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "training diverged: the evaluation at step 4 gave train loss" in err
    assert "val loss inf; no checkpoint written from it" in err and "keeps step 2" in err
    assert without_config(snapshot(out)) == without_config(before)


def test_divergence_after_a_checkpoint_in_the_same_run(tmp_path, corpus, capsys, monkeypatch):
    _poison_call(monkeypatch, "accumulate_gradients", 3, math.nan)
    out = tmp_path / "run"
    code = main(["train", "--data", corpus, "--out", str(out), "--steps", "6", "--eval-every",
                 "2", "--quiet", *TINY])
    assert code == 3
    assert "the loss became nan at step 3" in capsys.readouterr().err
    ckpt = load_checkpoint(str(out / "ckpt.npz"))
    assert ckpt["step"] == 2
    assert all(np.isfinite(w).all() for w in weights(ckpt).values())
    assert [r["step"] for r in read_metrics(str(out / "metrics.jsonl"))] == [2]


def test_non_finite_parameters_are_never_checkpointed(tmp_path, corpus, capsys, monkeypatch):
    """Even when the evaluation does not notice, a state with a NaN weight is not saved."""
    out, before = _stopped_run(tmp_path, corpus)
    real = train_module.accumulate_gradients
    calls = []

    def poison_weights(model, *args, **kw):
        loss = real(model, *args, **kw)
        calls.append(1)
        if len(calls) == 2:           # step 4: its loss and gradients are finite
            next(iter(model.parameters())).data[...] = np.nan   # and the update keeps it NaN
        return loss
    monkeypatch.setattr(train_module, "accumulate_gradients", poison_weights)
    monkeypatch.setattr(train_module, "estimate_loss", lambda *a, **k: 1.0)
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "holds NaN or Inf after step 4" in err and "ckpt.npz was not written" in err
    assert "keeps step 2" in err
    assert snapshot(out)["ckpt.npz"] == before["ckpt.npz"]


def test_a_huge_learning_rate_diverges_cleanly(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", corpus, "--out", str(out), "--steps", "30", "--eval-every",
                 "2", "--lr", "1e6", "--grad-clip", "0", "--quiet", *TINY])
    err = capsys.readouterr().err
    assert code == 3 and "training diverged" in err and "Traceback" not in err
    if (out / "ckpt.npz").exists():              # whatever was saved is a finite state
        ckpt = load_checkpoint(str(out / "ckpt.npz"))
        assert all(np.isfinite(w).all() for w in weights(ckpt).values())
        assert f"keeps step {ckpt['step']}" in err


def test_the_python_api_raises_training_diverged(tmp_path, corpus, monkeypatch):
    _poison_call(monkeypatch, "accumulate_gradients", 1, math.nan)
    cfg = TrainConfig(data=corpus, out=str(tmp_path / "run"), steps=3, batch_size=2,
                      eval_iters=1, sample_tokens=0,
                      model=dict(n_layers=1, n_heads=2, d_model=16, context_length=8))
    with pytest.raises(TrainingDiverged, match="no checkpoint was written by this run"):
        train(cfg, quiet=True)
    assert issubclass(TrainingDiverged, FloatingPointError) and TrainingDiverged.exit_code == 3
    assert not (tmp_path / "run" / "ckpt.npz").exists()


def test_train_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "3 the loss or gradient norm became NaN or infinite" in out


# ----------------------------------------------------------------- damaged checkpoints
def _bad_checkpoints(good):
    data = good.read_bytes()
    middle = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 64):
        middle[i] ^= 0xFF
    foreign = io.BytesIO()
    np.savez(foreign, weights=np.arange(4.0))
    return {
        "random": (np.random.default_rng(0).bytes(3000), "not a .npz archive"),
        "empty": (b"", "the file is empty"),
        "half": (data[:len(data) // 2], "truncated or not a tinyfw file"),
        "tail-cut": (data[:-200], "truncated or not a tinyfw file"),
        "flipped": (bytes(middle), "not a tinyfw file"),
        "foreign-npz": (foreign.getvalue(), "not a tinyfw file (no __tinyfw__ metadata)"),
    }


BAD_KINDS = ["random", "empty", "half", "tail-cut", "flipped", "foreign-npz", "tinyfw-state"]


def _write_bad(path, kind, good):
    if kind == "tinyfw-state":   # a tinyfw file, but a bare state dict, not a checkpoint
        serialization.save({"w": tensor(np.ones(3, dtype=np.float32))}, str(path))
        return "not a training checkpoint"
    content, message = _bad_checkpoints(good)[kind]
    path.write_bytes(content)
    return message


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_sample_names_a_damaged_checkpoint(good_run, tmp_path, capsys, kind):
    path = tmp_path / "ckpt.npz"
    message = _write_bad(path, kind, good_run / "ckpt.npz")
    assert main(["sample", "--ckpt", str(path), "--max-new-tokens", "3"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_resume_from_a_damaged_checkpoint_writes_nothing(good_run, tmp_path, capsys, kind):
    out = tmp_path / "run"
    shutil.copytree(good_run, out)
    message = _write_bad(out / "ckpt.npz", kind, good_run / "ckpt.npz")
    before = snapshot(out)
    assert main(["train", "--out", str(out), "--resume", "--steps", "6"]) == 1
    err = capsys.readouterr().err
    assert str(out / "ckpt.npz") in err and message in err
    assert "Traceback" not in err
    assert snapshot(out) == before


def test_sample_names_a_checkpoint_with_non_finite_weights(good_run, tmp_path, capsys):
    ckpt = load_checkpoint(str(good_run / "ckpt.npz"))
    name = sorted(ckpt["model"])[0]
    ckpt["model"][name].data[...] = np.nan
    path = tmp_path / "nan.npz"
    save_checkpoint(str(path), ckpt)
    assert main(["sample", "--ckpt", str(path), "--max-new-tokens", "3"]) == 1
    err = capsys.readouterr().err
    assert f"the checkpoint {path} holds NaN or Inf in {name}" in err
    assert "Traceback" not in err and "Probabilities" not in err


# ---------------------------------------------------------------- damaged token cache
def _damage_tokens_truncated(out):
    data = (out / "tokens.npy").read_bytes()
    (out / "tokens.npy").write_bytes(data[:len(data) - 101])
    return "truncated or corrupt"


def _damage_tokens_altered(out):
    data = bytearray((out / "tokens.npy").read_bytes())
    data[-10:] = bytes(10)             # same length, other ids (zeros)
    (out / "tokens.npy").write_bytes(bytes(data))
    return "checksum"


def _damage_tokens_random(out):
    (out / "tokens.npy").write_bytes(np.random.default_rng(1).bytes(500))
    return "not a .npy token file"


def _damage_tokens_description(out):
    (out / "tokens.json").write_text('{"n_tokens": 12, "text_sha2')
    return "tokens.json"


@pytest.mark.parametrize("damage", [_damage_tokens_truncated, _damage_tokens_altered,
                                    _damage_tokens_random, _damage_tokens_description])
def test_a_damaged_token_cache_is_rebuilt_with_a_message(corpus, tmp_path, damage):
    cfg = dict(data=corpus, steps=3, batch_size=4, eval_every=3, eval_iters=1, sample_tokens=0,
               model=dict(n_layers=1, n_heads=2, d_model=16, context_length=8))
    clean = train(TrainConfig(out=str(tmp_path / "clean"), **cfg), quiet=True)
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), **cfg), quiet=True)
    good_ids = load_tokens(out / "tokens.npy").copy()
    reason = damage(out)

    stream = io.StringIO()
    again = train(TrainConfig(out=str(out), **cfg), stream=stream)
    log = stream.getvalue()
    assert "the token cache in" in log and "is unusable" in log and reason in log
    assert "encoding the corpus again" in log
    # The run used the whole corpus, never the damaged array, and the cache is whole again.
    assert again["history"]["loss"] == clean["history"]["loss"]
    np.testing.assert_array_equal(load_tokens(out / "tokens.npy"), good_ids)
    stream = io.StringIO()
    train(TrainConfig(out=str(out), **cfg), stream=stream)
    assert "tokens (cached in" in stream.getvalue() and "unusable" not in stream.getvalue()
