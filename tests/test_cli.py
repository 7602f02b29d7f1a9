"""The command line (``tinyfw.cli.main``): train, sample, bench, and its error messages."""
import json
import os
import subprocess
import sys

import pytest

from tinyfw.cli import main
from tinyfw.nn.models import LanguageModel
from tinyfw.train import load_checkpoint

TEXT = "".join(f"a {w} is a {w}.\n" for w in ("cat", "dog", "bird", "fish")) * 60

TINY = ["--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context", "8",
        "--batch-size", "4", "--eval-iters", "1", "--sample-tokens", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A directory holding a short finished CLI training run."""
    base = tmp_path_factory.mktemp("cli")
    path = base / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    out = base / "run"
    code = main(["train", "--data", str(path), "--out", str(out), "--steps", "6",
                 "--eval-every", "3", "--quiet", *TINY])
    assert code == 0
    return out


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "bench"):
        assert command in out


def test_python_dash_m_tinyfw_runs():
    proc = subprocess.run([sys.executable, "-m", "tinyfw", "--help"], capture_output=True,
                          text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0 and "sample" in proc.stdout


def test_train_writes_checkpoints_and_reports(run_dir):
    for name in ("ckpt.npz", "best.npz", "config.json", "tokenizer.json", "tokens.npy"):
        assert (run_dir / name).exists(), name
    ckpt = load_checkpoint(str(run_dir / "ckpt.npz"))
    assert ckpt["step"] == 6
    assert ckpt["model_config"]["d_model"] == 16 and ckpt["model_config"]["context_length"] == 8
    assert len(ckpt["history"]["val_loss"]) == 2


def test_train_prints_progress_and_a_sample(corpus, tmp_path, capsys):
    args = ["train", "--data", corpus, "--out", str(tmp_path / "r"), "--steps", "4",
            "--eval-every", "2", *TINY[:-2], "--sample-tokens", "20", "--log-every", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "step 2/4" in out and "tok/s" in out and "ETA" in out
    assert "val loss" in out and "sample:" in out


def test_sample_is_reproducible_with_a_seed(run_dir, capsys):
    args = ["sample", "--ckpt", str(run_dir / "ckpt.npz"), "--prompt", "a cat",
            "--max-new-tokens", "15", "--seed", "5", "--top-k", "5"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("a cat") and len(first.rstrip("\n")) >= len("a cat") + 15 - 1


def test_sample_top_p(run_dir, capsys):
    base = ["sample", "--ckpt", str(run_dir / "ckpt.npz"), "--prompt", "a cat",
            "--max-new-tokens", "15"]
    # A nucleus smaller than any probability holds the most likely token alone: greedy.
    assert main([*base, "--top-p", "1e-9", "--seed", "3"]) == 0
    tiny_nucleus = capsys.readouterr().out
    assert main([*base, "--temperature", "0"]) == 0
    assert capsys.readouterr().out == tiny_nucleus
    assert main([*base, "--top-p", "0.9", "--top-k", "5", "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert main([*base, "--top-p", "0.9", "--top-k", "5", "--seed", "4"]) == 0
    assert capsys.readouterr().out == first and first.startswith("a cat")


def test_sample_notes_a_prompt_longer_than_the_context(run_dir, capsys):
    args = ["sample", "--ckpt", str(run_dir / "ckpt.npz"), "--prompt", TEXT[:30],
            "--max-new-tokens", "3", "--seed", "1"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "the model sees only the last 8" in captured.err
    assert captured.out.startswith(TEXT[:30])


def test_sample_rejects_unknown_prompt_characters(run_dir, capsys):
    code = main(["sample", "--ckpt", str(run_dir / "ckpt.npz"), "--prompt", "a Zebra"])
    assert code == 1
    assert "'Z'" in capsys.readouterr().err


def test_sample_without_checkpoint(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "none.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_config_file_and_flags(corpus, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"steps": 3, "n_layers": 1, "d_model": 16, "n_heads": 4,
                                  "model": {"context_length": 8}, "eval_every": 3}))
    out = tmp_path / "r"
    # --n-heads on the command line overrides the file's n_heads.
    assert main(["train", "--config", str(config), "--data", corpus, "--out", str(out),
                 "--n-heads", "2", "--batch-size", "2", "--eval-iters", "1",
                 "--sample-tokens", "0", "--quiet"]) == 0
    ckpt = load_checkpoint(str(out / "ckpt.npz"))
    assert ckpt["step"] == 3
    assert ckpt["model_config"]["n_heads"] == 2 and ckpt["model_config"]["context_length"] == 8


def test_bad_config_file(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"stpes": 3}))
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown setting 'stpes'" in capsys.readouterr().err


def test_resume_continues_and_refuses_a_different_model(run_dir, tmp_path, capsys):
    code = main(["train", "--out", str(run_dir), "--resume", "--d-model", "32"])
    assert code == 1
    err = capsys.readouterr().err
    assert "different model configuration" in err and "d_model: checkpoint 16, requested 32" in err
    # Continuing to 8 steps from the finished 6-step run.
    assert main(["train", "--out", str(run_dir), "--resume", "--steps", "8", "--quiet"]) == 0
    assert load_checkpoint(str(run_dir / "ckpt.npz"))["step"] == 8


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\xff\xfe not utf-8 " * 20, "not valid UTF-8"),
])
def test_train_rejects_bad_corpora(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r"), *TINY]) == 1
    assert message in capsys.readouterr().err


def test_train_rejects_a_missing_corpus(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.txt"), "--out",
                 str(tmp_path / "r")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_bad_flag_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--steps", "0"])
    assert e.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_bench_absent_says_so(monkeypatch, capsys):
    for name in ("tinyfw.bench", "bench", "bench.run"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    assert main(["bench"]) == 2
    assert "benchmark suite is not available" in capsys.readouterr().err


def test_bench_is_dispatched_lazily(monkeypatch):
    import types
    seen = []
    fake = types.ModuleType("tinyfw.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "tinyfw.bench", fake)
    assert main(["bench", "--quick", "matmul"]) == 0
    assert seen == [["--quick", "matmul"]]
