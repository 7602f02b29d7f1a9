"""Feature maps for fast-weight (linear) attention, and sum normalisation.

A feature map phi turns a query or key into a vector whose dot products stand in for the softmax
kernel; its output size is the number of rows of the fast-weight matrix, and so its capacity
(Schlag, Irie & Schmidhuber 2021; formulas in ``docs/FAST_WEIGHTS.md``):

=================  ============================================================  =========
map                formula                                                       out dim
=================  ============================================================  =========
``elu_plus_one``   ``elu(x) + 1``                                                D
``dpfp``           ``r = [relu(x), relu(-x)]``; ``concat_j r * roll(r, j)``,      2 D nu
                   ``j = 1..nu``, ``roll(r, j)_i = r_{(i - j) mod 2D}``
``favor_features`` ``(2m)^(-1/2) exp(-|x|^2 / 2) [exp(W^T x), exp(-W^T x)]``      2 m
=================  ============================================================  =========

``sum_normalize`` divides by the sum over the feature axis (the delta rule needs it so that
``beta |k|^2 <= 2`` keeps the state bounded). Every map acts on the last axis and is built from
backend primitives only, so it runs on every device.
"""
import math

import numpy as np

from .. import random as _random
from ..autograd import Function
from ..tensor import Tensor, get_default_dtype, tensor

__all__ = ["elu_plus_one", "dpfp", "favor_features", "favor_projection", "sum_normalize"]


def _check_float(op, name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{op}: {name} needs at least one dimension (the features), got a "
                         "0-d tensor")


def _last(x, start, stop):
    """``x[..., start:stop]`` on a backend array (slices written out for every backend)."""
    return (slice(None),) * (x.ndim - 1) + (slice(start, stop),)


# ---------------------------------------------------------------------------- ELU + 1

class EluPlusOne(Function):
    # One fused primitive each way; the backward needs only y (derivative 1 where y > 1, else
    # exp(x) = y: exact at x = 0 and for inf / NaN, see backend/reference/core.py).
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.elu_plus_one_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return ctx.backend.elu_plus_one_backward(g, y)


def elu_plus_one(x):
    """``elu(x) + 1``: positive features of the same size, the map of linear transformers."""
    _check_float("elu_plus_one", "x", x)
    return EluPlusOne.apply(x)


# ---------------------------------------------------------------------------- DPFP

def _roll_last(be, r, j):
    """``roll(r, j)`` along the last axis: ``out_i = r_{(i - j) mod n}``."""
    n = r.shape[-1]
    j %= n
    if j == 0:
        return r
    return be.concatenate([be.getitem(r, _last(r, n - j, n)), be.getitem(r, _last(r, 0, n - j))],
                          r.ndim - 1)


class DPFP(Function):
    @staticmethod
    def forward(ctx, x, nu):
        be = ctx.backend
        axis = x.ndim - 1
        r = be.concatenate([be.maximum(x, 0), be.maximum(be.neg(x), 0)], axis)
        phi = be.concatenate([be.mul(r, _roll_last(be, r, j)) for j in range(1, nu + 1)], axis)
        ctx.save_for_backward(x, r)
        ctx.nu = nu
        return phi

    @staticmethod
    def backward(ctx, g):
        x, r = ctx.saved_tensors
        be = ctx.backend
        n = r.shape[-1]                       # 2D
        dr = None
        for j in range(1, ctx.nu + 1):
            gj = be.getitem(g, _last(g, (j - 1) * n, j * n))
            # phi_{j,i} = r_i r_{i-j}: r_i gets g_{j,i} r_{i-j}, and r_{i-j} gets g_{j,i} r_i
            term = be.add(be.mul(gj, _roll_last(be, r, j)), _roll_last(be, be.mul(gj, r), -j))
            dr = term if dr is None else be.add(dr, term)
        D = n // 2
        dpos = be.getitem(dr, _last(dr, 0, D))
        dneg = be.getitem(dr, _last(dr, D, n))
        # relu has derivative 0 at 0 (as PyTorch), so x = 0 gets no gradient
        return be.sub(be.where(be.gt(x, 0), dpos, 0), be.where(be.lt(x, 0), dneg, 0)), None


def dpfp(x, nu=1):
    """Deterministic parameter-free projection (DPFP-nu): last axis ``D -> 2 D nu``, non-negative.

    ``r = [relu(x), relu(-x)]`` (2D values) and block j holds ``r * roll(r, j)``, j = 1..nu.
    Useful nu are small: block ``j = D`` is identically zero (each product pairs relu(x_i) with
    relu(-x_i)) and blocks j and 2D - j hold the same products, so ``nu >= D`` is refused.
    """
    _check_float("dpfp", "x", x)
    D = x.shape[-1]
    if isinstance(nu, bool) or not isinstance(nu, (int, np.integer)) or nu < 1:
        raise ValueError(f"dpfp: nu must be an integer >= 1, got {nu!r}")
    if nu >= D:
        raise ValueError(
            f"dpfp: nu={nu} is too large for input dim D={D}: nu must be < D, because block "
            f"j = D is identically zero and blocks j and 2D - j repeat the same products "
            f"(useful values are 1, 2, 3)")
    return DPFP.apply(x, int(nu))


# ---------------------------------------------------------------------------- FAVOR+

class FavorFeatures(Function):
    @staticmethod
    def forward(ctx, x, w):
        be = ctx.backend
        m = w.shape[1]
        a = be.matmul(x, w)                                               # (..., m)
        half_sq = be.mul(be.sum(be.mul(x, x), x.ndim - 1, True), 0.5)     # (..., 1)
        scale = 1.0 / math.sqrt(2 * m)
        pos = be.mul(be.exp(be.sub(a, half_sq)), scale)
        neg = be.mul(be.exp(be.sub(be.neg(a), half_sq)), scale)
        ctx.save_for_backward(x, w, pos, neg)
        return be.concatenate([pos, neg], x.ndim - 1)

    @staticmethod
    def backward(ctx, g):
        x, w, pos, neg = ctx.saved_tensors
        be = ctx.backend
        m = w.shape[1]
        axis = x.ndim - 1
        gp = be.mul(be.getitem(g, _last(g, 0, m)), pos)
        gn = be.mul(be.getitem(g, _last(g, m, 2 * m)), neg)
        da = be.sub(gp, gn)                                                # dL/d(W^T x)
        dhalf = be.neg(be.sum(be.add(gp, gn), axis, True))                 # dL/d(|x|^2 / 2)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = be.add(be.matmul(da, be.transpose(w, (1, 0))), be.mul(dhalf, x))
        if ctx.needs_input_grad[1]:
            D = x.shape[-1]
            N = int(np.prod(x.shape[:-1], dtype=np.int64))
            dw = be.matmul(be.transpose(be.reshape(x, (N, D)), (1, 0)), be.reshape(da, (N, m)))
        return dx, dw


def favor_features(x, projection):
    """Performer's positive random features (FAVOR+): last axis ``D -> 2m``.

    ``phi(x) = (2m)^(-1/2) exp(-|x|^2/2) [exp(W^T x), exp(-W^T x)]`` with ``projection`` W
    ``(D, m)``, given explicitly (draw one with :func:`favor_projection`; the layer redraws it at
    every training forward). Differentiable in x and in W.
    """
    _check_float("favor_features", "x", x)
    _check_float("favor_features", "projection", projection)
    if projection.ndim != 2 or projection.shape[0] != x.shape[-1]:
        raise ValueError(f"favor_features: projection must be (D, m) with D = x.shape[-1] = "
                         f"{x.shape[-1]}, got projection {projection.shape} for x {x.shape}")
    if projection.dtype != x.dtype:
        raise TypeError(f"favor_features: x ({x.dtype}) and projection ({projection.dtype}) "
                        "must share a dtype")
    if projection.device != x.device:
        raise ValueError(f"favor_features: x is on {x.device}, projection on "
                         f"{projection.device}")
    return FavorFeatures.apply(x, projection)


def favor_projection(dim, num_features, generator=None, dtype=None, device="cpu"):
    """Draw W ``(dim, num_features)`` for :func:`favor_features`: orthogonal random features.

    Columns come in blocks of ``dim`` mutually orthogonal directions (the Q of the QR
    decomposition of a Gaussian matrix, signs fixed so that Q is uniformly distributed); each
    column is then given a chi(dim)-distributed length, the length of a ``dim``-dimensional
    standard Gaussian vector, so that every column alone is distributed as a Gaussian one.
    ``generator``: a NumPy Generator (default: tinyfw's global one, seeded by ``manual_seed``).
    Returns a Tensor that does not require grad.
    """
    for name, n in (("dim", dim), ("num_features", num_features)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"favor_projection: {name} must be a positive integer, got {n!r}")
    rng = generator if generator is not None else _random.generator()
    blocks, left = [], num_features
    while left > 0:
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)            # Haar-distributed Q
        blocks.append(q[:, :min(left, dim)])
        left -= dim
    directions = np.concatenate(blocks, axis=1)                  # unit, orthogonal within a block
    lengths = np.sqrt(rng.chisquare(dim, size=num_features))
    return tensor(directions * lengths, dtype=dtype if dtype is not None else get_default_dtype(),
                  device=device)


# ---------------------------------------------------------------------------- sum normalisation

class SumNormalize(Function):
    @staticmethod
    def forward(ctx, x, axis, eps):
        be = ctx.backend
        s = be.add(be.sum(x, axis, True), eps)
        y = be.div(x, s)
        ctx.save_for_backward(y, s)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        y, s = ctx.saved_tensors
        be = ctx.backend
        # y = x / s with s = sum(x) + eps:  dx = (g - <g, y>) / s
        inner = be.sum(be.mul(g, y), ctx.axis, True)
        return be.div(be.sub(g, inner), s), None, None


def sum_normalize(x, dim=-1, eps=1e-6):
    """``x / (sum(x, dim) + eps)``: features summing to one (for non-negative x)."""
    _check_float("sum_normalize", "x", x)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not \
            -x.ndim <= dim < x.ndim:
        raise ValueError(f"sum_normalize: dim={dim!r} is out of range for a tensor of shape "
                         f"{x.shape}")
    if not eps >= 0:
        raise ValueError(f"sum_normalize: eps must be >= 0, got {eps!r}")
    return SumNormalize.apply(x, int(dim) % x.ndim, float(eps))
