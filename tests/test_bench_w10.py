"""Smoke test of bench W10 (SAFU scaling) in --quick mode: the rows, their growth figures and the
alternating W2 pair are there. Checks the structure of what a run returns, never the timings."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not part of the installed package

from bench.workloads import Context, w10  # noqa: E402


def test_w10_quick_run():
    ctx = Context(quick=True, repeats=2, budget_s=0.2)
    ctx.torch_reason = "disabled"
    rows = w10(ctx)
    assert ctx.rows["W10"] == rows
    assert [r["id"] for r in rows] == ["W10"] * 7
    pair, scaling = rows[0], rows[1:]
    assert pair["status"] == "ok"
    assert pair["metrics"]["safu_over_softmax"] == (
        pair["metrics"]["safu_ms"] / pair["metrics"]["softmax_ms"])
    assert pair["value"]["tinyfw"] == pair["metrics"]["safu_ms"]
    kinds = ["SAFU mixer" if r["case"].startswith("SAFU") else "softmax" for r in scaling]
    assert kinds == ["SAFU mixer", "softmax"] * 3
    for r in scaling:
        assert r["status"] == "ok", r
        assert r["value"]["tinyfw"] > 0 and r["value"]["reference"] > 0
    for earlier, later in zip(scaling[:-2], scaling[2:]):
        assert later["metrics"]["length_factor"] == 2
        assert later["metrics"]["tinyfw_growth"] == (
            later["value"]["tinyfw"] / earlier["value"]["tinyfw"])
    assert all("SAFU / softmax (tinyfw)" in " ".join(r["notes"]) for r in scaling[::2])
