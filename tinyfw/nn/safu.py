"""SAFU: the self-attentive feed-forward unit (Williams & Zhao 2023, "SAFFU"; tinyfw calls it SAFU).

What follows the papers and what is tinyfw's design
---------------------------------------------------
The papers' full texts were not available; ``docs/WARM_START_AND_SAFU.md`` (its fidelity section)
says point by point where each idea comes from. From the abstracts: SAFU is a feed-forward unit
with self-attention that is meant to be solved explicitly (a closed-form warm start) and then
fine-tuned by backprop. From the talk, as the design draft read it: the attention compares the
inputs to themselves through one matrix (no key/query/value projections), it combines a block
context, a radial (position-dependent) context and a document context, and caching comparisons
makes the attention linear in the sequence length. Everything else below is **tinyfw's design**:
the exact
formulas of the three contexts, ``z = [h; r; d]``, the optional hidden softmax layer, the
stacking rule of :class:`SAFULanguageModel` and the whole of :class:`SAFUMixer`.

The unit (inputs ``x_t >= 0``, e.g. L1-normalised bit-cipher or co-occurrence vectors)::

    block context     h_t = sum_{j in (t-block, t]} softmax_j(x_t^T W_A x_j) x_j
    radial context    r_t = [x_t; x_{t-1}; ...; x_{t-R+1}]          (zeros before the start)
    document context  d_t = mean_{j <= t} x_j
    feed-forward      z_t = [h_t; r_t; d_t]
                      logits_t = z_t W_O     or   u_t = softmax(z_t W_1), logits_t = u_t W_2

Weights are stored ``(in, out)`` as the spec writes them (``x W``), so the closed-form solutions
of ``tinyfw.warmstart.explicit_softmax_weights`` drop straight in (no bias: a per-row constant does
not change a softmax). ``q = x W_A`` is computed once per position (the cached comparisons) and the
block attention runs in ``O(L * block * D)``: see ``backend/reference/safu.py``.

Every class follows ``forward(x, state=None, return_state=False)``: with ``return_state=True`` it
also returns what it needs to continue the sequence (the last inputs and the running sum), so a
long sequence can be fed in chunks, or one token at a time, with the same result.
"""
import math

import numpy as np

from ..autograd import no_grad
from ..ops import nn as N
from ..ops.linalg import matmul
from ..ops.safu import safu_contexts as safu_contexts_op
from ..ops.shape import cat, index
from ..tensor import Tensor, tensor, zeros
from . import init
from .layers import Embedding, Linear, Dropout
from .module import Module, ModuleList, Parameter
from .sampling import sample_next

__all__ = ["SAFU", "SAFUMixer", "SAFULanguageModel", "safu_contexts", "check_safu_options"]


def _is_int(v):
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def check_safu_options(where, d_in, block, radial, use_document, hidden):
    """ValueError/TypeError for impossible SAFU shapes; returns the width of z."""
    if not _is_int(d_in) or d_in < 1:
        raise ValueError(f"{where}: d_in must be an int >= 1, got {d_in!r}")
    if not _is_int(block) or block < 0:
        raise ValueError(f"{where}: block must be an int >= 0 (0 disables the block context), "
                         f"got {block!r}")
    if not _is_int(radial) or radial < 0:
        raise ValueError(f"{where}: radial must be an int >= 0 (0 disables the radial context), "
                         f"got {radial!r}")
    if not isinstance(use_document, (bool, np.bool_)):
        raise TypeError(f"{where}: use_document must be a bool, got {use_document!r}")
    if hidden is not None and (not _is_int(hidden) or hidden < 1):
        raise ValueError(f"{where}: hidden must be None or an int >= 1, got {hidden!r}")
    parts = (1 if block else 0) + radial + (1 if use_document else 0)
    if parts == 0:
        raise ValueError(f"{where}: block=0, radial=0 and use_document=False leave no context "
                         "to predict from")
    return parts * d_in


def _check_input(where, x, d_in):
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: x must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{where}: x must be floating point (token vectors), got {x.dtype}; "
                        "token ids go through an Embedding first")
    if x.ndim != 3 or x.shape[-1] != d_in:
        raise ValueError(f"{where}: x must be (batch, length, {d_in}), got {x.shape}")


def safu_contexts(x, w_a, block, radial, use_document, state=None, scale=1.0,
                  return_state=True):
    """``z = [h; r; d]`` for inputs x (B, L, D) and comparison matrix w_a (D, D) (None if
    block = 0). Returns ``(z, a, new_state)``: z (B, L, d_z), the attention weights a
    (B, L, block) or None, and the state that continues the sequence after x (None unless
    ``return_state``).

    state: None, or the dict a previous call returned: ``past`` (B, P, D), the last
    ``max(block, radial) - 1`` inputs (detached); ``sum`` (B, D) and ``count``, the running sum
    and number of inputs seen.
    """
    B, L, D = x.shape
    past = None if state is None else state["past"]
    if past is not None and (past.shape[0] != B or past.shape[2] != D):
        raise ValueError(f"SAFU: the state's past inputs {past.shape} do not match x {x.shape}")
    # one op: q = x W_A (the cached comparisons, once per position) and z = [h; r; d] in one
    # kernel each way (ops/safu.py); the same numbers as the pieces safu_block_attention,
    # radial_context and running_mean put together with cat
    z, a = safu_contexts_op(x, w_a, block, radial, use_document, scale, past=past,
                            prev_sum=None if state is None else state["sum"],
                            prev_count=0 if state is None else state["count"])

    keep = max(block, radial) - 1
    new_state = None
    if return_state:
        with no_grad():
            detached = x.detach()
            history = detached if past is None or past.shape[1] == 0 else cat([past, detached], 1)
            start = max(0, history.shape[1] - keep)
            new_past = index(history, (slice(None), slice(start, None)))
            total = detached.sum(dim=1)
            if state is not None and state["sum"] is not None:
                total = total + state["sum"]
            count = L + (0 if state is None else state["count"])
        new_state = {"past": new_past, "sum": total, "count": count}
    return z, a, new_state


class SAFU(Module):
    """One SAFU layer: token vectors ``(B, L, d_in)`` -> next-token logits ``(B, L, vocab_size)``.

    Parameters
    ----------
    d_in : width of the input vectors (e.g. the number of cipher bits).
    vocab_size : number of output classes.
    block : size of the block context (positions attended to, the current one included); 0 off.
    radial : number of most recent inputs concatenated (the current one included); 0 off.
    use_document : include the running mean of all inputs so far.
    hidden : None for ``softmax(z W_O)``, or the width of a hidden softmax layer.

    Parameters (all ``(in, out)``): ``w_a`` (d_in, d_in); ``w_o`` (d_z, V), or ``w_1`` (d_z, H)
    and ``w_2`` (H, V). Random initialisation (Xavier uniform); ``tinyfw.warmstart.explicit_train``
    replaces it with closed-form solutions.
    """

    def __init__(self, d_in, vocab_size, block=8, radial=2, use_document=True, hidden=None,
                 dtype=None, device="cpu"):
        super().__init__()
        self.d_z = check_safu_options("SAFU", d_in, block, radial, use_document, hidden)
        if not _is_int(vocab_size) or vocab_size < 1:
            raise ValueError(f"SAFU: vocab_size must be an int >= 1, got {vocab_size!r}")
        self.d_in, self.vocab_size = int(d_in), int(vocab_size)
        self.block, self.radial = int(block), int(radial)
        self.use_document, self.hidden = bool(use_document), hidden

        def weight(rows, cols):
            p = Parameter(zeros(rows, cols, dtype=dtype, device=device))
            init.xavier_uniform_(p)
            return p

        if block:
            self.w_a = weight(d_in, d_in)
        else:
            self.register_parameter("w_a", None)
        if hidden is None:
            self.w_o = weight(self.d_z, vocab_size)
        else:
            self.w_1 = weight(self.d_z, hidden)
            self.w_2 = weight(hidden, vocab_size)

    def segments(self):
        """Column slices of z: ``{'block': ..., 'radial': ..., 'document': ...}`` (present ones)."""
        out, start = {}, 0
        for name, width in (("block", self.d_in if self.block else 0),
                            ("radial", self.radial * self.d_in),
                            ("document", self.d_in if self.use_document else 0)):
            if width:
                out[name] = slice(start, start + width)
                start += width
        return out

    def features(self, x, state=None, return_state=False, return_attention=False):
        """z (B, L, d_z) for inputs x (B, L, d_in) (and the state / attention weights)."""
        _check_input("SAFU", x, self.d_in)
        z, a, new_state = safu_contexts(x, self.w_a, self.block, self.radial, self.use_document,
                                        state, return_state=return_state)
        out = (z,)
        if return_state:
            out += (new_state,)
        if return_attention:
            out += (a,)
        return out[0] if len(out) == 1 else out

    def output(self, z):
        """Logits (B, L, V) from features z: ``z W_O`` or ``softmax(z W_1) W_2``."""
        if self.hidden is None:
            return matmul(z, self.w_o)
        return matmul(N.softmax(matmul(z, self.w_1)), self.w_2)

    def forward(self, x, state=None, return_state=False):
        if return_state:
            z, new_state = self.features(x, state, return_state=True)
            return self.output(z), new_state
        return self.output(self.features(x, state))

    def log_probs(self, x, state=None):
        """``log_softmax`` of the logits: (B, L, V)."""
        return N.log_softmax(self(x, state))

    def extra_repr(self):
        return (f"d_in={self.d_in}, vocab_size={self.vocab_size}, block={self.block}, "
                f"radial={self.radial}, use_document={self.use_document}, hidden={self.hidden}")


class SAFUMixer(Module):
    """SAFU as a token mixer inside ``LanguageModel`` (``mixer='safu'``): (B, L, D) -> (B, L, D).

    **tinyfw's adaptation**, not from the papers. Inside a Transformer block the input is the
    normalised residual stream, which is real-valued (not non-negative token vectors) and the
    output goes back into the residual stream, so: the three contexts are computed from x as in
    :class:`SAFU` (one comparison matrix ``W_A``, no key/value projections, cached comparisons,
    linear in L), the scores are scaled by ``1/sqrt(D)`` (as in scaled dot-product attention,
    which keeps the softmax soft for unit-variance inputs), and the feed-forward unit maps
    ``z = [h; r; d]`` back to D with a linear layer ``proj`` (or ``softmax(z W_1)`` then ``proj``
    with ``hidden``) instead of a softmax over the vocabulary. The explicit solutions do not apply
    here (inputs are not non-negative); use the LanguageModel's initialisation or
    ``tinyfw.warmstart.init_language_model``.

    The state for ``return_state`` is the same dict as :func:`safu_contexts`.
    """

    def __init__(self, d_model, block=8, radial=2, use_document=True, hidden=None, dropout=0.0,
                 bias=True, scale=None):
        super().__init__()
        self.d_z = check_safu_options("SAFUMixer", d_model, block, radial, use_document, hidden)
        self.d_model, self.block, self.radial = int(d_model), int(block), int(radial)
        self.use_document, self.hidden = bool(use_document), hidden
        self.scale = 1.0 / math.sqrt(d_model) if scale is None else float(scale)
        if block:
            self.w_a = Parameter(zeros(d_model, d_model))
            init.normal_(self.w_a, 0.0, 0.02)
        else:
            self.register_parameter("w_a", None)
        if hidden is None:
            self.proj = Linear(self.d_z, d_model, bias=bias)
        else:
            self.fc = Linear(self.d_z, hidden, bias=bias)
            self.proj = Linear(hidden, d_model, bias=bias)
        self.drop = Dropout(dropout)

    def forward(self, x, state=None, return_state=False):
        _check_input("SAFUMixer", x, self.d_model)
        z, _, new_state = safu_contexts(x, self.w_a, self.block, self.radial, self.use_document,
                                        state, self.scale, return_state=return_state)
        if self.hidden is not None:
            z = N.softmax(self.fc(z))
        y = self.drop(self.proj(z))
        return (y, new_state) if return_state else y

    def extra_repr(self):
        return (f"d_model={self.d_model}, block={self.block}, radial={self.radial}, "
                f"use_document={self.use_document}, hidden={self.hidden}")


class SAFULanguageModel(Module):
    """A stack of SAFU layers over token vectors (spec step 7; the stacking rule is tinyfw's).

    ``ids (B, L) -> logits (B, L, V)``; ``model(ids, targets)`` also returns the mean
    cross-entropy. Layer 1 reads the token vectors ``x^1_t = E[id_t]`` (``E``: the embedding,
    normally bit-cipher or co-occurrence vectors, non-negative and L1-normalised). With
    ``p^l_t E`` the expected token vector of layer l's prediction (``p = softmax(logits)``),
    layer l + 1 reads, by ``stack``:

    * ``'concat'`` (default): ``x^{l+1}_t = [x^1_t ; p^l_t E]`` (width ``2 d_in``): the token
      vector passes through unchanged beside the previous layer's prediction;
    * ``'mix'``: ``x^{l+1}_t = (1 - mix) x^l_t + mix p^l_t E`` (width ``d_in``), a residual mix.

    Both keep every input non-negative (unit L1 norm per block of ``d_in`` when E's rows have
    it), so the explicit solution applies to every layer. 'concat' is the default because
    'mix' blurs the explicit solution of the layers above the first: the dense expected vector
    adds a little mass to every feature of every example, and so to every row of
    ``F = X^T Y``, while 'concat' keeps the token features clean. The logits of the last layer
    are the model's output.

    Parameters
    ----------
    vocab_size, d_in : vocabulary size and token-vector width.
    n_layers : number of SAFU layers.
    block, radial, use_document, hidden : per-layer options (see :class:`SAFU`).
    stack : 'concat' or 'mix' (above).
    mix : with ``stack='mix'``, the weight of the previous layer's expected prediction.
    embedding : optional array (V, d_in) of token vectors; default random non-negative rows
        with unit L1 norm (the "cold start").
    freeze_embedding : keep E fixed (default True: deterministic vectors are not trained).
    """

    def __init__(self, vocab_size, d_in, n_layers=1, block=8, radial=2, use_document=True,
                 hidden=None, stack="concat", mix=0.5, embedding=None, freeze_embedding=True,
                 dtype=None):
        super().__init__()
        check_safu_options("SAFULanguageModel", d_in, block, radial, use_document, hidden)
        if not _is_int(n_layers) or n_layers < 1:
            raise ValueError(f"SAFULanguageModel: n_layers must be an int >= 1, got {n_layers!r}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"SAFULanguageModel: mix must be in [0, 1], got {mix}")
        if stack not in ("concat", "mix"):
            raise ValueError(f"SAFULanguageModel: stack must be 'concat' or 'mix', got {stack!r}")
        self.config = dict(vocab_size=int(vocab_size), d_in=int(d_in), n_layers=int(n_layers),
                           block=int(block), radial=int(radial), use_document=bool(use_document),
                           hidden=hidden, stack=stack, mix=float(mix),
                           freeze_embedding=bool(freeze_embedding))
        self.vocab_size, self.d_in, self.mix = int(vocab_size), int(d_in), float(mix)
        self.stack = stack
        self.emb = Embedding(vocab_size, d_in, dtype=dtype)
        if embedding is None:
            from .. import random as _random
            rows = _random.generator().random((vocab_size, d_in))
            embedding = rows / rows.sum(axis=1, keepdims=True)
        self.set_embedding(embedding)
        self.emb.weight.requires_grad = not freeze_embedding
        widths = [d_in] + [2 * d_in if stack == "concat" else d_in] * (n_layers - 1)
        self.layers = ModuleList([SAFU(w, vocab_size, block, radial, use_document, hidden,
                                       dtype=dtype) for w in widths])

    def set_embedding(self, vectors):
        """Copy ``vectors`` (V, d_in) into the embedding (keeps its dtype and trainability)."""
        vectors = np.asarray(vectors.numpy() if isinstance(vectors, Tensor) else vectors)
        if vectors.shape != (self.vocab_size, self.d_in):
            raise ValueError(f"SAFULanguageModel.set_embedding: expected ({self.vocab_size}, "
                             f"{self.d_in}), got {vectors.shape}")
        init.copy_(self.emb.weight, vectors)

    def layer_inputs(self, ids, upto, state=None):
        """The input of layer ``upto`` (0-based) for ids (B, L), computed with layers < upto."""
        tokens = x = self.emb(ids)
        for i in range(upto):
            logits = self.layers[i](x, None if state is None else state[i])
            x = self._next_input(tokens, x, logits)
        return x

    def _next_input(self, tokens, x, logits):
        expected = matmul(N.softmax(logits), self.emb.weight)
        if self.stack == "concat":
            return cat([tokens, expected], dim=-1)
        return x * (1.0 - self.mix) + expected * self.mix

    def forward(self, ids, targets=None, state=None, return_state=False):
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"SAFULanguageModel: ids must be an integer (batch, time) tensor, "
                             f"got {getattr(ids, 'shape', type(ids).__name__)}")
        tokens = x = self.emb(ids)
        states = []
        logits = None
        for i, layer in enumerate(self.layers):
            if i:
                x = self._next_input(tokens, x, logits)
            layer_state = None if state is None else state[i]
            if return_state:
                logits, s = layer(x, layer_state, return_state=True)
                states.append(s)
            else:
                logits = layer(x, layer_state)
        out = logits if targets is None else (logits, N.cross_entropy(logits, targets))
        if return_state:
            return (out, states) if targets is None else (*out, states)
        return out

    @no_grad()
    def generate(self, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None):
        """Extend ids (B, T) by ``max_new_tokens`` sampled tokens, one step at a time from the
        carried state (no context limit); ``temperature``, ``top_k`` and ``top_p`` filter as in
        :func:`~tinyfw.nn.sampling.sample_next`."""
        was_training = self.training
        self.eval()
        try:
            seq = ids.numpy()
            logits, state = self(ids, return_state=True)
            for _ in range(max_new_tokens):
                nxt = sample_next(logits.numpy()[:, -1, :], temperature, top_k, top_p=top_p)
                seq = np.concatenate([seq, nxt[:, None]], axis=1)
                logits, state = self(tensor(nxt[:, None]), state=state, return_state=True)
            return tensor(seq)
        finally:
            self.train(was_training)
