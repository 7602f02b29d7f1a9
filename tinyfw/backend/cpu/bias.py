"""The bias of a Linear on the CPU: the product that starts from it, the row add and the column sum.

``Linear``'s forward is ``addmm(bias, x, weight.T)`` and its backward sums the output gradient
over the rows (``sum`` with ``axis=0``); gradients accumulate with ``iadd``. NumPy does all three
correctly, but a matmul followed by a broadcast add passes over the output twice, and NumPy's
broadcast add and column sum take up to twice as long as a plain loop at the shapes of a small
model (timings in ``bench/NOTES.md``). The kernels here are plain row loops over contiguous memory
that LLVM vectorises; anything they do not cover falls back to NumPy, which is also their
reference (``tests/test_bias.py``).

- ``addmm(c, a, b)``: ``c + a @ b``. The bias row is copied into every row of the output and BLAS's
  gemm adds the product to it (``beta = 1``, ``runtime/blas.py``), so the output is written by
  the product alone, as without a bias.
- ``iadd(target, value)``: ``target += value`` in place.
- ``sum(x, axis, keepdims)``: ``np.sum``; the column sum of a 2-D array adds blocks of 32 rows
  in the input dtype and the blocks' sums in float64 (NumPy adds all the rows one by one in the
  input dtype: the kernel is at least as accurate).
"""
import numpy as np
from numba import njit

from .runtime.blas import gemm, rows_are_contiguous
from .runtime.launch import ADDMM_MIN_ROWS, BIAS_KERNEL_MIN_ELEMENTS

__all__ = ["addmm", "iadd", "sum"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True)
def _copy_to_rows(target, row):
    """target[i, :] = row for every i; target (R, C) C-contiguous, row (C,)."""
    for i in range(target.shape[0]):
        t = target[i]
        for j in range(t.shape[0]):
            t[j] = row[j]


@njit(cache=True)
def _add_to_rows(target, row):
    """target[i, :] += row for every i; target (R, C) C-contiguous, row (C,)."""
    for i in range(target.shape[0]):
        t = target[i]
        for j in range(t.shape[0]):
            t[j] += row[j]


# Rows summed in the input dtype per block before the block's sum joins the float64 total: longer
# blocks convert to float64 less often, shorter ones keep the input-dtype sums more accurate.
SUM_BLOCK_ROWS = 32


@njit(cache=True)
def _sum_rows(x, block, acc, out):
    """out[j] = sum_i x[i, j]: blocks of SUM_BLOCK_ROWS rows summed into ``block`` (x's dtype,
    (C,)), each block's sum added into ``acc`` (float64, (C,))."""
    acc[:] = 0.0
    for i0 in range(0, x.shape[0], SUM_BLOCK_ROWS):
        block[:] = x[i0]
        for i in range(i0 + 1, min(x.shape[0], i0 + SUM_BLOCK_ROWS)):
            r = x[i]
            for j in range(r.shape[0]):
                block[j] += r[j]
        for j in range(block.shape[0]):
            acc[j] += block[j]
    for j in range(out.shape[0]):
        out[j] = acc[j]


def _is_row(target, value):
    """value broadcasts as one row over a C-contiguous float target of the same dtype."""
    return (isinstance(target, np.ndarray) and isinstance(value, np.ndarray)
            and target.dtype in _FLOATS and value.dtype == target.dtype
            and target.ndim >= 1 and value.ndim == 1 and value.shape[0] == target.shape[-1]
            and target.size >= BIAS_KERNEL_MIN_ELEMENTS and target.flags.c_contiguous
            and target.flags.writeable)


def _as_gemm_operand(x):
    """(view, transposed) such that ``x`` is the view or its transpose and the view's rows are
    contiguous, as ``gemm`` takes them; None when neither layout is."""
    if rows_are_contiguous(x):
        return x, False
    if rows_are_contiguous(x.T):
        return x.T, True
    return None


def addmm(c, a, b):
    """``c + a @ b``: a ``(M, K)``, b ``(K, N)``, c a bias row ``(N,)`` (or anything that
    broadcasts to ``(M, N)``, through NumPy). One float dtype throughout goes to BLAS's gemm
    with the bias as its starting value; other dtypes, layouts and single rows are NumPy's."""
    if (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and isinstance(c, np.ndarray)
            and a.ndim == 2 and b.ndim == 2 and c.ndim == 1 and a.dtype in _FLOATS
            and a.dtype == b.dtype == c.dtype and a.shape[1] == b.shape[0] > 0
            and c.shape[0] == b.shape[1] and a.shape[0] >= ADDMM_MIN_ROWS
            and a.shape[0] * b.shape[1] >= BIAS_KERNEL_MIN_ELEMENTS):
        a_op, b_op = _as_gemm_operand(a), _as_gemm_operand(b)
        if a_op is not None and b_op is not None:
            out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
            _copy_to_rows(out, np.ascontiguousarray(c))
            gemm(1.0, a_op[0], a_op[1], b_op[0], b_op[1], 1.0, out, np.empty(2, dtype=a.dtype))
            return out
    y = np.matmul(a, b)
    if np.shape(c) == y.shape[-1:] and getattr(c, "dtype", None) == y.dtype:
        iadd(y, c)      # y is the matmul's own new array: no second (M, N) one
        return y
    return np.add(c, y)


def iadd(target, value):
    """``target += value`` in place; a row vector added to every row by the kernel."""
    if _is_row(target, value):
        _add_to_rows(target.reshape(-1, target.shape[-1]), np.ascontiguousarray(value))
    else:
        target += value


def sum(x, axis=None, keepdims=False):
    """``np.sum(x, axis, keepdims)``; the column sum of a large 2-D float array by the kernel."""
    if (axis in (0, (0,)) and not keepdims and isinstance(x, np.ndarray) and x.ndim == 2
            and x.dtype in _FLOATS and x.size >= BIAS_KERNEL_MIN_ELEMENTS and x.flags.c_contiguous):
        out = np.empty(x.shape[1], dtype=x.dtype)
        _sum_rows(x, np.empty_like(out), np.empty(x.shape[1], dtype=np.float64), out)
        return out
    return np.sum(x, axis=axis, keepdims=keepdims)
