"""Float64 gradchecks of what the op-level gradchecks leave out: the dtype and device moves
(``Cast``, ``ToDevice``, both directions, the cuda side in Numba's simulator) and whole modules,
every parameter at once: ``MLP``, ``Block`` and a ``LanguageModel`` with pre- and post-norm,
LayerNorm and RMSNorm, tied and untied output weights, and each mixer of the registry.

A module's parameters are the gradcheck's inputs: ``gradcheck`` perturbs them in place, so the
function it checks just runs the module again. The parameters are redrawn at an O(1) scale
(GPT-2's 0.02 initialisation would make every gradient smaller than the tolerance) and the
output is one weighted sum, so that one backward gives the whole analytical Jacobian. Shapes are
the smallest that still have two heads, two positions per window and two batch rows.
"""
import numpy as np
import pytest
from numba import cuda

import tinyfw as fw
from tinyfw.backend import cpu as cpu_backend
from tinyfw.nn.mixers import MIXERS
from tinyfw.nn.models import MLP, Block, LanguageModel, ModelConfig

F64 = np.float64


def leaf(array, device="cpu"):
    return fw.tensor(np.asarray(array, dtype=F64), requires_grad=True, device=device)


# ------------------------------------------------------------------------------- Cast

def test_cast_to_float32_and_back_gradcheck():
    """float64 -> float32 -> float64: the gradient comes back as float64 and equals exp(x).
    (The float32 rounding of f(x +- eps) is ~1e-7 |f|: eps 1e-3 keeps it under the tolerance.)"""
    x = leaf(np.random.default_rng(0).standard_normal((2, 3)))
    assert fw.gradcheck(lambda x: x.float().exp().double() * 3.0, (x,), eps=1e-3, atol=1e-4)
    x.grad = None
    x.float().exp().sum().backward()
    assert x.grad.dtype == F64
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x.numpy()), rtol=1e-6)


def test_cast_float32_leaf_gets_float32_gradient():
    x = fw.tensor(np.array([0.5, -2.0, 3.0], dtype=np.float32), requires_grad=True)
    y = x.double()
    assert y.dtype == F64 and y.requires_grad
    upstream = np.array([1.0, -0.25, 1e-3])
    y.backward(fw.tensor(upstream))
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), upstream.astype(np.float32))


def test_cast_to_an_integer_dtype_cuts_the_graph():
    x = leaf([0.5, 2.5])
    n = x.long()
    assert n.dtype == np.int64 and not n.requires_grad
    np.testing.assert_array_equal(n.numpy(), [0, 2])


# ------------------------------------------------------------------------------- ToDevice

HAS_CUDA = cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="numba.cuda is unavailable (set "
                                "NUMBA_ENABLE_CUDASIM=1 to use the simulator)")


@needs_cuda
def test_to_device_gradcheck_from_a_cpu_leaf():
    """cpu -> cuda -> cpu: both ToDevice backwards, the cuda op between them."""
    x = leaf(np.random.default_rng(1).standard_normal(3))
    assert fw.gradcheck(lambda x: (x.to("cuda").exp() * x.to("cuda")).to("cpu"), (x,))


@needs_cuda
def test_to_device_gradcheck_from_a_cuda_leaf():
    """cuda -> cpu -> cuda: the cuda -> cpu backward hands a CPU gradient back to the device."""
    from tinyfw.backend.cuda import runtime
    x = leaf(np.random.default_rng(2).standard_normal(3), "cuda")
    assert fw.gradcheck(lambda x: (x.to("cpu").tanh() * 2.0).to("cuda") + x, (x,))
    # the leaf's gradient lives on the leaf's device, with the values of d(sum tanh x)/dx
    x.grad = None
    x.to("cpu").tanh().sum().backward()
    assert x.grad.device == "cuda" and runtime.is_device_array(x.grad.data)
    np.testing.assert_allclose(x.grad.numpy(), 1.0 - np.tanh(x.numpy()) ** 2, rtol=1e-12)


@needs_cuda
def test_to_device_and_dtype_at_once():
    x = leaf(np.array([0.25, -1.0, 2.0]))
    y = x.to("cuda", dtype=np.float32)
    assert y.device == "cuda" and y.dtype == np.float32
    (y * y).sum().backward()
    assert x.grad.device == "cpu" and x.grad.dtype == F64
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------- modules

def randomize(module, seed):
    """Every parameter redrawn at an O(1) scale, float64; norm weights near 1."""
    rng = np.random.default_rng(seed)
    module.double()
    for name, p in module.named_parameters():
        values = rng.normal(0.0, 0.5, p.shape)
        if "norm" in name and name.endswith("weight"):
            values = 1.0 + 0.3 * values
        p.data = fw.tensor(values, dtype=F64).data
    module.eval()
    return module


def check_module(module, loss, extra=()):
    """gradcheck of ``loss()`` with respect to every parameter of ``module`` (and ``extra``)."""
    params = list(extra) + list(module.parameters())
    assert all(p.dtype == F64 and p.requires_grad for p in params)
    assert fw.gradcheck(lambda *_: loss(), params)


def weighted_sum(y, seed):
    w = np.random.default_rng(seed).standard_normal(y.shape)
    return (y * fw.tensor(w, dtype=F64, device=y.device)).sum()


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_mlp_gradcheck(activation):
    mlp = randomize(MLP(3, ratio=2, activation=activation), 3)
    x = leaf(np.random.default_rng(4).standard_normal((2, 2, 3)))
    check_module(mlp, lambda: weighted_sum(mlp(x), 5), extra=[x])


def tiny_config(**overrides):
    options = dict(vocab_size=5, context_length=4, n_layers=1, n_heads=2, d_model=4,
                   mlp_ratio=1, dropout=0.0)
    mixer = overrides.get("mixer", "softmax")
    # the smallest windows that still mix more than one position
    options["mixer_options"] = {"safu": dict(block=2, radial=2)}.get(mixer, {})
    options.update(overrides)
    return ModelConfig(**options)


BLOCK_CASES = [dict(mixer=name) for name in MIXERS] + [
    dict(prenorm=False),
    dict(norm="rms"),
    dict(prenorm=False, norm="rms", bias=False),
]


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


def test_every_registered_mixer_is_covered():
    assert {c["mixer"] for c in BLOCK_CASES if "mixer" in c} == set(MIXERS)


@pytest.mark.parametrize("case", BLOCK_CASES, ids=_case_id)
def test_block_gradcheck(case):
    fw.manual_seed(0)
    block = randomize(Block(tiny_config(**case)), 6)
    x = leaf(np.random.default_rng(7).standard_normal((2, 3, 4)))
    check_module(block, lambda: weighted_sum(block(x), 8), extra=[x])


LM_CASES = [
    dict(),
    dict(prenorm=False),
    dict(norm="rms"),
    dict(tie_weights=True),
    dict(prenorm=False, norm="rms", tie_weights=True, positional="none", activation="gelu_new"),
    dict(mixer="safu", n_layers=2),
]


@pytest.mark.parametrize("case", LM_CASES, ids=lambda c: _case_id(c) or "default")
def test_language_model_gradcheck(case):
    fw.manual_seed(0)
    model = randomize(LanguageModel(tiny_config(**case)), 9)
    if case.get("tie_weights"):
        assert model.head.weight is model.tok_emb.weight   # one parameter, two uses
    ids = fw.tensor(np.array([[1, 4, 0], [3, 3, 2]]))
    targets = fw.tensor(np.array([[4, 0, 2], [3, -100, 1]]))   # one position ignored
    check_module(model, lambda: model(ids, targets)[1])


def test_model_gradcheck_catches_a_wrong_norm_backward(monkeypatch):
    """The whole-model check can fail: a LayerNorm backward 1% off in dw is caught."""
    right = cpu_backend.layer_norm_backward

    def wrong(dy, x, w, mean, rstd):
        dx, dw, db = right(dy, x, w, mean, rstd)
        return dx, dw * 1.01, db

    monkeypatch.setattr(cpu_backend, "layer_norm_backward", wrong)
    fw.manual_seed(0)
    model = randomize(LanguageModel(tiny_config()), 9)
    ids = fw.tensor(np.array([[1, 4, 0]]))
    params = list(model.parameters())
    assert not fw.gradcheck(lambda *_: model(ids, ids)[1], params, raise_exception=False)
