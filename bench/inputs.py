"""Inputs and sizes shared by the workloads and by W9's child processes. Plain NumPy: the
PyTorch child imports this without loading tinyfw (or Numba), so its memory is PyTorch's alone."""
import numpy as np

# The nanoGPT small CPU configuration (W1): ~0.82M parameters.
GPT = dict(vocab_size=65, context_length=64, n_layers=4, n_heads=4, d_model=128)
GPT_BATCH = 12


def gpt_train_flops(cfg, batch, mixer="softmax", mlp_ratio=4):
    """Floating-point operations of one training step of the W1 model (forward + backward =
    3x the forward's matmul FLOPs). Counts the Linear layers and, for softmax attention, the two
    (T x T) products per head in full (as nanoGPT's MFU estimate does); norms, GELU, softmax and
    the optimizer are elementwise and left out (a few percent)."""
    D, L, T, V = cfg["d_model"], cfg["n_layers"], cfg["context_length"], cfg["vocab_size"]
    tokens = batch * T
    linear_params = L * (4 * D * D + 2 * mlp_ratio * D * D) + D * V
    flops = 6 * tokens * linear_params
    if mixer == "softmax":
        flops += L * 3 * 4 * batch * T * T * D
    return flops


def gpt_ids(cfg, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, cfg["vocab_size"], size=(batch, cfg["context_length"] + 1),
                        dtype=np.int64)


def fast_weight_inputs(L, B=4, H=4, Dk=64, Dv=64, seed=0):
    """float32 q, k, v, beta and an upstream gradient for the fast-weight rules.

    Keys and queries are positive and sum to one per token (the delta rule's sum-normalised
    features; the sum rule does the same work on any values), beta in (0, 1)."""
    rng = np.random.default_rng(seed)

    def features(shape):
        e = np.exp(rng.standard_normal(shape))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    return {"q": features((B, H, L, Dk)), "k": features((B, H, L, Dk)),
            "v": rng.standard_normal((B, H, L, Dv)).astype(np.float32),
            "beta": (1 / (1 + np.exp(-rng.standard_normal((B, H, L))))).astype(np.float32),
            "do": rng.standard_normal((B, H, L, Dv)).astype(np.float32)}


def attention_inputs(L, B=4, H=4, D=64, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal((B, H, L, D)).astype(np.float32)
            for n in ("q", "k", "v", "do")}
