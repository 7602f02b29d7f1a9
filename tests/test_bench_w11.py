"""Bench W11 (GPT-2 small against PyTorch, bench/gpt2.py): registered, and without torch or
transformers the row says why instead of failing. The timed run itself needs transformers and
minutes of CPU: ``python bench/gpt2.py``."""
from bench import gpt2
from bench.workloads import WORKLOADS, Context


def test_w11_is_registered_under_its_own_id():
    assert WORKLOADS["W11"][1] is gpt2.w11
    assert "SAFU" in WORKLOADS["W10"][0]        # W10 stays the SAFU scaling row


def test_w11_without_torch_reports_the_reason():
    ctx = Context(quick=True, torch_peers=None)
    ctx.torch_reason = "disabled with --no-torch"
    (row,) = gpt2.w11(ctx)
    assert row["id"] == "W11" and "tinyfw" not in row["value"]
    assert row["status"] == "needs transformers for the shared weights (disabled with --no-torch)"
