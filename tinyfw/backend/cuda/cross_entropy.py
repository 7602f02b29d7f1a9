"""Cross-entropy of logits against integer targets, forward and backward
(reference: backend/reference/core.py).

Forward: one block per row computes ``lse = logsumexp(logits[r])`` and
``loss = lse - logits[r, target[r]]`` (0 for ignored rows). Backward: one thread per logit
recomputes ``softmax = exp(logit - lse)`` from the saved ``lse``, so no (N, C) probabilities are
kept between the passes.

Targets are validated on the host with the reference's checks (one small device-to-host copy of
the (N,) targets), so a bad target raises the same ValueError on every backend.
"""
import math

import numba
import numpy as np
from numba import cuda

from ..reference.core import check_float, check_same_shape, check_targets
from .runtime import (THREADS, device_array, empty, flat, is_device_array, kernel_factory,
                      launch_1d, launch_rows)
from .softmax import row_max_logsumexp

__all__ = ["cross_entropy_forward", "cross_entropy_backward"]


@kernel_factory
def cross_entropy_forward_kernel():
    """Per row r: ``lse[r]`` and ``loss[r] = lse[r] - logits[r, target[r]]`` (0 if ignored)."""
    def kernel(loss, lse, logits, target, rows, cols, ignore_index):
        buffer = cuda.shared.array(THREADS, numba.float64)
        t = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            m, log_sum = row_max_logsumexp(buffer, t, logits, r * cols, cols)
            if t == 0:
                row_lse = m + log_sum
                lse[r] = row_lse
                if target[r] == ignore_index:
                    loss[r] = 0.0
                else:
                    loss[r] = row_lse - logits[r * cols + target[r]]
    return cuda.jit(kernel)


@kernel_factory
def cross_entropy_backward_kernel():
    """``dlogits[r, c] = dloss[r] * (exp(logits[r, c] - lse[r]) - [c == target[r]])``."""
    def kernel(dlogits, dloss, logits, target, lse, cols, ignore_index, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            r = i // cols
            if target[r] == ignore_index:
                dlogits[i] = 0.0
            else:
                p = math.exp(logits[i] - lse[r])
                if i - r * cols == target[r]:
                    p -= 1.0
                dlogits[i] = dloss[r] * p
    return cuda.jit(kernel)


def _targets(op, logits, target, ignore_index):
    """Validate on the host (the reference's messages); return int64 device targets."""
    host = target.copy_to_host() if is_device_array(target) else np.asarray(target)
    check_targets(op, logits, host, ignore_index)
    if is_device_array(target) and target.dtype == np.int64:
        return device_array(target, op)
    return cuda.to_device(np.asarray(host, dtype=np.int64, order="C"))


def cross_entropy_forward(logits, target, ignore_index):
    """logits (N, C), target (N,) int -> (loss (N,), lse (N,)) in the logits' dtype."""
    op = "cross_entropy_forward"
    logits = device_array(logits, op)
    check_float(op, logits=logits)
    target = _targets(op, logits, target, ignore_index)
    n, c = logits.shape
    loss, lse = empty((n,), logits.dtype), empty((n,), logits.dtype)
    launch_rows(cross_entropy_forward_kernel(), n, c, loss, lse, flat(logits), target, n, c,
                int(ignore_index))
    return loss, lse


def cross_entropy_backward(dloss, logits, target, lse, ignore_index):
    """dlogits (N, C) = dloss[:, None] * (softmax(logits) - onehot(target)); 0 on ignored rows."""
    op = "cross_entropy_backward"
    dloss, logits, lse = (device_array(a, op) for a in (dloss, logits, lse))
    check_float(op, dloss=dloss, logits=logits, lse=lse)
    target = _targets(op, logits, target, ignore_index)
    check_same_shape(op, dloss=dloss, lse=lse, target=target)
    n, c = logits.shape
    dlogits = empty((n, c), logits.dtype)
    launch_1d(cross_entropy_backward_kernel(), n * c, flat(dlogits), dloss, flat(logits), target,
              lse, c, int(ignore_index), n * c)
    return dlogits
