"""Modules: registration, state dicts (strict errors), train/eval, a small model that learns."""
import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn as nn
import tinyfw.nn.functional as F


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


def test_parameters_and_names():
    m = TwoLayer()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert m.num_parameters() == 4 * 8 + 8 + 8 * 3 + 3


def test_tied_parameters_listed_once():
    a = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    a[1].weight = a[0].weight
    assert len(list(a.parameters())) == 3


def test_train_eval_switches_dropout():
    fw.manual_seed(0)
    m = TwoLayer()
    x = fw.randn(5, 4)
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
    m.train()
    assert not np.array_equal(m(x).numpy(), m(x).numpy())


def test_state_dict_round_trip_and_strict_errors():
    m1, m2 = TwoLayer(), TwoLayer()
    m2.load_state_dict(m1.state_dict())
    x = fw.randn(2, 4)
    m1.eval(), m2.eval()
    np.testing.assert_array_equal(m1(x).numpy(), m2(x).numpy())
    sd = m1.state_dict()
    del sd["fc2.bias"]
    sd["extra.weight"] = fw.zeros(2)
    with pytest.raises(KeyError, match=r"missing keys \['fc2.bias'\].*unexpected keys \['extra"):
        m2.load_state_dict(sd)
    missing, unexpected = m2.load_state_dict(sd, strict=False)
    assert missing == ["fc2.bias"] and unexpected == ["extra.weight"]
    bad = m1.state_dict()
    bad["fc1.weight"] = fw.zeros(8, 5)
    with pytest.raises(ValueError, match=r"size mismatch for fc1.weight: checkpoint \(8, 5\)"):
        m2.load_state_dict(bad)


def test_state_dict_is_detached_copy_semantics():
    m = nn.Linear(2, 2)
    sd = m.state_dict()
    assert not sd["weight"].requires_grad


def test_module_list_and_sequential():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and len(list(layers.parameters())) == 6
    seq = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    x = fw.randn(5, 2)
    y = seq(x)
    assert y.shape == (5, 1)
    first, last = seq[0], seq[2]
    hidden = np.maximum(x.numpy() @ first.weight.numpy().T + first.bias.numpy(), 0)
    np.testing.assert_allclose(y.numpy(), hidden @ last.weight.numpy().T + last.bias.numpy(),
                               rtol=1e-5, atol=1e-6)
    assert layers[-1] is list(layers)[2]
    with pytest.raises(IndexError, match="ModuleList index 3 out of range for 3 modules"):
        layers[3]


def test_module_double_and_gradcheck_of_model():
    fw.manual_seed(1)
    m = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)).double()
    x = fw.randn(2, 3, dtype=fw.float64, requires_grad=True)
    assert fw.gradcheck(lambda x: m(x), (x,))


def test_embedding_from_pretrained():
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    e = nn.Embedding.from_pretrained(w)
    np.testing.assert_array_equal(e(fw.tensor([2, 0])).numpy(), w[[2, 0]])
    assert not e.weight.requires_grad


def test_mlp_learns_a_generated_dataset():
    """A real (tiny) training run: two spirals classified by an MLP trained with AdamW."""
    fw.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 200
    t = rng.uniform(0.5, 3.0, n)
    label = rng.integers(0, 2, n)
    angle = t * 2.5 + np.pi * label
    X = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + rng.normal(0, 0.05, (n, 2))
    x, y = fw.tensor(X.astype(np.float32)), fw.tensor(label)
    model = nn.Sequential(nn.Linear(2, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(),
                          nn.Linear(64, 2))
    opt = fw.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for step in range(300):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(x).argmax(dim=-1).numpy() == label).mean()
    assert loss.item() < 0.25 * first
    assert acc > 0.9
