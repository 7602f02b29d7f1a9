"""Smoke test of the benchmark suite (bench/): one small workload in --quick mode.

Checks the structure of what a run returns and writes, never the timings.
"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not part of the installed package

from bench import run as bench_run  # noqa: E402
from bench.backends import reference_backend, use_backend  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
QUICK = ["--quick", "--only", "W6", "--repeats", "2", "--budget", "0.2"]


def _check_row(row):
    assert row["id"] == "W6"
    assert row["unit"] == "ms"
    assert row["status"] == "ok", row
    for name in ("tinyfw", "reference"):
        assert row["value"][name] > 0
        assert row["detail"][name]["runs"] >= 2
        assert row["detail"][name]["min_ms"] <= row["value"][name] <= row["detail"][name]["max_ms"]
    assert row["ratio"]["tinyfw/reference"] == pytest.approx(
        row["value"]["tinyfw"] / row["value"]["reference"])
    assert row["metrics"]["tinyfw_gbs"] > 0


def test_quick_run_without_torch_writes_json_and_markdown(tmp_path):
    results = bench_run.run(QUICK + ["--no-torch", "--out", str(tmp_path)])
    assert results["format"] == "tinyfw-bench"
    assert results["options"]["only"] == ["W6"] and results["options"]["quick"]
    assert results["matmul_peak"]["n"] == 2048 and results["matmul_peak"]["gflops"] > 0
    assert results["machine"]["threads"] >= 1
    assert results["torch_missing"] == "disabled with --no-torch"
    (row,) = results["rows"]
    _check_row(row)
    assert "torch" not in row["value"] and "tinyfw/torch" not in row["ratio"]
    assert row["missing"]["torch"] == "disabled with --no-torch"

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["case"] == row["case"]
    assert saved["rows"][0]["value"] == pytest.approx(row["value"])
    md = (tmp_path / "results.md").read_text()
    header = "| id | case | tinyfw | NumPy ref | PyTorch | tinyfw/torch | tinyfw/ref | notes |"
    assert header in md
    assert f"| W6 | {row['case']} |" in md
    assert "GFLOP/s" in md  # the machine line quotes the matmul peak


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_quick_run_with_torch_reports_the_ratio(tmp_path):
    results = bench_run.run(QUICK + ["--out", str(tmp_path)])
    (row,) = results["rows"]
    _check_row(row)
    assert row["value"]["torch"] > 0
    assert row["ratio"]["tinyfw/torch"] == pytest.approx(
        row["value"]["tinyfw"] / row["value"]["torch"])
    assert results["machine"]["torch_threads"] == results["machine"]["threads"]


def test_reference_path_swaps_the_fused_kernels_and_restores_the_backend():
    from tinyfw.backend import backend_for
    from tinyfw.backend.reference import core
    cpu = backend_for("cpu")
    assert cpu.cross_entropy_forward is not core.cross_entropy_forward  # the Numba kernel
    with use_backend(reference_backend()):
        ref = backend_for("cpu")
        assert ref.cross_entropy_forward is core.cross_entropy_forward
        assert ref.matmul is cpu.matmul  # primitives are shared
    assert backend_for("cpu") is cpu


def test_entry_point_help_and_bad_workload(capsys):
    import tinyfw.bench
    assert tinyfw.bench.main(["--help"]) == 0
    assert "--only" in capsys.readouterr().out
    assert tinyfw.bench.main(["--only", "W42", "--no-torch"]) == 2
    assert "unknown workload" in capsys.readouterr().err
