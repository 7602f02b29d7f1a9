"""Numba kernels for the fast-weight recurrences (sum rule and delta rule), token by token.

Same names, signatures and results as ``backend/reference/fast_weights.py``, which documents the
math. Each kernel handles a range of the (batch, head) pairs, which ``launch.run`` (policy
``ALWAYS_POOL``) runs in Numba's pool; every pair keeps its own Dk x Dv state and writes only its
own output rows, so threads never touch the same memory. Arithmetic is in the inputs' dtype,
like the reference.

The chunked forms stay the NumPy ones (re-exported from the reference): they are matrix
multiplications, which BLAS already does well.
"""
import numpy as np
from numba import njit

from .runtime import launch

__all__ = [
    "linear_attention_forward", "linear_attention_backward",
    "delta_rule_forward", "delta_rule_backward",
]


def _prepare(arrays, dtype):
    """C-contiguous arrays of one dtype: the kernels index them in their innermost loops."""
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _units_and_work(q, v):
    """(units, work) of a call: the B * H (batch, head) pairs, B H L Dk Dv multiply-adds."""
    return q.shape[0] * q.shape[1], q.size * v.shape[-1]


def _state_or_zeros(s, q, v, dtype, copy=False):
    """A contiguous (B, H, Dk, Dv) state (zeros for None); ``copy`` when a kernel will write it."""
    B, H, _, Dk = q.shape
    Dv = v.shape[-1]
    if s is None:
        return np.zeros((B, H, Dk, Dv), dtype=dtype)
    if copy:
        return np.array(s, dtype=dtype, order="C", copy=True)
    return np.ascontiguousarray(s, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Sum rule
# --------------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _linear_attention_forward_heads(q, k, v, s, o, start, stop):
    # s holds the initial state on entry and the final state on exit.
    B, H, L, Dk = q.shape
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        S = s[b, h]
        for t in range(L):
            out = o[b, h, t]
            out[:] = 0
            for i in range(Dk):
                ki = k[b, h, t, i]
                qi = q[b, h, t, i]
                for j in range(Dv):
                    S[i, j] += ki * v[b, h, t, j]
                    out[j] += qi * S[i, j]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _linear_attention_backward_heads(do, q, k, v, s0, ds, dq, dk, dv, start, stop):
    # ds holds dL/d(final state) on entry and dL/d(initial state) on exit.
    B, H, L, Dk = q.shape
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        # forward sweep: dq_t = S_t do_t
        S = s0[b, h].copy()
        for t in range(L):
            for i in range(Dk):
                ki = k[b, h, t, i]
                acc = 0.0
                for j in range(Dv):
                    S[i, j] += ki * v[b, h, t, j]
                    acc += S[i, j] * do[b, h, t, j]
                dq[b, h, t, i] = acc
        # reverse sweep: dS = dL/dS_t
        dS = ds[b, h]
        for t in range(L - 1, -1, -1):
            dvt = dv[b, h, t]
            dvt[:] = 0
            for i in range(Dk):
                qi = q[b, h, t, i]
                ki = k[b, h, t, i]
                acc = 0.0
                for j in range(Dv):
                    dS[i, j] += qi * do[b, h, t, j]
                    acc += dS[i, j] * v[b, h, t, j]
                    dvt[j] += dS[i, j] * ki
                dk[b, h, t, i] = acc


def linear_attention_forward(q, k, v, s0=None):
    """Numba version of ``reference.linear_attention_forward``: ``(o, s_final)``."""
    dtype = q.dtype
    q, k, v = _prepare((q, k, v), dtype)
    s = _state_or_zeros(s0, q, v, dtype, copy=True)
    o = np.empty(v.shape, dtype=dtype)
    launch.run(launch.ALWAYS_POOL, _linear_attention_forward_heads,
               (q, k, v, s, o), *_units_and_work(q, v))
    return o, s


def linear_attention_backward(do, ds_final, q, k, v, s0=None):
    """Numba version of ``reference.linear_attention_backward``: ``(dq, dk, dv, ds0)``."""
    dtype = q.dtype
    do, q, k, v = _prepare((do, q, k, v), dtype)
    s0 = _state_or_zeros(s0, q, v, dtype)
    ds = _state_or_zeros(ds_final, q, v, dtype, copy=True)
    dq = np.empty(q.shape, dtype=dtype)
    dk = np.empty(k.shape, dtype=dtype)
    dv = np.empty(v.shape, dtype=dtype)
    launch.run(launch.ALWAYS_POOL, _linear_attention_backward_heads,
               (do, q, k, v, s0, ds, dq, dk, dv), *_units_and_work(q, v))
    return dq, dk, dv, ds


# --------------------------------------------------------------------------------------------
# Delta rule
# --------------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _delta_rule_forward_heads(q, k, v, beta, s, o, r, start, stop):
    # s holds the initial state on entry and the final state on exit.
    B, H, L, Dk = q.shape
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        S = s[b, h]
        u = np.empty(Dv, dtype=q.dtype)
        for t in range(L):
            rt = r[b, h, t]
            # vbar = S^T k_t, accumulated in rt, then r_t = v_t - vbar
            rt[:] = 0
            for i in range(Dk):
                ki = k[b, h, t, i]
                for j in range(Dv):
                    rt[j] += S[i, j] * ki
            bt = beta[b, h, t]
            for j in range(Dv):
                rt[j] = v[b, h, t, j] - rt[j]
                u[j] = bt * rt[j]
            out = o[b, h, t]
            out[:] = 0
            for i in range(Dk):
                ki = k[b, h, t, i]
                qi = q[b, h, t, i]
                for j in range(Dv):
                    S[i, j] += ki * u[j]
                    out[j] += qi * S[i, j]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _delta_rule_backward_heads(do, q, k, v, beta, s0, r, ds, dq, dk, dv, dbeta, start, stop):
    # ds holds dL/d(final state) on entry and dL/d(initial state) on exit.
    B, H, L, Dk = q.shape
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        dS = ds[b, h]
        for t in range(L - 1, -1, -1):
            bt = beta[b, h, t]
            dvt = dv[b, h, t]
            # dS += q_t do_t^T, then du = dS^T k_t (kept in dvt until scaled by beta)
            dvt[:] = 0
            for i in range(Dk):
                qi = q[b, h, t, i]
                ki = k[b, h, t, i]
                for j in range(Dv):
                    dS[i, j] += qi * do[b, h, t, j]
                    dvt[j] += dS[i, j] * ki
            acc_beta = 0.0
            for j in range(Dv):
                acc_beta += dvt[j] * r[b, h, t, j]
                dvt[j] *= bt
            dbeta[b, h, t] = acc_beta
            # dk_t = dS u_t with u_t = beta_t r_t; then dS -= k_t dv_t^T
            for i in range(Dk):
                ki = k[b, h, t, i]
                acc = 0.0
                for j in range(Dv):
                    acc += dS[i, j] * (bt * r[b, h, t, j])
                    dS[i, j] -= ki * dvt[j]
                dk[b, h, t, i] = acc
        # forward sweep, rebuilding S_t from S_0 with the saved residuals
        S = s0[b, h].copy()
        for t in range(L):
            bt = beta[b, h, t]
            for i in range(Dk):
                ki = k[b, h, t, i]
                acc_k = 0.0
                acc_q = 0.0
                for j in range(Dv):
                    acc_k += S[i, j] * dv[b, h, t, j]
                    S[i, j] += ki * (bt * r[b, h, t, j])
                    acc_q += S[i, j] * do[b, h, t, j]
                dk[b, h, t, i] -= acc_k
                dq[b, h, t, i] = acc_q


def delta_rule_forward(q, k, v, beta, s0=None):
    """Numba version of ``reference.delta_rule_forward``: ``(o, s_final, r)``."""
    dtype = q.dtype
    q, k, v, beta = _prepare((q, k, v, beta), dtype)
    s = _state_or_zeros(s0, q, v, dtype, copy=True)
    o = np.empty(v.shape, dtype=dtype)
    r = np.empty(v.shape, dtype=dtype)
    launch.run(launch.ALWAYS_POOL, _delta_rule_forward_heads,
               (q, k, v, beta, s, o, r), *_units_and_work(q, v))
    return o, s, r


def delta_rule_backward(do, ds_final, q, k, v, beta, s0, r):
    """Numba version of ``reference.delta_rule_backward``: ``(dq, dk, dv, dbeta, ds0)``."""
    dtype = q.dtype
    do, q, k, v, beta, r = _prepare((do, q, k, v, beta, r), dtype)
    s0 = _state_or_zeros(s0, q, v, dtype)
    ds = _state_or_zeros(ds_final, q, v, dtype, copy=True)
    dq = np.empty(q.shape, dtype=dtype)
    dk = np.empty(k.shape, dtype=dtype)
    dv = np.empty(v.shape, dtype=dtype)
    dbeta = np.empty(beta.shape, dtype=dtype)
    launch.run(launch.ALWAYS_POOL, _delta_rule_backward_heads,
               (do, q, k, v, beta, s0, r, ds, dq, dk, dv, dbeta), *_units_and_work(q, v))
    return dq, dk, dv, dbeta, ds
