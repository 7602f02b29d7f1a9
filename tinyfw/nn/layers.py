"""Basic layers: Linear, Embedding, Dropout and the activation modules."""
import math

from ..tensor import Tensor, zeros
from ..ops import activations as A, linalg as L, nn as N
from . import init
from .module import Module, Parameter


class Linear(Module):
    """``y = x W^T + b``; W ``(out_features, in_features)``, PyTorch's default initialisation."""

    def __init__(self, in_features, out_features, bias=True, dtype=None, device="cpu"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(zeros(out_features, in_features, dtype=dtype, device=device))
        init.kaiming_uniform_(self.weight)
        if bias:
            self.bias = Parameter(zeros(out_features, dtype=dtype, device=device))
            bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
            init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return L.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``, initialised N(0, 1)."""

    def __init__(self, num_embeddings, embedding_dim, dtype=None, device="cpu", _weight=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(zeros(num_embeddings, embedding_dim, dtype=dtype,
                                        device=device))
        if _weight is None:
            init.normal_(self.weight)
        else:
            init.copy_(self.weight, _weight)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True):
        """An Embedding holding ``embeddings`` (an array ``(V, D)``, e.g. warm-start vectors)."""
        import numpy as np
        arr = embeddings.numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings)
        if arr.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: expected a 2-D array, got {arr.shape}")
        m = cls(arr.shape[0], arr.shape[1], dtype=arr.dtype if arr.dtype.kind == "f" else None,
                _weight=arr)
        m.weight.requires_grad = not freeze
        return m

    def forward(self, ids):
        return N.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return N.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return A.gelu(x, self.approximate)


class ReLU(Module):
    def forward(self, x):
        return A.relu(x)


class SiLU(Module):
    def forward(self, x):
        return A.silu(x)


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Identity(Module):
    def forward(self, x):
        return x
