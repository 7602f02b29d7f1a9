"""Fast-weight attention as a token mixer: linear transformers and the delta rule.

Schlag, Irie & Schmidhuber, "Linear Transformers Are Secretly Fast Weight Programmers" (2021);
formulas in ``docs/FAST_WEIGHTS.md``. Per head h of width ``Dh = D / n_heads``:

    q, k, v = W_q x_t, W_k x_t, W_v x_t          (one fused projection D -> 3D)
    q, k    = phi(q), phi(k)                     (feature map: 'elu', 'dpfp' or 'favor')
    sum rule:    S_t = S_{t-1} + k v^T,  z_t = z_{t-1} + k,  y_t = S_t^T q / (z_t . q + eps)
    delta rule:  q, k = q / sum(q), k / sum(k),  beta_t = sigmoid(w_beta . x_t),
                 S_t = S_{t-1} + beta_t k (v - S_{t-1}^T k)^T,  y_t = S_t^T q
    output  = W_o [y^1; ...; y^H]

The fast weights S (one ``Dk x Dv`` matrix per head, ``Dk`` the feature map's output size) are
the whole memory of the past, so the mixer is causal, linear in the sequence length, and a
sequence can be continued from a state at O(1) cost per token:

    y, state = layer(x1, return_state=True)
    y2, state = layer(x2, state=state, return_state=True)   # == layer([x1; x2]) split at len(x1)

The state is a dict ``{"S": (B, H, Dk, Dh)}``, plus ``"z": (B, H, Dk)`` for the sum rule and
``"projection": (Dh, m)`` for FAVOR+ (the random features must stay the same while a sequence is
continued). FAVOR+ redraws its projection at every forward in training mode (as in Performer;
an unbiased estimate each time) unless a state is given, and uses the fixed ``projection``
buffer in eval mode.
"""
import numpy as np

from ..ops import fast_weights as FW
from ..ops import feature_maps as FM
from ..tensor import Tensor
from .layers import Dropout, Linear
from .module import Module

__all__ = ["FastWeightAttention"]

FEATURE_MAPS = ("elu", "dpfp", "favor")
UPDATES = ("sum", "delta")


class FastWeightAttention(Module):
    """(B, L, D) -> (B, L, D), causal fast-weight attention with ``n_heads`` heads.

    feature_map: 'elu' (``elu + 1``, Dk = Dh), 'dpfp' (DPFP-nu, Dk = 2 Dh nu) or 'favor'
    (FAVOR+ with ``num_features`` random features, default Dh; Dk = 2 num_features).
    update: 'sum' (linear attention, normalised by ``z . q``) or 'delta' (the delta rule with a
    learned per-head write strength beta). ``method``/``chunk_size``: see
    ``tinyfw.ops.fast_weights``. Parameters: ``qkv`` (D -> 3D), ``beta`` (D -> n_heads, delta
    rule only), ``proj`` (D -> D).
    """

    def __init__(self, d_model, n_heads, feature_map="dpfp", nu=1, update="delta",
                 num_features=None, dropout=0.0, bias=True, eps=1e-6, method="auto",
                 chunk_size=64, dtype=None, device="cpu"):
        super().__init__()
        name = "FastWeightAttention"
        if not (isinstance(d_model, (int, np.integer)) and isinstance(n_heads, (int, np.integer))
                and d_model >= 1 and n_heads >= 1 and d_model % n_heads == 0):
            raise ValueError(f"{name}: d_model={d_model!r} must be a positive multiple of "
                             f"n_heads={n_heads!r}")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"{name}: feature_map must be one of {FEATURE_MAPS}, got "
                             f"{feature_map!r}")
        if update not in UPDATES:
            raise ValueError(f"{name}: update must be one of {UPDATES}, got {update!r}")
        if method not in FW.METHODS:
            raise ValueError(f"{name}: method must be one of {FW.METHODS}, got {method!r}")
        self.d_model, self.n_heads = int(d_model), int(n_heads)
        self.head_dim = self.d_model // self.n_heads
        self.feature_map, self.update, self.eps = feature_map, update, float(eps)
        self.method, self.chunk_size = method, int(chunk_size)
        self.nu = int(nu) if feature_map == "dpfp" else None
        if feature_map == "dpfp" and not (isinstance(nu, (int, np.integer))
                                          and 1 <= nu < self.head_dim):
            raise ValueError(f"{name}: DPFP needs an integer nu with 1 <= nu < head_dim = "
                             f"{self.head_dim} (d_model / n_heads), got nu={nu!r}")
        if feature_map == "favor":
            m = self.head_dim if num_features is None else num_features
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
                raise ValueError(f"{name}: num_features must be a positive integer, got {m!r}")
            self.num_features = int(m)
        else:
            self.num_features = None
        self.key_dim = {"elu": self.head_dim, "dpfp": 2 * self.head_dim * (self.nu or 1),
                        "favor": 2 * (self.num_features or 1)}[feature_map]

        self.qkv = Linear(self.d_model, 3 * self.d_model, bias=bias, dtype=dtype, device=device)
        if update == "delta":
            self.beta = Linear(self.d_model, self.n_heads, bias=bias, dtype=dtype, device=device)
        self.proj = Linear(self.d_model, self.d_model, bias=bias, dtype=dtype, device=device)
        self.drop = Dropout(dropout)
        if feature_map == "favor":
            self.register_buffer("projection", self._draw_projection())

    # ------------------------------------------------------------------------ pieces
    def _draw_projection(self):
        w = self.qkv.weight
        return FM.favor_projection(self.head_dim, self.num_features, dtype=w.dtype,
                                   device=w.device)

    def _phi(self, x, projection):
        if self.feature_map == "elu":
            return FM.elu_plus_one(x)
        if self.feature_map == "dpfp":
            return FM.dpfp(x, self.nu)
        return FM.favor_features(x, projection)

    def _check_input(self, x):
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"FastWeightAttention: input must be (batch, length, "
                             f"{self.d_model}), got {shape}")

    def state_shapes(self, batch_size):
        """The shapes of the state entries for a batch of ``batch_size`` sequences."""
        shapes = {"S": (batch_size, self.n_heads, self.key_dim, self.head_dim)}
        if self.update == "sum":
            shapes["z"] = (batch_size, self.n_heads, self.key_dim)
        if self.feature_map == "favor":
            shapes["projection"] = (self.head_dim, self.num_features)
        return shapes

    def _check_state(self, state, batch_size):
        want = self.state_shapes(batch_size)
        if not isinstance(state, dict) or set(state) != set(want):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"FastWeightAttention: state must be the dict with keys "
                             f"{sorted(want)} returned with return_state=True, got {got}")
        for key, shape in want.items():
            if not isinstance(state[key], Tensor) or state[key].shape != shape:
                got = state[key].shape if isinstance(state[key], Tensor) else \
                    type(state[key]).__name__
                raise ValueError(f"FastWeightAttention: state[{key!r}] must be {shape} for a "
                                 f"batch of {batch_size}, got {got}")

    # ------------------------------------------------------------------------ forward
    def forward(self, x, state=None, return_state=False):
        """x (B, L, D) -> y (B, L, D); with ``return_state=True`` also the state to continue."""
        self._check_input(x)
        B, L, D = x.shape
        if state is not None:
            self._check_state(state, B)
        H, Dh = self.n_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                       # (B, H, L, Dh)

        projection = None
        if self.feature_map == "favor":
            if state is not None:
                projection = state["projection"]
            elif self.training:
                projection = self._draw_projection()
            else:
                projection = self.projection
        q, k = self._phi(q, projection), self._phi(k, projection)

        if self.update == "sum":
            initial = None if state is None else (state["S"], state["z"])
            y, (S, z) = FW.linear_attention(q, k, v, normalize=True, eps=self.eps,
                                            initial_state=initial, return_state=True,
                                            method=self.method, chunk_size=self.chunk_size)
            new_state = {"S": S, "z": z}
        else:
            q, k = FM.sum_normalize(q), FM.sum_normalize(k)
            beta = self.beta(x).sigmoid().permute(0, 2, 1)                        # (B, H, L)
            y, S = FW.delta_rule(q, k, v, beta, initial_state=None if state is None else
                                 state["S"], return_state=True, method=self.method,
                                 chunk_size=self.chunk_size)
            new_state = {"S": S}
        if projection is not None:
            new_state["projection"] = projection
        y = self.drop(self.proj(y.permute(0, 2, 1, 3).reshape(B, L, D)))
        return (y, new_state) if return_state else y

    def extra_repr(self):
        fm = self.feature_map + (f"(nu={self.nu})" if self.nu else "") + \
            (f"(m={self.num_features})" if self.num_features else "")
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, feature_map={fm}, "
                f"update={self.update}, key_dim={self.key_dim}")
