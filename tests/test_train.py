"""The training loop: learning, exact resumption, checkpoints, sampling and bad input."""
import errno
import glob
import io
import math
import os
from collections import Counter

import numpy as np
import pytest

from tinyfw import serialization
from tinyfw.nn.models import LanguageModel, ModelConfig
from tinyfw.sample import encode_prompt, generate_text, load_model
from tinyfw.train import (CheckpointError, Progress, TrainConfig, load_checkpoint,
                          load_model_state, resolve_resume_config, save_checkpoint, train)

# A corpus with strong short-range structure: a model that looks at its context predicts it far
# better than the character frequencies alone.
TEXT = "".join(f"the {a} {b} sat on the mat.\n" for a in ("cat", "dog", "fox", "hen", "owl")
               for b in ("ran", "hid", "sang")) * 30

TINY_MODEL = dict(n_layers=1, n_heads=2, d_model=32, context_length=16)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint after a few steps (enough for the sampling and loading tests)."""
    base = tmp_path_factory.mktemp("trained")
    path = base / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    train(tiny_config(str(path), base / "run", steps=6, eval_every=3), quiet=True)
    return str(base / "run" / "ckpt.npz")


def tiny_config(corpus, out, **kw):
    settings = dict(data=corpus, out=str(out), steps=50, batch_size=8, lr=1e-2, min_lr=1e-3,
                    eval_every=25, eval_iters=2, sample_tokens=0, model=TINY_MODEL, seed=3)
    settings.update(kw)
    settings.setdefault("warmup", min(5, settings["steps"]))
    return TrainConfig(**settings)


def unigram_entropy(text):
    counts = np.array(list(Counter(text).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_loss_falls_below_what_character_frequencies_allow(corpus, tmp_path):
    result = train(tiny_config(corpus, tmp_path / "run"), quiet=True)
    h = result["history"]
    assert result["step"] == 50 and len(h["loss"]) == 50
    # Starts near uniform guessing, ends well below the unigram entropy (needs the context).
    vocab = len(set(TEXT))
    assert abs(h["loss"][0] - math.log(vocab)) < 0.3
    assert result["val_loss"] < 0.75 * unigram_entropy(TEXT)
    assert h["eval_step"] == [25, 50]
    assert os.path.exists(tmp_path / "run" / "ckpt.npz")
    assert os.path.exists(tmp_path / "run" / "best.npz")
    assert os.path.exists(tmp_path / "run" / "tokens.npy")


def _weights(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_resume_is_bit_identical_to_an_uninterrupted_run(corpus, tmp_path):
    # dropout > 0, so the global generator's state must be restored too; evaluations at steps
    # 4 and 8 fall on both sides of the interruption at step 6.
    kw = dict(steps=12, eval_every=4, model={**TINY_MODEL, "dropout": 0.1})
    full = train(tiny_config(corpus, tmp_path / "full", **kw), quiet=True)

    first = train(tiny_config(corpus, tmp_path / "split", **kw), stop_after=6, quiet=True)
    assert first["step"] == 6
    assert load_checkpoint(str(tmp_path / "split" / "ckpt.npz"))["step"] == 6
    split = str(tmp_path / "split")
    cfg = resolve_resume_config(os.path.join(split, "ckpt.npz"), {"out": split})
    second = train(cfg, resume=True, quiet=True)

    assert second["step"] == 12
    assert second["history"]["loss"] == full["history"]["loss"]          # every step's loss
    assert second["history"]["val_loss"] == full["history"]["val_loss"]
    a, b = _weights(full["model"]), _weights(second["model"])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # The optimizer moments continue too (compared through the saved checkpoints).
    ca = load_checkpoint(str(tmp_path / "full" / "ckpt.npz"))
    cb = load_checkpoint(str(tmp_path / "split" / "ckpt.npz"))
    for i, state in ca["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(state[name], cb["optimizer"]["state"][i][name])


def test_resume_can_lengthen_a_finished_run(corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=10, eval_every=5), quiet=True)
    cfg = resolve_resume_config(str(out / "ckpt.npz"), {"out": str(out), "steps": 15})
    result = train(cfg, resume=True, quiet=True)
    assert result["step"] == 15 and len(result["history"]["loss"]) == 15


def test_sampling_is_deterministic_under_a_seed(trained):
    model, tok = load_model(trained)
    a = generate_text(model, tok, "the ", 40, temperature=1.0, seed=7)
    b = generate_text(model, tok, "the ", 40, temperature=1.0, seed=7)
    c = generate_text(model, tok, "the ", 40, temperature=1.0, seed=8)
    assert a == b and a.startswith("the ") and len(a) == 44
    assert a != c
    greedy = generate_text(model, tok, "the ", 10, temperature=0.0)
    assert greedy == generate_text(model, tok, "the ", 10, temperature=0.0, seed=99)


def test_prompt_longer_than_the_context_is_cropped_from_the_left(trained):
    model, tok = load_model(trained)
    prompt = TEXT[:100]                      # the context is 16 characters
    out = generate_text(model, tok, prompt, 5, seed=1)
    assert out.startswith(prompt) and len(out) == 105
    # Only the last 16 tokens matter: the same tail gives the same continuation.
    other = TEXT[60:100]
    assert generate_text(model, tok, other, 5, seed=1)[-5:] == out[-5:]


def test_prompt_with_unknown_characters_is_rejected(trained):
    model, tok = load_model(trained)
    with pytest.raises(ValueError, match="prompt.*'Z'"):
        generate_text(model, tok, "the Zebra", 5)
    assert encode_prompt(tok, "") == tok.encode("\n")


def test_checkpoint_from_another_configuration_is_refused(trained):
    ckpt = load_checkpoint(trained)
    other = LanguageModel(ModelConfig(vocab_size=len(set(TEXT)), **{**TINY_MODEL, "d_model": 16}))
    with pytest.raises(ValueError, match="d_model: checkpoint 32, requested 16"):
        load_model_state(other, ckpt)
    with pytest.raises(ValueError, match="n_layers: checkpoint 1, requested 2"):
        resolve_resume_config(trained, {"model": {"n_layers": 2}})
    # Asking for the same values as the checkpoint is fine.
    cfg = resolve_resume_config(trained, {"model": {"n_layers": 1}, "steps": 9})
    assert cfg.steps == 9 and cfg.model["d_model"] == 32


def _failing_savez(file, **arrays):
    """Write part of the archive, then fail as a full disk does."""
    file.write(b"PK\x03\x04 half an archive")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=4, eval_every=2), quiet=True)
    path = str(out / "ckpt.npz")
    before = load_checkpoint(path)
    assert before["step"] == 4

    monkeypatch.setattr(serialization.np, "savez", _failing_savez)
    with pytest.raises(CheckpointError, match="No space left on device.*unchanged"):
        save_checkpoint(path, {"model": {}, "model_config": {}, "tokenizer": "", "step": 99})
    # Training that cannot save stops with the same clear error ...
    cfg = resolve_resume_config(path, {"out": str(out), "steps": 8})
    with pytest.raises(CheckpointError, match="could not write the checkpoint"):
        train(cfg, resume=True, quiet=True)
    monkeypatch.undo()
    # ... and the previous checkpoint is intact, with no temporary files left behind.
    after = load_checkpoint(path)
    assert after["step"] == 4
    for k, v in before["model"].items():
        np.testing.assert_array_equal(v.numpy(), after["model"][k].numpy())
    assert not glob.glob(str(out / ".tmp-*"))


@pytest.mark.parametrize("content, error, match", [
    (b"", ValueError, "empty"),
    (b"caf\xe9 au lait " * 50, ValueError, "not valid UTF-8"),
    (b"too short", ValueError, "needs at least context \\+ 1"),
])
def test_bad_corpora_are_rejected_clearly(tmp_path, content, error, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(error, match=match):
        train(tiny_config(str(path), tmp_path / "run"), quiet=True)


def test_missing_corpus_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        train(tiny_config(str(tmp_path / "nope.txt"), tmp_path / "run"), quiet=True)


def test_encoded_corpus_is_cached(corpus, tmp_path):
    stream = io.StringIO()
    train(tiny_config(corpus, tmp_path / "run", steps=1), stream=stream)
    assert "cached in" in stream.getvalue() and "tokens (cached" not in stream.getvalue()
    stream = io.StringIO()
    train(tiny_config(corpus, tmp_path / "run", steps=1), stream=stream)
    assert "tokens (cached in" in stream.getvalue()


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="warmup=20 must be <= steps=10"):
        TrainConfig(steps=10, warmup=20)
    with pytest.raises(ValueError, match="unknown fields \\['widht'\\]"):
        TrainConfig(model={"widht": 3})
    with pytest.raises(ValueError, match="tokenizer='chars'"):
        TrainConfig(tokenizer="chars")


def test_progress_line_rewrites_itself_on_a_terminal():
    tty = io.StringIO()
    p = Progress(tty, total_steps=3, every=1, tty=True)
    for step in (1, 2, 3):
        p.update(step, 1.0, 1e-3, 100.0, 1.0, force=True)
    p.close()
    assert tty.getvalue().count("\r") >= 3 and tty.getvalue().count("\n") == 1
    plain = io.StringIO()
    p = Progress(plain, total_steps=4, every=2, tty=False)
    for step in (1, 2, 3, 4):
        p.update(step, 1.0, 1e-3, 100.0, 1.0)
    assert "\r" not in plain.getvalue() and plain.getvalue().count("\n") == 2
    assert "tok/s" in plain.getvalue() and "ETA" in plain.getvalue()


def test_loss_curve_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from tinyfw.plots import plot_loss_curve
    history = {"step": list(range(1, 101)), "loss": list(np.linspace(4, 2, 100)),
               "eval_step": [50, 100], "eval_train_loss": [3.0, 2.0], "val_loss": [3.1, 2.1]}
    path = plot_loss_curve(history, str(tmp_path / "loss.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plotting_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    import sys
    from tinyfw.plots import plot_loss_curve
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_loss_curve({"step": [1], "loss": [1.0]}, str(tmp_path / "loss.png"))


def test_attention_map(trained, tmp_path):
    from tinyfw.plots import attention_probabilities, plot_attention_map
    from tinyfw.tensor import tensor
    model, tok = load_model(trained)
    ids = tok.encode("the cat sat")
    probs = attention_probabilities(model, tensor(np.array([ids])), layer=0)
    T = len(ids)
    assert probs.shape == (TINY_MODEL["n_heads"], T, T)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(probs, k=1) == 0)            # causal: nothing from the future
    with pytest.raises(ValueError, match="layer 3 out of range"):
        attention_probabilities(model, tensor(np.array([ids])), layer=3)
    pytest.importorskip("matplotlib")
    path = plot_attention_map(model, tok, "the cat sat", str(tmp_path / "attn.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


class _InterruptingStream(io.StringIO):
    """Sends the process a Ctrl-C (SIGINT) when the progress line of step 3 is written."""

    def write(self, text):
        if text.split()[:2] == ["step", "3/10"]:
            import signal
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


def test_ctrl_c_stops_after_the_step_and_writes_a_checkpoint(corpus, tmp_path):
    import signal
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else in this process")
    out = tmp_path / "run"
    stream = _InterruptingStream()
    result = train(tiny_config(corpus, out, steps=10, log_every=1), stream=stream)
    assert result["step"] == 3
    assert "stopping after this step" in stream.getvalue()
    assert "continue with: tinyfw train --resume" in stream.getvalue()
    assert load_checkpoint(str(out / "ckpt.npz"))["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_resume_on_a_different_corpus_warns(corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=4, eval_every=2), stop_after=2, quiet=True)
    other = tmp_path / "other.txt"
    other.write_text(TEXT[::-1], encoding="utf-8")   # same characters, different text
    cfg = resolve_resume_config(str(out / "ckpt.npz"), {"out": str(out), "data": str(other)})
    stream = io.StringIO()
    assert train(cfg, resume=True, stream=stream)["step"] == 4
    assert "differs from the one the checkpoint was trained on" in stream.getvalue()


@pytest.mark.parametrize("kind, extra", [("word", {}), ("bpe", {"vocab_size": 300})])
def test_word_and_bpe_tokenizers_train_and_sample(corpus, tmp_path, kind, extra):
    result = train(tiny_config(corpus, tmp_path / kind, steps=3, eval_every=3, tokenizer=kind,
                               sample_tokens=5, **extra), quiet=True)
    assert result["tokenizer"].kind == kind and isinstance(result["sample"], str)
    model, tok = load_model(str(tmp_path / kind / "ckpt.npz"))
    assert tok.to_dict() == result["tokenizer"].to_dict()
