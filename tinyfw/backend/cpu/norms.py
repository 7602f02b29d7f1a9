"""Numba kernels for layer normalisation (same names and meaning as ``backend/reference/norms.py``,
which documents the math), and the row helpers that RMS normalisation (``rms_norm.py``) shares.

Design (each array is read or written once from memory; a row, a few KB, then stays in L1/L2):

* Rows are independent. ``runtime/launch.py`` (policy ``NORMS``) runs small inputs on the calling
  thread and cuts larger ones into ranges of consecutive rows that the pool's threads claim one
  at a time.
* Row sums are accumulated in the input dtype: float32 for float32, so AVX-512 adds 16 lanes at a
  time, and no float32 <-> float64 conversions. ``fastmath`` reassociation lets LLVM split each
  sum into 4 x 16 partial sums (a blocked sum: a few ulps for rows of thousands).
  float64 inputs run the same code in float64 (the float64 gradchecks go through it).
* Layer norm statistics, one pass over the row: with ``c = x - x[0]`` (exact differences when a
  row is nearly constant, so a large common offset is never summed in float32), the sums of c and
  of c^2 give ``dmu = mean(c)`` and ``var = mean(c^2) - dmu^2``. That difference loses precision
  only when dmu^2 is large against var (x[0] far out in its row); it is used when
  ``dmu^2 <= VARIANCE_SHIFT_LIMIT * var``, where its relative error stays within about
  ``1 + VARIANCE_SHIFT_LIMIT`` times that of the sums, and otherwise a second pass sums the
  squares of the centred values (no cancellation). One pass instead of two saves a pass over
  every row in the common case. The subtractions go through ``_sub``, compiled without
  fastmath, so LLVM cannot re-associate them into ``x - (x[0] + dmean)``, which would bring the
  rounding back.
* No branches in the inner loops: an absent weight is passed as ones, an absent bias as zeros.
* The backward's parameter gradients (dw, db: sums over all rows) are summed per chunk of at most
  ``ROWS_PER_PARTIAL`` rows, in the input dtype; the chunk partials are then added in float64, in
  chunk order, so the result does not depend on which thread ran which chunk. dx takes one pass
  over the row for its two row sums and one to write dx (the second reads the row from L1).

Both directions are memory-bound: x and dy come from memory once, every later pass over a row
reads L1. Inputs that start on a 64-byte boundary run faster, since each AVX-512 load then
touches one cache line (``runtime/allocator.py``). Timings, and the variants tried and
left out, are in ``bench/NOTES.md``.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

from .runtime import launch
from .runtime.launch import unit_range

# Reassociating the row sums lets LLVM vectorise them; inf/NaN semantics are kept.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

__all__ = ["layer_norm_forward", "layer_norm_backward"]


# The backward's parameter-gradient partial sums (dw, db) are kept in the input dtype; each covers
# at most this many rows, and the partials are added in float64 afterwards. Fewer rows per partial
# keep the input-dtype sums short (accuracy), more rows mean fewer partials to store and add.
ROWS_PER_PARTIAL = 256

# Layer norm's one-pass variance is kept when dmu^2 <= this * var (see the module docstring).
VARIANCE_SHIFT_LIMIT = 8.0


# ---------------------------------------------------------------------------------- helpers

def _as(value, like):
    """``value`` as a scalar of the element type of the array ``like`` (for use in kernels)."""
    return like.dtype.type(value)


@overload(_as)
def _as_overload(value, like):
    if like.dtype == types.float32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


@njit(cache=True, fastmath=False)   # explicit: callees otherwise inherit the caller's flags
def _sub(a, b):
    """``a - b`` compiled *without* fastmath: LLVM may not reassociate it with the surrounding
    fastmath arithmetic (``(x - k) - m`` into ``x - (k + m)``, ``(x - m) * r`` into
    ``x * r - m * r``), which would bring back the cancellation the shifted data avoid."""
    return a - b


# --------------------------------------------------------------------------------------- kernels
# Each kernel handles rows [start, stop), accumulating in the input dtype. Absent parameters come
# in as ones (weight) or zeros (bias), so the inner loops have no branches and vectorise whole.

@njit(cache=True, fastmath=_FASTMATH)
def _layer_norm_forward_rows(x, w, b, eps, y, mean, rstd, start, stop):
    d = x.shape[1]
    zero = _as(0.0, x)
    one = _as(1.0, x)
    eps_x = _as(eps, x)
    inv_d = _as(1.0 / max(d, 1), x)
    limit = _as(VARIANCE_SHIFT_LIMIT, x)
    for r in range(start, stop):
        xr = x[r]
        yr = y[r]
        # shift by the row's first element: x - k is exact for nearly-constant rows, so the
        # float32 sums below see only the spread, not a large common offset
        k = xr[0] if d > 0 else zero
        if not np.isfinite(k):
            k = zero
        sum_c = zero
        sum_cc = zero
        for j in range(d):
            c = _sub(xr[j], k)
            sum_c += c
            sum_cc += c * c
        dmu = sum_c * inv_d
        var = sum_cc * inv_d - dmu * dmu
        if not dmu * dmu <= limit * var:   # cancellation (or NaN): sum the centred squares
            sum_cc = zero
            for j in range(d):
                c = _sub(_sub(xr[j], k), dmu)
                sum_cc += c * c
            var = sum_cc * inv_d
        rs = one / np.sqrt(var + eps_x)
        mean[r] = k + dmu
        rstd[r] = rs
        for j in range(d):
            yr[j] = _sub(_sub(xr[j], k), dmu) * rs * w[j] + b[j]


@njit(cache=True, fastmath=_FASTMATH)
def _layer_norm_backward_rows(dy, x, w, mean, rstd, dx, dw_acc, db_acc, start, stop):
    """dx for rows [start, stop); adds their contributions to the (D,) sums dw_acc, db_acc."""
    d = x.shape[1]
    zero = _as(0.0, x)
    inv_d = _as(1.0 / max(d, 1), x)
    for r in range(start, stop):
        xr = x[r]
        dyr = dy[r]
        dxr = dx[r]
        mu = mean[r]
        rs = rstd[r]
        sum_g = zero
        sum_gx = zero
        for j in range(d):
            xhat = _sub(xr[j], mu) * rs
            g = dyr[j] * w[j]
            sum_g += g
            sum_gx += g * xhat
            dw_acc[j] += dyr[j] * xhat
            db_acc[j] += dyr[j]
        # dx = rs * (g - mean(g) - xhat * mean(g * xhat)), with xhat = (x - mu) * rs, as
        # rs * g - (a + (x - mu) * c): four operations per element instead of six
        a = rs * (sum_g * inv_d)
        c = rs * rs * (sum_gx * inv_d)
        for j in range(d):
            dxr[j] = rs * (dyr[j] * w[j]) - (a + _sub(xr[j], mu) * c)


# The backward works on chunks of consecutive rows: chunk c adds its parameter-gradient sums into
# its own row c of the (chunks, D) partials, so no two threads write the same memory, and the
# partials are added in chunk order, so the result does not depend on which thread ran what.

@njit(cache=True)
def _total(part, like):
    """Column sums of the (chunks, D) partial sums, added in float64, in the dtype of ``like``."""
    tot = np.zeros(part.shape[1], np.float64)
    for c in range(part.shape[0]):
        for j in range(part.shape[1]):
            tot[j] += part[c, j]
    return tot.astype(like.dtype)


@njit(cache=True)
def _layer_norm_backward_chunks(dy, x, w, mean, rstd, dx, dw_part, db_part, start, stop):
    """Chunks [start, stop) of the ``dw_part.shape[0]`` chunks of rows."""
    for c in range(start, stop):
        dw_part[c, :] = 0
        db_part[c, :] = 0
        first, last = unit_range(x.shape[0], dw_part.shape[0], c)
        _layer_norm_backward_rows(dy, x, w, mean, rstd, dx, dw_part[c], db_part[c], first, last)


# -------------------------------------------------------------------------------------- wrappers

def _as_rows(name, x):
    """(..., D) -> a C-contiguous (N, D) view or copy."""
    if x.ndim < 1:
        raise ValueError(f"{name}: input must have at least one dimension, got shape {x.shape}")
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]))


def _param(name, label, p, d, dtype, fill):
    """(a (D,) parameter in the input dtype, given?); a None parameter becomes ``fill`` repeated
    (1 for a weight, 0 for a bias), so the kernels have no per-element branches."""
    if p is None:
        return np.full(d, fill, dtype=dtype), False
    if p.shape != (d,):
        raise ValueError(f"{name}: {label} must have shape ({d},), got {p.shape}")
    return np.ascontiguousarray(p, dtype=dtype), True


def _n_chunks(n, work):
    """Chunks of rows for the backward: at most ROWS_PER_PARTIAL rows each, and when the call runs
    in Numba's pool at least as many as the pool's ranges (``launch.NORMS``)."""
    want = -(-n // ROWS_PER_PARTIAL)
    threads = launch.pool_threads(launch.NORMS, n, work)
    if threads > 1:
        want = max(want, launch.NORMS.ranges_per_thread * threads)
    return max(1, min(n, want))


def layer_norm_forward(x, w, b, eps):
    """x: (..., D), w, b: (D,) or None -> (y (..., D), mean (...), rstd (...))."""
    x2 = _as_rows("layer_norm_forward", x)
    n, d = x2.shape
    w_arr, _ = _param("layer_norm_forward", "weight", w, d, x2.dtype, 1)
    b_arr, _ = _param("layer_norm_forward", "bias", b, d, x2.dtype, 0)
    y = np.empty_like(x2)
    mean = np.empty(n, dtype=x2.dtype)
    rstd = np.empty(n, dtype=x2.dtype)
    launch.run(launch.NORMS, _layer_norm_forward_rows,
               (x2, w_arr, b_arr, float(eps), y, mean, rstd), n, n * d)
    return y.reshape(x.shape), mean.reshape(x.shape[:-1]), rstd.reshape(x.shape[:-1])


def layer_norm_backward(dy, x, w, mean, rstd):
    """-> (dx (..., D), dw (D,) or None, db (D,)); see the reference for the formulas."""
    x2 = _as_rows("layer_norm_backward", x)
    dy2 = np.ascontiguousarray(dy.reshape(x2.shape), dtype=x2.dtype)
    n, d = x2.shape
    w_arr, has_w = _param("layer_norm_backward", "weight", w, d, x2.dtype, 1)
    mean1 = np.ascontiguousarray(mean.reshape(n), dtype=x2.dtype)
    rstd1 = np.ascontiguousarray(rstd.reshape(n), dtype=x2.dtype)
    dx = np.empty_like(x2)
    chunks = _n_chunks(n, n * d)
    dw_part = np.empty((chunks, d), x2.dtype)
    db_part = np.empty((chunks, d), x2.dtype)
    launch.run(launch.NORMS, _layer_norm_backward_chunks,
               (dy2, x2, w_arr, mean1, rstd1, dx, dw_part, db_part), chunks, n * d)
    dw, db = _total(dw_part, x2), _total(db_part, x2)
    return dx.reshape(x.shape), (dw if has_w else None), db
