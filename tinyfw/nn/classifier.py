"""A classification head over a causal language model: pool the final hidden states of each
sequence into one vector and map it to class scores with a ``Linear``.

    clf = SequenceClassifier(language_model, n_classes=3, pooling="last")
    scores = clf(ids, lengths)          # ids (B, T) right-padded, lengths (B,) -> (B, n_classes)

Pooling (``POOLINGS``): ``'last'`` takes the hidden state at each sequence's last real token
(in a causal model it has read the whole sequence); ``'mean'`` averages the hidden states of the
real tokens. Padding after the last token never reaches either: the model is causal and both
poolings read only positions ``< length``.
"""
import numpy as np

from ..tensor import Tensor, tensor
from .layers import Identity, Linear
from .module import Module

POOLINGS = ("last", "mean")


def _check_lengths(lengths, batch, steps):
    lengths = np.asarray(lengths)
    if lengths.shape != (batch,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"SequenceClassifier: lengths must be {batch} integers (one per "
                         f"sequence), got shape {lengths.shape} dtype {lengths.dtype}")
    if lengths.min() < 1 or lengths.max() > steps:
        raise ValueError(f"SequenceClassifier: lengths must be in 1..{steps} (the padded "
                         f"length), got min {lengths.min()} max {lengths.max()}")
    return lengths.astype(np.int64)


def pool(hidden, lengths, pooling):
    """``hidden`` (B, T, D), ``lengths`` (B,) in 1..T -> (B, D) by ``pooling`` (``POOLINGS``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pool: pooling={pooling!r} is not one of {POOLINGS}")
    B, T, _ = hidden.shape
    lengths = _check_lengths(lengths, B, T)
    if pooling == "last":
        return hidden[np.arange(B), lengths - 1]
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(hidden.dtype)     # (B, T)
    weights = tensor(mask / lengths[:, None], device=hidden.device)
    return (hidden * weights.reshape(B, T, 1)).sum(1)


class SequenceClassifier(Module):
    """Class scores from a language model's final hidden states (module docstring).

    The language model is taken over: its output layer ``head`` (a ``Linear`` from the hidden
    width to the vocabulary) is replaced by ``Identity``, so that ``body(ids)`` returns the final
    (normalised) hidden states ``(B, T, D)``; ``D`` is read from that layer's ``in_features``.
    The new ``classifier`` Linear (D -> n_classes) is PyTorch-initialised.
    """

    def __init__(self, language_model, n_classes, pooling="last"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"SequenceClassifier: pooling={pooling!r} is not one of {POOLINGS}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"SequenceClassifier: n_classes must be an integer >= 2, got "
                             f"n_classes={n_classes!r}")
        head = language_model._modules.get("head") if isinstance(language_model, Module) else None
        if not isinstance(head, Linear):
            raise TypeError(f"SequenceClassifier: the language model "
                            f"({type(language_model).__name__}) needs an output layer 'head' "
                            f"that is a Linear from its hidden width, got "
                            f"{type(head).__name__ if head is not None else 'none'}")
        if head.in_features < 1:
            raise ValueError(f"SequenceClassifier: layer 'head' has in_features="
                             f"{head.in_features}; the hidden width must be >= 1")
        self.width, self.n_classes, self.pooling = head.in_features, n_classes, pooling
        language_model.head = Identity()
        self.body = language_model
        self.classifier = Linear(self.width, n_classes, dtype=head.weight.dtype,
                                 device=head.weight.device)

    def forward(self, ids, lengths=None):
        """``ids`` (B, T) int64 (a Tensor or an array), right-padded; ``lengths`` (B,) the real
        tokens of each row (default: all T) -> scores (B, n_classes)."""
        if not isinstance(ids, Tensor):
            ids = tensor(np.asarray(ids, dtype=np.int64))
        B, T = ids.shape
        if lengths is None:
            lengths = np.full(B, T, dtype=np.int64)
        hidden = self.body(ids)
        return self.classifier(pool(hidden, lengths, self.pooling))

    def layer_groups(self):
        """Parameter-name groups from the top down, for ``GradualUnfreezing``: the classifier
        (with the final norm), each block from the last to the first, then the embeddings."""
        if "blocks" not in self.body._modules:
            raise TypeError(f"SequenceClassifier.layer_groups: the language model "
                            f"({type(self.body).__name__}) has no 'blocks' to group")
        names = [name for name, _ in self.named_parameters()]

        def present(prefixes):
            return [p for p in prefixes if any(n.startswith(p + ".") for n in names)]

        groups = [present(["classifier", "body.norm_f"])]
        groups += [[f"body.blocks.{i}"] for i in reversed(range(len(self.body.blocks)))]
        groups.append(present(["body.tok_emb", "body.pos_emb"]))
        return [g for g in groups if g]

    def extra_repr(self):
        return f"width={self.width}, n_classes={self.n_classes}, pooling={self.pooling!r}"
