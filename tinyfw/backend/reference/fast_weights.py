"""NumPy reference for fast-weight (linear) attention: the sum rule and the delta rule.

The formulas are in ``docs/FAST_WEIGHTS.md`` (Schlag, Irie & Schmidhuber 2021; the chunked
delta rule follows Yang et al. 2024). Per batch element and head, with keys and queries already
passed through a feature map:

    sum rule     S_t = S_{t-1} + k_t v_t^T                                 o_t = S_t^T q_t
    delta rule   r_t = v_t - S_{t-1}^T k_t,  S_t = S_{t-1} + beta_t k_t r_t^T,  o_t = S_t^T q_t

Layout: ``q, k: (B, H, L, Dk)``, ``v: (B, H, L, Dv)``, ``beta: (B, H, L)``, state
``s: (B, H, Dk, Dv)``. The query at step t reads the state *after* the write at step t. An
initial state of ``None`` means zeros. Every function returns arrays of the inputs' dtype.

Two forms of each rule, which must agree to rounding:

- recurrent (``*_forward`` / ``*_backward``): one token at a time; the Numba kernels in
  ``backend/cpu/fast_weights.py`` have the same names and signatures.
- chunked (``*_chunked_forward`` / ``*_chunked_backward``): chunks of C tokens, so that most of
  the work is matrix multiplication (BLAS).

No function stores the per-step states S_t (that would be L * Dk * Dv numbers per head): the
backward passes rebuild the states they need with a forward sweep from the initial state, and
accumulate dL/dS_t in a reverse sweep. The delta rule saves its residuals ``r`` (L x Dv per
head) in the forward pass so that the rebuild needs no triangular solves.

The normaliser of the sum rule (``o_t / (q_t . z_t + eps)`` with ``z_t = z_{t-1} + k_t``) is not
here: appending a column of ones to v makes the same kernels compute ``q_t . z_t`` as an extra
output column (see ``tinyfw/ops/fast_weights.py``).
"""
import numpy as np
import scipy.linalg

__all__ = [
    "linear_attention_forward", "linear_attention_backward",
    "linear_attention_chunked_forward", "linear_attention_chunked_backward",
    "delta_rule_forward", "delta_rule_backward",
    "delta_rule_chunked_forward", "delta_rule_chunked_backward",
]


def _initial_state(s0, q, v):
    """A fresh (B, H, Dk, Dv) copy of ``s0`` (zeros if None) in the inputs' dtype."""
    B, H, _, Dk = q.shape
    Dv = v.shape[-1]
    if s0 is None:
        return np.zeros((B, H, Dk, Dv), dtype=q.dtype)
    return np.array(s0, dtype=q.dtype, copy=True)


def _state_grad(ds_final, q, v):
    """dL/dS_L as a fresh array: the upstream gradient of the final state, or zeros."""
    return _initial_state(ds_final, q, v)


def _outer(a, b):
    """Batched outer product: a (B, H, M), b (B, H, N) -> (B, H, M, N)."""
    return a[..., :, None] * b[..., None, :]


def _transpose(x):
    return np.swapaxes(x, -1, -2)


def _chunks(L, chunk_size):
    """The slices of consecutive chunks of ``chunk_size`` tokens; the last one may be shorter."""
    if chunk_size < 1:
        raise ValueError(f"fast-weight chunked form: chunk_size must be >= 1, got {chunk_size}")
    return [slice(start, min(start + chunk_size, L)) for start in range(0, L, chunk_size)]


# --------------------------------------------------------------------------------------------
# Sum rule, recurrent
# --------------------------------------------------------------------------------------------

def linear_attention_forward(q, k, v, s0=None):
    """Causal linear attention (sum rule), one token at a time.

    q, k: (B, H, L, Dk); v: (B, H, L, Dv); s0: (B, H, Dk, Dv) or None.
    Returns ``o (B, H, L, Dv)`` with ``o_t = S_t^T q_t`` and the final state ``(B, H, Dk, Dv)``.
    """
    S = _initial_state(s0, q, v)
    L = q.shape[2]
    o = np.empty(v.shape, dtype=q.dtype)
    for t in range(L):
        S += _outer(k[:, :, t], v[:, :, t])
        o[:, :, t] = np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
    return o, S


def linear_attention_backward(do, ds_final, q, k, v, s0=None):
    """Gradients of ``linear_attention_forward``.

    do: (B, H, L, Dv), dL/do; ds_final: (B, H, Dk, Dv) or None, dL/d(final state).
    Returns ``(dq, dk, dv, ds0)``.

    Forward sweep (rebuilding S_t): dq_t = S_t do_t.
    Reverse sweep, dS = dL/dS_t:    dS += q_t do_t^T;  dk_t = dS v_t;  dv_t = dS^T k_t.
    What is left in dS after step 1 is dL/dS_0.
    """
    L = q.shape[2]
    S = _initial_state(s0, q, v)
    dq = np.empty(q.shape, dtype=q.dtype)
    for t in range(L):
        S += _outer(k[:, :, t], v[:, :, t])
        dq[:, :, t] = np.einsum("bhkv,bhv->bhk", S, do[:, :, t])

    dS = _state_grad(ds_final, q, v)
    dk = np.empty(k.shape, dtype=q.dtype)
    dv = np.empty(v.shape, dtype=q.dtype)
    for t in reversed(range(L)):
        dS += _outer(q[:, :, t], do[:, :, t])
        dk[:, :, t] = np.einsum("bhkv,bhv->bhk", dS, v[:, :, t])
        dv[:, :, t] = np.einsum("bhkv,bhk->bhv", dS, k[:, :, t])
    return dq, dk, dv, dS


# --------------------------------------------------------------------------------------------
# Sum rule, chunked
# --------------------------------------------------------------------------------------------

def linear_attention_chunked_forward(q, k, v, s0=None, chunk_size=64):
    """``linear_attention_forward`` by chunks of C tokens.

    Per chunk, with S the state before it:
        O_c = Q_c S + tril(Q_c K_c^T) V_c        (tril includes the diagonal)
        S  <- S + K_c^T V_c
    """
    L = q.shape[2]
    S = _initial_state(s0, q, v)
    o = np.empty(v.shape, dtype=q.dtype)
    for c in _chunks(L, chunk_size):
        Q, K, V = q[:, :, c], k[:, :, c], v[:, :, c]
        causal = np.tril(np.ones((Q.shape[2], Q.shape[2]), dtype=bool))
        scores = np.where(causal, Q @ _transpose(K), 0)
        o[:, :, c] = Q @ S + scores @ V
        S = S + _transpose(K) @ V
    return o, S


def linear_attention_chunked_backward(do, ds_final, q, k, v, s0=None, chunk_size=64):
    """Gradients of the sum rule by chunks; same result as ``linear_attention_backward``.

    With G = tril(dO_c V_c^T) and P = tril(Q_c K_c^T):
        forward sweep (S = state before the chunk):  dQ_c = dO_c S^T + G K_c
        reverse sweep (dS = dL/d(state after the chunk)):
            dK_c = G^T Q_c + V_c dS^T,   dV_c = P^T dO_c + K_c dS,   dS <- dS + Q_c^T dO_c
    """
    L = q.shape[2]
    chunks = _chunks(L, chunk_size)
    dq = np.empty(q.shape, dtype=q.dtype)
    dk = np.empty(k.shape, dtype=q.dtype)
    dv = np.empty(v.shape, dtype=q.dtype)

    S = _initial_state(s0, q, v)
    for c in chunks:
        Q, K, V, dO = q[:, :, c], k[:, :, c], v[:, :, c], do[:, :, c]
        causal = np.tril(np.ones((Q.shape[2], Q.shape[2]), dtype=bool))
        G = np.where(causal, dO @ _transpose(V), 0)
        dq[:, :, c] = dO @ _transpose(S) + G @ K
        S = S + _transpose(K) @ V

    dS = _state_grad(ds_final, q, v)
    for c in reversed(chunks):
        Q, K, V, dO = q[:, :, c], k[:, :, c], v[:, :, c], do[:, :, c]
        causal = np.tril(np.ones((Q.shape[2], Q.shape[2]), dtype=bool))
        G = np.where(causal, dO @ _transpose(V), 0)
        P = np.where(causal, Q @ _transpose(K), 0)
        dk[:, :, c] = _transpose(G) @ Q + V @ _transpose(dS)
        dv[:, :, c] = _transpose(P) @ dO + K @ dS
        dS = dS + _transpose(Q) @ dO
    return dq, dk, dv, dS


# --------------------------------------------------------------------------------------------
# Delta rule, recurrent
# --------------------------------------------------------------------------------------------

def delta_rule_forward(q, k, v, beta, s0=None):
    """The fast-weight delta rule, one token at a time.

    q, k: (B, H, L, Dk); v: (B, H, L, Dv); beta: (B, H, L); s0: (B, H, Dk, Dv) or None.
    Returns ``o (B, H, L, Dv)``, the final state ``(B, H, Dk, Dv)`` and the residuals
    ``r (B, H, L, Dv)``, ``r_t = v_t - S_{t-1}^T k_t``, which the backward pass needs.

        vbar_t = S_{t-1}^T k_t;  r_t = v_t - vbar_t;  S_t = S_{t-1} + k_t (beta_t r_t)^T;
        o_t = S_t^T q_t
    """
    L = q.shape[2]
    S = _initial_state(s0, q, v)
    o = np.empty(v.shape, dtype=q.dtype)
    r = np.empty(v.shape, dtype=q.dtype)
    for t in range(L):
        vbar = np.einsum("bhkv,bhk->bhv", S, k[:, :, t])
        r[:, :, t] = v[:, :, t] - vbar
        S += _outer(k[:, :, t], beta[:, :, t, None] * r[:, :, t])
        o[:, :, t] = np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
    return o, S, r


def delta_rule_backward(do, ds_final, q, k, v, beta, s0, r):
    """Gradients of ``delta_rule_forward``: ``(dq, dk, dv, dbeta, ds0)``.

    do: (B, H, L, Dv); ds_final: (B, H, Dk, Dv) or None; r: the residuals from the forward pass.

    Reverse sweep, dS = dL/dS_t, u_t = beta_t r_t:
        dS += q_t do_t^T;  du = dS^T k_t;  dv_t = beta_t du;  dbeta_t = du . r_t;
        dk_t = dS u_t;  dS -= k_t dv_t^T            (now dL/dS_{t-1})
    Forward sweep, rebuilding S_t from S_0 with the saved residuals:
        dk_t -= S_{t-1} dv_t   (the path through vbar_t);   dq_t = S_t do_t
    """
    L = q.shape[2]
    dk = np.empty(k.shape, dtype=q.dtype)
    dv = np.empty(v.shape, dtype=q.dtype)
    dbeta = np.empty(beta.shape, dtype=q.dtype)
    dS = _state_grad(ds_final, q, v)
    for t in reversed(range(L)):
        kt = k[:, :, t]
        ut = beta[:, :, t, None] * r[:, :, t]
        dS += _outer(q[:, :, t], do[:, :, t])
        du = np.einsum("bhkv,bhk->bhv", dS, kt)
        dv[:, :, t] = beta[:, :, t, None] * du
        dbeta[:, :, t] = np.sum(du * r[:, :, t], axis=-1)
        dk[:, :, t] = np.einsum("bhkv,bhv->bhk", dS, ut)
        dS -= _outer(kt, dv[:, :, t])

    dq = np.empty(q.shape, dtype=q.dtype)
    S = _initial_state(s0, q, v)
    for t in range(L):
        dk[:, :, t] -= np.einsum("bhkv,bhv->bhk", S, dv[:, :, t])
        S += _outer(k[:, :, t], beta[:, :, t, None] * r[:, :, t])
        dq[:, :, t] = np.einsum("bhkv,bhv->bhk", S, do[:, :, t])
    return dq, dk, dv, dbeta, dS


# --------------------------------------------------------------------------------------------
# Delta rule, chunked (WY / UT transform)
# --------------------------------------------------------------------------------------------

def _delta_chunk_matrices(K, beta):
    """For one chunk: ``strict = tril(K K^T, -1)`` and ``A = I + diag(beta) strict``, (B, H, C, C).

    A is unit lower triangular; ``A U = diag(beta) (V - K S)`` is the token recurrence
    ``u_t = beta_t (v_t - S^T k_t - sum_{s<t} (k_t . k_s) u_s)`` written as one linear system.
    """
    n = K.shape[2]
    strictly_lower = np.tril(np.ones((n, n), dtype=bool), -1)
    strict = np.where(strictly_lower, K @ _transpose(K), 0)
    A = np.eye(n, dtype=K.dtype) + beta[..., :, None] * strict
    return strict, A


def _solve_unit_lower(A, rhs, transpose=False):
    """Solve ``A X = rhs`` (or ``A^T X = rhs``) for unit lower-triangular A, batched over (B, H).

    This is forward (or back) substitution; SciPy runs it in LAPACK for every (B, H) matrix.
    The solve runs in float64 whatever the inputs' dtype: the bundled OpenBLAS's single-precision
    triangular solve is far slower than its double-precision one (bench/NOTES.md), and the
    extra precision costs nothing here.
    """
    X = scipy.linalg.solve_triangular(A.astype(np.float64), rhs.astype(np.float64), lower=True,
                                      unit_diagonal=True, trans="T" if transpose else "N",
                                      check_finite=False)
    return X.astype(rhs.dtype, copy=False)


def delta_rule_chunked_forward(q, k, v, beta, s0=None, chunk_size=64):
    """``delta_rule_forward`` by chunks of C tokens (the WY / UT transform).

    Per chunk, with S the state before it:
        A  = I + tril(diag(beta) K K^T, -1)
        U' = A^{-1} diag(beta) (V - K S)     (= T V - T K S with T = A^{-1} diag(beta):
                                              the "U - W S" of the WY form; row t is beta_t r_t)
        O  = Q S + tril(Q K^T) U'
        S <- S + K^T U'
    The residuals are ``r = V - K S - tril(K K^T, -1) U'``, the same as the token recurrence's.
    """
    L = q.shape[2]
    S = _initial_state(s0, q, v)
    o = np.empty(v.shape, dtype=q.dtype)
    r = np.empty(v.shape, dtype=q.dtype)
    for c in _chunks(L, chunk_size):
        Q, K, V, b = q[:, :, c], k[:, :, c], v[:, :, c], beta[:, :, c]
        n = Q.shape[2]
        strict, A = _delta_chunk_matrices(K, b)
        X = V - K @ S
        U = _solve_unit_lower(A, b[..., None] * X)
        r[:, :, c] = X - strict @ U
        causal = np.tril(np.ones((n, n), dtype=bool))
        o[:, :, c] = Q @ S + np.where(causal, Q @ _transpose(K), 0) @ U
        S = S + _transpose(K) @ U
    return o, S, r


def delta_rule_chunked_backward(do, ds_final, q, k, v, beta, s0, r, chunk_size=64):
    """Gradients of the delta rule by chunks; same result as ``delta_rule_backward``.

    Per chunk, U = diag(beta) r (the saved residuals give U' without a solve) and
    X = V - K S = r + strict U. The forward pass was U = A^{-1} diag(beta) X, O = Q S + P U with
    P = tril(Q K^T), S_next = S + K^T U. Reverse sweep, dS = dL/dS_next:
        dU = P^T dO + K dS;   Y = A^{-T} dU  (back substitution);   dA = -Y U^T (strictly lower)
        dV = dX = diag(beta) Y;   dbeta = rowsum(Y * X) + rowsum(dA * K K^T)
        dK = G^T Q + U dS^T + (D + D^T) K   with G = tril(dO U^T), D = diag(beta) dA
        dQ = G K;   dS <- dS + Q^T dO - K^T dX
    Forward sweep, rebuilding S from S_0:  dQ += dO S^T;  dK -= dX S^T;  S <- S + K^T U.
    """
    L = q.shape[2]
    chunks = _chunks(L, chunk_size)
    dq = np.empty(q.shape, dtype=q.dtype)
    dk = np.empty(k.shape, dtype=q.dtype)
    dv = np.empty(v.shape, dtype=q.dtype)
    dbeta = np.empty(beta.shape, dtype=q.dtype)

    dS = _state_grad(ds_final, q, v)
    for c in reversed(chunks):
        Q, K, b, R, dO = q[:, :, c], k[:, :, c], beta[:, :, c], r[:, :, c], do[:, :, c]
        n = Q.shape[2]
        causal = np.tril(np.ones((n, n), dtype=bool))
        strict, A = _delta_chunk_matrices(K, b)
        U = b[..., None] * R
        X = R + strict @ U
        P = np.where(causal, Q @ _transpose(K), 0)
        G = np.where(causal, dO @ _transpose(U), 0)

        dU = _transpose(P) @ dO + K @ dS
        Y = _solve_unit_lower(A, dU, transpose=True)
        dA = np.where(np.tril(causal, -1), -(Y @ _transpose(U)), 0)
        dX = b[..., None] * Y
        D = b[..., :, None] * dA
        dv[:, :, c] = dX
        dbeta[:, :, c] = np.sum(Y * X, axis=-1) + np.sum(dA * strict, axis=-1)
        dk[:, :, c] = _transpose(G) @ Q + U @ _transpose(dS) + (D + _transpose(D)) @ K
        dq[:, :, c] = G @ K
        dS = dS + _transpose(Q) @ dO - _transpose(K) @ dX

    S = _initial_state(s0, q, v)
    for c in chunks:
        K, b, R = k[:, :, c], beta[:, :, c], r[:, :, c]
        dq[:, :, c] += do[:, :, c] @ _transpose(S)
        dk[:, :, c] -= dv[:, :, c] @ _transpose(S)
        S = S + _transpose(K) @ (b[..., None] * R)
    return dq, dk, dv, dbeta, dS
