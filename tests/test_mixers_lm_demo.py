"""The mixers language-modelling demo (demos/mixers_lm.py): its --quick mode end to end in a
temporary folder (outputs, matched parameter counts, losses that fall), the parameter matching
at the default sizes, the missing-corpus message, bad options, and the committed results."""
import importlib.util
import json
import os

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("mixers_lm_demo",
                                               os.path.join(_ROOT, "demos", "mixers_lm.py"))
mixers_lm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mixers_lm)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixers_lm")
    mixers_lm.main(["--quick", "--out", str(folder / "m"), "--work", str(folder / "work")])
    with open(folder / "m_builtin.json", encoding="utf-8") as f:
        return folder, json.load(f)


def test_quick_run_writes_json_markdown_and_plot(quick):
    folder, report = quick
    assert report["corpus"] == "builtin" and report["settings"]["quick"] is True
    md = (folder / "m_builtin.md").read_text(encoding="utf-8")
    for mixer in mixers_lm.MIXERS:
        assert f"| {mixer} (" in md
    assert "## The paper's ordering, checked here" in md
    pytest.importorskip("matplotlib")
    assert (folder / "m_builtin.png").read_bytes()[:4] == b"\x89PNG"


def test_quick_run_trains_every_mixer_at_matched_size(quick):
    _, report = quick
    runs = report["runs"]
    assert sorted(r["mixer"] for r in runs) == sorted(mixers_lm.MIXERS)
    softmax = next(r["parameters"] for r in runs if r["mixer"] == "softmax")
    for r in runs:
        assert abs(r["parameters"] / softmax - 1) <= 0.05, r["mixer"]
        steps = [s for s, _ in r["curve"]]
        assert steps[0] == 0 and steps[-1] == r["steps"] == 20
        # from about ln(vocab) = 4.6 nats at the start: 20 steps must take a real bite
        assert r["curve"][-1][1] < r["curve"][0][1] - 0.3, r["mixer"]
    assert {v["claim"] for v in report["verdicts"]} == {c for c, _ in mixers_lm.CLAIMS}


def test_finished_runs_are_reused(quick, capsys):
    folder, report = quick
    mixers_lm.main(["--quick", "--mixers", "softmax", "safu", "--out", str(folder / "again"),
                    "--work", str(folder / "work")])
    with open(folder / "again_builtin.json", encoding="utf-8") as f:
        again = json.load(f)
    first = {r["mixer"]: r for r in report["runs"]}
    for r in again["runs"]:
        assert r == first[r["mixer"]]


@pytest.mark.parametrize("positional", ["learned", "none"])
@pytest.mark.parametrize("vocab_size", [65, 103])
def test_default_sizes_match_within_five_percent(positional, vocab_size):
    args = mixers_lm.parse_args([])
    target = None
    for mixer in mixers_lm.MIXERS:
        settings, n, target = mixers_lm.matched_settings(args, mixer, positional, vocab_size)
        assert abs(n / target - 1) <= mixers_lm.MATCH_TOLERANCE, (mixer, n, target)
        assert settings["positional"] == positional
    assert target == mixers_lm.count_parameters(
        mixers_lm.base_settings(args, "softmax", positional), vocab_size)


def test_missing_shakespeare_is_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mixers_lm, "shared_data_path", lambda name: None)
    out = mixers_lm.main(["--quick", "--corpus", "shakespeare", "--out", str(tmp_path / "m")])
    assert out == {}
    assert "tinyshakespeare.txt is not there" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, named", [
    (["--steps", "0"], "--steps 0"), (["--mixers", "gru"], "'gru'"), (["--lr", "nan"], "--lr nan"),
    (["--d-model", "30", "--n-heads", "4"], "--d-model 30"), (["--corpus", "wiki"], "'wiki'"),
    (["--frobnicate"], "--frobnicate")])
def test_bad_options_are_usage_errors(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        mixers_lm.parse_args(argv)
    assert e.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("corpus", ["builtin", "shakespeare"])
def test_committed_results_cover_the_grid(corpus):
    path = os.path.join(_ROOT, "demos", "results", f"mixers_lm_{corpus}.json")
    if not os.path.exists(path):
        pytest.skip(f"{path} not committed")
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    assert report["settings"]["quick"] is False
    cells = {(r["mixer"], r["positional"]) for r in report["summary"]}
    assert cells == {(m, p) for m in mixers_lm.MIXERS for p in mixers_lm.POSITIONAL}
    for row in report["summary"]:
        assert len(row["seeds"]) == 3
        assert row["curve_mean"][-1] < row["curve_mean"][0] - 1.0
