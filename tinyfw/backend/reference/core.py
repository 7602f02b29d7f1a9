"""NumPy reference for the core fused kernels: softmax, log-softmax, cross-entropy, embedding
backward, GELU, ELU + 1 and the Adam step.

These are the definitions: every backend kernel of the same name must agree with them (the tests
check it), and a reader should be able to learn each operation from the few lines here.

Conventions
-----------
- Softmax and log-softmax act on the last axis; all leading axes are independent rows.
- Reductions subtract the row maximum first, so ``exp`` never overflows: a row with entries of
  +-1e4 or -inf gives finite results as long as its maximum is finite.
- Outputs have the dtype of the floating inputs (float32 or float64). Targets and ids are integers.
- Bad input raises ``ValueError`` / ``TypeError`` naming the operation; the helpers ``check_float``,
  ``check_targets`` and ``check_ids`` are shared with the other backends so every backend rejects
  the same inputs with the same message.

Shapes: softmax / log-softmax ``x, y, dy, dx: (..., C)``; cross-entropy ``logits, dlogits: (N, C)``,
``target, loss, lse, dloss: (N,)``; embedding ``ids: (...)``, ``dout: (..., D)``,
``dweight: (num_embeddings, D)``; GELU and ELU + 1 ``x, y, g, dy, dx``: any shape; Adam:
``param, grad, exp_avg, exp_avg_sq``: one shape, any.
"""
import math

import numpy as np
from scipy import special as _special

__all__ = [
    "softmax_forward", "softmax_backward",
    "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "embedding_backward",
    "gelu_forward", "gelu_backward",
    "elu_plus_one_forward", "elu_plus_one_backward",
    "adam_step",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
GELU_APPROXIMATIONS = ("none", "tanh")

# GELU constants (Hendrycks & Gimpel, 2016), as PyTorch uses them.
SQRT_HALF = math.sqrt(0.5)                  # 1 / sqrt(2), the erf argument scale
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # normal density at 0
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # tanh approximation: scale of the inner polynomial
GELU_KAPPA = 0.044715                       # tanh approximation: cubic coefficient


# ----------------------------------------------------------------------------------------------
# Validation shared by every backend (it only reads shapes, dtypes and, for targets, the values).
# ----------------------------------------------------------------------------------------------

def check_float(op, **arrays):
    """TypeError unless every named array is float32/float64 and all share one dtype."""
    dtypes = {name: np.dtype(a.dtype) for name, a in arrays.items()}
    for name, dtype in dtypes.items():
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {dtype}")
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name}={dtype}" for name, dtype in dtypes.items())
        raise TypeError(f"{op}: inputs must share one dtype, got {listed}")


def check_rows(op, x):
    """ValueError unless x has a non-empty last axis (the one softmax normalises over)."""
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{op}: expected a non-empty last axis, got shape {tuple(x.shape)}")


def check_same_shape(op, **arrays):
    """ValueError unless every named array has the same shape."""
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name}{shape}" for name, shape in shapes.items())
        raise ValueError(f"{op}: shapes must match, got {listed}")


def check_targets(op, logits, target, ignore_index):
    """Shape/dtype checks for cross-entropy, and every non-ignored target in [0, C)."""
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"{op}: logits must be (N, C) with C >= 1, "
                         f"got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{op}: target must be an integer array, got {target.dtype}")
    if tuple(target.shape) != (n,):
        raise ValueError(f"{op}: target must have shape ({n},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    target = np.asarray(target)
    bad = (target != ignore_index) & ((target < 0) | (target >= c))
    if bad.any():
        value = int(target[np.argmax(bad)])
        raise ValueError(f"{op}: target value {value} is out of range for C={c} classes "
                         f"(expected 0 <= target < {c}, or ignore_index={ignore_index})")


def check_ids(op, ids, num_embeddings):
    """Integer ids, every one in [0, num_embeddings)."""
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{op}: ids must be an integer array, got {ids.dtype}")
    ids = np.asarray(ids)
    bad = (ids < 0) | (ids >= num_embeddings)
    if bad.any():
        value = int(ids.reshape(-1)[np.argmax(bad.reshape(-1))])
        raise ValueError(f"{op}: id {value} is out of range for num_embeddings={num_embeddings}")


def check_approximate(op, approximate):
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"{op}: approximate must be one of {GELU_APPROXIMATIONS}, "
                         f"got {approximate!r}")


# ----------------------------------------------------------------------------------------------
# Softmax and log-softmax over the last axis
# ----------------------------------------------------------------------------------------------

def softmax_forward(x):
    """y = exp(x - max) / sum(exp(x - max)) over the last axis.  x: (..., C) -> y: (..., C)."""
    check_float("softmax_forward", x=x)
    check_rows("softmax_forward", x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y)) over the last axis: the Jacobian diag(y) - y y^T applied to dy.

    Only the output ``y`` is needed, so the op saves ``y``, not ``x``.
    """
    check_float("softmax_backward", y=y, dy=dy)
    check_same_shape("softmax_backward", y=y, dy=dy)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """y = (x - max) - log(sum(exp(x - max))) over the last axis.  x: (..., C) -> y: (..., C)."""
    check_float("log_softmax_forward", x=x)
    check_rows("log_softmax_forward", x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, dy):
    """dx = dy - softmax(x) * sum(dy) over the last axis, with softmax(x) = exp(y)."""
    check_float("log_softmax_backward", y=y, dy=dy)
    check_same_shape("log_softmax_backward", y=y, dy=dy)
    return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Cross-entropy of logits against integer targets
# ----------------------------------------------------------------------------------------------

def cross_entropy_forward(logits, target, ignore_index):
    """Per-row cross-entropy -> (loss (N,), lse (N,)).

    lse = log(sum(exp(logits))) per row (computed stably) and loss = lse - logits[target], i.e.
    -log softmax(logits)[target]. Rows whose target equals ``ignore_index`` get loss 0 (their lse
    is still computed; the backward ignores it). The op layer does the mean over kept rows.
    """
    check_float("cross_entropy_forward", logits=logits)
    check_targets("cross_entropy_forward", logits, target, ignore_index)
    n = logits.shape[0]
    ignored = target == ignore_index
    safe_target = np.where(ignored, 0, target)      # ignored rows may hold e.g. -100
    m = logits.max(axis=-1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))
    loss = np.where(ignored, 0.0, lse - logits[np.arange(n), safe_target])
    return loss.astype(logits.dtype, copy=False), lse.astype(logits.dtype, copy=False)


def cross_entropy_backward(dloss, logits, target, lse, ignore_index):
    """dlogits = dloss[:, None] * (softmax(logits) - onehot(target)); ignored rows get 0.

    softmax(logits) is recomputed as exp(logits - lse) from the saved ``lse``, so the forward
    never stores an (N, C) probability matrix.
    """
    check_float("cross_entropy_backward", dloss=dloss, logits=logits, lse=lse)
    check_targets("cross_entropy_backward", logits, target, ignore_index)
    n = logits.shape[0]
    check_same_shape("cross_entropy_backward", dloss=dloss, lse=lse, target=target)
    ignored = target == ignore_index
    rows = np.arange(n)
    p = np.exp(logits - lse[:, None])
    p[rows, np.where(ignored, 0, target)] -= 1.0
    dlogits = dloss[:, None] * p
    dlogits[ignored] = 0.0
    return dlogits


# ----------------------------------------------------------------------------------------------
# Embedding backward: a scatter-add of rows
# ----------------------------------------------------------------------------------------------

def embedding_backward(ids, dout, num_embeddings):
    """dweight[k] = sum of dout[i] over every i with ids[i] == k; rows never looked up stay 0.

    ids: (...) integers, dout: (..., D) -> dweight: (num_embeddings, D). Repeated ids accumulate,
    which is why this is ``np.add.at`` and not ``dweight[ids] += dout`` (that keeps only one).
    """
    check_float("embedding_backward", dout=dout)
    if tuple(dout.shape[:-1]) != tuple(ids.shape):
        raise ValueError(f"embedding_backward: dout must be ids.shape + (D,), got ids "
                         f"{tuple(ids.shape)} and dout {tuple(dout.shape)}")
    check_ids("embedding_backward", ids, num_embeddings)
    d = dout.shape[-1]
    dweight = np.zeros((num_embeddings, d), dtype=dout.dtype)
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, d))
    return dweight


# ----------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------

def gelu_forward(x, approximate):
    """GELU(x) = x * Phi(x), Phi the standard normal CDF.

    'none':  0.5 x (1 + erf(x / sqrt 2))                             (exact)
    'tanh':  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))          (the GPT-2 approximation)
    """
    check_float("gelu_forward", x=x)
    check_approximate("gelu_forward", approximate)
    dtype, x = x.dtype, x.astype(np.float64)  # see the note at gelu_backward
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x)
        y = 0.5 * x * (1.0 + np.tanh(inner))
    else:
        y = 0.5 * x * (1.0 + _special.erf(x * SQRT_HALF))
    return y.astype(dtype, copy=False)


def gelu_backward(x, dy, approximate):
    """dx = dy * d GELU(x) / dx.

    'none':  Phi(x) + x phi(x), with phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    'tanh':  with t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3):
             0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    """
    check_float("gelu_backward", x=x, dy=dy)
    check_same_shape("gelu_backward", x=x, dy=dy)
    check_approximate("gelu_backward", approximate)
    # For negative x both forms add two nearly opposite terms (1 + erf, 1 + t with erf, t ~ -1);
    # in float32 that cancellation loses most digits, so the formula runs in float64 and the
    # result is rounded once to the input dtype (the kernels do the same).
    dtype, x, dy = x.dtype, x.astype(np.float64), dy.astype(np.float64)
    if approximate == "tanh":
        t = np.tanh(SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x))
        du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * x * x)
        dx = dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)
    else:
        cdf = 0.5 * (1.0 + _special.erf(x * SQRT_HALF))
        pdf = INV_SQRT_2PI * np.exp(-0.5 * x * x)
        dx = dy * (cdf + x * pdf)
    return dx.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# ELU + 1 (the feature map of linear transformers)
# ----------------------------------------------------------------------------------------------

def elu_plus_one_forward(x):
    """y = elu(x) + 1:  x + 1 for x > 0, exp(x) otherwise (NaN stays NaN). In the input dtype.

    exp runs on min(x, 0), so the branch not taken never overflows.
    """
    check_float("elu_plus_one_forward", x=x)
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))


def elu_plus_one_backward(g, y):
    """dx = g for y > 1, g * y otherwise: the derivative from the output y alone.

    For x > 0 the derivative is 1 and y = x + 1 >= 1; for x <= 0 it is exp(x) = y <= 1. Where
    y = 1 exactly (x = 0, or x > 0 so small that x + 1 rounds to 1) both rules give g * 1 = g,
    so the split at y > 1 is exact. x = inf gives y = inf and dx = g; x = -inf gives y = 0 and
    dx = g * 0; a NaN x gives y = NaN and dx = NaN: all as g * (1 if x > 0 else y).
    """
    check_float("elu_plus_one_backward", g=g, y=y)
    check_same_shape("elu_plus_one_backward", g=g, y=y)
    return np.where(y > 1, g, g * y)


# ----------------------------------------------------------------------------------------------
# Adam / AdamW step
# ----------------------------------------------------------------------------------------------

def check_adam(op, param, grad, exp_avg, exp_avg_sq, step):
    check_float(op, param=param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_same_shape(op, param=param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if int(step) != step or step < 1:
        raise ValueError(f"{op}: step is the 1-based step count after increment, got {step}")


def adam_bias_corrections(lr, beta1, beta2, step):
    """(step_size, sqrt(bias_correction2)): the scalars of the update, computed once per step."""
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    return lr / bias_correction1, math.sqrt(bias_correction2)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
              decoupled):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step, in place; returns None.

    PyTorch's rule (Kingma & Ba, 2015; Loshchilov & Hutter, 2019 for the decoupled decay):
        AdamW: param *= 1 - lr * weight_decay        Adam: g = grad + weight_decay * param
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
    ``step`` counts from 1 (the step being taken). ``param``, ``exp_avg`` (m) and ``exp_avg_sq``
    (v) are updated in place; ``grad`` is only read.
    """
    check_adam("adam_step", param, grad, exp_avg, exp_avg_sq, step)
    g = grad
    if decoupled:
        param *= 1.0 - lr * weight_decay
    elif weight_decay != 0:
        g = grad + weight_decay * param
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * g * g
    step_size, bias_correction2_sqrt = adam_bias_corrections(lr, beta1, beta2, step)
    denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param -= step_size * exp_avg / denom
