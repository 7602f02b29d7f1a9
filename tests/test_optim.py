"""Optimizers against hand-computed updates; schedules; clipping; state dicts."""
import math

import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn as nn


def param(values):
    return nn.Parameter(fw.tensor(np.array(values, dtype=np.float64)))


def set_grad(p, g):
    p.grad = fw.tensor(np.array(g, dtype=np.float64))


def test_sgd_momentum_weight_decay_by_hand():
    p = param([1.0, -2.0])
    opt = fw.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    set_grad(p, [0.5, 0.5])
    opt.step()
    g1 = np.array([0.5, 0.5]) + 0.01 * np.array([1.0, -2.0])
    p1 = np.array([1.0, -2.0]) - 0.1 * g1
    np.testing.assert_allclose(p.numpy(), p1)
    set_grad(p, [0.5, 0.5])
    opt.step()
    g2 = 0.5 + 0.01 * p1
    buf = 0.9 * g1 + g2
    np.testing.assert_allclose(p.numpy(), p1 - 0.1 * buf)


@pytest.mark.parametrize("cls,decoupled", [(fw.optim.Adam, False), (fw.optim.AdamW, True)])
def test_adam_two_steps_by_hand(cls, decoupled):
    p = param([1.0, -2.0, 0.5])
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    opt = cls([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    x = np.array([1.0, -2.0, 0.5])
    m = v = np.zeros(3)
    grads = [np.array([0.1, -0.3, 2.0]), np.array([-0.2, 0.1, 1.0])]
    for step, g in enumerate(grads, 1):
        set_grad(p, g)
        opt.step()
        if decoupled:
            x = x * (1 - lr * wd)
        else:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** step)
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** step) + eps
        x = x - lr * mhat / denom
        np.testing.assert_allclose(p.numpy(), x, rtol=1e-12)


def test_adamw_defaults_match_pytorch():
    opt = fw.optim.AdamW([param([1.0])])
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)
    assert fw.optim.Adam([param([1.0])]).param_groups[0]["weight_decay"] == 0.0


def test_optimizer_state_dict_round_trip(tmp_path):
    p = param([1.0, 2.0])
    opt = fw.optim.AdamW([p], lr=0.1)
    set_grad(p, [1.0, -1.0])
    opt.step()
    fw.save({"opt": opt.state_dict()}, tmp_path / "o.npz")
    q = param(p.numpy())
    opt2 = fw.optim.AdamW([q], lr=0.5)
    opt2.load_state_dict(fw.load(tmp_path / "o.npz")["opt"])
    assert opt2.param_groups[0]["lr"] == 0.1
    for o, t in ((opt, p), (opt2, q)):
        set_grad(t, [0.3, 0.2])
        o.step()
    np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_optimizer_state_dict_mismatch():
    opt = fw.optim.Adam([param([1.0, 2.0])])
    set_grad(opt.param_groups[0]["params"][0], [1.0, 1.0])
    opt.step()
    other = fw.optim.Adam([param([1.0]), param([2.0])])
    with pytest.raises(ValueError, match="parameters per group"):
        other.load_state_dict(opt.state_dict())


def test_clip_grad_norm():
    a, b = param([3.0]), param([4.0])
    set_grad(a, [3.0])
    set_grad(b, [4.0])
    total = fw.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose([a.grad.item(), b.grad.item()], [0.6, 0.8], rtol=1e-5)
    set_grad(a, [0.3])
    set_grad(b, [0.4])
    assert fw.nn.utils.clip_grad_norm_([a, b], max_norm=1.0) == pytest.approx(0.5)
    assert a.grad.item() == pytest.approx(0.3)  # below the limit: untouched


def test_warmup_cosine_schedule():
    opt = fw.optim.SGD([param([0.0])], lr=1.0)
    sched = fw.optim.WarmupCosine(opt, warmup_steps=10, total_steps=110, min_lr=0.1)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(120):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert all(x >= y - 1e-12 for x, y in zip(lrs[9:], lrs[10:]))
