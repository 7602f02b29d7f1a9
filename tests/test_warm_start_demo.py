"""demos/warm_start.py in its quick mode: the comparison runs through tinyfw.train and writes
its JSON, Markdown and plot with every (model, init, size, seed) run."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "demos" / "warm_start.py"
TEXT = "".join(f"the {a} {w} sees a {b} {w} .\n" for w in ("cat", "dog", "bird", "fish", "cow")
               for a, b in (("big", "small"), ("red", "blue"), ("old", "new"))) * 40


def load_demo():
    spec = importlib.util.spec_from_file_location("warm_start_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_comparison_writes_every_run(tmp_path):
    demo = load_demo()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "result"
    assert demo.main(["--quick", "--corpus", str(corpus), "--out", str(out), "--work",
                      str(tmp_path / "work")]) == 0
    saved = json.loads((tmp_path / "result.json").read_text())
    runs = {(r["model"], r["init"], r["fraction"], r["seed"]) for r in saved["results"]}
    assert len(runs) == len(saved["results"]) == 2 * 4 * 2 * 2
    for r in saved["results"]:
        assert r["metrics"][0]["step"] == 0 and r["metrics"][-1]["step"] == 10
    # the same validation tokens at every size; fewer training tokens at the smaller one
    tokens = {r["fraction"]: r["train_tokens"] for r in saved["results"]}
    assert tokens[0.05] < tokens[0.2]
    # the two models have the same parameter budget (within 10%)
    params = {r["model"]: r["parameters"] for r in saved["results"]}
    assert abs(params["transformer"] / params["safu"] - 1) <= 0.1
    rows = saved["summary"]
    assert len(rows) == 2 * 4 * 2 and all(row["seeds"] == 2 for row in rows)
    for row in rows:
        mean, spread = row["best_ppl"]
        assert math.isfinite(mean) and spread >= 0
    text = (tmp_path / "result.md").read_text()
    assert "best validation perplexity (mean ± spread over seeds)" in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / "result.png").stat().st_size > 0


def test_finished_runs_are_reused(tmp_path, capsys):
    demo = load_demo()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    args = ["--quick", "--corpus", str(corpus), "--out", str(tmp_path / "r"), "--work",
            str(tmp_path / "work"), "--models", "safu", "--inits", "explicit"]
    demo.main(args)
    first = json.loads((tmp_path / "r.json").read_text())["results"]
    demo.main(args)
    assert json.loads((tmp_path / "r.json").read_text())["results"] == first


def test_unknown_names_are_errors(tmp_path, capsys):
    demo = load_demo()
    assert demo.main(["--quick", "--inits", "magic", "--out", str(tmp_path / "r")]) == 2
    assert "unknown models or inits ['magic']" in capsys.readouterr().err
