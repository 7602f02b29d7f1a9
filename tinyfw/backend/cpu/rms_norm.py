"""Numba kernels for RMS normalisation (same names and meaning as ``backend/reference/norms.py``).

The design is layer normalisation's (``norms.py``, whose row helpers these kernels use): rows are
independent and run as ``runtime/launch.py``'s policy ``NORMS`` decides, sums are accumulated in
the input dtype, an absent weight comes in as ones, and the backward's weight gradient is summed
per chunk of rows and the chunks in float64, in order.
"""
import numpy as np
from numba import njit

from .norms import _FASTMATH, _as, _as_rows, _n_chunks, _param, _total
from .runtime import launch
from .runtime.launch import unit_range

__all__ = ["rms_norm_forward", "rms_norm_backward"]


@njit(cache=True, fastmath=_FASTMATH)
def _rms_norm_forward_rows(x, w, eps, y, rstd, start, stop):
    d = x.shape[1]
    zero = _as(0.0, x)
    one = _as(1.0, x)
    eps_x = _as(eps, x)
    inv_d = _as(1.0 / max(d, 1), x)
    for r in range(start, stop):
        xr = x[r]
        yr = y[r]
        acc = zero
        for j in range(d):
            acc += xr[j] * xr[j]
        rs = one / np.sqrt(acc * inv_d + eps_x)
        rstd[r] = rs
        for j in range(d):
            yr[j] = xr[j] * rs * w[j]


@njit(cache=True, fastmath=_FASTMATH)
def _rms_norm_backward_rows(dy, x, w, rstd, dx, dw_acc, start, stop):
    d = x.shape[1]
    zero = _as(0.0, x)
    inv_d = _as(1.0 / max(d, 1), x)
    for r in range(start, stop):
        xr = x[r]
        dyr = dy[r]
        dxr = dx[r]
        rs = rstd[r]
        sum_gx = zero
        for j in range(d):
            xhat = xr[j] * rs
            sum_gx += dyr[j] * w[j] * xhat
            dw_acc[j] += dyr[j] * xhat
        c = rs * rs * (sum_gx * inv_d)
        for j in range(d):
            dxr[j] = rs * dyr[j] * w[j] - c * xr[j]


@njit(cache=True)
def _rms_norm_backward_chunks(dy, x, w, rstd, dx, dw_part, start, stop):
    """Chunks [start, stop) of the ``dw_part.shape[0]`` chunks of rows."""
    for c in range(start, stop):
        dw_part[c, :] = 0
        first, last = unit_range(x.shape[0], dw_part.shape[0], c)
        _rms_norm_backward_rows(dy, x, w, rstd, dx, dw_part[c], first, last)


# -------------------------------------------------------------------------------------- wrappers

def rms_norm_forward(x, w, eps):
    """x: (..., D), w: (D,) or None -> (y (..., D), rstd (...))."""
    x2 = _as_rows("rms_norm_forward", x)
    n, d = x2.shape
    w_arr, _ = _param("rms_norm_forward", "weight", w, d, x2.dtype, 1)
    y = np.empty_like(x2)
    rstd = np.empty(n, dtype=x2.dtype)
    launch.run(launch.NORMS, _rms_norm_forward_rows, (x2, w_arr, float(eps), y, rstd), n, n * d)
    return y.reshape(x.shape), rstd.reshape(x.shape[:-1])


def rms_norm_backward(dy, x, w, rstd):
    """-> (dx (..., D), dw (D,) or None); see the reference for the formulas."""
    x2 = _as_rows("rms_norm_backward", x)
    dy2 = np.ascontiguousarray(dy.reshape(x2.shape), dtype=x2.dtype)
    n, d = x2.shape
    w_arr, has_w = _param("rms_norm_backward", "weight", w, d, x2.dtype, 1)
    rstd1 = np.ascontiguousarray(rstd.reshape(n), dtype=x2.dtype)
    dx = np.empty_like(x2)
    chunks = _n_chunks(n, n * d)
    dw_part = np.empty((chunks, d), x2.dtype)
    launch.run(launch.NORMS, _rms_norm_backward_chunks, (dy2, x2, w_arr, rstd1, dx, dw_part),
               chunks, n * d)
    dw = _total(dw_part, x2)
    return dx.reshape(x.shape), (dw if has_w else None)
