"""``tinyfw train --model {transformer,safu} --init {random,cipher,cooc,explicit}``: every model
kind and warm start end to end, metrics.jsonl, SAFU sampling and exact resumption, the data
flags (--val-data, --train-fraction, --patience) and their bad inputs."""
import json
import math
import os

import numpy as np
import pytest

from tinyfw.checkpoint import load_checkpoint
from tinyfw.cli import main
from tinyfw.train import TrainConfig, read_metrics, train

TEXT = "".join(f"the {a} {w} sees a {b} {w}.\n" for w in ("cat", "dog", "bird", "fish")
               for a, b in (("big", "small"), ("red", "blue"))) * 30

TRANSFORMER = ["--n-layers", "1", "--n-heads", "2", "--d-model", "16"]
SAFU = ["--d-in", "18", "--block", "3", "--radial", "2"]
COMMON = ["--context", "8", "--batch-size", "4", "--eval-iters", "1", "--sample-tokens", "0",
          "--quiet"]
METRIC_KEYS = {"step", "tokens", "elapsed_s", "lr", "train_loss", "val_loss", "val_ppl"}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def model_flags(kind):
    return ["--model", kind, *(TRANSFORMER if kind == "transformer" else SAFU)]


def snapshot(folder):
    """{name: bytes} of every file in a folder (to check that nothing was changed)."""
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


# ------------------------------------------------------------------------ every (model, init)
@pytest.mark.parametrize("kind", ["transformer", "safu"])
@pytest.mark.parametrize("init", ["random", "cipher", "cooc", "explicit"])
def test_every_model_and_init_trains_from_the_command_line(tmp_path, corpus, kind, init):
    out = tmp_path / "run"
    code = main(["train", "--data", corpus, "--out", str(out), "--steps", "4", "--eval-every",
                 "2", "--init", init, *model_flags(kind), *COMMON])
    assert code == 0
    ckpt = load_checkpoint(str(out / "ckpt.npz"))
    assert ckpt["model_kind"] == kind and ckpt["init"] == init and ckpt["step"] == 4
    assert ckpt["init_report"]["method"] == init
    records = read_metrics(out / "metrics.jsonl")
    # a warm start is evaluated before the first step as well
    assert [r["step"] for r in records] == ([0] if init != "random" else []) + [2, 4]
    for r in records:
        assert METRIC_KEYS <= set(r) and r["model"] == kind and r["init"] == init
        assert r["tokens"] == r["step"] * 4 * 8
        assert math.isclose(r["val_ppl"], math.exp(r["val_loss"]), rel_tol=1e-9)


def test_the_warm_start_changes_the_starting_point(tmp_path, corpus):
    """Each warm start of the SAFU model begins from a different (deterministic) model than
    the random one, and the explicit solution begins far below the uniform loss log(V)."""
    losses = {}
    for init in ("cipher", "explicit"):
        cfg = TrainConfig(data=corpus, out=str(tmp_path / init), model_kind="safu", init=init,
                          model={"d_in": 12, "block": 3, "radial": 2, "context_length": 8},
                          steps=1, eval_iters=2, batch_size=4, sample_tokens=0)
        result = train(cfg, quiet=True)
        losses[init] = result["history"]["val_loss"][0]
        vocab = result["tokenizer"].vocab_size
    assert losses["explicit"] < 0.6 * math.log(vocab)
    assert losses["explicit"] < losses["cipher"]


@pytest.mark.parametrize("tokenizer, extra", [("word", []), ("bpe", ["--vocab-size", "270"])])
@pytest.mark.parametrize("kind", ["transformer", "safu"])
def test_explicit_warm_start_with_every_tokenizer(tmp_path, corpus, tokenizer, extra, kind):
    out = tmp_path / "run"
    code = main(["train", "--data", corpus, "--out", str(out), "--steps", "2", "--eval-every",
                 "2", "--init", "explicit", "--tokenizer", tokenizer, *extra, *model_flags(kind),
                 *COMMON])
    assert code == 0
    assert load_checkpoint(str(out / "ckpt.npz"))["init"] == "explicit"


def test_warm_start_progress_is_shown(tmp_path, corpus, capsys):
    main(["train", "--data", corpus, "--out", str(tmp_path / "run"), "--steps", "2",
          "--eval-every", "2", "--init", "explicit", *model_flags("safu"),
          *[a for a in COMMON if a != "--quiet"]])
    out = capsys.readouterr().out
    assert "warm start: counting" in out and "warm start: solving" in out
    assert " s (training loss " in out


def test_safu_width_grows_to_hold_the_vocabulary(tmp_path, corpus):
    """d_in too small for the codes of the vocabulary grows, with a warning (the spec)."""
    cfg = TrainConfig(data=corpus, out=str(tmp_path / "run"), model_kind="safu", init="cipher",
                      model={"d_in": 3, "block": 2, "radial": 1, "context_length": 8}, steps=1,
                      eval_iters=1, batch_size=2, sample_tokens=0)
    with pytest.warns(UserWarning, match="bits"):
        result = train(cfg, quiet=True)
    assert result["model"].d_in > 3
    strict = TrainConfig(**{**cfg.to_dict(), "init_options": {"strict": True}})
    with pytest.raises(ValueError, match="bits"):
        train(strict, quiet=True)


# ------------------------------------------------------------------------------- metrics
def test_metrics_lines_are_written_as_the_run_goes(tmp_path, corpus, monkeypatch):
    """A crash after an evaluation loses nothing already measured."""
    import tinyfw.train as T
    calls = {"n": 0}
    original = T.estimate_loss

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:                       # the third evaluation (two calls each) fails
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(T, "estimate_loss", failing)
    cfg = TrainConfig(data=corpus, out=str(tmp_path / "run"), steps=6, eval_every=2,
                      eval_iters=1, batch_size=2, sample_tokens=0,
                      model={"n_layers": 1, "n_heads": 2, "d_model": 8, "context_length": 8})
    with pytest.raises(RuntimeError, match="simulated"):
        train(cfg, quiet=True)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [2, 4]


# ---------------------------------------------------------------------- SAFU sample, resume
def test_safu_checkpoint_samples_from_the_command_line(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", corpus, "--out", str(out), "--steps", "2", "--init",
                 "explicit", *model_flags("safu"), *COMMON]) == 0
    capsys.readouterr()
    # a prompt longer than the training window: the SAFU model reads all of it, no note
    prompt = "the big cat sees a small cat. " * 3
    assert main(["sample", "--ckpt", str(out / "ckpt.npz"), "--prompt", prompt,
                 "--max-new-tokens", "20", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(prompt) and len(captured.out) > len(prompt)
    assert "the model sees only" not in captured.err
    main(["sample", "--ckpt", str(out / "ckpt.npz"), "--prompt", prompt, "--max-new-tokens",
          "20", "--seed", "3"])
    assert capsys.readouterr().out == captured.out          # the same seed, the same text


def test_safu_resume_continues_exactly(tmp_path, corpus):
    args = ["train", "--data", corpus, "--steps", "8", "--eval-every", "2", "--init", "explicit",
            *model_flags("safu"), *COMMON]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--stop-after", "4"]) == 0
    assert load_checkpoint(str(tmp_path / "split" / "ckpt.npz"))["step"] == 4
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--quiet"]) == 0
    a = load_checkpoint(str(tmp_path / "straight" / "ckpt.npz"))
    b = load_checkpoint(str(tmp_path / "split" / "ckpt.npz"))
    assert a["step"] == b["step"] == 8
    for name, value in a["model"].items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(b["model"][name]), err_msg=name)
    ma = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    mb = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in mb] == [0, 2, 4, 6, 8]
    assert [r["val_loss"] for r in ma] == [r["val_loss"] for r in mb]


def test_resume_drops_metric_lines_past_the_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    base = ["train", "--data", corpus, "--out", str(out), "--steps", "6", "--eval-every", "2",
            *model_flags("safu"), *COMMON]
    assert main([*base, "--stop-after", "2"]) == 0
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:   # a step the checkpoint lost
        f.write(json.dumps({"step": 4, "val_loss": 0.0}) + "\n" + '{"step": 6, "val_')
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == [2, 4, 6] and read_metrics(out / "metrics.jsonl")[1]["val_loss"] > 0


def test_resume_refuses_another_model_kind_or_init(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", corpus, "--out", str(out), "--steps", "4", "--stop-after",
                 "2", *model_flags("safu"), *COMMON]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--model", "transformer"]) == 1
    assert "holds a safu model" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--init", "explicit"]) == 1
    assert "--init random" in capsys.readouterr().err


# ------------------------------------------------------------------------------ data flags
def test_train_fraction_keeps_the_first_part_and_the_same_validation(tmp_path, corpus):
    def run(fraction):
        cfg = TrainConfig(data=corpus, out=str(tmp_path / str(fraction)), steps=1, eval_iters=1,
                          batch_size=2, sample_tokens=0, train_fraction=fraction,
                          model={"n_layers": 1, "n_heads": 2, "d_model": 8,
                                 "context_length": 8})
        train(cfg, quiet=True)
        return load_checkpoint(str(tmp_path / str(fraction) / "ckpt.npz"))["data"]

    full, part = run(1.0), run(0.25)
    assert part["train_tokens"] == int(full["train_tokens"] * 0.25)
    assert part["val_tokens"] == full["val_tokens"]


def test_val_data_is_a_separate_file(tmp_path, corpus):
    val = tmp_path / "val.txt"
    val.write_text("the red dog sees a blue bird.\n" * 4, encoding="utf-8")
    cfg = TrainConfig(data=corpus, val_data=str(val), out=str(tmp_path / "run"), steps=1,
                      eval_iters=1, batch_size=2, sample_tokens=0,
                      model={"n_layers": 1, "n_heads": 2, "d_model": 8, "context_length": 8})
    train(cfg, quiet=True)
    data = load_checkpoint(str(tmp_path / "run" / "ckpt.npz"))["data"]
    assert data["val_tokens"] == len(val.read_text())           # char tokens
    assert data["train_tokens"] == len(TEXT)                    # all of the corpus trains


def test_patience_stops_early_and_keeps_the_best(tmp_path, corpus):
    cfg = TrainConfig(data=corpus, out=str(tmp_path / "run"), steps=200, eval_every=1,
                      eval_iters=1, batch_size=2, sample_tokens=0, patience=1, lr=0.5,
                      warmup=0, grad_clip=0.0, model={"n_layers": 1, "n_heads": 2,
                                                      "d_model": 8, "context_length": 8})
    result = train(cfg, quiet=True)
    assert result["early_stopped"] and result["step"] < 200
    val = result["history"]["val_loss"]
    assert val[-1] >= min(val[:-1])                     # the last evaluation did not improve
    best = load_checkpoint(str(tmp_path / "run" / "best.npz"))
    assert best["step"] == result["best_step"] and best["best_val_loss"] == min(val)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("flags, message", [
    (["--train-fraction", "0"], "--train-fraction: expected a number in (0, 1], got 0.0"),
    (["--train-fraction", "1.5"], "--train-fraction: expected a number in (0, 1], got 1.5"),
    (["--train-fraction", "nan"], "--train-fraction: expected a number in (0, 1], got nan"),
    (["--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
])
def test_bad_numbers_are_usage_errors(tmp_path, corpus, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", corpus, "--out", str(tmp_path / "run"), *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--model", "safu", "--n-heads", "2"], "--n-heads applies only to --model transformer"),
    (["--model", "safu", "--postnorm"], "--prenorm/--postnorm applies only to --model transformer"),
    (["--block", "3"], "--block applies only to --model safu"),
    (["--no-document"], "--no-document applies only to --model safu"),
])
def test_flags_of_the_other_model_kind_are_errors(tmp_path, corpus, capsys, flags, message):
    assert main(["train", "--data", corpus, "--out", str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_config_file_settings_of_the_other_kind_are_errors(tmp_path, corpus, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model_kind": "safu", "model": {"n_heads": 2}}))
    assert main(["train", "--data", corpus, "--out", str(tmp_path / "run"), "--config",
                 str(config)]) == 1
    assert "['n_heads'] apply only to the transformer model" in capsys.readouterr().err


@pytest.mark.parametrize("val_text, message", [
    (None, "--val-data {path}: read_text: no such file"),
    ("", "--val-data {path}: read_text: '{path}' is empty"),
    ("short", "--val-data {path} has 5 tokens, fewer than context + 1 = 9"),
    ("unseen \u00e9 characters" * 5, "--val-data {path} cannot be encoded"),
])
def test_bad_val_data_fails_before_anything_is_written(tmp_path, corpus, capsys, val_text,
                                                       message):
    out = tmp_path / "run"
    assert main(["train", "--data", corpus, "--out", str(out), "--steps", "2", "--tokenizer",
                 "word", *model_flags("transformer"), *COMMON]) == 0
    before = snapshot(out)
    path = tmp_path / "val.txt"
    if val_text is not None:
        path.write_text(val_text, encoding="utf-8")
    capsys.readouterr()
    # another tokenizer: the cached encoding in OUT would be rewritten if the run went ahead
    assert main(["train", "--data", corpus, "--out", str(out), "--val-data", str(path),
                 "--tokenizer", "char", "--steps", "2", *COMMON]) == 1
    assert message.format(path=path) in capsys.readouterr().err
    assert snapshot(out) == before


def test_explicit_with_tied_weights_is_an_error_naming_both_flags(tmp_path, corpus, capsys):
    assert main(["train", "--data", corpus, "--out", str(tmp_path / "run"), "--init",
                 "explicit", "--tie-weights"]) == 1
    err = capsys.readouterr().err
    assert "--init explicit" in err and "--tie-weights" in err
    assert not (tmp_path / "run").exists()


def test_train_fraction_too_small_for_one_window(tmp_path, corpus, capsys):
    assert main(["train", "--data", corpus, "--out", str(tmp_path / "run"), "--train-fraction",
                 "0.001", *COMMON]) == 1
    assert "--train-fraction 0.001 keeps" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_word_vocabulary_cap(tmp_path, corpus):
    """--vocab-size with the word tokenizer keeps the most frequent words and <unk>."""
    from tinyfw.data import WordTokenizer
    tok = WordTokenizer.train(TEXT, max_size=7)      # " ", then "\n . a sees the" (8 each)
    assert tok.vocab_size == 7 and tok.tokens[0] == "<unk>" and tok.tokens[1] == " "
    assert tok.decode(tok.encode("the zebra")) == "the <unk>"
    with pytest.raises(ValueError, match="max_size must be None or an int >= 2"):
        WordTokenizer.train(TEXT, max_size=1)
    cfg = TrainConfig(data=corpus, out=str(tmp_path / "run"), tokenizer="word", vocab_size=8,
                      steps=1, eval_iters=1, batch_size=2, sample_tokens=0, model_kind="safu",
                      model={"context_length": 8, "block": 2, "radial": 1})
    assert train(cfg, quiet=True)["tokenizer"].vocab_size == 8
