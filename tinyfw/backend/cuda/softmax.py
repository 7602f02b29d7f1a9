"""Softmax and log-softmax over the last axis, forward and backward (reference:
backend/reference/core.py).

One block per row: the block finds the row maximum and the sum of ``exp(x - max)`` with two
shared-memory reductions, then writes the row. Row statistics are kept in float64; outputs have
the input dtype.
"""
import math

import numba
from numba import cuda

from ..reference.core import check_float, check_same_shape
from .runtime import (THREADS, block_max, block_sum, device_array, empty, flat, kernel_factory,
                      launch_rows, prod)

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward"]


@cuda.jit(device=True, inline=True)
def row_max_logsumexp(buffer, t, x, base, cols):
    """(max, log(sum(exp(x - max)))) of ``x[base : base + cols]``, computed by the whole block."""
    m = -math.inf
    for j in range(t, cols, cuda.blockDim.x):
        v = x[base + j]
        if v > m or v != v:
            m = v
    m = block_max(buffer, t, m)
    s = 0.0
    for j in range(t, cols, cuda.blockDim.x):
        s += math.exp(x[base + j] - m)
    s = block_sum(buffer, t, s)
    return m, math.log(s)


@kernel_factory
def softmax_forward_kernel(log):
    """Rows of ``y = softmax(x)`` (``log`` false) or ``y = log_softmax(x)`` (``log`` true)."""
    def kernel(y, x, rows, cols):
        buffer = cuda.shared.array(THREADS, numba.float64)
        t = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            base = r * cols
            m, lse = row_max_logsumexp(buffer, t, x, base, cols)
            for j in range(t, cols, cuda.blockDim.x):
                if log:
                    y[base + j] = x[base + j] - m - lse
                else:
                    y[base + j] = math.exp(x[base + j] - m - lse)
    return cuda.jit(kernel)


@kernel_factory
def softmax_backward_kernel(log):
    """Rows of ``dx = y (dy - sum(dy y))`` or, for log-softmax, ``dx = dy - exp(y) sum(dy)``."""
    def kernel(dx, y, dy, rows, cols):
        buffer = cuda.shared.array(THREADS, numba.float64)
        t = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            base = r * cols
            s = 0.0
            for j in range(t, cols, cuda.blockDim.x):
                s += dy[base + j] if log else dy[base + j] * y[base + j]
            s = block_sum(buffer, t, s)
            for j in range(t, cols, cuda.blockDim.x):
                if log:
                    dx[base + j] = dy[base + j] - math.exp(y[base + j]) * s
                else:
                    dx[base + j] = y[base + j] * (dy[base + j] - s)
    return cuda.jit(kernel)


def _forward(op, x, log):
    x = device_array(x, op)
    check_float(op, x=x)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis, got a 0-d array")
    y = empty(x.shape, x.dtype)
    cols = tuple(x.shape)[-1]
    rows = prod(x.shape[:-1]) if cols else 0
    launch_rows(softmax_forward_kernel(log), rows, cols, flat(y), flat(x), rows, cols)
    return y


def _backward(op, y, dy, log):
    y, dy = device_array(y, op), device_array(dy, op)
    check_float(op, y=y, dy=dy)
    check_same_shape(op, y=y, dy=dy)
    dx = empty(y.shape, y.dtype)
    cols = tuple(y.shape)[-1] if y.ndim else 0
    rows = prod(y.shape[:-1]) if cols else 0
    launch_rows(softmax_backward_kernel(log), rows, cols, flat(dx), flat(y), flat(dy), rows, cols)
    return dx


def softmax_forward(x):
    """y = softmax(x) over the last axis.  x: (..., C) -> y: (..., C)."""
    return _forward("softmax_forward", x, False)


def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y)) over the last axis."""
    return _backward("softmax_backward", y, dy, False)


def log_softmax_forward(x):
    """y = x - max - log(sum(exp(x - max))) over the last axis."""
    return _forward("log_softmax_forward", x, True)


def log_softmax_backward(y, dy):
    """dx = dy - exp(y) * sum(dy) over the last axis."""
    return _backward("log_softmax_backward", y, dy, True)


@kernel_factory
def logsumexp_kernel():
    """``out[r] = log(sum(exp(x[r, :])))`` per row, computed stably (block per row)."""
    def kernel(out, x, rows, cols):
        buffer = cuda.shared.array(THREADS, numba.float64)
        t = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            m, log_sum = row_max_logsumexp(buffer, t, x, r * cols, cols)
            if t == 0:
                out[r] = m + log_sum
    return cuda.jit(kernel)


def logsumexp_last_axis(x):
    """``log(sum(exp(x), axis=-1))`` of a float device array (..., C) -> (...)."""
    x = device_array(x, "logsumexp")
    check_float("logsumexp", x=x)
    shape = tuple(x.shape)
    out = empty(shape[:-1], x.dtype)
    rows = prod(shape[:-1]) if shape[-1] else 0
    launch_rows(logsumexp_kernel(), rows, shape[-1], flat(out), flat(x), rows, shape[-1])
    return out
