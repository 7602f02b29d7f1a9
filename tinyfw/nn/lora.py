"""Low-rank adapters (LoRA, Hu et al. 2021): a frozen ``Linear`` plus a trainable rank-r update.

    y = x W^T + b + (alpha / r) * (x A^T) B^T        A (r, in), B (out, r)

Only ``A`` and ``B`` are trained, ``r (in + out)`` numbers instead of ``in * out``. ``B`` starts at
zero, so a freshly wrapped layer computes exactly what the base layer computes; ``A`` starts like
a ``Linear`` weight (Kaiming-uniform), so the gradient of ``B`` is not zero at the start.
``merge()`` folds ``(alpha / r) B A`` into ``W`` (inference then costs one matrix product, as
before wrapping) and ``unmerge()`` takes it out again.

    wrapped = apply_lora(model, ["blocks.*.mixer.qkv", "blocks.*.mlp.*"], rank=4)
    opt = Adam(trainable_parameters(model), lr=1e-2)      # tinyfw.nn.freezing

Patterns are shell-style globs (``fnmatch``: ``*`` also crosses dots) over the module names of
``model.named_modules()``.
"""
import fnmatch
import math

from ..autograd import no_grad
from ..ops import linalg as L
from ..tensor import zeros
from . import init
from .freezing import name_patterns
from .layers import Linear
from .module import Module, Parameter


def _check_rank(where, rank, in_features, out_features):
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{where}: rank must be an integer >= 1, got rank={rank!r}")
    if rank > min(in_features, out_features):
        raise ValueError(f"{where}: rank={rank} exceeds min(in_features={in_features}, "
                         f"out_features={out_features}) = {min(in_features, out_features)}; a "
                         "larger rank adds parameters without adding expressiveness")


def _check_alpha(where, rank, alpha):
    alpha = float(rank) if alpha is None else alpha
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and math.isfinite(alpha)
                                       and alpha > 0):
        raise ValueError(f"{where}: alpha must be a finite number > 0, got alpha={alpha!r}")
    return alpha


class LoRALinear(Module):
    """A frozen ``base`` Linear plus a trainable low-rank update (module docstring).

    ``x`` (..., in_features) -> (..., out_features). ``alpha`` defaults to ``rank`` (scaling 1).
    The base layer's parameters are set to ``requires_grad=False`` here. While merged, the update
    lives in ``base.weight`` and the forward pass is the base layer's alone, so ``lora_a`` and
    ``lora_b`` get no gradient: merge for inference, unmerge to train again.
    """

    def __init__(self, base, rank, alpha=None):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: base must be a tinyfw.nn.Linear, got "
                            f"{type(base).__name__}")
        _check_rank("LoRALinear", rank, base.in_features, base.out_features)
        alpha = _check_alpha("LoRALinear", rank, alpha)
        self.base = base
        base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_a = Parameter(zeros(rank, self.in_features, dtype=dtype, device=device))
        init.kaiming_uniform_(self.lora_a)
        self.lora_b = Parameter(zeros(self.out_features, rank, dtype=dtype, device=device))
        self.merged = False

    @property
    def weight(self):
        """The base layer's weight (without the update unless merged), for code that reads a
        Linear's ``weight`` for its dtype, device or shape."""
        return self.base.weight

    @property
    def bias(self):
        """The base layer's bias (or None)."""
        return self.base.bias

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        return y + L.linear(L.linear(x, self.lora_a), self.lora_b) * self.scaling

    def delta_weight(self):
        """The update ``(alpha / r) B A`` as a Tensor (out_features, in_features), no graph."""
        with no_grad():
            return (self.lora_b @ self.lora_a) * self.scaling

    def merge(self):
        """Fold the update into ``base.weight``: ``W <- W + (alpha / r) B A``."""
        if self.merged:
            raise RuntimeError("LoRALinear.merge: the adapter is already merged (merging twice "
                               "would add the update twice); call unmerge() first")
        with no_grad():
            self.base.weight.data = (self.base.weight + self.delta_weight()).data
        self.merged = True
        return self

    def unmerge(self):
        """Take the update out of ``base.weight`` again (equal to before ``merge()`` up to one
        rounding of the addition)."""
        if not self.merged:
            raise RuntimeError("LoRALinear.unmerge: the adapter is not merged")
        with no_grad():
            self.base.weight.data = (self.base.weight - self.delta_weight()).data
        self.merged = False
        return self

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}")


def apply_lora(model, patterns, rank, alpha=None, freeze_others=True):
    """Replace every ``Linear`` of ``model`` whose module name matches one of ``patterns`` by a
    ``LoRALinear`` around it; returns the wrapped names, in ``named_modules()`` order. Other
    modules a pattern matches (``"blocks.*.mlp.*"`` also matches the activation) are skipped.

    With ``freeze_others`` (the default) every parameter of the model but the adapters' ``A``
    and ``B`` is frozen, so that only adapters train. Every pattern must match at least one
    ``Linear``, no matched layer may have an adapter already, and ``rank`` must fit each wrapped
    layer; all of this is checked before the model is changed.
    """
    patterns = name_patterns("apply_lora", patterns)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"apply_lora: rank must be an integer >= 1, got rank={rank!r}")
    _check_alpha("apply_lora", rank, alpha)
    modules = dict(model.named_modules())
    inside_adapter = {f"{name}.base" for name, m in modules.items() if isinstance(m, LoRALinear)}
    chosen = []
    for pattern in patterns:
        hits = [name for name in modules if name and fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(f"apply_lora: pattern {pattern!r} matches no module of "
                             f"{type(model).__name__} (module names look like "
                             f"{[n for n in modules if n][:6]})")
        linear = []
        for name in hits:
            m = modules[name]
            if isinstance(m, LoRALinear) or name in inside_adapter:
                raise ValueError(f"apply_lora: layer {name!r} (pattern {pattern!r}) already has "
                                 "a LoRA adapter")
            if type(m) is Linear:
                _check_rank(f"apply_lora: layer {name!r}", rank, m.in_features, m.out_features)
                linear.append(name)
        if not linear:
            found = ", ".join(f"{n!r} ({type(modules[n]).__name__})" for n in hits[:6])
            raise TypeError(f"apply_lora: pattern {pattern!r} matches no Linear layer, only "
                            f"{found}; adapters wrap Linear layers only")
        chosen += [name for name in linear if name not in chosen]
    chosen.sort(key=list(modules).index)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        # in place, so that a ModuleList keeps its order
        parent._modules[child] = LoRALinear(modules[name], rank, alpha)
    if freeze_others:
        model.requires_grad_(False)
        for _, layer in lora_layers(model):
            layer.lora_a.requires_grad_(True)
            layer.lora_b.requires_grad_(True)
    return chosen


def lora_layers(model):
    """``(name, LoRALinear)`` pairs of ``model``, in ``named_modules()`` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """Merge every adapter of ``model`` (see ``LoRALinear.merge``); returns their names."""
    layers = lora_layers(model)
    merged = [name for name, m in layers if m.merged]
    if merged:
        raise RuntimeError(f"merge_lora: layers {merged} are already merged; nothing was changed")
    for _, m in layers:
        m.merge()
    return [name for name, _ in layers]


def unmerge_lora(model):
    """Unmerge every adapter of ``model``; returns their names."""
    layers = lora_layers(model)
    unmerged = [name for name, m in layers if not m.merged]
    if unmerged:
        raise RuntimeError(f"unmerge_lora: layers {unmerged} are not merged; nothing was changed")
    for _, m in layers:
        m.unmerge()
    return [name for name, _ in layers]
