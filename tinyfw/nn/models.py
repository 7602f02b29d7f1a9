"""A configurable causal language model: token + position embeddings, a stack of Transformer
blocks whose token mixer is chosen by name, a final norm and an output layer.

    cfg = ModelConfig(vocab_size=65, context_length=64, n_layers=4, n_heads=4, d_model=128)
    model = LanguageModel(cfg)
    logits = model(ids)                   # ids (B, T) int64 -> logits (B, T, V)
    logits, loss = model(ids, targets)    # mean cross-entropy over all positions
    out = model.generate(ids, max_new_tokens=100, temperature=0.8, top_k=20)
    gpt2 = LanguageModel.from_pretrained("gpt2/")  # a Hugging Face GPT-2 folder (gpt2_weights.py)
    model.save_pretrained("out/")                 # ... and back, for transformers to load

Mixers (``mixer=``, registered by name in ``mixers.py``): 'softmax' (causal multi-head softmax
attention), 'linear' (fast-weight sum rule), 'delta' (fast-weight delta rule), 'safu' (the
self-attentive feed-forward unit). Every mixer maps (B, T, D) -> (B, T, D) causally and follows
``forward(x, state=None, return_state=False)``: with ``return_state=True`` it also returns what it
needs to continue the sequence (a KV cache, or the fast weights), which is how ``generate``
extends a sequence one token at a time.
"""
import dataclasses
import math

import numpy as np

from ..autograd import no_grad
from ..ops import nn as N
from ..tensor import Tensor, arange, float32, tensor
from . import gpt2_weights, init
from .layers import Dropout, Embedding, GELU, Linear
from .mixers import MIXERS
from .module import Module, ModuleList
from .sampling import sample_next


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int
    context_length: int = 64
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0
    norm: str = "layer"            # 'layer' (LayerNorm) or 'rms' (RMSNorm)
    prenorm: bool = True           # x + f(norm(x)); False: norm(x + f(x))
    mixer: str = "softmax"
    tie_weights: bool = False      # output layer shares the token embedding matrix
    bias: bool = True
    positional: str = "learned"    # 'learned' position embeddings or 'none'
    mixer_options: dict = dataclasses.field(default_factory=dict)  # passed to the mixer
    activation: str = "gelu"       # the MLP's: 'gelu' (erf form) or 'gelu_new' (tanh form, GPT-2)
    norm_eps: float = None         # the norms' epsilon; None: LayerNorm 1e-5, RMSNorm 1e-6

    def __post_init__(self):
        problems = []
        if self.vocab_size < 1:
            problems.append(f"vocab_size={self.vocab_size} must be >= 1")
        if self.context_length < 1 or self.n_layers < 1 or self.n_heads < 1:
            problems.append("context_length, n_layers and n_heads must be >= 1")
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.norm not in ("layer", "rms"):
            problems.append(f"norm={self.norm!r} must be 'layer' or 'rms'")
        if self.mixer not in MIXERS:
            problems.append(f"mixer={self.mixer!r} must be one of {tuple(MIXERS)}")
        if self.positional not in ("learned", "none"):
            problems.append(f"positional={self.positional!r} must be 'learned' or 'none'")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation={self.activation!r} must be one of {tuple(ACTIVATIONS)}")
        if self.norm_eps is not None and not (isinstance(self.norm_eps, (int, float))
                                              and self.norm_eps > 0):
            problems.append(f"norm_eps={self.norm_eps!r} must be a positive number or None")
        if problems:
            raise ValueError("ModelConfig: " + "; ".join(problems))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig.from_dict: unknown fields {unknown}")
        return cls(**d)


def make_norm(kind, dim, bias=True, eps=None):
    """LayerNorm (kind 'layer') or RMSNorm ('rms') over ``dim``; ``eps`` None: its default."""
    options = {} if eps is None else {"eps": eps}
    if kind == "layer":
        from .normalization import LayerNorm
        return LayerNorm(dim, bias=bias, **options)
    from .normalization import RMSNorm
    return RMSNorm(dim, **options)


def make_mixer(cfg):
    """The token mixer of one block: the constructor registered as ``cfg.mixer`` (``mixers.py``),
    given ``cfg`` and ``cfg.mixer_options``."""
    return MIXERS[cfg.mixer](cfg, **cfg.mixer_options)


# ModelConfig.activation -> GELU's ``approximate``: 'gelu_new' is GPT-2's name for the tanh form
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh"}


class MLP(Module):
    """``Linear(D, rD) -> GELU -> Linear(rD, D) -> dropout``; ``activation`` 'gelu' (erf form)
    or 'gelu_new' (tanh form)."""

    def __init__(self, dim, ratio=4, dropout=0.0, bias=True, activation="gelu"):
        super().__init__()
        self.fc = Linear(dim, ratio * dim, bias=bias)
        self.act = GELU(ACTIVATIONS[activation])
        self.proj = Linear(ratio * dim, dim, bias=bias)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(Module):
    """One Transformer block: a token mixer and an MLP, each in a residual branch with a norm."""

    def __init__(self, cfg):
        super().__init__()
        self.prenorm = cfg.prenorm
        self.norm1 = make_norm(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps)
        self.mixer = make_mixer(cfg)
        self.norm2 = make_norm(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.mlp_ratio, cfg.dropout, cfg.bias, cfg.activation)

    def forward(self, x, state=None, return_state=False):
        if self.prenorm:
            mixed = self.mixer(self.norm1(x), state=state, return_state=return_state)
            y, new_state = mixed if return_state else (mixed, None)
            x = x + y
            x = x + self.mlp(self.norm2(x))
        else:
            mixed = self.mixer(x, state=state, return_state=return_state)
            y, new_state = mixed if return_state else (mixed, None)
            x = self.norm1(x + y)
            x = self.norm2(x + self.mlp(x))
        return (x, new_state) if return_state else x


class LanguageModel(Module):
    def __init__(self, config):
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        self.config = cfg = config
        self.tok_emb = Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.positional == "learned":
            self.pos_emb = Embedding(cfg.context_length, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.blocks = ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm_f = make_norm(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps)
        self.head = Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight

    def _init_weights(self):
        """GPT-2's initialisation: N(0, 0.02) for weights, zero biases, and the projections that
        write into the residual stream scaled by 1/sqrt(2 n_layers) so its variance stays put."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                init.zeros_(p)
            elif p.ndim == 2:
                is_residual_out = name.startswith("blocks") and name.endswith("proj.weight")
                init.normal_(p, 0.0, residual_std if is_residual_out else 0.02)

    # ------------------------------------------------------------------ Hugging Face GPT-2
    @classmethod
    def from_pretrained(cls, path, dtype=float32, dropout=0.0):
        """The GPT-2 in ``path``, a folder in Hugging Face's ``GPT2LMHeadModel`` layout
        (``config.json`` + ``model.safetensors``), with weights of ``dtype`` (float32 or float64)
        and ``dropout`` for fine-tuning; on the CPU (``.to("cuda")`` moves it) and in eval mode.
        Nothing is downloaded. The folder is checked whole before the model is built: a missing
        file or tensor, another architecture or a shape that disagrees with the config raises an
        error naming the file and the key.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"from_pretrained: dtype must be float32 or float64, got {dtype}")
        with gpt2_weights.GPT2Folder(path) as folder:
            config = ModelConfig(**folder.settings, dropout=dropout)
            # Built without an initialisation (skip_init: no random draws, the parameters'
            # zero pages never touched), then given the file's weights one tensor at a time,
            # so a load holds one copy of the weights.
            with init.skip_init():
                model = cls(config)
            for name, p in model.named_parameters():   # a tied head is tok_emb's, listed once
                p.data = folder.read(name, dtype)
        return model.eval()

    def save_pretrained(self, folder):
        """Write ``config.json`` and ``model.safetensors`` in Hugging Face's GPT-2 layout, so
        that ``transformers.GPT2LMHeadModel.from_pretrained(folder)`` loads this model. Only
        models GPT-2's architecture can express save (learned positions, pre-norm LayerNorm,
        softmax attention, biases, a GELU MLP); any other setting raises ValueError naming it."""
        arrays = {name: t.numpy() for name, t in self.state_dict().items()}
        gpt2_weights.save_gpt2_folder(folder, self.config.to_dict(), arrays)

    # ------------------------------------------------------------------ forward
    def forward(self, ids, targets=None, state=None, return_state=False):
        """ids ``(B, T)`` int64 -> logits ``(B, T, V)`` (and the loss when targets are given).

        ``state`` (from a previous call with ``return_state=True``) continues a sequence: the
        positions go on from where it stopped and each mixer resumes from its own state.
        """
        if ids.ndim != 2:
            raise ValueError(f"LanguageModel: ids must be (batch, time), got shape {ids.shape}")
        B, T = ids.shape
        start = 0 if state is None else state["pos"]
        cfg = self.config
        if cfg.positional == "learned" and start + T > cfg.context_length:
            raise ValueError(f"LanguageModel: positions {start}..{start + T - 1} exceed the "
                             f"model's context of {cfg.context_length} tokens (crop the input "
                             "to the last context_length tokens)")
        x = self.tok_emb(ids)
        if cfg.positional == "learned":
            x = x + self.pos_emb(arange(start, start + T, device=ids.device))
        x = self.drop(x)
        layer_states = []
        for i, block in enumerate(self.blocks):
            if return_state:
                x, s = block(x, state=None if state is None else state["layers"][i],
                             return_state=True)
                layer_states.append(s)
            else:
                x = block(x, state=None if state is None else state["layers"][i])
        logits = self.head(self.norm_f(x))
        out = logits
        if targets is not None:
            out = (logits, N.cross_entropy(logits, targets))
        if return_state:
            new_state = {"pos": start + T, "layers": layer_states}
            return (out, new_state) if targets is None else (*out, new_state)
        return out

    # ------------------------------------------------------------------ sampling
    @no_grad()
    def generate(self, ids, max_new_tokens, temperature=1.0, top_k=None, use_state=True,
                 top_p=None):
        """Extend ``ids`` ``(B, T)`` by ``max_new_tokens`` sampled tokens; returns ``(B, T + n)``.

        ``temperature`` 0 picks the most likely token; ``top_k`` keeps the k most likely;
        ``top_p`` then keeps the smallest set of most likely tokens whose probabilities add up
        to ``top_p`` (nucleus sampling, :func:`~tinyfw.nn.sampling.sample_next`). Each
        new token costs one step from the carried state (KV cache or fast weights) while the
        sequence fits the context; past it, the input is cropped to the last context_length
        tokens and run again (learned positions cannot go further).
        """
        if temperature < 0:
            raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
        was_training = self.training
        self.eval()
        try:
            ctx_len = self.config.context_length
            unlimited = self.config.positional == "none"
            seq = ids.numpy()
            state = None
            for _ in range(max_new_tokens):
                can_step = use_state and state is not None and (unlimited or state["pos"] < ctx_len)
                if can_step:
                    logits, state = self(tensor(seq[:, -1:], device=ids.device), state=state,
                                         return_state=True)
                else:
                    window = seq if unlimited else seq[:, -ctx_len:]
                    if use_state:
                        logits, state = self(tensor(window, device=ids.device), return_state=True)
                    else:
                        logits = self(tensor(window, device=ids.device))
                next_ids = sample_next(logits.numpy()[:, -1, :], temperature, top_k, top_p=top_p)
                seq = np.concatenate([seq, next_ids[:, None]], axis=1)
            return tensor(seq, device=ids.device)
        finally:
            self.train(was_training)


__all__ = ["ModelConfig", "LanguageModel", "Block", "MLP", "make_mixer", "make_norm",
           "sample_next", "Tensor"]
