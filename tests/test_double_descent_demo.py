"""demos/double_descent.py in its quick mode: the test error of minimum-norm random-feature
regression peaks at the interpolation threshold (features = samples), descends again beyond it,
and every model past the threshold interpolates its training data."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parent.parent / "demos" / "double_descent.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("double_descent_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("dd") / "double_descent"
    assert load_demo().main(["--quick", "--out", str(out)]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_quick_run_writes_every_sweep(quick):
    out, saved = quick
    a = saved["args"]
    n, sizes = a["samples"], a["sizes"]
    assert n in sizes and min(sizes) < n // 4 and max(sizes) >= 10 * n
    assert [level["noise"] for level in saved["results"]] == a["noise"]
    assert 0.0 in a["noise"] and max(a["noise"]) > 0
    for level in saved["results"]:
        runs = np.asarray(level["per_seed_test"])
        assert runs.shape == (a["seeds"], len(sizes)) and np.isfinite(runs).all()
        assert (runs > 0).all()
    text = out.with_suffix(".md").read_text()
    assert "**(= n)**" in text and "Label noise σ = 0.5" in text
    pytest.importorskip("matplotlib")
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize("level", [0, -1], ids=["clean", "noisy"])
def test_peak_at_the_interpolation_threshold(quick, level):
    _, saved = quick
    sizes = np.asarray(saved["args"]["sizes"])
    n = saved["args"]["samples"]
    median = np.asarray(saved["results"][level]["test"]["median"])
    at_n = median[sizes == n][0]
    # the peak of the curve is at p = n (within the dense grid's neighbours 0.9 n .. 1.1 n)
    peak = sizes[np.argmax(median)]
    assert 0.9 * n <= peak <= 1.1 * n
    # ... above the best under-parameterised model and above the largest model (second descent)
    assert at_n > 3 * median[sizes <= n // 2].min()
    assert at_n > 3 * median[-1]
    # the second descent: the error keeps falling well past the threshold
    assert median[-1] < median[sizes == 2 * n][0] < at_n


def test_interpolation_past_the_threshold(quick):
    _, saved = quick
    sizes = np.asarray(saved["args"]["sizes"])
    n = saved["args"]["samples"]
    for level in saved["results"]:
        train = np.asarray(level["train"]["median"])
        assert (train[sizes >= n] < 1e-8).all()
        assert level["checks"]["interpolates_over_threshold"]
        if level["noise"] > 0:
            # with noisy labels a small model cannot fit its training data
            assert (train[sizes <= n // 2] > 1e-3).all()


def test_bad_options_are_clear_errors(tmp_path, capsys):
    demo = load_demo()
    with pytest.raises(SystemExit):
        demo.main(["--quick", "--bogus", "--out", str(tmp_path / "r")])
    assert "--bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--quick", "--noise", "-1", "--out", str(tmp_path / "r")])
    assert "--noise must be >= 0" in capsys.readouterr().err
