"""The counting and softmax steps of the explicit SAFU solve, in NumPy: their definitions.

``explicit_training.py`` runs the solve with the CPU kernels of the same names and signatures
(``tinyfw/backend/cpu/warmstart_counts.py``); the tests check those kernels against these.
The counts are float64. The softmax steps take float32 or float64 inputs; their definitions
compute in float64 whatever the input (the float32 kernels agree with them to float32 rounding).

* :func:`target_counts` ``(X (M, d), targets (M,), n_out) -> F (d, n_out)``: the counts
  ``F = X^T Y`` of the explicit softmax solution (``explicit.py``) for integer targets, ``Y``
  their one-hot rows: column c of F is the sum of the rows of X whose target is c (zero for a
  class no row has).
* :func:`softmax_cross_entropy_rows` ``(S (n, V), targets (n,), gradient, sparse) -> loss
  (n,)``: with ``p = softmax`` of each row of logits, the loss ``-log max(p_t, 1e-300)``; with
  ``gradient`` the logits are overwritten with ``p - onehot(t)``, the loss's gradient with
  respect to them. ``sparse = (indptr, indices, values, W)``: the logits are ``S + A @ W``,
  A the CSR matrix (n, k) (its indptr may start at an offset into indices and values: a block
  of rows of a larger matrix), and S is overwritten with them first.
* :func:`listed_products` ``(D (n, V), W (k, V), indptr (n + 1,), cols) -> (n, k)``: ``D @ W.T``
  at the listed entries (row r: columns ``cols[indptr[r]:indptr[r + 1]]``), zero elsewhere: the
  gradient ``dL/dh = (p - y) W_h^T`` where the criterion reads it.
* :func:`offset_choices` ``(X (N, L, d), G (N, L, d), block) -> (choice (N, L), keep (N, L))``:
  the differential criterion (``explicit_training.py``, step 2). For position t, with ``g_t``
  the loss gradient at its block context, ``choice = argmin_k x_{t-k} . g_t`` over the offsets
  ``k < min(block, t + 1)`` of its window (ties to the smallest k). ``keep`` marks the positions
  that make a choice: t >= 1 (with ``block > 1``; a window of one position has nothing to
  choose), a non-zero input ``x_t`` and a non-zero chosen input (an all-zero vector, e.g. an
  unknown token, carries no information).
* :func:`choice_counts` ``(X, choice, keep) -> F (d, d)``: ``F = sum_t x_t x_{t-choice_t}^T``
  over the kept positions, the counts of the attention's explicit solution (the chosen input is
  the soft target of ``x_t``).
"""
import numpy as np
import scipy.sparse as sp

from ..backend.cpu.warmstart_counts import (MIN_PROBABILITY, check_choice_counts,
                                            check_listed_products, check_offset_inputs,
                                            check_softmax_rows, check_target_counts)

__all__ = ["target_counts", "softmax_cross_entropy_rows", "listed_products", "offset_choices",
           "choice_counts"]


def target_counts(X, targets, n_out):
    X, targets, n_out = check_target_counts(X, targets, n_out)
    FT = np.zeros((n_out, X.shape[1]))
    np.add.at(FT, targets, X)                    # row c of F^T: sum of the rows with target c
    return np.ascontiguousarray(FT.T)


def softmax_cross_entropy_rows(S, targets, gradient=False, sparse=None):
    S, targets, sparse = check_softmax_rows(S, targets, sparse)
    logits = S.astype(np.float64)
    if sparse is not None:
        indptr, indices, values, W = sparse
        used = slice(indptr[0], indptr[-1])
        A = sp.csr_matrix((values[used].astype(np.float64), indices[used], indptr - indptr[0]),
                          shape=(S.shape[0], W.shape[0]))
        logits += A @ W.astype(np.float64)
        S[...] = logits
    rows = np.arange(S.shape[0])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(np.maximum(p[rows, targets], MIN_PROBABILITY))
    if gradient:
        p[rows, targets] -= 1.0
        S[...] = p
    return loss


def listed_products(D, W, indptr, cols):
    D, W, indptr, cols = check_listed_products(D, W, indptr, cols)
    listed = np.zeros((D.shape[0], W.shape[0]), dtype=bool)
    listed[np.repeat(np.arange(D.shape[0]), np.diff(indptr)), cols] = True
    return np.where(listed, D.astype(np.float64) @ W.astype(np.float64).T, 0.0).astype(D.dtype)


def offset_choices(X, G, block):
    X, G, block = check_offset_inputs(X, G, block)
    N, L, _ = X.shape
    best = np.full((N, L), np.inf)
    choice = np.zeros((N, L), dtype=np.int64)
    for k in range(min(block, L)):
        score = np.einsum("nld,nld->nl", X[:, :L - k], G[:, k:])     # x_{t-k} . g_t, t >= k
        better = score < best[:, k:]
        best[:, k:] = np.where(better, score, best[:, k:])
        choice[:, k:] = np.where(better, k, choice[:, k:])
    n_idx, t_idx = np.meshgrid(np.arange(N), np.arange(L), indexing="ij")
    chosen = X[n_idx, t_idx - choice]
    keep = (t_idx >= 1) & (block > 1) & (X != 0).any(axis=2) & (chosen != 0).any(axis=2)
    return choice, keep


def choice_counts(X, choice, keep):
    X, choice, keep = check_choice_counts(X, choice, keep)
    n_idx, t_idx = np.nonzero(keep)
    inputs = X[n_idx, t_idx]
    chosen = X[n_idx, t_idx - choice[n_idx, t_idx]]
    return inputs.T @ chosen
