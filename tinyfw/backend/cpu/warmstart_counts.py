"""Numba kernels for the explicit (closed-form) SAFU solve: the count accumulations and the
row-wise softmax passes of the differential criterion.

Same names, signatures and results as the NumPy references in
``tinyfw/warmstart/explicit_steps.py``, which define the math; ``explicit_training.py`` runs
its solve with these. The counts are float64; the softmax passes (``softmax_cross_entropy_rows``,
``split_columns``, ``listed_products``) run in the precision of their inputs, float32 or float64,
so that a float32 model is solved in float32 as it is trained, and a float64 one exactly.

- ``target_counts``: ``F = X^T Y`` for integer targets, a scatter-add of the rows of X into
  the rows of ``F^T`` (one per target): the embedding backward's kernel (serial in row order;
  in parallel each thread takes whole segments of equal targets, so none write the same row).
- ``softmax_cross_entropy_rows``: per row of logits, the max, the exps, their sum and the loss
  in one pass while the row is in cache (and ``p - y`` in place of the logits for the
  gradient), where NumPy makes a temporary per step over the whole block. The exp is a
  vectorisable one (``_exp_float64`` here, ``fastmath.exp_float32``; libm's ``exp`` is a scalar
  call per element); it agrees with ``np.exp`` to 1-2 ulp in float64 and to 1e-7 in float32.
  It first adds the product of a sparse matrix with a weight matrix to the row (``sparse``),
  for the columns of the features that are mostly zero (``sparse_column_mask``): the radial
  context of cipher vectors has ~4 non-zero entries in 108, and one row of W per non-zero
  entry costs far less than BLAS's dense product over all columns (bench/README.md, "Explicit
  SAFU solve", has the figures).
- ``offset_choices``: the argmin over the block window of ``x_{t-k} . g_t``, every position
  independently.
- ``choice_counts``: ``F = sum_t x_t x_{t - k*(t)}^T`` over the kept positions; threads own
  ranges of rows of F.

Every kernel handles a range of units on the calling thread; ``runtime/launch.py`` chooses the
calling thread, helper threads or Numba's pool by the size of the work, as for the training
kernels.
"""
import math
import mmap

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .core_kernels import embedding_backward
from .fastmath import exp_float32
from .runtime import launch

__all__ = ["target_counts", "softmax_cross_entropy_rows", "offset_choices", "choice_counts",
           "sparse_column_mask", "split_columns", "listed_products", "large_empty",
           "check_target_counts", "check_softmax_rows",
           "check_offset_inputs", "check_choice_counts", "check_listed_products"]

# The smallest probability the loss takes the log of (as the solve's loss always did): a
# target the model gives less than this costs -log(1e-300) = 690.8 nats, not +inf.
MIN_PROBABILITY = 1e-300

# Feature columns non-zero in fewer than this fraction of the rows are added to the logits one
# row of W per non-zero entry, the rest by BLAS. A non-zero entry costs several times a dense
# column in BLAS's product, so sparse columns pay only below a density near 1/6 (figures in
# bench/README.md, "Explicit SAFU solve").
SPARSE_MAX_DENSITY = 0.125


# Arrays of at least this many bytes come from ``large_empty``'s own mapping on huge pages.
LARGE_ARRAY_BYTES = 32 << 20


def large_empty(shape, dtype=np.float64):
    """An uninitialised float array (float64 or float32); one of ``LARGE_ARRAY_BYTES`` or more
    on its own anonymous mapping marked for transparent huge pages (``MADV_HUGEPAGE``, where the
    system has them).

    The solve's feature matrices (100-150 MB) are allocated a few times per solve, above
    malloc's mmap threshold (``runtime/environment.py``: 32 MB), so each comes fresh from the
    kernel and would be page-faulted in 4 KB at a time; 2 MB pages make the first touch several
    times cheaper."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if n * dtype.itemsize < LARGE_ARRAY_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype=dtype)
    region = mmap.mmap(-1, max(n * dtype.itemsize, 1))
    try:
        region.madvise(mmap.MADV_HUGEPAGE)
    except OSError:
        pass                           # no transparent huge pages here: ordinary pages
    return np.frombuffer(region, dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Validation (shared with the NumPy references, so both reject the same inputs the same way)
# ----------------------------------------------------------------------------------------------

def _float64_matrix(op, name, a, ndim):
    a = np.asarray(a)
    if a.dtype != np.float64:
        raise TypeError(f"{op}: {name} must be float64, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {a.shape}")
    return a


def _float_matrix(op, name, a, ndim, dtype=None):
    """A float32 or float64 array of ``ndim`` dimensions; of ``dtype`` when given (the dtype of
    the operation's other float inputs)."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{op}: {name} must have the dtype of the other inputs ({dtype}), "
                        f"got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {a.shape}")
    return a


def _int_array(op, name, a, shape):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be integers, got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{op}: {name} of shape {a.shape} does not match {shape}")
    return a


def check_target_counts(X, targets, n_out):
    """X float64 (M, d), targets ints (M,) in [0, n_out), n_out >= 1."""
    op = "target_counts"
    X = _float64_matrix(op, "X", X, 2)
    targets = _int_array(op, "targets", targets, X.shape[:1])
    if isinstance(n_out, bool) or not isinstance(n_out, (int, np.integer)) or n_out < 1:
        raise ValueError(f"{op}: n_out must be an int >= 1, got {n_out!r}")
    if targets.size and (targets.min() < 0 or targets.max() >= n_out):
        raise ValueError(f"{op}: targets must lie in [0, {n_out}), got range "
                         f"[{targets.min()}, {targets.max()}]")
    return X, targets, int(n_out)


def check_softmax_rows(S, targets, sparse=None):
    """S float32 or float64 (n, V) with V >= 1, targets ints (n,) in [0, V); sparse None or
    ``(indptr (n + 1,), indices (nnz,), values (nnz,), W (k, V))``, a CSR matrix (n, k)
    (indptr may start at any offset into indices and values) and weights, S's dtype."""
    op = "softmax_cross_entropy_rows"
    S = _float_matrix(op, "S", S, 2)
    if S.shape[1] == 0:
        raise ValueError(f"{op}: S must have at least one column, got shape {S.shape}")
    targets = _int_array(op, "targets", targets, S.shape[:1])
    if targets.size and (targets.min() < 0 or targets.max() >= S.shape[1]):
        raise ValueError(f"{op}: targets must lie in [0, {S.shape[1]}), got range "
                         f"[{targets.min()}, {targets.max()}]")
    if sparse is not None:
        if len(sparse) != 4:
            raise ValueError(f"{op}: sparse must be (indptr, indices, values, W), got "
                             f"{len(sparse)} items")
        indptr, indices, values, W = (np.asarray(a) for a in sparse)
        W = _float_matrix(op, "the sparse part's W", W, 2, S.dtype)
        values = _float_matrix(op, "the sparse part's values", values, 1, S.dtype)
        if W.shape[1] != S.shape[1]:
            raise ValueError(f"{op}: the sparse part's W {W.shape} must have {S.shape[1]} "
                             "columns, as S")
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise TypeError(f"{op}: the sparse part's indptr and indices must be integers")
        if indptr.shape != (S.shape[0] + 1,) or indices.shape != values.shape:
            raise ValueError(f"{op}: the sparse part needs indptr of shape ({S.shape[0] + 1},) "
                             f"and one index per value, got {indptr.shape}, {indices.shape}, "
                             f"{values.shape}")
        if S.shape[0] and (indptr[0] < 0 or (np.diff(indptr) < 0).any()
                           or indptr[-1] > len(values)):
            raise ValueError(f"{op}: the sparse part's indptr must be non-decreasing within "
                             f"[0, {len(values)}]")
        used = indices[indptr[0]:indptr[-1]] if S.shape[0] else indices[:0]
        if used.size and (used.min() < 0 or used.max() >= W.shape[0]):
            raise ValueError(f"{op}: the sparse part's indices must lie in [0, {W.shape[0]})")
        sparse = (indptr, indices, values, W)
    return S, targets, sparse


def check_offset_inputs(X, G, block):
    """X, G float64 (N, L, d) of one shape; block an int >= 1."""
    op = "offset_choices"
    X = _float64_matrix(op, "X", X, 3)
    G = _float64_matrix(op, "G", G, 3)
    if G.shape != X.shape:
        raise ValueError(f"{op}: G {G.shape} must match X {X.shape}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"{op}: block must be an int >= 1, got {block!r}")
    return X, G, int(block)


def check_choice_counts(X, choice, keep):
    """X float64 (N, L, d); choice ints (N, L) with 0 <= choice[n, t] <= t where kept; keep
    bool (N, L)."""
    op = "choice_counts"
    X = _float64_matrix(op, "X", X, 3)
    choice = _int_array(op, "choice", choice, X.shape[:2])
    keep = np.asarray(keep)
    if keep.dtype != np.bool_ or keep.shape != X.shape[:2]:
        raise ValueError(f"{op}: keep must be a bool array of shape {X.shape[:2]}, got "
                         f"{keep.dtype} {keep.shape}")
    if keep.any():
        t = np.broadcast_to(np.arange(X.shape[1]), keep.shape)
        kept = choice[keep]
        if kept.min() < 0 or (kept > t[keep]).any():
            raise ValueError(f"{op}: every kept choice k must satisfy 0 <= k <= t (a position "
                             "of the same window)")
    return X, choice, keep


# ----------------------------------------------------------------------------------------------
# Vectorisable exp, float64 and float32
# ----------------------------------------------------------------------------------------------

@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE bit pattern is the int64 ``bits`` (a free register reinterpret)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())
    return types.float64(types.int64), codegen


_LOG2_E = 1.0 / math.log(2.0)
# ln 2 split in two (Cody & Waite; fdlibm's constants): n * _LN2_HI is exact for |n| < 2^21
# (_LN2_HI has 32 significant bits), so u - n ln 2 loses nothing to cancellation, and _LN2_LO is
# the rest of the true ln 2 (log(2.0) - _LN2_HI in float64 would carry log(2.0)'s rounding,
# ~1e-16 of ln 2, times n into r: 2e-14 relative error at u = -700).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Below this, exp(u) (< 3e-308) is flushed to 0: 2^n stays a normal float. np.exp gives 0 or
# a denormal there, which no sum of probabilities can tell apart.
_EXP_MIN = -708.0
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))


@njit(cache=True, fastmath={"contract"})
def _exp_float64(u):
    """exp(u) for u <= ~700, vectorisable: exp(u) = 2^n exp(r), n = round(u / ln 2),
    |r| <= ln 2 / 2; exp(r) by its Taylor series to r^13 (remainder < 2e-16 relative); 2^n
    built directly as float bits. 0 for u < -708 and for NaN. A compiled function of its own
    (LLVM still inlines and vectorises it): inlined into the caller's Numba IR it would take the
    caller's fastmath flags, and reassociation undoes the two-part ln 2 (2e-14 relative error
    at u = -700 inside the reassociated sum of exps)."""
    uc = u if u >= _EXP_MIN else _EXP_MIN
    n = np.floor(uc * _LOG2_E + 0.5)
    r = (uc - n * _LN2_HI) - n * _LN2_LO
    c = _EXP_TAYLOR
    p = c[13]
    p = c[12] + r * p
    p = c[11] + r * p
    p = c[10] + r * p
    p = c[9] + r * p
    p = c[8] + r * p
    p = c[7] + r * p
    p = c[6] + r * p
    p = c[5] + r * p
    p = c[4] + r * p
    p = c[3] + r * p
    p = c[2] + r * p
    p = c[1] + r * p
    p = c[0] + r * p
    two_n = _float64_from_bits(np.int64(n + 1023.0) << 52)
    return p * two_n if u >= _EXP_MIN else 0.0


def _exp(u):
    """exp of a float32 or float64 scalar in its own precision, inside compiled code."""
    raise NotImplementedError("_exp is for compiled (Numba) code")


# Compiled as a function of its own (LLVM still inlines and vectorises it), so that, as for
# ``_exp_float64``, the callers' reassociating sums cannot merge the two parts of ln 2.
@overload(_exp, jit_options={"fastmath": {"contract"}})
def _exp_by_type(u):
    if u == types.float32:
        return lambda u: exp_float32(u)
    if u == types.float64:
        return lambda u: _exp_float64(u)
    return None


def _in_dtype_of(x, value):
    """``value`` as a scalar of the float array x's dtype, inside compiled code (a float64
    constant would widen a float32 loop to float64)."""
    raise NotImplementedError("_in_dtype_of is for compiled (Numba) code")


@overload(_in_dtype_of)
def _in_dtype_of_by_type(x, value):
    if x.dtype == types.float32:
        return lambda x, value: np.float32(value)
    if x.dtype == types.float64:
        return lambda x, value: np.float64(value)
    return None


# ----------------------------------------------------------------------------------------------
# Row helpers, for float32 and float64 rows (sums and scale factors in the row's dtype, so
# that float32 rows vectorise 8 or 16 to a register): each a loop LLVM vectorises on its own
# (an in-place exp and a reduction in one loop would not be: the exp's output aliases its
# input, and the sum needs reassociation).
# They are separate compiled functions, not inline="always": Numba inlines those into the
# caller's IR, where the caller's fastmath flags (none) replace theirs and the reductions would
# stay scalar.
# ----------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"nnan", "ninf", "nsz", "reassoc"})
def _row_max(x):
    """max(x) of a finite row, in 8 independent lanes (one vector register)."""
    n = x.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    j = 0
    while j + 8 <= n:
        m0 = max(m0, x[j])
        m1 = max(m1, x[j + 1])
        m2 = max(m2, x[j + 2])
        m3 = max(m3, x[j + 3])
        m4 = max(m4, x[j + 4])
        m5 = max(m5, x[j + 5])
        m6 = max(m6, x[j + 6])
        m7 = max(m7, x[j + 7])
        j += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    while j < n:
        m = max(m, x[j])
        j += 1
    return m


@njit(cache=True, fastmath={"contract"})
def _exp_shifted_inplace(x, shift):
    for j in range(x.shape[0]):
        x[j] = _exp(x[j] - shift)


@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _row_sum(x):
    total = _in_dtype_of(x, 0.0)
    for j in range(x.shape[0]):
        total += x[j]
    return total


@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _exp_shifted_sum(x, shift):
    total = _in_dtype_of(x, 0.0)
    for j in range(x.shape[0]):
        total += _exp(x[j] - shift)
    return total


@njit(cache=True, fastmath={"contract"})
def _reciprocal_scale_inplace(x, total):
    # x /= total, as one reciprocal (in the row's dtype) and a multiply per entry
    factor = _in_dtype_of(x, 1.0) / total
    for j in range(x.shape[0]):
        x[j] *= factor


# ----------------------------------------------------------------------------------------------
# Softmax cross-entropy rows
# ----------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"})
def _add_scaled_row(s, a, w):
    for j in range(s.shape[0]):
        s[j] += a * w[j]


@njit(cache=True, fastmath={"contract"})
def _add_two_scaled_rows(s, a, w, b, v):
    for j in range(s.shape[0]):
        s[j] += a * w[j] + b * v[j]


@njit(cache=True, fastmath={"contract"})
def _add_four_scaled_rows(s, a, w, b, v, c, x, d, y):
    # four rows of W per pass over s: a quarter of the loads and stores of s
    for j in range(s.shape[0]):
        s[j] += (a * w[j] + b * v[j]) + (c * x[j] + d * y[j])


@njit(inline="always")
def _add_sparse_product(s, indptr, indices, values, W, r):
    # s += (row r of the CSR matrix) @ W
    q, stop = indptr[r], indptr[r + 1]
    while q + 3 < stop:
        _add_four_scaled_rows(s, values[q], W[indices[q]], values[q + 1], W[indices[q + 1]],
                              values[q + 2], W[indices[q + 2]], values[q + 3],
                              W[indices[q + 3]])
        q += 4
    if q + 1 < stop:
        _add_two_scaled_rows(s, values[q], W[indices[q]], values[q + 1], W[indices[q + 1]])
        q += 2
    if q < stop:
        _add_scaled_row(s, values[q], W[indices[q]])


_MAX_LOSS = -math.log(MIN_PROBABILITY)


@njit(nogil=True, cache=True)
def _softmax_loss_rows(S, targets, indptr, indices, values, W, loss, start, stop):
    # loss only: log-sum-exp minus the target's logit (in float64: the row's sum of exps is
    # in the row's dtype, its log and the difference are not)
    for r in range(start, stop):
        s = S[r]
        _add_sparse_product(s, indptr, indices, values, W, r)
        m = _row_max(s)
        lse = float(m) + math.log(_exp_shifted_sum(s, m))
        loss[r] = min(lse - float(s[targets[r]]), _MAX_LOSS)


@njit(nogil=True, cache=True)
def _softmax_gradient_rows(S, targets, indptr, indices, values, W, loss, start, stop):
    # the row becomes p - onehot(target), as the reference's e / sum(e) then -1 at the target;
    # the loss is taken from the logits before they are overwritten, as in the loss-only rows
    for r in range(start, stop):
        s = S[r]
        _add_sparse_product(s, indptr, indices, values, W, r)
        m = _row_max(s)
        t = targets[r]
        target_logit = float(s[t])
        _exp_shifted_inplace(s, m)
        total = _row_sum(s)
        loss[r] = min(float(m) + math.log(total) - target_logit, _MAX_LOSS)
        _reciprocal_scale_inplace(s, total)
        s[t] -= 1


def softmax_cross_entropy_rows(S, targets, gradient=False, sparse=None):
    """Per-row cross-entropy of logits S (n, V), float32 or float64, against targets (n,):
    returns the float64 losses (n,) ``-log max(p_t, 1e-300)``, p = softmax of the row, computed
    as ``min(logsumexp(row) - row[t], -log 1e-300)``. The exps and their sum are in S's dtype.

    ``sparse`` (optional): ``(indptr, indices, values, W)``, a CSR matrix A (n, k) and weights
    W (k, V); the logits are then ``S + A @ W`` and S is overwritten with them. With
    ``gradient``, S is overwritten with ``p - onehot(t)``, the gradient of each row's loss.
    S must be a writeable C-contiguous array whenever it is overwritten."""
    S, targets, sparse = check_softmax_rows(S, targets, sparse)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    if gradient or sparse is not None:
        if not S.flags.c_contiguous or not S.flags.writeable:
            raise ValueError("softmax_cross_entropy_rows: S is overwritten (gradient=True or a "
                             "sparse part) and must be a writeable C-contiguous array")
    else:
        S = np.ascontiguousarray(S)
    if sparse is None:
        indptr = np.zeros(S.shape[0] + 1, dtype=np.int64)
        indices = np.zeros(0, np.int64)
        values, W = np.zeros(0, S.dtype), np.zeros((1, S.shape[1]), S.dtype)
    else:
        indptr, indices, values, W = sparse
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        values, W = np.ascontiguousarray(values), np.ascontiguousarray(W)
    kernel = _softmax_gradient_rows if gradient else _softmax_loss_rows
    loss = np.empty(S.shape[0])
    launch.run(launch.ROWS, kernel, (S, targets, indptr, indices, values, W, loss), S.shape[0],
               S.size)
    return loss


def sparse_column_mask(Z):
    """Which columns of Z (M, k) ``softmax_cross_entropy_rows`` should take as its sparse part:
    those non-zero in fewer than ``SPARSE_MAX_DENSITY`` of the rows. (k,) bool."""
    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"sparse_column_mask: Z must be 2-D, got shape {Z.shape}")
    if Z.shape[0] == 0:
        return np.zeros(Z.shape[1], dtype=bool)
    return np.count_nonzero(Z, axis=0) < SPARSE_MAX_DENSITY * Z.shape[0]


@njit(nogil=True, cache=True)
def _count_row_nonzeros(Z, sparse_cols, counts, start, stop):
    for r in range(start, stop):
        k = 0
        for c in sparse_cols:
            if Z[r, c] != 0.0:
                k += 1
        counts[r] = k


@njit(nogil=True, cache=True)
def _split_rows(Z, dense_cols, sparse_cols, dense, indptr, indices, values, start, stop):
    for r in range(start, stop):
        for i in range(dense_cols.shape[0]):
            dense[r, i] = Z[r, dense_cols[i]]
        q = indptr[r]
        for i in range(sparse_cols.shape[0]):
            v = Z[r, sparse_cols[i]]
            if v != 0.0:
                indices[q] = i
                values[q] = v
                q += 1


def split_columns(Z, dtype=np.float64):
    """Z (M, k) float64 split for ``softmax_cross_entropy_rows`` by ``sparse_column_mask``:
    returns ``(dense_cols, dense, sparse_cols, (indptr, indices, values))``, ``dense = Z[:,
    dense_cols]`` (C-contiguous) for BLAS and ``Z[:, sparse_cols]`` as a CSR matrix (indices
    count within ``sparse_cols``), so ``Z @ W = dense @ W[dense_cols] + csr @ W[sparse_cols]``.
    ``dense`` and ``values`` are in ``dtype`` (float64 or float32: the precision of the
    passes)."""
    Z = np.ascontiguousarray(_float64_matrix("split_columns", "Z", Z, 2))
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"split_columns: dtype must be float32 or float64, got {dtype}")
    mask = sparse_column_mask(Z)
    dense_cols = np.flatnonzero(~mask).astype(np.int64)
    sparse_cols = np.flatnonzero(mask).astype(np.int64)
    M = Z.shape[0]
    counts = np.zeros(M, dtype=np.int64)
    launch.run(launch.ROWS, _count_row_nonzeros, (Z, sparse_cols, counts), M,
               M * len(sparse_cols))
    indptr = np.zeros(M + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dense = large_empty((M, len(dense_cols)), dtype)
    indices = np.empty(indptr[-1], dtype=np.int64)
    values = np.empty(indptr[-1], dtype=dtype)
    launch.run(launch.ROWS, _split_rows,
               (Z, dense_cols, sparse_cols, dense, indptr, indices, values), M, Z.size)
    return dense_cols, dense, sparse_cols, (indptr, indices, values)


def check_listed_products(D, W, indptr, cols):
    """D float32 or float64 (n, V), W (k, V) of D's dtype; indptr (n + 1,) non-decreasing from
    0 and cols (indptr[-1],) in [0, k): the columns listed for each row."""
    op = "listed_products"
    D = _float_matrix(op, "D", D, 2)
    W = _float_matrix(op, "W", W, 2, D.dtype)
    if W.shape[1] != D.shape[1]:
        raise ValueError(f"{op}: W {W.shape} must have {D.shape[1]} columns, as D")
    indptr, cols = np.asarray(indptr), np.asarray(cols)
    if indptr.dtype.kind not in "iu" or cols.dtype.kind not in "iu":
        raise TypeError(f"{op}: indptr and cols must be integers")
    if (indptr.shape != (D.shape[0] + 1,) or indptr[0] != 0 or (np.diff(indptr) < 0).any()
            or indptr[-1] != len(cols)):
        raise ValueError(f"{op}: indptr must be ({D.shape[0] + 1},), non-decreasing from 0 to "
                         f"len(cols) = {len(cols)}")
    if cols.size and (cols.min() < 0 or cols.max() >= W.shape[0]):
        raise ValueError(f"{op}: cols must lie in [0, {W.shape[0]})")
    return D, W, indptr, cols


@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _dot(a, b):
    total = _in_dtype_of(a, 0.0)
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@njit(nogil=True, cache=True)
def _listed_products_rows(D, W, indptr, cols, out, start, stop):
    for r in range(start, stop):
        for q in range(indptr[r], indptr[r + 1]):
            out[r, cols[q]] = _dot(D[r], W[cols[q]])


def listed_products(D, W, indptr, cols):
    """``out = D @ W.T`` (n, k), D's dtype, at the listed entries only (row r: columns
    ``cols[indptr[r]:indptr[r + 1]]``), zero elsewhere. The solve needs ``dL/dh`` only where
    some input of the block window is non-zero (the criterion multiplies it by those inputs):
    ~9 of 36 columns with cipher vectors, a quarter of BLAS's dense product."""
    D, W, indptr, cols = check_listed_products(D, W, indptr, cols)
    D, W = np.ascontiguousarray(D), np.ascontiguousarray(W)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    out = np.zeros((D.shape[0], W.shape[0]), dtype=D.dtype)
    launch.run(launch.ROWS, _listed_products_rows, (D, W, indptr, cols, out),
               D.shape[0], len(cols) * D.shape[1])
    return out


# ----------------------------------------------------------------------------------------------
# Target counts
# ----------------------------------------------------------------------------------------------

def target_counts(X, targets, n_out):
    """``F = X^T Y`` (d, n_out) float64 for X (M, d) float64 and integer targets (M,) in
    ``[0, n_out)`` (Y their one-hot rows): column c of F sums the rows of X with target c.
    ``F^T`` is the embedding backward's scatter-add (``core_kernels.embedding_backward``:
    row ``targets[m]`` of F^T gathers row m of X), so that kernel does the work."""
    X, targets, n_out = check_target_counts(X, targets, n_out)
    return np.ascontiguousarray(embedding_backward(targets, X, n_out).T)


# ----------------------------------------------------------------------------------------------
# Differential criterion: offset choices and their counts
# ----------------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, fastmath={"contract"})
def _offset_choices_positions(X, G, block, decides, choice, keep, start, stop):
    N, L, D = X.shape
    for p in range(start, stop):
        n = p // L
        t = p % L
        best = np.inf
        k_best = 0
        for k in range(min(block, t + 1)):
            c = 0.0
            for d in range(D):
                c += X[n, t - k, d] * G[n, t, d]
            if c < best:
                best = c
                k_best = k
        choice[n, t] = k_best
        ok = decides and t >= 1
        if ok:
            ok = False
            for d in range(D):
                if X[n, t, d] != 0.0:
                    ok = True
                    break
        if ok:
            ok = False
            for d in range(D):
                if X[n, t - k_best, d] != 0.0:
                    ok = True
                    break
        keep[n, t] = ok


def offset_choices(X, G, block):
    """The differential criterion over the block window (``explicit_steps.offset_choices``):
    X inputs and G = dL/dh, both (N, L, d) float64 -> ``(choice (N, L) int64, keep (N, L)
    bool)``."""
    X, G, block = check_offset_inputs(X, G, block)
    X, G = np.ascontiguousarray(X), np.ascontiguousarray(G)
    N, L, _ = X.shape
    choice = np.zeros((N, L), dtype=np.int64)
    keep = np.zeros((N, L), dtype=np.bool_)
    launch.run(launch.ROWS, _offset_choices_positions, (X, G, block, block > 1, choice, keep),
               N * L, X.size * min(block, L))
    return choice, keep


@njit(nogil=True, cache=True, fastmath={"contract"})
def _choice_counts_rows(X, choice, keep, F, start, stop):
    # F[a, :] += X[n, t, a] * X[n, t - choice, :] for a in [start, stop)
    N, L, D = X.shape
    for n in range(N):
        for t in range(L):
            if not keep[n, t]:
                continue
            chosen = X[n, t - choice[n, t]]
            for a in range(start, stop):
                xa = X[n, t, a]
                if xa != 0.0:
                    row = F[a]
                    for b in range(D):
                        row[b] += xa * chosen[b]


def choice_counts(X, choice, keep):
    """``F = sum over kept (n, t) of x_{n,t} x_{n,t-choice}^T`` (d, d) float64 for X (N, L, d)
    float64, choice ints (N, L) and keep bool (N, L)."""
    X, choice, keep = check_choice_counts(X, choice, keep)
    X = np.ascontiguousarray(X)
    choice = np.ascontiguousarray(choice, dtype=np.int64)
    keep = np.ascontiguousarray(keep)
    D = X.shape[2]
    F = np.zeros((D, D))
    launch.run(launch.ROWS, _choice_counts_rows, (X, choice, keep, F), D, X.size)
    return F
