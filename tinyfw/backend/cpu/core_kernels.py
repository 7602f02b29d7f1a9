"""Numba kernels for the core fused ops: softmax, log-softmax, cross-entropy, embedding backward,
GELU, ELU + 1 and the Adam step.

Each public function has the name and signature of its NumPy reference in
``tinyfw/backend/reference/core.py`` (read that first: it is the definition). Here each is a small
Python wrapper (validate with the reference's checks, make the inputs contiguous, allocate the
output) around an ``@njit`` kernel that does the whole operation in one pass per row:

- row kernels (softmax, log-softmax, cross-entropy) work row by row; within a row they read the
  row a few times while it is still in cache, instead of NumPy's one temporary per step;
- GELU, ELU + 1 and Adam are flat elementwise loops;
- the embedding backward is a scatter-add; it is made race-free by sorting the ids and giving
  each thread whole segments of equal ids, so no two threads ever write the same weight row.

Each kernel handles a range of rows / elements / segments; ``runtime/launch.py`` (policy
``ROWS``) runs it on the calling thread, split with helper threads, or in Numba's pool.

Arithmetic runs in the input dtype (exp of float32 logits is a float32 exp, the Adam update of a
float32 parameter is float32 arithmetic), except: sums over a row accumulate in float64, and GELU
evaluates its formula in float64 and rounds once on store (as the reference does, see there) for
float64 inputs and the tanh form, while float32 exact GELU has a vectorised float32 evaluation
accurate to a few ulps (see the GELU section). Outputs have the input dtype.
"""
import math

import numpy as np
from numba import njit

from ..reference.core import (
    GELU_KAPPA, INV_SQRT_2PI, SQRT_2_OVER_PI, SQRT_HALF,
    adam_bias_corrections, check_adam, check_approximate, check_float, check_ids,
    check_rows, check_same_shape, check_targets,
)
from .fastmath import (
    exp_float32 as _exp_float32, exp_of_dtype as _exp_of_dtype,
    normal_cdf_pdf_float32 as _normal_cdf_pdf_float32,
)
from .runtime import launch

__all__ = [
    "softmax_forward", "softmax_backward",
    "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "embedding_backward",
    "gelu_forward", "gelu_backward",
    "elu_plus_one_forward", "elu_plus_one_backward",
    "adam_step",
]


# Reassociation (SIMD lanes for row sums) and FMA contraction; not 'nnan'/'ninf', so inf and NaN
# still behave as in the references.
_SUM_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# Every kernel below works on a range [start, stop) of independent units (rows, elements or
# segments of equal ids) on the calling thread; no two units write the same output element.
# ``launch.run`` runs it over all units on this thread, with helper threads or in Numba's pool.

def _rows(x):
    """(..., C) array -> C-contiguous (R, C) view or copy, R = product of the leading axes."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1])


# ----------------------------------------------------------------------------------------------
# Softmax and log-softmax over the last axis
# ----------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_SUM_FASTMATH)
def _sum_float64(x):
    """sum(x) accumulated in float64, reassociated into SIMD lanes."""
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i]
    return total


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _exp_shifted(row, shift, scale, out):
    """out[c] = scale * exp(row[c] - shift), in the dtype of row; row - shift <= 0 (up to
    rounding) in every caller, as ``fastmath.exp_of_dtype`` needs."""
    for c in range(row.shape[0]):
        out[c] = scale * _exp_of_dtype(row[c] - shift)


# The exps run through ``_exp_shifted`` (the vectorised float32 exp, libm for float64) and the
# row sums through ``_sum_float64`` (reassociated into SIMD lanes); see the cross-entropy
# section below for why they are separate functions.

@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def _softmax_forward_rows(x, y, start, stop):
    for r in range(start, stop):
        row, out = x[r], y[r]
        m = row[0]
        for c in range(1, row.shape[0]):
            m = max(m, row[c])
        _exp_shifted(row, m, row.dtype.type(1.0), out)
        inv = 1.0 / _sum_float64(out)
        for c in range(row.shape[0]):
            out[c] = out[c] * inv


@njit(nogil=True, cache=True)
def _softmax_backward_rows(y, dy, dx, start, stop):
    for r in range(start, stop):
        dot = 0.0  # sum(dy * y) for the row
        for c in range(y.shape[1]):
            dot += dy[r, c] * y[r, c]
        for c in range(y.shape[1]):
            dx[r, c] = y[r, c] * (dy[r, c] - dot)


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def _log_softmax_forward_rows(x, y, start, stop):
    for r in range(start, stop):
        row, out = x[r], y[r]
        m = row[0]
        for c in range(1, row.shape[0]):
            m = max(m, row[c])
        _exp_shifted(row, m, row.dtype.type(1.0), out)     # out as scratch for exp(x - m)
        log_total = math.log(_sum_float64(out))
        for c in range(row.shape[0]):
            out[c] = (row[c] - m) - log_total


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def _log_softmax_backward_rows(y, dy, dx, start, stop):
    for r in range(start, stop):
        total = _sum_float64(dy[r])                          # sum(dy) for the row
        out = dx[r]
        _exp_shifted(y[r], y.dtype.type(0.0), y.dtype.type(-total), out)
        for c in range(out.shape[0]):
            out[c] += dy[r, c]                               # dy - exp(y) * sum(dy)


def softmax_forward(x):
    check_float("softmax_forward", x=x)
    check_rows("softmax_forward", x)
    xr = _rows(x)
    y = np.empty_like(xr)
    launch.run(launch.ROWS, _softmax_forward_rows, (xr, y), xr.shape[0], xr.size)
    return y.reshape(x.shape)


def softmax_backward(y, dy):
    check_float("softmax_backward", y=y, dy=dy)
    check_same_shape("softmax_backward", y=y, dy=dy)
    yr, dyr = _rows(y), _rows(dy)
    dx = np.empty_like(yr)
    launch.run(launch.ROWS, _softmax_backward_rows, (yr, dyr, dx), yr.shape[0],
               yr.size)
    return dx.reshape(y.shape)


def log_softmax_forward(x):
    check_float("log_softmax_forward", x=x)
    check_rows("log_softmax_forward", x)
    xr = _rows(x)
    y = np.empty_like(xr)
    launch.run(launch.ROWS, _log_softmax_forward_rows, (xr, y), xr.shape[0],
               xr.size)
    return y.reshape(x.shape)


def log_softmax_backward(y, dy):
    check_float("log_softmax_backward", y=y, dy=dy)
    check_same_shape("log_softmax_backward", y=y, dy=dy)
    yr, dyr = _rows(y), _rows(dy)
    dx = np.empty_like(yr)
    launch.run(launch.ROWS, _log_softmax_backward_rows, (yr, dyr, dx),
               yr.shape[0], yr.size)
    return dx.reshape(y.shape)


# ----------------------------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------------------------

# The exp loops run over whole rows with ``exp_of_dtype`` (float32: the vectorised
# ``fastmath.exp_float32``; float64: libm), under FMA contraction only: reassociation would be
# applied to the inlined exp too and could undo its Cody-Waite split. The row sum is its own
# function, whose reassociation (SIMD lanes, float64 accumulator) stays confined to it. The max
# stays a plain scalar loop, so a NaN logit still makes its row NaN.

@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def _cross_entropy_forward_rows(logits, target, ignore_index, loss, lse, start, stop):
    n_classes = logits.shape[1]
    e = np.empty(n_classes, dtype=logits.dtype)
    for r in range(start, stop):
        row = logits[r]
        m = row[0]
        for c in range(1, n_classes):
            m = max(m, row[c])
        _exp_shifted(row, m, row.dtype.type(1.0), e)
        row_lse = m + math.log(_sum_float64(e))
        lse[r] = row_lse
        t = target[r]
        loss[r] = 0.0 if t == ignore_index else row_lse - row[t]


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def _cross_entropy_backward_rows(dloss, logits, target, lse, ignore_index, dlogits, start, stop):
    n_classes = logits.shape[1]
    for r in range(start, stop):
        t = target[r]
        out = dlogits[r]
        if t == ignore_index:
            for c in range(n_classes):
                out[c] = 0.0
        else:
            g = dloss[r]
            row = logits[r]
            row_lse = lse[r]
            _exp_shifted(row, row_lse, g, out)      # g * softmax, recomputed from the lse
            out[t] -= g                               # minus the one-hot target


def cross_entropy_forward(logits, target, ignore_index):
    check_float("cross_entropy_forward", logits=logits)
    check_targets("cross_entropy_forward", logits, target, ignore_index)
    logits = np.ascontiguousarray(logits)
    target = np.ascontiguousarray(target, dtype=np.int64)
    n = logits.shape[0]
    loss = np.empty(n, dtype=logits.dtype)
    lse = np.empty(n, dtype=logits.dtype)
    launch.run(launch.ROWS, _cross_entropy_forward_rows,
               (logits, target, np.int64(ignore_index), loss, lse), n, logits.size)
    return loss, lse


def cross_entropy_backward(dloss, logits, target, lse, ignore_index):
    check_float("cross_entropy_backward", dloss=dloss, logits=logits, lse=lse)
    check_targets("cross_entropy_backward", logits, target, ignore_index)
    check_same_shape("cross_entropy_backward", dloss=dloss, lse=lse, target=target)
    logits = np.ascontiguousarray(logits)
    dlogits = np.empty_like(logits)
    args = (np.ascontiguousarray(dloss), logits, np.ascontiguousarray(target, dtype=np.int64),
            np.ascontiguousarray(lse), np.int64(ignore_index), dlogits)
    launch.run(launch.ROWS, _cross_entropy_backward_rows, args, logits.shape[0],
               logits.size)
    return dlogits


# ----------------------------------------------------------------------------------------------
# Embedding backward
# ----------------------------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def _embedding_backward_segments(order, sorted_ids, starts, dout, dweight, start, stop):
    # Segment s holds positions order[starts[s]:starts[s + 1]], all looking up the same row; a
    # range of whole segments belongs to one thread, so each dweight row has exactly one writer.
    # The stable sort keeps positions in their original order, so each row sums in the same
    # order as np.add.at.
    for s in range(start, stop):
        row = sorted_ids[starts[s]]
        for k in range(starts[s], starts[s + 1]):
            i = order[k]
            for d in range(dout.shape[1]):
                dweight[row, d] += dout[i, d]


@njit(cache=True)
def _embedding_backward_positions(ids, dout, dweight):
    # One thread: every position adds into its row in order (the same order as np.add.at), no
    # sort needed, which makes small calls several times cheaper than the sorted path.
    for i in range(ids.shape[0]):
        row = ids[i]
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
    dout2 = np.ascontiguousarray(dout).reshape(-1, d)
    if launch.pool_threads(launch.ROWS, flat_ids.shape[0], dout2.size) == 1:
        dweight = np.zeros((num_embeddings, d), dtype=dout.dtype)
        _embedding_backward_positions(flat_ids, dout2, dweight)
        return dweight
    # in parallel, each thread takes whole segments of equal ids (see the kernel)
    order = np.argsort(flat_ids, kind="stable")
    sorted_ids = flat_ids[order]
    # a segment starts wherever the sorted id changes; the final entry closes the last segment
    change = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    starts = np.concatenate(([0], change, [sorted_ids.shape[0]])).astype(np.int64)
    if sorted_ids.shape[0] == 0:
        starts = starts[:1]  # no lookups: no segments
    dweight = np.zeros((num_embeddings, d), dtype=dout.dtype)
    launch.run(launch.ROWS, _embedding_backward_segments,
               (order, sorted_ids, starts, dout2, dweight), starts.shape[0] - 1, dout2.size)
    return dweight


# ----------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------
# Two evaluations of the same formulas (see the reference):
#
# - float64 inputs: each element in float64 with libm's erf / exp / tanh, rounded once on
#   store. Exact to rounding (the gradchecks need that), but scalar: LLVM cannot vectorise a
#   libm call, so the loop runs one element at a time (bench/NOTES.md has the timings).
# - float32 inputs, erf form (what the GPT MLP uses): a float32 evaluation written so that LLVM
#   vectorises the loop (8 lanes on AVX2 / AVX-512 with 256-bit vectors): no library calls, no
#   branches that cannot become selects, no float64. Phi(x) and phi(x) come from
#   ``fastmath.normal_cdf_pdf_float32``, which shares one exp(-x^2 / 2) between them and takes
#   Phi from erfc (a rational erfcx times that exp), never from 1 + erf, so the negative tail
#   keeps its relative accuracy where 1 + erf(x / sqrt 2) would cancel:
#
#       GELU(x) = x Phi(x),        GELU'(x) = Phi(x) + x phi(x)
#
#   Phi and phi are within 6e-7 and 3e-7 relative (fastmath.py), which keeps both loops within
#   a third of the tests' tolerance 2e-7 + 2e-6 |reference| of the float64 reference (the
#   backward's worst case is at the root of Phi + x phi near x = -0.75, where any float32
#   evaluation cancels; the error survey is in bench/NOTES.md). inf, -inf and NaN give what the
#   reference gives (GELU(-inf) = -inf * 0 = NaN there, and the backward's inf * 0 = NaN).
# - float32 inputs, tanh form (GPT-2's ``gelu_new``), the same way: 1 + tanh(u) = 2 sigma(2u),
#   so GELU(x) = x sigma(2u) with u = sqrt(2/pi) (x + kappa x^3), and with e = exp(-2|u|) <= 1
#
#       sigma(2|u|) = 1 / (1 + e),    1 - sigma(2|u|) = e / (1 + e)
#
#   both gates keep their relative accuracy in their own tail (no 1 - tanh cancellation), and
#   the backward is sigma + 2 x sigma (1 - sigma) du/dx. Non-finite x gives NaN in the backward,
#   as the reference's 0 * inf does.
#
# Two Numba options make the float32 loops vectorise; both keep IEEE inf/NaN semantics:
# ``error_model="numpy"`` drops the ZeroDivisionError checks of erfcx's N / D and the tanh
# gates' 1 / (1 + e) (both denominators are >= 1, and the check is a branch that blocks
# vectorisation), and ``fastmath={"contract"}`` lets LLVM fuse a * b + c into one FMA (one
# rounding instead of two; it assumes nothing about NaN or inf). Each loop also runs over slices
# indexed from 0: with a possibly negative index Numba emits wraparound code, and LLVM then
# loads element by element.

_F32 = np.float32
_ONE32, _ZERO32 = _F32(1.0), _F32(0.0)

_SQRT_2_OVER_PI32, _KAPPA32 = _F32(SQRT_2_OVER_PI), _F32(GELU_KAPPA)
_TWO32, _THREE32 = _F32(2.0), _F32(3.0)


@njit(inline="always", fastmath={"contract"})
def _tanh_gates_float32(x):
    """(sigma(2u), 1 - sigma(2u)) for u = sqrt(2/pi) (x + kappa x^3) (see the section comment)."""
    u = _SQRT_2_OVER_PI32 * (x + _KAPPA32 * x * x * x)
    e = _exp_float32(-_TWO32 * abs(u))             # 0 for an infinite or NaN u
    big = _ONE32 / (_ONE32 + e)
    small = e * big
    return (big, small) if u >= _ZERO32 else (small, big)


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _gelu_tanh_forward_float32_elements(x, y, start, stop):
    x, y = x[start:stop], y[start:stop]
    for i in range(x.shape[0]):
        gate, _ = _tanh_gates_float32(x[i])
        y[i] = x[i] * gate


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _gelu_tanh_backward_float32_elements(x, dy, dx, start, stop):
    x, dy, dx = x[start:stop], dy[start:stop], dx[start:stop]
    for i in range(x.shape[0]):
        v = x[i]
        gate, rest = _tanh_gates_float32(v)
        du_dx = _SQRT_2_OVER_PI32 * (_ONE32 + _THREE32 * _KAPPA32 * v * v)
        # gate * rest == 0 (|u| past exp's range): the term is 0, as the reference's
        # (1 - t^2) = 0, even where du_dx overflows; v - v is NaN for an infinite or NaN v
        gate_slope = gate * rest
        slope = _ZERO32 if gate_slope == _ZERO32 else _TWO32 * v * gate_slope * du_dx
        dx[i] = dy[i] * (gate + slope + (v - v))


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _gelu_erf_forward_float32_elements(x, y, start, stop):
    x, y = x[start:stop], y[start:stop]
    for i in range(x.shape[0]):
        cdf, _ = _normal_cdf_pdf_float32(x[i])
        y[i] = x[i] * cdf


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _gelu_erf_backward_float32_elements(x, dy, dx, start, stop):
    x, dy, dx = x[start:stop], dy[start:stop], dx[start:stop]
    for i in range(x.shape[0]):
        v = x[i]
        cdf, pdf = _normal_cdf_pdf_float32(v)
        dx[i] = dy[i] * (cdf + v * pdf)


@njit(nogil=True, cache=True)
def _gelu_forward_elements(x, use_tanh, y, start, stop):
    for i in range(start, stop):
        v = np.float64(x[i])
        if use_tanh:
            y[i] = 0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v)))
        else:
            y[i] = 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))


@njit(nogil=True, cache=True)
def _gelu_backward_elements(x, dy, use_tanh, dx, start, stop):
    for i in range(start, stop):
        v = np.float64(x[i])
        if use_tanh:
            t = math.tanh(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v))
            du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * v * v)
            dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du_dx)
        else:
            cdf = 0.5 * (1.0 + math.erf(v * SQRT_HALF))
            pdf = INV_SQRT_2PI * math.exp(-0.5 * v * v)
            dx[i] = dy[i] * (cdf + v * pdf)


_FLOAT32_GELU = {"none": (_gelu_erf_forward_float32_elements,
                           _gelu_erf_backward_float32_elements),
                  "tanh": (_gelu_tanh_forward_float32_elements,
                           _gelu_tanh_backward_float32_elements)}


def gelu_forward(x, approximate):
    check_float("gelu_forward", x=x)
    check_approximate("gelu_forward", approximate)
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    n = xf.shape[0]
    if xf.dtype == np.float32:
        launch.run(launch.ROWS, _FLOAT32_GELU[approximate][0], (xf, y), n, n)
    else:
        launch.run(launch.ROWS, _gelu_forward_elements, (xf, approximate == "tanh", y), n, n)
    return y.reshape(x.shape)


def gelu_backward(x, dy, approximate):
    check_float("gelu_backward", x=x, dy=dy)
    check_same_shape("gelu_backward", x=x, dy=dy)
    check_approximate("gelu_backward", approximate)
    xf = np.ascontiguousarray(x).reshape(-1)
    dyf = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(xf)
    n = xf.shape[0]
    if xf.dtype == np.float32:
        launch.run(launch.ROWS, _FLOAT32_GELU[approximate][1], (xf, dyf, dx), n, n)
    else:
        launch.run(launch.ROWS, _gelu_backward_elements, (xf, dyf, approximate == "tanh", dx),
                   n, n)
    return dx.reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# ELU + 1
# ----------------------------------------------------------------------------------------------
# One loop per direction, compiled per dtype, in the input dtype as the reference computes.
# ``one`` comes in as an argument of the input dtype so that ``v + one`` stays float32 for
# float32 (a Python 1.0 would promote the loop to float64). exp is ``fastmath.exp_of_dtype``:
# for float32 the vectorisable ``exp_float32`` (the loop runs 8 lanes wide; NaN stays NaN; below
# -87 it gives 0 where NumPy gives a denormal < 1.7e-38), for float64 libm's exp (exact, scalar).
# The exp runs on min(x, 0), so the branch not taken cannot overflow; NaN reaches it as NaN.
# The backward reads only y (see the reference): g where y > 1, else g * y.

@njit(nogil=True, cache=True)
def _elu_plus_one_forward_elements(x, one, y, start, stop):
    x, y = x[start:stop], y[start:stop]
    zero = one - one
    for i in range(x.shape[0]):
        v = x[i]
        e = _exp_of_dtype(zero if v > zero else v)
        y[i] = v + one if v > zero else e


@njit(nogil=True, cache=True)
def _elu_plus_one_backward_elements(g, y, one, dx, start, stop):
    g, y, dx = g[start:stop], y[start:stop], dx[start:stop]
    for i in range(g.shape[0]):
        slope = one if y[i] > one else y[i]
        dx[i] = g[i] * slope


def elu_plus_one_forward(x):
    check_float("elu_plus_one_forward", x=x)
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    n = xf.shape[0]
    launch.run(launch.ROWS, _elu_plus_one_forward_elements, (xf, xf.dtype.type(1), y), n, n)
    return y.reshape(x.shape)


def elu_plus_one_backward(g, y):
    check_float("elu_plus_one_backward", g=g, y=y)
    check_same_shape("elu_plus_one_backward", g=g, y=y)
    gf = np.ascontiguousarray(g).reshape(-1)
    yf = np.ascontiguousarray(y).reshape(-1)
    dx = np.empty_like(gf)
    n = gf.shape[0]
    launch.run(launch.ROWS, _elu_plus_one_backward_elements, (gf, yf, gf.dtype.type(1), dx), n,
               n)
    return dx.reshape(g.shape)


# ----------------------------------------------------------------------------------------------
# Adam / AdamW step
# ----------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _adam_slice(param, grad, exp_avg, exp_avg_sq, beta1, beta2, one_minus_beta1,
                one_minus_beta2, eps, weight_decay, decay, decoupled, step_size,
                bias_correction2_sqrt):
    # Indexed from 0 over whole slices and without the ZeroDivisionError check
    # (error_model="numpy"; the denominator is >= eps > 0), so LLVM vectorises the loop (8 float32
    # lanes, vsqrtps/vdivps), as for the float32 GELU above.
    for i in range(param.shape[0]):
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


@njit(nogil=True, cache=True)
def _adam_elements(param, grad, exp_avg, exp_avg_sq, beta1, beta2, one_minus_beta1,
                   one_minus_beta2, eps, weight_decay, decay, decoupled, step_size,
                   bias_correction2_sqrt, start, stop):
    _adam_slice(param[start:stop], grad[start:stop], exp_avg[start:stop],
                exp_avg_sq[start:stop], beta1, beta2, one_minus_beta1, one_minus_beta2, eps,
                weight_decay, decay, decoupled, step_size, bias_correction2_sqrt)


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
    args = (flat_param, np.ascontiguousarray(grad).reshape(-1), flat_m, flat_v,
            scalar(beta1), scalar(beta2), scalar(1.0 - beta1), scalar(1.0 - beta2),
            scalar(eps), scalar(weight_decay), scalar(1.0 - lr * weight_decay),
            bool(decoupled), scalar(step_size), scalar(bias_correction2_sqrt))
    launch.run(launch.ROWS, _adam_elements, args, flat_param.shape[0], flat_param.shape[0])
    for original, worked in zip((param, exp_avg, exp_avg_sq), state):
        if worked is not original:
            np.copyto(original, worked)
