"""Causal multi-head softmax self-attention (Vaswani et al., 2017), laid out as in nanoGPT: one
fused ``qkv`` projection ``D -> 3D``, ``n_heads`` heads of width ``D / n_heads``, the fused
attention kernel (``tinyfw/ops/attention.py``) and an output projection ``proj``.

As a token mixer it follows ``forward(x, state=None, return_state=False)``. The state is the KV
cache ``{"k": (B, H, S, Dh), "v": (B, H, S, Dh)}`` of the ``S`` positions seen so far: the new
tokens' keys and values are appended to it and their queries attend to the whole cache and
causally to each other, so generation can extend a sequence one token at a time at the cost of
one row of attention per token instead of re-running the prefix.

Dropout: applied to the output projection (nanoGPT's ``resid_dropout``). nanoGPT also drops
attention probabilities; the fused kernel never materialises them, so that one is not offered.
"""
from ..autograd import no_grad
from ..ops import attention as _attn
from ..ops.shape import cat
from ..tensor import Tensor
from .layers import Dropout, Linear
from .module import Module

__all__ = ["CausalSelfAttention", "attention_probabilities"]


class CausalSelfAttention(Module):
    """(B, L, D) -> (B, L, D), causal, ``n_heads`` heads; parameters ``qkv`` and ``proj``."""

    def __init__(self, d_model, n_heads, dropout=0.0, bias=True, dtype=None, device="cpu"):
        super().__init__()
        if not (isinstance(d_model, int) and isinstance(n_heads, int) and d_model >= 1
                and n_heads >= 1 and d_model % n_heads == 0):
            raise ValueError(f"CausalSelfAttention: d_model={d_model!r} must be a positive "
                             f"multiple of n_heads={n_heads!r}")
        self.d_model, self.n_heads = d_model, n_heads
        self.head_dim = d_model // n_heads
        self.qkv = Linear(d_model, 3 * d_model, bias=bias, dtype=dtype, device=device)
        self.proj = Linear(d_model, d_model, bias=bias, dtype=dtype, device=device)
        self.drop = Dropout(dropout)

    def _check_input(self, x):
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"CausalSelfAttention: input must be (batch, length, {self.d_model}),"
                             f" got {shape}")

    def _heads(self, x):
        """x (B, L, D) -> q, k, v, each (B, H, L, Dh)."""
        B, L, _ = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _check_state(self, state, x):
        if not (isinstance(state, dict) and "k" in state and "v" in state):
            raise ValueError("CausalSelfAttention: state must be the dict {'k', 'v'} returned "
                             "with return_state=True")
        want = (x.shape[0], self.n_heads)
        if state["k"].shape[:2] != want or state["k"].shape != state["v"].shape:
            raise ValueError(f"CausalSelfAttention: cached k {state['k'].shape} / v "
                             f"{state['v'].shape} do not fit a batch of {x.shape[0]} and "
                             f"{self.n_heads} heads of width {self.head_dim}")

    def forward(self, x, state=None, return_state=False):
        """x (B, L, D) -> y (B, L, D) (and the KV cache covering everything seen so far)."""
        self._check_input(x)
        B, L, D = x.shape
        if state is None and not return_state:
            # training and plain inference: split, attend and merge the heads in one Function
            y = _attn.packed_causal_self_attention(self.qkv(x), self.n_heads)
            return self.drop(self.proj(y))
        q, k, v = self._heads(x)
        if state is None:
            y = _attn.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            self._check_state(state, x)
            k = cat([state["k"], k], dim=2)
            v = cat([state["v"], v], dim=2)
            y = _attn.causal_attention(q, k, v)     # the L queries are the last L positions
        y = self.drop(self.proj(y.transpose(1, 2).reshape(B, L, D)))
        return (y, {"k": k, "v": v}) if return_state else y

    def attention_probabilities(self, x):
        """The causal attention weights for x (B, L, D): a Tensor (B, H, L, L), rows sum to 1."""
        self._check_input(x)
        with no_grad():
            q, k, _ = self._heads(x)
            return _attn.attention_probabilities(q, k, is_causal=True)

    def extra_repr(self):
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, "
                f"bias={self.qkv.bias is not None}, dropout={self.drop.p}")


def attention_probabilities(layer, x):
    """Attention weights (B, H, L, L) of a ``CausalSelfAttention`` ``layer`` on its input x.

    For attention-map figures: ``attention_probabilities(model.blocks[0].mixer, h)[0]`` is the
    (H, L, L) map of the first sample (``tinyfw.plots.attention_probabilities`` builds ``h``).
    """
    if not isinstance(layer, CausalSelfAttention):
        raise TypeError(f"attention_probabilities: expected a CausalSelfAttention layer, got "
                        f"{type(layer).__name__}")
    return layer.attention_probabilities(x)

