"""SAFU operations: block-context attention with cached comparisons, and the running mean.

The math lives in ``backend/reference/safu.py``; these Functions only wire the backend kernels
into autograd. The radial context (a concatenation of shifted copies) needs no kernel of its own:
:func:`radial_context` builds it from ``cat`` and slicing, so it runs on every backend.

:func:`safu_contexts` is all of it at once, what the SAFU modules run: the cached comparisons
``q = x W_A`` (one matmul) and ``z = [h; r; d]`` (one fused kernel each way), one graph node
instead of the nine that the pieces above make of it.
"""
import numpy as np

from ..autograd import Function, backend_iadd
from ..backend import device_of_array
from ..tensor import Tensor, zeros
from .shape import cat, index

__all__ = ["safu_block_attention", "running_mean", "radial_context", "safu_contexts"]


class SAFUBlockAttention(Function):
    @staticmethod
    def forward(ctx, x, q, block):
        h, a = ctx.backend.safu_block_attention_forward(x, q, block)
        ctx.save_for_backward(x, q, a)
        ctx.block = block
        return h, a

    @staticmethod
    def backward(ctx, dh, da):
        x, q, a = ctx.saved_tensors
        dx, dq = ctx.backend.safu_block_attention_backward(dh, da, x, q, a, ctx.block)
        return dx, dq, None


def _check_tensor(op, name, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")


def _check_device(op, name, value, x):
    """A constant passed as raw data (no graph, so ``Function.apply`` never sees its device)
    must be on x's device: the kernels would otherwise read host memory from the device or the
    other way round."""
    device = value.device if isinstance(value, Tensor) else device_of_array(value)
    if device != x.device:
        raise ValueError(f"{op}: {name} is on {device} but x is on {x.device}; move it with "
                         f".to({x.device!r}) first")


def safu_block_attention(x, q, block):
    """SAFU block context: ``h_t = sum_j softmax_j(q_t . x_j) x_j`` over j in (t - block, t].

    x: (B, L, D) inputs; q: (B, L, D) = ``x @ W_A`` (the cached comparisons: one vector per
    position); block: window size >= 1. Returns ``(h, a)``: h (B, L, D) and the attention
    weights a (B, L, block), ``a[:, t, k]`` the weight of position ``t - k``. Differentiable in
    x and q (and through ``a``).
    """
    _check_tensor("safu_block_attention", "x", x)
    _check_tensor("safu_block_attention", "q", q)
    if x.ndim != 3 or q.shape != x.shape:
        raise ValueError(f"safu_block_attention: x and q must both be (batch, length, dim) of one "
                         f"shape, got x {x.shape} and q {q.shape}")
    if x.dtype != q.dtype:
        raise TypeError(f"safu_block_attention: x ({x.dtype}) and q ({q.dtype}) must share a "
                        "dtype")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"safu_block_attention: block must be an int >= 1, got {block!r}")
    return SAFUBlockAttention.apply(x, q, int(block))


class RunningMean(Function):
    @staticmethod
    def forward(ctx, x, prev_sum, prev_count):
        ctx.prev_count = prev_count
        return ctx.backend.safu_running_mean_forward(x, prev_sum, prev_count)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.safu_running_mean_backward(g, ctx.prev_count), None, None


def running_mean(x, prev_sum=None, prev_count=0):
    """Document context ``d_t = (prev_sum + sum_{j<=t} x_j) / (prev_count + t + 1)``.

    x: (B, L, D). ``prev_sum`` (B, D) and ``prev_count`` carry the sum and count of earlier
    chunks of the same sequences (None / 0 for fresh ones); they are constants (no gradient).
    """
    _check_tensor("running_mean", "x", x)
    if x.ndim != 3:
        raise ValueError(f"running_mean: x must be (batch, length, dim), got {x.shape}")
    if isinstance(prev_count, bool) or not isinstance(prev_count, (int, np.integer)) \
            or prev_count < 0:
        raise ValueError(f"running_mean: prev_count must be an int >= 0, got {prev_count!r}")
    raw_sum = None
    if prev_sum is not None:
        _check_device("running_mean", "prev_sum", prev_sum, x)
        raw_sum = prev_sum.data if isinstance(prev_sum, Tensor) else prev_sum
        if tuple(raw_sum.shape) != (x.shape[0], x.shape[2]):
            raise ValueError(f"running_mean: prev_sum must be (B, D) = {(x.shape[0], x.shape[2])}"
                             f" for x {x.shape}, got {tuple(raw_sum.shape)}")
    return RunningMean.apply(x, raw_sum, int(prev_count))


def radial_context(x, radial, past=None):
    """Radial context ``r_t = [x_t; x_{t-1}; ...; x_{t-R+1}]`` -> (B, L, R * D).

    Positions before the start read zero vectors, unless ``past`` (B, P, D) supplies the
    inputs that preceded ``x`` (its last ``R - 1`` rows are used, older missing ones are zeros).
    """
    _check_tensor("radial_context", "x", x)
    if isinstance(radial, bool) or not isinstance(radial, (int, np.integer)) or radial < 1:
        raise ValueError(f"radial_context: radial must be an int >= 1, got {radial!r}")
    if x.ndim != 3:
        raise ValueError(f"radial_context: x must be (batch, length, dim), got {x.shape}")
    B, L, D = x.shape
    if radial == 1:
        return x
    pad = radial - 1
    pieces = []
    if past is not None and past.shape[1] > 0:
        _check_device("radial_context", "past", past, x)
        if past.ndim != 3 or past.shape[0] != B or past.shape[2] != D:
            raise ValueError(f"radial_context: past must be (B, P, D) with B={B}, D={D}, got "
                             f"{past.shape}")
        past = index(past, (slice(None), slice(max(0, past.shape[1] - pad), None)))
        pieces.append(past)
        pad -= past.shape[1]
    if pad > 0:
        pieces.insert(0, zeros(B, pad, D, dtype=x.dtype, device=x.device))
    padded = cat(pieces + [x], dim=1)                     # (B, R - 1 + L, D)
    start = radial - 1
    shifted = [index(padded, (slice(None), slice(start - k, start - k + L)))
               for k in range(radial)]
    return cat(shifted, dim=-1)


class SAFUContexts(Function):
    @staticmethod
    def forward(ctx, x, w_a, past, block, radial, use_document, scale, prev_sum, prev_count):
        be = ctx.backend
        B, L, D = x.shape
        start = 0 if past is None else past.shape[1]
        xs = x if not start else be.concatenate([be.astype(past, x.dtype), x], 1)
        x2 = be.reshape(x, (B * L, D))
        q = be.reshape(be.matmul(x2, w_a), (B, L, D)) if block else None
        z, a = be.safu_contexts_forward(xs, q, start, block, radial, use_document, scale,
                                        prev_sum, prev_count)
        ctx.save_for_backward(xs, x2, q, a, w_a)
        ctx.options = (start, block, radial, use_document, scale, prev_count)
        return (z, a) if block else z

    @staticmethod
    def backward(ctx, dz, da=None):
        xs, x2, q, a, w_a = ctx.saved_tensors
        start, block, radial, use_document, scale, prev_count = ctx.options
        be = ctx.backend
        dx, dq = be.safu_contexts_backward(dz, da, xs, q, a, start, block, radial, use_document,
                                           scale, prev_count)
        if start:                                 # the history is a constant: drop its rows
            dx = be.contiguous(be.getitem(dx, (slice(None), slice(start, None))))
        dw = None
        if block:
            dq2 = be.reshape(dq, x2.shape)
            if ctx.needs_input_grad[1]:
                dw = be.matmul(be.transpose(x2, (1, 0)), dq2)
            # x also enters through q = x W_A
            backend_iadd(be, dx, be.reshape(be.matmul(dq2, be.transpose(w_a, (1, 0))), dx.shape))
        return dx, dw, None, None, None, None, None, None, None


def _is_count(v, low):
    return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= low


def safu_contexts(x, w_a, block, radial, use_document, scale=1.0, past=None, prev_sum=None,
                  prev_count=0):
    """SAFU's features ``z = [h; r; d]`` with the cached comparisons ``q = x W_A``.

    x: (B, L, D); w_a: (D, D) (None when block = 0); block, radial: window sizes (0 leaves the
    context out); use_document: include the running mean; scale: the scores are
    ``scale * q_t . x_j``. To continue a sequence: ``past`` (B, P, D), the inputs before x (a
    constant; only the last ``max(block, radial) - 1`` rows are read), and ``prev_sum`` (B, D)
    / ``prev_count``, the sum and count of all earlier inputs. Returns ``(z, a)``: z (B, L, d_z)
    with d_z = ((block > 0) + radial + use_document) * D, and the block attention weights
    a (B, L, block) (None when block = 0). Differentiable in x and w_a (and through ``a``).
    Equals ``cat([safu_block_attention(x, scale * x @ w_a, block)[0], radial_context(x, radial),
    running_mean(x)], -1)`` (with the history: the same over ``cat([past, x])``, x's rows kept).
    """
    op = "safu_contexts"
    _check_tensor(op, "x", x)
    if x.ndim != 3:
        raise ValueError(f"{op}: x must be (batch, length, dim), got {x.shape}")
    for name, value in (("block", block), ("radial", radial)):
        if not _is_count(value, 0):
            raise ValueError(f"{op}: {name} must be an int >= 0, got {value!r}")
    if not _is_count(prev_count, 0):
        raise ValueError(f"{op}: prev_count must be an int >= 0, got {prev_count!r}")
    if not (block or radial or use_document):
        raise ValueError(f"{op}: block=0, radial=0 and use_document=False leave no context")
    B, L, D = x.shape
    if block:
        _check_tensor(op, "w_a", w_a)
        if w_a.shape != (D, D):
            raise ValueError(f"{op}: w_a must be (D, D) = {(D, D)} for x {x.shape}, got "
                             f"{w_a.shape}")
        if w_a.dtype != x.dtype:
            raise TypeError(f"{op}: x ({x.dtype}) and w_a ({w_a.dtype}) must share a dtype")
    else:
        w_a = None
    raw_past = None
    if past is not None:
        _check_device(op, "past", past, x)
        raw_past = past.data if isinstance(past, Tensor) else past
        if raw_past.ndim != 3 or raw_past.shape[0] != B or raw_past.shape[2] != D:
            raise ValueError(f"{op}: past must be (B, P, D) with B={B}, D={D}, got "
                             f"{tuple(raw_past.shape)}")
        keep = min(raw_past.shape[1], max(block, radial) - 1) if max(block, radial) > 1 else 0
        raw_past = raw_past[:, raw_past.shape[1] - keep:] if keep else None
    raw_sum = None
    if use_document and prev_sum is not None:
        _check_device(op, "prev_sum", prev_sum, x)
        raw_sum = prev_sum.data if isinstance(prev_sum, Tensor) else prev_sum
        if tuple(raw_sum.shape) != (B, D):
            raise ValueError(f"{op}: prev_sum must be (B, D) = {(B, D)} for x {x.shape}, got "
                             f"{tuple(raw_sum.shape)}")
    out = SAFUContexts.apply(x, w_a, raw_past, int(block), int(radial), bool(use_document),
                             float(scale), raw_sum, int(prev_count))
    return out if block else (out, None)
