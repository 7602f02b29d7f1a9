"""Layer norm and RMS norm over the last axis, forward and backward (reference:
backend/reference/norms.py).

One block per row. The forward reduces the row's mean (layer norm only) and mean square with
shared-memory sums, then writes ``y``. The backward writes ``dx`` per row and, next to it, the
per-row terms ``dy * xhat`` whose column sums are ``dw``; those column sums (and ``db``) are the
backend's ordinary ``sum`` over the rows. Statistics are kept in float64.
"""
import math

import numba
from numba import cuda

from ..reference.core import check_float, check_same_shape
from .reduction import sum as sum_over
from .runtime import (THREADS, block_sum, device_array, empty, flat, kernel_factory,
                      launch_rows, prod)

__all__ = ["layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward"]


@kernel_factory
def norm_forward_kernel(centred):
    """Rows of layer norm (``centred``) or RMS norm; ``has_w`` / ``has_b`` say if w, b exist."""
    def kernel(y, mean_out, rstd_out, x, w, b, has_w, has_b, rows, cols, eps):
        buffer = cuda.shared.array(THREADS, numba.float64)
        t = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            base = r * cols
            mean = 0.0
            if centred:
                s = 0.0
                for j in range(t, cols, cuda.blockDim.x):
                    s += x[base + j]
                mean = block_sum(buffer, t, s) / cols
            s = 0.0
            for j in range(t, cols, cuda.blockDim.x):
                c = x[base + j] - mean
                s += c * c
            rstd = 1.0 / math.sqrt(block_sum(buffer, t, s) / cols + eps)
            for j in range(t, cols, cuda.blockDim.x):
                v = (x[base + j] - mean) * rstd
                if has_w:
                    v = v * w[j]
                if has_b:
                    v = v + b[j]
                y[base + j] = v
            if t == 0:
                mean_out[r] = mean
                rstd_out[r] = rstd
    return cuda.jit(kernel)


@kernel_factory
def norm_backward_kernel(centred):
    """Rows of ``dx = rstd (g - mean(g) - xhat mean(g xhat))`` (RMS norm: no ``mean(g)`` term),
    with ``g = dy * w``; also ``dy_xhat = dy * xhat`` for ``dw``."""
    def kernel(dx, dy_xhat, dy, x, w, mean, rstd, has_w, rows, cols):
        buffer = cuda.shared.array(THREADS, numba.float64)
        t = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            base = r * cols
            m = mean[r] if centred else 0.0
            rs = rstd[r] * 1.0
            sum_g = 0.0
            sum_gx = 0.0
            for j in range(t, cols, cuda.blockDim.x):
                xhat = (x[base + j] - m) * rs
                g = dy[base + j] * w[j] if has_w else dy[base + j] * 1.0
                sum_g += g
                sum_gx += g * xhat
                dy_xhat[base + j] = dy[base + j] * xhat
            mean_g = block_sum(buffer, t, sum_g) / cols if centred else 0.0
            mean_gx = block_sum(buffer, t, sum_gx) / cols
            for j in range(t, cols, cuda.blockDim.x):
                xhat = (x[base + j] - m) * rs
                g = dy[base + j] * w[j] if has_w else dy[base + j] * 1.0
                dx[base + j] = rs * (g - mean_g - xhat * mean_gx)
    return cuda.jit(kernel)


def _rows_cols(op, x):
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis, got a 0-d array")
    cols = tuple(x.shape)[-1]
    return (prod(x.shape[:-1]) if cols else 0), cols


def _optional(op, name, a, x):
    """A (D,) weight/bias as a device array, or a 1-element placeholder when it is None."""
    if a is None:
        return empty((1,), x.dtype), False
    a = device_array(a, op)
    check_float(op, x=x, **{name: a})
    if tuple(a.shape) != (tuple(x.shape)[-1],):
        raise ValueError(f"{op}: {name} must have shape ({tuple(x.shape)[-1]},) for x "
                         f"{tuple(x.shape)}, got {tuple(a.shape)}")
    return a, True


def _forward(op, centred, x, w, b, eps):
    x = device_array(x, op)
    check_float(op, x=x)
    rows, cols = _rows_cols(op, x)
    w, has_w = _optional(op, "w", w, x)
    b, has_b = _optional(op, "b", b, x)
    stats_shape = tuple(x.shape)[:-1]
    y = empty(x.shape, x.dtype)
    mean, rstd = empty(stats_shape, x.dtype), empty(stats_shape, x.dtype)
    launch_rows(norm_forward_kernel(centred), rows, cols, flat(y), flat(mean), flat(rstd),
                flat(x), w, b, has_w, has_b, rows, cols, float(eps))
    return y, mean, rstd


def _backward(op, centred, dy, x, w, mean, rstd):
    dy, x = device_array(dy, op), device_array(x, op)
    check_float(op, dy=dy, x=x)
    check_same_shape(op, dy=dy, x=x)
    rows, cols = _rows_cols(op, x)
    w, has_w = _optional(op, "w", w, x)
    rstd = device_array(rstd, op)
    mean = device_array(mean, op) if centred else rstd
    dx = empty(x.shape, x.dtype)
    dy_xhat = empty((rows, cols), x.dtype)
    launch_rows(norm_backward_kernel(centred), rows, cols, flat(dx), flat(dy_xhat), flat(dy),
                flat(x), w, flat(mean), flat(rstd), has_w, rows, cols)
    dw = sum_over(dy_xhat, 0) if has_w else None
    db = sum_over(dy.reshape(rows, cols), 0)
    return dx, dw, db


def layer_norm_forward(x, w, b, eps):
    """x (..., D), w, b (D,) or None -> (y (..., D), mean (...), rstd (...))."""
    return _forward("layer_norm_forward", True, x, w, b, eps)


def layer_norm_backward(dy, x, w, mean, rstd):
    """-> (dx (..., D), dw (D,) or None, db (D,))."""
    return _backward("layer_norm_backward", True, dy, x, w, mean, rstd)


def rms_norm_forward(x, w, eps):
    """x (..., D), w (D,) or None -> (y (..., D), rstd (...))."""
    y, _, rstd = _forward("rms_norm_forward", False, x, w, None, eps)
    return y, rstd


def rms_norm_backward(dy, x, w, rstd):
    """-> (dx (..., D), dw (D,) or None)."""
    dx, dw, _ = _backward("rms_norm_backward", False, dy, x, w, None, rstd)
    return dx, dw

