"""Fast-weight (linear) attention, sum rule and delta rule, forward and backward (reference:
backend/reference/fast_weights.py, which documents the math; docs/FAST_WEIGHTS.md).

The GPU parallelism comes from the state's independent columns and rows. Per (batch, head), the
state S is a (Dk, Dv) matrix and every update of both rules acts on one column j with data of
that column only::

    sum rule:    S[:, j] += k_t v_t[j]                       o_t[j] = S[:, j] . q_t
    delta rule:  r_t[j] = v_t[j] - S[:, j] . k_t;  S[:, j] += beta_t r_t[j] k_t;  o_t[j] = ...

so one thread per (batch, head, column) runs the whole recurrence with no synchronisation at all.
The backward passes need both directions:

- the reverse sweep (dS = dL/dS_t) is also column-local except for ``dk_t = dS u_t`` and
  ``dbeta_t = du . r_t``, sums over columns, which each column thread adds atomically;
- the forward sweep that rebuilds S_t for ``dq_t = S_t do_t`` (and, for the delta rule,
  ``dk_t -= S_{t-1} dv_t``) sums over columns too, so it runs with one thread per *row* i of S,
  whose updates ``S[i, :] += k_t[i] (...)`` are row-local.

The chunked forms (``*_chunked_*``) exist to turn the CPU recurrence into BLAS matrix products; on
the GPU the column-parallel recurrence above is already parallel, so they run the same kernels
(equal to the reference's chunked results up to rounding) after checking ``chunk_size``.

Layout: ``q, k: (B, H, L, Dk)``, ``v: (B, H, L, Dv)``, ``beta: (B, H, L)``, state
``s: (B, H, Dk, Dv)``; arrays are flat inside the kernels.
"""
from numba import cuda

from ..reference.core import check_float
from .creation import zeros
from .layout import copy
from .runtime import device_array, empty, flat, kernel_factory, launch_1d

__all__ = [
    "linear_attention_forward", "linear_attention_backward",
    "linear_attention_chunked_forward", "linear_attention_chunked_backward",
    "delta_rule_forward", "delta_rule_backward",
    "delta_rule_chunked_forward", "delta_rule_chunked_backward",
]


# ----------------------------------------------------------------------------------------------
# Forward: one thread per (batch * head, column j)
# ----------------------------------------------------------------------------------------------

@kernel_factory
def forward_columns_kernel(delta):
    """Sum rule (``delta`` false) or delta rule: S (in place), o, and r (delta rule only)."""
    def kernel(s, o, r, q, k, v, beta, heads, length, dk, dv):
        for idx in range(cuda.grid(1), heads * dv, cuda.gridsize(1)):
            bh = idx // dv
            j = idx % dv
            for t in range(length):
                row = bh * length + t
                write = v[row * dv + j] * 1.0  # the value written into column j
                if delta:
                    vbar = 0.0
                    for i in range(dk):
                        vbar += s[(bh * dk + i) * dv + j] * k[row * dk + i]
                    residual = v[row * dv + j] - vbar
                    r[row * dv + j] = residual
                    write = beta[row] * residual
                out = 0.0
                for i in range(dk):
                    cell = (bh * dk + i) * dv + j
                    s[cell] += k[row * dk + i] * write
                    out += s[cell] * q[row * dk + i]
                o[row * dv + j] = out
    return cuda.jit(kernel)


# ----------------------------------------------------------------------------------------------
# Backward, reverse sweep: one thread per (batch * head, column j)
# ----------------------------------------------------------------------------------------------

@kernel_factory
def reverse_columns_kernel(delta):
    """dS (in place: from dL/dS_L down to dL/dS_0), dv, and atomically dk (and dbeta).

    sum rule:   dS += q_t do_t^T;  dk_t = dS v_t;  dv_t = dS^T k_t
    delta rule: dS += q_t do_t^T;  du = dS^T k_t;  dv_t = beta_t du;  dbeta_t = du . r_t;
                dk_t = dS u_t (u_t = beta_t r_t);  dS -= k_t dv_t^T
    """
    def kernel(ds, dk_out, dv_out, dbeta_out, do, q, k, v, beta, r, heads, length, dk, dv):
        for idx in range(cuda.grid(1), heads * dv, cuda.gridsize(1)):
            bh = idx // dv
            j = idx % dv
            for t in range(length - 1, -1, -1):
                row = bh * length + t
                du = 0.0  # (dS^T k_t)[j]
                for i in range(dk):
                    cell = (bh * dk + i) * dv + j
                    ds[cell] += q[row * dk + i] * do[row * dv + j]
                    du += ds[cell] * k[row * dk + i]
                if delta:
                    u = beta[row] * r[row * dv + j]
                    dv_t = beta[row] * du
                    cuda.atomic.add(dbeta_out, row, du * r[row * dv + j])
                else:
                    u = v[row * dv + j] * 1.0
                    dv_t = du
                dv_out[row * dv + j] = dv_t
                for i in range(dk):
                    cell = (bh * dk + i) * dv + j
                    cuda.atomic.add(dk_out, row * dk + i, ds[cell] * u)
                    if delta:
                        ds[cell] -= k[row * dk + i] * dv_t
    return cuda.jit(kernel)


# ----------------------------------------------------------------------------------------------
# Backward, forward sweep: one thread per (batch * head, row i)
# ----------------------------------------------------------------------------------------------

@kernel_factory
def forward_rows_kernel(delta):
    """Rebuild S row by row from S_0 (``s``, in place): dq_t = S_t do_t, and for the delta rule
    first dk_t -= S_{t-1} dv_t (``dk`` and ``dv`` hold the reverse sweep's results)."""
    def kernel(s, dq_out, dk_out, dv_in, do, k, v, beta, r, heads, length, dk, dv):
        for idx in range(cuda.grid(1), heads * dk, cuda.gridsize(1)):
            bh = idx // dk
            i = idx % dk
            for t in range(length):
                row = bh * length + t
                if delta:
                    acc = 0.0
                    for j in range(dv):
                        acc += s[(bh * dk + i) * dv + j] * dv_in[row * dv + j]
                    dk_out[row * dk + i] -= acc
                ki = k[row * dk + i]
                acc = 0.0
                for j in range(dv):
                    cell = (bh * dk + i) * dv + j
                    if delta:
                        s[cell] += ki * (beta[row] * r[row * dv + j])
                    else:
                        s[cell] += ki * v[row * dv + j]
                    acc += s[cell] * do[row * dv + j]
                dq_out[row * dk + i] = acc
    return cuda.jit(kernel)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------

def _inputs(op, q, k, v, beta=None, **more):
    """Device arrays, dtype and shape checks; returns (arrays..., sizes)."""
    arrays = dict(q=q, k=k, v=v, **({} if beta is None else {"beta": beta}))
    arrays.update({name: a for name, a in more.items() if a is not None})
    arrays = {name: device_array(a, op) for name, a in arrays.items()}
    check_float(op, **arrays)
    shape = {name: tuple(a.shape) for name, a in arrays.items()}
    B, H, L, Dk = shape["q"] if len(shape["q"]) == 4 else (None,) * 4
    Dv = shape["v"][-1] if len(shape["v"]) == 4 else None
    expected = dict(q=(B, H, L, Dk), k=(B, H, L, Dk), v=(B, H, L, Dv), beta=(B, H, L),
                    s0=(B, H, Dk, Dv), ds_final=(B, H, Dk, Dv), do=(B, H, L, Dv), r=(B, H, L, Dv))
    if B is None or any(shape[name] != expected[name] for name in shape):
        raise ValueError(f"{op}: expected q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), "
                         f"states (B, H, Dk, Dv), got {shape}")
    return arrays, (B * H, L, Dk, Dv)


def _state(a, q, sizes):
    """A fresh (B, H, Dk, Dv) state: a copy of ``a``, or zeros when it is None."""
    heads, _, dk, dv = sizes
    shape = tuple(q.shape)[:2] + (dk, dv)
    return zeros(shape, q.dtype) if a is None else copy(a)


def _check_chunk(chunk_size):
    if chunk_size < 1:
        raise ValueError(f"fast-weight chunked form: chunk_size must be >= 1, got {chunk_size}")


def _forward(op, delta, q, k, v, beta, s0):
    arrays, sizes = _inputs(op, q, k, v, beta, s0=s0)
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    heads, length, dk, dv = sizes
    s = _state(arrays.get("s0"), q, sizes)
    o = empty(v.shape, q.dtype)
    r = empty(v.shape, q.dtype) if delta else empty((1,), q.dtype)
    b = arrays["beta"] if delta else empty((1,), q.dtype)
    launch_1d(forward_columns_kernel(delta), heads * dv, flat(s), flat(o), flat(r), flat(q),
              flat(k), flat(v), flat(b), heads, length, dk, dv)
    return (o, s, r) if delta else (o, s)


def _backward(op, delta, do, ds_final, q, k, v, beta, s0, r):
    arrays, sizes = _inputs(op, q, k, v, beta, do=do, ds_final=ds_final, s0=s0, r=r)
    q, k, v, do = arrays["q"], arrays["k"], arrays["v"], arrays["do"]
    heads, length, dk, dv = sizes
    placeholder = empty((1,), q.dtype)
    b = arrays["beta"] if delta else placeholder
    res = arrays["r"] if delta else placeholder
    ds = _state(arrays.get("ds_final"), q, sizes)
    dq = empty(q.shape, q.dtype)
    dk_ = zeros(k.shape, q.dtype)
    dv_ = empty(v.shape, q.dtype)
    dbeta = zeros(b.shape, q.dtype) if delta else placeholder
    launch_1d(reverse_columns_kernel(delta), heads * dv, flat(ds), flat(dk_), flat(dv_),
              flat(dbeta), flat(do), flat(q), flat(k), flat(v), flat(b), flat(res), heads, length,
              dk, dv)
    s = _state(arrays.get("s0"), q, sizes)
    launch_1d(forward_rows_kernel(delta), heads * dk, flat(s), flat(dq), flat(dk_), flat(dv_),
              flat(do), flat(k), flat(v), flat(b), flat(res), heads, length, dk, dv)
    return (dq, dk_, dv_, dbeta, ds) if delta else (dq, dk_, dv_, ds)


def linear_attention_forward(q, k, v, s0=None):
    """Sum rule -> (o (B, H, L, Dv), final state (B, H, Dk, Dv))."""
    return _forward("linear_attention_forward", False, q, k, v, None, s0)


def linear_attention_backward(do, ds_final, q, k, v, s0=None):
    """-> (dq, dk, dv, ds0)."""
    return _backward("linear_attention_backward", False, do, ds_final, q, k, v, None, s0, None)


def linear_attention_chunked_forward(q, k, v, s0=None, chunk_size=64):
    """The chunked form: on the GPU, the same column-parallel recurrence."""
    _check_chunk(chunk_size)
    return _forward("linear_attention_chunked_forward", False, q, k, v, None, s0)


def linear_attention_chunked_backward(do, ds_final, q, k, v, s0=None, chunk_size=64):
    _check_chunk(chunk_size)
    return _backward("linear_attention_chunked_backward", False, do, ds_final, q, k, v, None,
                     s0, None)


def delta_rule_forward(q, k, v, beta, s0=None):
    """Delta rule -> (o (B, H, L, Dv), final state (B, H, Dk, Dv), residuals r (B, H, L, Dv))."""
    return _forward("delta_rule_forward", True, q, k, v, beta, s0)


def delta_rule_backward(do, ds_final, q, k, v, beta, s0, r):
    """-> (dq, dk, dv, dbeta, ds0)."""
    return _backward("delta_rule_backward", True, do, ds_final, q, k, v, beta, s0, r)


def delta_rule_chunked_forward(q, k, v, beta, s0=None, chunk_size=64):
    _check_chunk(chunk_size)
    return _forward("delta_rule_chunked_forward", True, q, k, v, beta, s0)


def delta_rule_chunked_backward(do, ds_final, q, k, v, beta, s0, r, chunk_size=64):
    _check_chunk(chunk_size)
    return _backward("delta_rule_chunked_backward", True, do, ds_final, q, k, v, beta, s0, r)
