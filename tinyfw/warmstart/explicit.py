"""Explicit (closed-form) solution of a softmax layer (Williams & Zhao, 2023).

Layer ``Y_hat = softmax(X @ W)`` with non-negative inputs ``X`` ``(M, N_in)``, targets ``Y``
``(M, N_out)`` and the cross-entropy loss ``L = -sum_m sum_j Y_mj log Y_hat_mj``.  Its gradient
is ``dL/dW = X^T (Y_hat - Y)``, which vanishes when ``X^T Y_hat = X^T Y = F``, the
feature-by-target co-occurrence matrix.  For one-hot inputs (each row of ``X`` selects one
feature ``i``) ``Y_hat`` is ``softmax(W_i)`` for every row with feature ``i``, so the condition is
``softmax(W_i) = F_i / sum_j F_ij``: the empirical conditional distribution.  Hence::

    F_ij = sum_m X_mi Y_mj  (+ eps)
    W_ij = (1 / K) * log(F_ij / sum_j' F_ij'),      K = mean_m ||X_m||_1

exact (up to ``eps``) for one-hot inputs and a warm start otherwise: with ``||x||_1 = K`` a
multi-hot input sums ``K`` rows of ``W``, and ``1/K`` keeps that sum from being ``K`` times too
confident.  A per-row constant added to ``W`` does not change the softmax, so no bias is needed.

``Y`` may also hold soft (non-negative, not one-hot) targets; the same formula then matches the
target mass instead of counts (useful for sub-layers whose targets are distributions).
"""
import numpy as np
import scipy.sparse as sp

from ..backend.cpu.warmstart_counts import target_counts

__all__ = ["feature_target_counts", "explicit_softmax_weights", "weights_from_counts"]

_NAME = "explicit_softmax_weights"


def _check_inputs(X, where):
    """X as float64 (dense ndarray or csr); finite and non-negative; at least one row."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        values = X.data
    else:
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{where}: X must be a real (numeric) array, got dtype {X.dtype}")
        X = X.astype(np.float64, copy=False)
        values = X
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (M, N_in), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{where}: X is empty (shape {X.shape}); need at least one example "
                         "and one feature")
    if values.size:
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{where}: X has non-finite entries")
        low = values.min()
        if low < 0:
            raise ValueError(f"{where}: X must be non-negative (the explicit solution assumes "
                             f"x >= 0), got minimum value {low}")
    return X


def _check_integer_targets(Y, n_examples, n_out, where):
    """1-D integer targets (M,) -> (int64 targets, n_out)."""
    if Y.dtype.kind not in "iu":
        if Y.dtype.kind == "f" and Y.size and np.all(Y == np.round(Y)):
            Y = Y.astype(np.int64)
        else:
            raise TypeError(f"{where}: 1-D targets must be integers, got dtype {Y.dtype}")
    if Y.shape[0] != n_examples:
        raise ValueError(f"{where}: X has {n_examples} rows but targets have shape {Y.shape}")
    if n_out is None:
        n_out = int(Y.max()) + 1 if Y.size else 0
    n_out = int(n_out)
    if n_out < 1:
        raise ValueError(f"{where}: n_out must be >= 1, got {n_out}")
    if Y.size and (Y.min() < 0 or Y.max() >= n_out):
        raise ValueError(f"{where}: integer targets must lie in [0, {n_out}), got range "
                         f"[{Y.min()}, {Y.max()}]")
    return Y.astype(np.int64, copy=False), n_out


def _check_targets(Y, n_examples, n_out, where):
    """Y as a sparse (M, N_out) matrix of target mass."""
    if sp.issparse(Y):
        Y = sp.csr_matrix(Y, dtype=np.float64)
    else:
        Y = np.asarray(Y)
    if Y.ndim == 1:
        Y, n_out = _check_integer_targets(Y, n_examples, n_out, where)
        rows = np.arange(n_examples)
        return sp.csr_matrix((np.ones(n_examples), (rows, Y)), shape=(n_examples, n_out))
    if Y.ndim != 2:
        raise ValueError(f"{where}: Y must be one-hot (M, N_out) or integer targets (M,), got "
                         f"shape {Y.shape}")
    if Y.shape[0] != n_examples:
        raise ValueError(f"{where}: X has {n_examples} rows but Y has shape {Y.shape}")
    if n_out is not None and Y.shape[1] != int(n_out):
        raise ValueError(f"{where}: n_out={n_out} but Y has {Y.shape[1]} columns")
    if Y.shape[1] == 0:
        raise ValueError(f"{where}: Y has no columns (shape {Y.shape})")
    if not sp.issparse(Y):
        if Y.dtype.kind not in "biuf":
            raise TypeError(f"{where}: Y must be numeric, got dtype {Y.dtype}")
        Y = sp.csr_matrix(Y.astype(np.float64))
    values = Y.data
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
        raise ValueError(f"{where}: Y must be finite and non-negative, got minimum value "
                         f"{values.min()}")
    return Y


def feature_target_counts(X, Y, n_out=None):
    """``F = X^T Y`` as a dense float64 ``(N_in, N_out)`` array (no smoothing).

    ``X``: non-negative ``(M, N_in)``, dense or ``scipy.sparse``.  ``Y``: one-hot / soft targets
    ``(M, N_out)`` (dense or sparse) or integer targets ``(M,)`` with ``n_out`` (default
    ``max(Y) + 1``).  One pass over the data.
    """
    X = _check_inputs(X, "feature_target_counts")
    return _feature_target_counts(X, Y, n_out, "feature_target_counts")


def _feature_target_counts(X, Y, n_out, where):
    """Dense ``X^T Y`` for checked ``X``: dense X with integer targets by the count kernel
    (``explicit_steps.target_counts`` defines it), any other pair by the sparse product."""
    if not sp.issparse(X) and not sp.issparse(Y):
        Y = np.asarray(Y)
        if Y.ndim == 1:
            targets, n_out = _check_integer_targets(Y, X.shape[0], n_out, where)
            return target_counts(X, targets, n_out)
    return _counts(X, _check_targets(Y, X.shape[0], n_out, where))


def _counts(X, Y):
    """Dense ``X^T Y`` for checked ``X`` (dense or csr) and ``Y`` (csr)."""
    # (Y^T X)^T keeps the sparse matrix on the left: sparse @ dense -> dense, Y never densified.
    F = Y.T @ X
    if sp.issparse(F):
        F = F.toarray()
    return np.ascontiguousarray(np.asarray(F, dtype=np.float64).T)


def explicit_softmax_weights(X, Y, n_out=None, eps=1e-3, input_norm=None):
    """Closed-form warm start ``W`` ``(N_in, N_out)`` of ``softmax(X @ W)`` under cross-entropy.

    ``W = log(F / rowsum(F)) / K`` with ``F = X^T Y + eps`` and ``K`` the mean L1 norm of the
    rows of ``X`` (override with ``input_norm``).  ``eps`` (> 0) keeps unseen feature-target
    pairs finite and gives features never active a uniform row.  Returns float64.

    Raises ``ValueError`` for empty or negative ``X``, mismatched shapes, out-of-range targets,
    ``eps <= 0`` and an all-zero ``X`` (then ``K = 0``).
    """
    eps = float(eps)
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"{_NAME}: eps must be finite and > 0 (it keeps log(F) finite), "
                         f"got {eps}")
    X = _check_inputs(X, _NAME)
    F = _feature_target_counts(X, Y, n_out, _NAME)
    if input_norm is None:
        K = float(abs(X).sum()) / X.shape[0]     # X >= 0, so this is mean_m ||x_m||_1
    else:
        K = float(input_norm)
    return _log_conditional(F, K, eps, _NAME)


def weights_from_counts(F, input_norm, eps=1e-3):
    """The explicit solution ``W = log(F' / rowsum(F')) / K``, ``F' = F + eps``, from counts
    ``F`` ``(N_in, N_out)`` accumulated elsewhere (non-negative) and the mean input norm ``K``
    (``input_norm``); :func:`explicit_softmax_weights` computes both from X and Y. float64."""
    where = "weights_from_counts"
    eps = float(eps)
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"{where}: eps must be finite and > 0 (it keeps log(F) finite), "
                         f"got {eps}")
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2 or F.size == 0:
        raise ValueError(f"{where}: F must be a non-empty (N_in, N_out) array, got shape "
                         f"{F.shape}")
    if not np.all(np.isfinite(F)) or F.min() < 0:
        raise ValueError(f"{where}: F must be finite and non-negative (counts)")
    return _log_conditional(F, float(input_norm), eps, where)


def _log_conditional(F, K, eps, where):
    if not np.isfinite(K) or K <= 0:
        raise ValueError(f"{where}: the input norm K must be > 0, got {K} (is X all zeros?)")
    F = F + eps
    log_conditional = np.log(F) - np.log(F.sum(axis=1, keepdims=True))
    return log_conditional / K
