"""Numba kernels for the core fused ops: softmax, log-softmax, cross-entropy, embedding backward,
GELU and the Adam step.

Each public function has the name and signature of its NumPy reference in
``tinyfw/backend/reference/core.py`` (read that first: it is the definition). Here each is a small
Python wrapper (validate with the reference's checks, make the inputs contiguous, allocate the
output) around an ``@njit`` kernel that does the whole operation in one pass per row:

- row kernels (softmax, log-softmax, cross-entropy) run ``prange`` over rows; within a row they
  read the row a few times while it is still in cache, instead of NumPy's one temporary per step;
- GELU and Adam are flat elementwise loops with ``prange``;
- the embedding backward is a scatter-add; it is made race-free by sorting the ids and giving
  each thread whole segments of equal ids, so no two threads ever write the same weight row.

Arithmetic runs in the input dtype (exp of float32 logits is a float32 exp, the Adam update of a
float32 parameter is float32 arithmetic), except: sums over a row accumulate in float64, and GELU
evaluates its formula in float64 and rounds once on store (as the reference does, see there).
Outputs have the input dtype.
"""
import math

import numpy as np
from numba import njit, prange

from ..reference.core import (
    GELU_KAPPA, INV_SQRT_2PI, SQRT_2_OVER_PI, SQRT_HALF,
    adam_bias_corrections, check_adam, check_approximate, check_float, check_ids,
    check_rows, check_same_shape, check_targets,
)

__all__ = [
    "softmax_forward", "softmax_backward",
    "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "embedding_backward",
    "gelu_forward", "gelu_backward",
    "adam_step",
]


def _rows(x):
    """(..., C) array -> C-contiguous (R, C) view or copy, R = product of the leading axes."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1])


# ----------------------------------------------------------------------------------------------
# Softmax and log-softmax over the last axis
# ----------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _softmax_forward_kernel(x, y):
    for r in prange(x.shape[0]):
        m = x[r, 0]
        for c in range(1, x.shape[1]):
            m = max(m, x[r, c])
        total = 0.0
        for c in range(x.shape[1]):
            e = math.exp(x[r, c] - m)
            y[r, c] = e
            total += e
        inv = 1.0 / total
        for c in range(x.shape[1]):
            y[r, c] = y[r, c] * inv


@njit(cache=True, parallel=True)
def _softmax_backward_kernel(y, dy, dx):
    for r in prange(y.shape[0]):
        dot = 0.0  # sum(dy * y) for the row
        for c in range(y.shape[1]):
            dot += dy[r, c] * y[r, c]
        for c in range(y.shape[1]):
            dx[r, c] = y[r, c] * (dy[r, c] - dot)


@njit(cache=True, parallel=True)
def _log_softmax_forward_kernel(x, y):
    for r in prange(x.shape[0]):
        m = x[r, 0]
        for c in range(1, x.shape[1]):
            m = max(m, x[r, c])
        total = 0.0
        for c in range(x.shape[1]):
            total += math.exp(x[r, c] - m)
        log_total = math.log(total)
        for c in range(x.shape[1]):
            y[r, c] = (x[r, c] - m) - log_total


@njit(cache=True, parallel=True)
def _log_softmax_backward_kernel(y, dy, dx):
    for r in prange(y.shape[0]):
        total = 0.0  # sum(dy) for the row
        for c in range(y.shape[1]):
            total += dy[r, c]
        for c in range(y.shape[1]):
            dx[r, c] = dy[r, c] - math.exp(y[r, c]) * total


def softmax_forward(x):
    check_float("softmax_forward", x=x)
    check_rows("softmax_forward", x)
    xr = _rows(x)
    y = np.empty_like(xr)
    _softmax_forward_kernel(xr, y)
    return y.reshape(x.shape)


def softmax_backward(y, dy):
    check_float("softmax_backward", y=y, dy=dy)
    check_same_shape("softmax_backward", y=y, dy=dy)
    yr, dyr = _rows(y), _rows(dy)
    dx = np.empty_like(yr)
    _softmax_backward_kernel(yr, dyr, dx)
    return dx.reshape(y.shape)


def log_softmax_forward(x):
    check_float("log_softmax_forward", x=x)
    check_rows("log_softmax_forward", x)
    xr = _rows(x)
    y = np.empty_like(xr)
    _log_softmax_forward_kernel(xr, y)
    return y.reshape(x.shape)


def log_softmax_backward(y, dy):
    check_float("log_softmax_backward", y=y, dy=dy)
    check_same_shape("log_softmax_backward", y=y, dy=dy)
    yr, dyr = _rows(y), _rows(dy)
    dx = np.empty_like(yr)
    _log_softmax_backward_kernel(yr, dyr, dx)
    return dx.reshape(y.shape)


# ----------------------------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _cross_entropy_forward_kernel(logits, target, ignore_index, loss, lse):
    for r in prange(logits.shape[0]):
        m = logits[r, 0]
        for c in range(1, logits.shape[1]):
            m = max(m, logits[r, c])
        total = 0.0
        for c in range(logits.shape[1]):
            total += math.exp(logits[r, c] - m)
        row_lse = m + math.log(total)
        lse[r] = row_lse
        t = target[r]
        loss[r] = 0.0 if t == ignore_index else row_lse - logits[r, t]


@njit(cache=True, parallel=True)
def _cross_entropy_backward_kernel(dloss, logits, target, lse, ignore_index, dlogits):
    for r in prange(logits.shape[0]):
        t = target[r]
        if t == ignore_index:
            for c in range(logits.shape[1]):
                dlogits[r, c] = 0.0
        else:
            g = dloss[r]
            for c in range(logits.shape[1]):
                # softmax, recomputed from the saved lse
                dlogits[r, c] = g * math.exp(logits[r, c] - lse[r])
            # minus the one-hot target (kept out of the loop above so it has no branch)
            dlogits[r, t] = g * (math.exp(logits[r, t] - lse[r]) - 1.0)


def cross_entropy_forward(logits, target, ignore_index):
    check_float("cross_entropy_forward", logits=logits)
    check_targets("cross_entropy_forward", logits, target, ignore_index)
    logits = np.ascontiguousarray(logits)
    target = np.ascontiguousarray(target, dtype=np.int64)
    n = logits.shape[0]
    loss = np.empty(n, dtype=logits.dtype)
    lse = np.empty(n, dtype=logits.dtype)
    _cross_entropy_forward_kernel(logits, target, np.int64(ignore_index), loss, lse)
    return loss, lse


def cross_entropy_backward(dloss, logits, target, lse, ignore_index):
    check_float("cross_entropy_backward", dloss=dloss, logits=logits, lse=lse)
    check_targets("cross_entropy_backward", logits, target, ignore_index)
    check_same_shape("cross_entropy_backward", dloss=dloss, lse=lse, target=target)
    logits = np.ascontiguousarray(logits)
    dlogits = np.empty_like(logits)
    _cross_entropy_backward_kernel(
        np.ascontiguousarray(dloss), logits, np.ascontiguousarray(target, dtype=np.int64),
        np.ascontiguousarray(lse), np.int64(ignore_index), dlogits)
    return dlogits


# ----------------------------------------------------------------------------------------------
# Embedding backward
# ----------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _embedding_backward_kernel(order, sorted_ids, starts, dout, dweight):
    # Segment s holds positions order[starts[s]:starts[s + 1]], all looking up the same row;
    # one thread owns a segment, so each dweight row has exactly one writer. The stable sort
    # keeps positions in their original order, so each row sums in the same order as np.add.at.
    for s in prange(starts.shape[0] - 1):
        row = sorted_ids[starts[s]]
        for k in range(starts[s], starts[s + 1]):
            i = order[k]
            for d in range(dout.shape[1]):
                dweight[row, d] += dout[i, d]


def embedding_backward(ids, dout, num_embeddings):
    check_float("embedding_backward", dout=dout)
    if tuple(dout.shape[:-1]) != tuple(ids.shape):
        raise ValueError(f"embedding_backward: dout must be ids.shape + (D,), got ids "
                         f"{tuple(ids.shape)} and dout {tuple(dout.shape)}")
    check_ids("embedding_backward", ids, num_embeddings)
    d = dout.shape[-1]
    flat_ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    order = np.argsort(flat_ids, kind="stable")
    sorted_ids = flat_ids[order]
    # a segment starts wherever the sorted id changes; the final entry closes the last segment
    change = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    starts = np.concatenate(([0], change, [sorted_ids.shape[0]])).astype(np.int64)
    if sorted_ids.shape[0] == 0:
        starts = starts[:1]  # no lookups: no segments
    dweight = np.zeros((num_embeddings, d), dtype=dout.dtype)
    _embedding_backward_kernel(order, sorted_ids, starts,
                               np.ascontiguousarray(dout).reshape(-1, d), dweight)
    return dweight


# ----------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _gelu_forward_kernel(x, use_tanh, y):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        if use_tanh:
            y[i] = 0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v)))
        else:
            y[i] = 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))


@njit(cache=True, parallel=True)
def _gelu_backward_kernel(x, dy, use_tanh, dx):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        if use_tanh:
            t = math.tanh(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v))
            du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * v * v)
            dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du_dx)
        else:
            cdf = 0.5 * (1.0 + math.erf(v * SQRT_HALF))
            pdf = INV_SQRT_2PI * math.exp(-0.5 * v * v)
            dx[i] = dy[i] * (cdf + v * pdf)


def gelu_forward(x, approximate):
    check_float("gelu_forward", x=x)
    check_approximate("gelu_forward", approximate)
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    _gelu_forward_kernel(xf, approximate == "tanh", y)
    return y.reshape(x.shape)


def gelu_backward(x, dy, approximate):
    check_float("gelu_backward", x=x, dy=dy)
    check_same_shape("gelu_backward", x=x, dy=dy)
    check_approximate("gelu_backward", approximate)
    xf = np.ascontiguousarray(x).reshape(-1)
    dx = np.empty_like(xf)
    _gelu_backward_kernel(xf, np.ascontiguousarray(dy).reshape(-1), approximate == "tanh", dx)
    return dx.reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# Adam / AdamW step
# ----------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, beta1, beta2, one_minus_beta1,
                 one_minus_beta2, eps, weight_decay, decay, decoupled, step_size,
                 bias_correction2_sqrt):
    for i in prange(param.shape[0]):
        p = param[i]
        g = grad[i]
        if decoupled:
            p = p * decay                         # decay = 1 - lr * weight_decay
        elif weight_decay != 0:
            g = g + weight_decay * p
        m = beta1 * exp_avg[i] + one_minus_beta1 * g
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p - step_size * m / (math.sqrt(v) / bias_correction2_sqrt + eps)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
              decoupled):
    check_adam("adam_step", param, grad, exp_avg, exp_avg_sq, step)
    step_size, bias_correction2_sqrt = adam_bias_corrections(lr, beta1, beta2, step)
    # Scalars in the parameter dtype, so a float32 step is float32 arithmetic throughout, as in
    # the reference (a float64 scalar would promote every element to float64: half the speed
    # on this memory-bound loop). Derived scalars such as 1 - beta1 are formed in float64 first.
    scalar = param.dtype.type
    # The state is updated in place: contiguous arrays are flattened as views; any other array
    # is worked on as a contiguous copy that is written back afterwards.
    state = [a if a.flags.c_contiguous else np.ascontiguousarray(a)
             for a in (param, exp_avg, exp_avg_sq)]
    flat_param, flat_m, flat_v = (a.reshape(-1) for a in state)
    _adam_kernel(flat_param, np.ascontiguousarray(grad).reshape(-1), flat_m, flat_v,
                 scalar(beta1), scalar(beta2), scalar(1.0 - beta1), scalar(1.0 - beta2),
                 scalar(eps), scalar(weight_decay), scalar(1.0 - lr * weight_decay),
                 bool(decoupled), scalar(step_size), scalar(bias_correction2_sqrt))
    for original, worked in zip((param, exp_avg, exp_avg_sq), state):
        if worked is not original:
            np.copyto(original, worked)
