"""Every fused or compound op given one CPU and one CUDA tensor raises a ValueError that names
the op and both devices: never a crash inside a kernel, never a silent copy.

The ops whose inputs all go through ``Function.apply`` get its check ("<Function>: inputs are on
different devices (...)"); the ones that check first, or that take a constant as raw data (the
SAFU history and running sum, a fast-weight state, a backward's gradient, an optimizer's state),
name the argument. Without a GPU the CUDA side is Numba's simulator; no case reaches a kernel.
"""
import re

import numpy as np
import pytest
from numba import cuda

import tinyfw as fw
import tinyfw.nn as nn
import tinyfw.nn.functional as F
from tinyfw.backend import interface
from tinyfw.nn.models import LanguageModel, ModelConfig
from tinyfw.ops.attention import attention_probabilities, causal_attention
from tinyfw.ops.fast_weights import delta_rule, linear_attention
from tinyfw.ops.feature_maps import favor_features
from tinyfw.ops.safu import radial_context, running_mean, safu_block_attention, safu_contexts

if not cuda.is_available():
    pytest.skip("numba.cuda is unavailable (no GPU); run with NUMBA_ENABLE_CUDASIM=1 to use the "
                "simulator", allow_module_level=True)

pytestmark = pytest.mark.cuda


def t(shape, device, grad=True, low=None):
    """A float64 tensor on ``device``; values in (low, 1 - low) when ``low`` is given."""
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape) if low is None else rng.uniform(low, 1.0 - low, shape)
    return fw.tensor(a, dtype=np.float64, device=device, requires_grad=grad)


QKV = (1, 1, 2, 2)        # (B, H, L, D)
X = (1, 3, 2)             # (B, L, D) for SAFU


def _adam_state_left_behind(a, b):
    """An optimizer whose state was made on ``a``, then the model moved to ``b``."""
    layer = nn.Linear(2, 2).to(a)
    opt = fw.optim.Adam(layer.parameters(), lr=0.1)
    for p in layer.parameters():
        p.grad = fw.ones(*p.shape, device=a)
    opt.step()
    layer.to(b)
    for p in layer.parameters():
        p.grad = fw.ones(*p.shape, device=b)
    opt.step()


def _gradient_set_by_hand(optimizer):
    def run(a, b):
        p = nn.Parameter(fw.tensor(np.ones(2), device=a))
        p.grad = fw.tensor(np.ones(2), device=b)
        optimizer([p], lr=0.1).step()
    return run


def _backward_with_a_gradient_elsewhere(a, b):
    y = t((2,), a) * 2.0
    y.backward(fw.tensor(np.ones(2), device=b))


def _language_model_with_ids_elsewhere(a, b):
    fw.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=5, context_length=4, n_layers=1, n_heads=1,
                                      d_model=4)).to(a)
    model(fw.tensor(np.array([[1, 2]]), device=b))


# name -> (the op the message names, fn(a, b): the op with its main input on a, one other on b)
CASES = {
    "scaled_dot_product_attention": ("Attention", lambda a, b: F.scaled_dot_product_attention(
        t(QKV, a), t(QKV, b), t(QKV, a))),
    "causal_attention(v)": ("Attention", lambda a, b: causal_attention(
        t(QKV, a), t(QKV, a), t(QKV, b))),
    "attention_probabilities": ("AttentionProbabilities", lambda a, b: attention_probabilities(
        t(QKV, a), t(QKV, b))),
    "layer_norm(weight)": ("LayerNorm", lambda a, b: F.layer_norm(
        t((2, 3), a), (3,), t((3,), b), t((3,), a))),
    "layer_norm(bias)": ("LayerNorm", lambda a, b: F.layer_norm(
        t((2, 3), a), (3,), t((3,), a), t((3,), b))),
    "layer_norm(2-d shape)": ("LayerNorm", lambda a, b: F.layer_norm(
        t((2, 2, 3), a), (2, 3), t((2, 3), b))),
    "rms_norm": ("RMSNorm", lambda a, b: F.rms_norm(t((2, 3), a), (3,), t((3,), b))),
    "cross_entropy": ("CrossEntropy", lambda a, b: F.cross_entropy(
        t((2, 3), a), fw.tensor(np.array([0, 2]), device=b))),
    "embedding": ("Embedding", lambda a, b: F.embedding(
        fw.tensor(np.array([0, 2]), device=b), t((3, 2), a))),
    "linear(bias)": ("Linear", lambda a, b: F.linear(t((2, 3), a), t((4, 3), a), t((4,), b))),
    "matmul": ("matmul", lambda a, b: fw.matmul(t((2, 3), a), t((3, 2), b))),
    "linear_attention(v)": ("linear_attention", lambda a, b: linear_attention(
        t(QKV, a, low=0.1), t(QKV, a, low=0.1), t(QKV, b))),
    "linear_attention(state)": ("linear_attention", lambda a, b: linear_attention(
        t(QKV, a, low=0.1), t(QKV, a, low=0.1), t(QKV, a),
        initial_state=(t((1, 1, 2, 2), b), t((1, 1, 2), a, low=0.1)))),
    "delta_rule(beta)": ("delta_rule", lambda a, b: delta_rule(
        t(QKV, a, low=0.1), t(QKV, a, low=0.1), t(QKV, a), t((1, 1, 2), b, low=0.1))),
    "delta_rule(state)": ("delta_rule", lambda a, b: delta_rule(
        t(QKV, a, low=0.1), t(QKV, a, low=0.1), t(QKV, a), t((1, 1, 2), a, low=0.1),
        initial_state=t((1, 1, 2, 2), b))),
    "safu_block_attention": ("SAFUBlockAttention", lambda a, b: safu_block_attention(
        t(X, a), t(X, b), 2)),
    "running_mean(prev_sum)": ("running_mean", lambda a, b: running_mean(
        t(X, a), prev_sum=t((1, 2), b, grad=False), prev_count=2)),
    "running_mean(raw prev_sum)": ("running_mean", lambda a, b: running_mean(
        t(X, a), prev_sum=t((1, 2), b, grad=False).data, prev_count=2)),
    "radial_context(past)": ("radial_context", lambda a, b: radial_context(
        t(X, a), 2, past=t((1, 2, 2), b, grad=False))),
    "safu_contexts(w_a)": ("SAFUContexts", lambda a, b: safu_contexts(
        t(X, a), t((2, 2), b), 2, 2, True)),
    "safu_contexts(past)": ("safu_contexts", lambda a, b: safu_contexts(
        t(X, a), t((2, 2), a), 2, 2, True, past=t((1, 2, 2), b, grad=False))),
    "safu_contexts(prev_sum)": ("safu_contexts", lambda a, b: safu_contexts(
        t(X, a), t((2, 2), a), 2, 2, True, prev_sum=t((1, 2), b, grad=False), prev_count=1)),
    "favor_features": ("favor_features", lambda a, b: favor_features(
        t((2, 3), a), t((3, 2), b))),
    "backward(gradient)": ("backward", _backward_with_a_gradient_elsewhere),
    "AdamW.step(gradient)": ("AdamW.step", _gradient_set_by_hand(fw.optim.AdamW)),
    "SGD.step(gradient)": ("SGD.step", _gradient_set_by_hand(fw.optim.SGD)),
    "Adam.step(state)": ("Adam.step", _adam_state_left_behind),
    "LanguageModel(ids)": ("Embedding", _language_model_with_ids_elsewhere),
}

# Every fused primitive of the backend interface -> the cases that reach it with mixed devices,
# or why none can.
ONE_INPUT = "one input array: nothing to mismatch"
BACKEND_ONLY = "no op calls it: only kernel tests and benchmarks, with arrays of one backend"
FUSED_COVERAGE = {
    "softmax_forward": ONE_INPUT, "softmax_backward": ONE_INPUT,
    "log_softmax_forward": ONE_INPUT, "log_softmax_backward": ONE_INPUT,
    "gelu_forward": ONE_INPUT, "gelu_backward": ONE_INPUT,
    "elu_plus_one_forward": ONE_INPUT, "elu_plus_one_backward": ONE_INPUT,
    "packed_attention_forward": ONE_INPUT, "packed_attention_backward": ONE_INPUT,
    "cross_entropy_forward": ["cross_entropy"], "cross_entropy_backward": ["cross_entropy"],
    "embedding_backward": ["embedding", "LanguageModel(ids)"],
    "adam_step": ["AdamW.step(gradient)", "Adam.step(state)"],
    "layer_norm_forward": ["layer_norm(weight)", "layer_norm(bias)", "layer_norm(2-d shape)"],
    "layer_norm_backward": ["layer_norm(weight)"],
    "rms_norm_forward": ["rms_norm"], "rms_norm_backward": ["rms_norm"],
    "attention_forward": ["scaled_dot_product_attention", "causal_attention(v)"],
    "attention_backward": ["scaled_dot_product_attention"],
    "attention_probabilities": ["attention_probabilities"],
    "linear_attention_forward": ["linear_attention(v)", "linear_attention(state)"],
    "linear_attention_backward": ["linear_attention(v)"],
    "linear_attention_chunked_forward": ["linear_attention(v)"],
    "linear_attention_chunked_backward": ["linear_attention(v)"],
    "delta_rule_forward": ["delta_rule(beta)", "delta_rule(state)"],
    "delta_rule_backward": ["delta_rule(beta)"],
    "delta_rule_chunked_forward": ["delta_rule(beta)"],
    "delta_rule_chunked_backward": ["delta_rule(beta)"],
    "safu_block_attention_forward": ["safu_block_attention"],
    "safu_block_attention_backward": ["safu_block_attention"],
    "safu_block_attention_uncached": BACKEND_ONLY, "safu_score_table": BACKEND_ONLY,
    "safu_block_scores_from_table": BACKEND_ONLY,
    "safu_running_mean_forward": ["running_mean(prev_sum)", "running_mean(raw prev_sum)"],
    "safu_running_mean_backward": ["running_mean(prev_sum)"],
    "safu_contexts_forward": ["safu_contexts(w_a)", "safu_contexts(past)",
                              "safu_contexts(prev_sum)"],
    "safu_contexts_backward": ["safu_contexts(w_a)"],
}

PAIRS = [("cpu", "cuda"), ("cuda", "cpu")]


def test_every_fused_primitive_is_accounted_for():
    assert set(FUSED_COVERAGE) == set(interface.FUSED)
    for primitive, cases in FUSED_COVERAGE.items():
        if not isinstance(cases, str):
            assert cases and set(cases) <= set(CASES), primitive


@pytest.mark.parametrize("a, b", PAIRS, ids=["cpu+cuda", "cuda+cpu"])
@pytest.mark.parametrize("name", list(CASES))
def test_mixed_devices_raise_an_error_naming_the_op_and_the_devices(name, a, b):
    op, fn = CASES[name]
    with pytest.raises(ValueError, match=rf"^{re.escape(op)}: ") as info:
        fn(a, b)
    message = str(info.value)
    assert re.search(r"\bcpu\b", message) and re.search(r"\bcuda\b", message), message


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_call_on_one_device_runs(name):
    """The cases fail for their devices, not for anything else."""
    CASES[name][1]("cpu", "cpu")
