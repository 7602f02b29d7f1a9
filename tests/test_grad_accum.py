"""Gradient accumulation (``--grad-accum N``): N micro-batches give exactly the gradient and the
update of one N-times larger batch; checkpoints, resumption and the token count stay consistent."""
import os

import numpy as np
import pytest

from tinyfw import random as fw_random
from tinyfw.cli import main
from tinyfw.data import get_batch
from tinyfw.nn.models import LanguageModel, ModelConfig
from tinyfw.nn.utils import clip_grad_norm_
from tinyfw.optim import AdamW
from tinyfw.train import (TrainConfig, accumulate_gradients, load_checkpoint, param_groups,
                          read_metrics, resolve_resume_config, train)

TEXT = "".join(f"the {a} {b} sat on the mat.\n" for a in ("cat", "dog", "fox", "hen", "owl")
               for b in ("ran", "hid", "sang")) * 30
T = 8
SMALL = dict(n_layers=1, n_heads=2, d_model=16, context_length=T)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def float64_model(seed=0):
    fw_random.manual_seed(seed)
    return LanguageModel(ModelConfig(vocab_size=20, **SMALL)).double()


def batch(n):
    ids = np.random.default_rng(5).integers(0, 20, size=500).astype(np.uint16)
    return get_batch(ids, n, T, np.random.default_rng(7))


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_accumulated_gradient_equals_the_large_batch_gradient(micro_batches):
    x, y = batch(8)
    big, accum = float64_model(), float64_model()
    loss_big = accumulate_gradients(big, x, y, 1)
    loss_accum = accumulate_gradients(accum, x, y, micro_batches)
    assert loss_accum == pytest.approx(loss_big, rel=1e-13)
    for (name, p), q in zip(big.named_parameters(), accum.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-14,
                                   err_msg=name)


def test_one_step_with_grad_accum_2_equals_one_step_on_twice_the_batch():
    """Float64, AdamW with weight decay and clipping, as a training step does them."""
    x, y = batch(8)
    after = []
    for micro_batches in (1, 2):
        model = float64_model()
        optimizer = AdamW(param_groups(model, 0.1), lr=1e-2, betas=(0.9, 0.99),
                          weight_decay=0.1)
        optimizer.zero_grad()
        accumulate_gradients(model, x, y, micro_batches)
        clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        after.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
    before = {k: v.numpy() for k, v in float64_model().state_dict().items()}
    for k in after[0]:
        assert not np.array_equal(after[0][k], before[k]) or k.endswith("bias"), k
        np.testing.assert_allclose(after[1][k], after[0][k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_uneven_micro_batches_are_refused():
    x, y = batch(6)
    with pytest.raises(ValueError, match="6 windows do not split into 4 equal micro-batches"):
        accumulate_gradients(float64_model(), x, y, 4)


def config(corpus, out, **kw):
    settings = dict(data=corpus, out=str(out), steps=4, batch_size=8, lr=1e-2, min_lr=1e-3,
                    warmup=1, eval_every=2, eval_iters=1, sample_tokens=0, model=SMALL, seed=3)
    settings.update(kw)
    return TrainConfig(**settings)


def test_a_training_run_with_grad_accum_matches_the_large_batch_run(corpus, tmp_path):
    big = train(config(corpus, tmp_path / "big", batch_size=8), quiet=True)
    accum = train(config(corpus, tmp_path / "accum", batch_size=4, grad_accum=2), quiet=True)
    np.testing.assert_allclose(accum["history"]["loss"], big["history"]["loss"], rtol=2e-6)
    # Float32 sums in another order: Adam turns the rounding of gradients near 0 into
    # differences far below the lr (1e-2) that different windows would give.
    a, b = big["model"].state_dict(), accum["model"].state_dict()
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=0, atol=1e-4, err_msg=k)
    # Tokens seen count every micro-batch: 2 steps x 2 micro-batches x 4 windows x T tokens.
    tokens = [r["tokens"] for r in read_metrics(str(tmp_path / "accum" / "metrics.jsonl"))]
    assert tokens == [2 * 8 * T, 4 * 8 * T]
    assert load_checkpoint(str(tmp_path / "accum" / "ckpt.npz"))["tokens"] == 4 * 8 * T


def test_resume_with_grad_accum_is_bit_identical(corpus, tmp_path):
    kw = dict(batch_size=4, grad_accum=2, steps=6, model={**SMALL, "dropout": 0.1})
    full = train(config(corpus, tmp_path / "full", **kw), quiet=True)
    train(config(corpus, tmp_path / "split", **kw), stop_after=3, quiet=True)
    split = str(tmp_path / "split")
    cfg = resolve_resume_config(os.path.join(split, "ckpt.npz"), {"out": split})
    assert cfg.grad_accum == 2
    second = train(cfg, resume=True, quiet=True)
    assert second["history"]["loss"] == full["history"]["loss"]
    for k, v in full["model"].state_dict().items():
        np.testing.assert_array_equal(second["model"].state_dict()[k].numpy(), v.numpy())

    def without_time(path):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(path)]

    assert without_time(os.path.join(split, "metrics.jsonl")) \
        == without_time(str(tmp_path / "full" / "metrics.jsonl"))


def test_changing_the_batch_on_resume_keeps_the_token_count(corpus, tmp_path):
    out = str(tmp_path / "run")
    train(config(corpus, out, batch_size=4, steps=4), stop_after=2, quiet=True)
    cfg = resolve_resume_config(os.path.join(out, "ckpt.npz"), {"out": out, "grad_accum": 3})
    train(cfg, resume=True, quiet=True)
    tokens = [r["tokens"] for r in read_metrics(os.path.join(out, "metrics.jsonl"))]
    assert tokens == [2 * 4 * T, 2 * 4 * T + 2 * 3 * 4 * T]


def test_grad_accum_from_the_command_line(corpus, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", corpus, "--out", str(out), "--steps", "2", "--eval-every",
                 "2", "--batch-size", "2", "--grad-accum", "3", "--n-layers", "1", "--n-heads",
                 "2", "--d-model", "16", "--context", str(T), "--eval-iters", "1",
                 "--sample-tokens", "0", "--quiet"]) == 0
    ckpt = load_checkpoint(str(out / "ckpt.npz"))
    assert ckpt["train_config"]["grad_accum"] == 3 and ckpt["tokens"] == 2 * 3 * 2 * T


def test_grad_accum_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="grad_accum=0 must be a positive integer"):
        TrainConfig(grad_accum=0)
