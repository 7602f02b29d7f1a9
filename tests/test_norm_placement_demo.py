"""demos/norm_placement.py in its quick mode: every (depth, placement, norm, warm-up, seed) run
is trained and recorded, and the gradients at initialisation show the paper's asymmetry (Post-LN's
gradient next to the output is larger than Pre-LN's, more so in the deeper model)."""
import importlib.util
import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parent.parent / "demos" / "norm_placement.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("norm_placement_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("np")
    out = tmp / "norm_placement"
    assert load_demo().main(["--quick", "--out", str(out), "--work", str(tmp / "work")]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_quick_run_records_every_configuration(quick):
    out, saved = quick
    runs = {(r["depth"], r["placement"], r["norm"], r["warmup"], r["seed"])
            for r in saved["results"]}
    assert len(runs) == len(saved["results"]) == 2 * 2 * 2 * 2
    assert {r[0] for r in runs} == {1, 3} and {r[3] for r in runs} == {0, 5}
    uniform = math.log(saved["vocab_size"])
    for r in saved["results"]:
        for init_kind in ("xavier", "gpt2"):
            g = r["gradients"][init_kind]
            assert len(g["ffn"]) == len(g["block"]) == r["depth"]
            # the feed-forward weights are part of the block: their gradient is smaller
            assert all(0 < f < b for f, b in zip(g["ffn"], g["block"]))
        assert not r["diverged"] and len(r["train_losses"]) == saved["args"]["steps"]
        # every run learns: the loss starts near uniform and ends well below it
        assert abs(r["train_losses"][0] - uniform) < 1.0
        assert r["final_val_loss"] < uniform - 0.5
        assert r["evals"][-1]["step"] == saved["args"]["steps"]
    rows = saved["summary"]
    assert len(rows) == 2 * 2 * 2 * 2
    assert all(row["seeds"] == 1 and math.isfinite(row["final_val_loss"][0]) for row in rows)
    text = out.with_suffix(".md").read_text()
    assert "| Post-LN, no warm-up |" in text and "| Pre-RMS, warm-up 5 |" in text
    assert "feed-forward weights at initialisation (depth 3, init xavier" in text
    pytest.importorskip("matplotlib")
    assert out.with_suffix(".png").stat().st_size > 0


def test_post_ln_gradients_near_the_output_are_larger(quick):
    """Xiong et al.'s Theorem 1 under their initialisation: the last layer's gradient does not
    shrink with depth in Post-LN but shrinks as 1/sqrt(L) in Pre-LN."""
    _, saved = quick
    last = {}
    for r in saved["results"]:
        if r["warmup"] == 0:
            last[r["depth"], r["placement"], r["norm"]] = r["gradients"]["xavier"]["ffn"][-1]
    for norm in ("layer", "rms"):
        ratios = [last[d, "post", norm] / last[d, "pre", norm] for d in (1, 3)]
        assert ratios[0] > 1.2 and ratios[1] > ratios[0]
        assert last[3, "pre", norm] < last[1, "pre", norm]


def test_finished_runs_are_reused(quick, tmp_path):
    out, saved = quick
    work = Path(saved["args"]["work"])
    assert len(list(work.glob("*.json"))) == 16
    again = tmp_path / "again"
    assert load_demo().main(["--quick", "--out", str(again), "--work", str(work)]) == 0
    assert json.loads(again.with_suffix(".json").read_text())["results"] == saved["results"]


def test_only_finished_reports_what_is_saved(quick, tmp_path):
    _, saved = quick
    work = tmp_path / "work"
    shutil.copytree(saved["args"]["work"], work)
    (work / "d3-pre-rms-w5-s0.json").unlink()
    out = tmp_path / "partial"
    assert load_demo().main(["--quick", "--only-finished", "--out", str(out), "--work",
                             str(work)]) == 0
    partial = json.loads(out.with_suffix(".json").read_text())
    assert partial["missing"] == ["d3-pre-rms-w5-s0"]
    assert partial["results"] == [r for r in saved["results"] if not (
        r["depth"] == 3 and r["placement"] == "pre" and r["norm"] == "rms" and r["warmup"] == 5)]
    assert "**Partial grid**: 1 configuration(s)" in out.with_suffix(".md").read_text()
    # a saved run made with other settings is not reused
    with pytest.raises(SystemExit, match="no finished runs"):
        load_demo().main(["--quick", "--only-finished", "--lr", "0.1", "--out", str(out),
                          "--work", str(work)])


def test_divergence_is_recorded_not_raised():
    demo = load_demo()
    text = "abcdefgh " * 400
    ids = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) - 32
    data = types.SimpleNamespace(train_ids=ids, val_ids=ids[:400])
    args = types.SimpleNamespace(context=8, n_heads=1, d_model=8, batch_size=4, steps=30,
                                 lr=1e30, eval_every=10, eval_iters=1)
    model = demo.build(args, 96, 1, "post", "layer", 0, "xavier")
    losses, evals, diverged = demo.train_run(model, data, args, 0, 0)
    assert diverged and len(losses) < args.steps and evals[-1]["val_loss"] is None
    assert demo.max_rise([5.0] * 10 + [1.0] * 10) == 0.0
    assert demo.max_rise([1.0] * 10 + [4.0] * 20) == pytest.approx(3.0)


def test_bad_options_are_clear_errors(tmp_path, capsys):
    demo = load_demo()
    with pytest.raises(SystemExit, match=r"unknown placements \['middle'\]"):
        demo.main(["--quick", "--placements", "middle", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--corpus 'nowhere.txt'"):
        demo.main(["--corpus", "nowhere.txt", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        demo.main(["--bogus"])
    assert "--bogus" in capsys.readouterr().err
