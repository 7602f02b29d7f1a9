"""Fast-weight (linear) attention: the sum rule and the delta rule as differentiable operations.

The math and the kernels live in ``backend/reference/fast_weights.py`` (NumPy, the meaning) and
``backend/cpu/fast_weights.py`` (Numba); ``docs/FAST_WEIGHTS.md`` is the specification. Per
batch element and head, with q and k already feature-mapped:

    linear_attention  S_t = S_{t-1} + k_t v_t^T,  z_t = z_{t-1} + k_t,
                      y_t = S_t^T q_t / (q_t . z_t + eps)        (or S_t^T q_t, normalize=False)
    delta_rule        S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T,   y_t = S_t^T q_t

Layout ``(B, H, L, D)``; the state is ``S (B, H, Dk, Dv)`` (and ``z (B, H, Dk)`` for the
normalised sum rule). Passing the final state of one call as the initial state of the next gives
exactly the result of one call on the concatenated sequence, so a sequence can be processed (or
generated) piece by piece at constant memory per step.

The normaliser needs no kernel of its own: a column of ones appended to v makes the sum-rule
kernel return ``q_t . z_t`` as an extra output column, and a column z appended to S carries
``z_t`` along; the division happens here.

``method``: 'recurrent' (token by token), 'chunked' (chunks of ``chunk_size`` tokens, matrix
multiplications) or 'auto', which picks by shape, see :func:`choose_method`.
"""
import numpy as np

from ..autograd import Function
from ..backend import backend_for
from ..tensor import Tensor

__all__ = ["linear_attention", "delta_rule", "choose_method", "AUTO_CHUNKED_MIN_STATE"]

METHODS = ("auto", "recurrent", "chunked")

#: 'auto' uses the chunked form when a head's state has at least this many numbers (Dk * Dv)
#: and the sequence is longer than one chunk: the recurrence updates the state token by token in
#: loops, the chunked form does the updates as matrix products at the price of extra work within
#: each chunk; the products win once the state is large, and on the CPU the two cost about the
#: same at 128 x 128 (bench/NOTES.md).
AUTO_CHUNKED_MIN_STATE = 128 * 128


def choose_method(method, backend, L, Dk, Dv, chunk_size):
    """The form to run: 'recurrent' or 'chunked' (``method='auto'`` decides by shape)."""
    has_chunked = hasattr(backend, "linear_attention_chunked_forward") and hasattr(
        backend, "delta_rule_chunked_forward")
    if method == "chunked":
        if not has_chunked:
            raise ValueError(f"fast-weight attention: method='chunked' is not available on "
                             f"backend {backend.__name__}")
        return "chunked"
    if method == "recurrent":
        return "recurrent"
    if has_chunked and Dk * Dv >= AUTO_CHUNKED_MIN_STATE and L > chunk_size:
        return "chunked"
    return "recurrent"


def _kernels(backend, rule, method, chunk_size):
    """(forward, backward) backend functions of ``rule`` in the chosen form."""
    if method == "chunked":
        fwd = getattr(backend, f"{rule}_chunked_forward")
        bwd = getattr(backend, f"{rule}_chunked_backward")
        return (lambda *a: fwd(*a, chunk_size)), (lambda *a: bwd(*a, chunk_size))
    return getattr(backend, f"{rule}_forward"), getattr(backend, f"{rule}_backward")


def _last(ndim, index):
    """An index selecting ``index`` (an int or a slice) on the last of ``ndim`` axes."""
    return (slice(None),) * (ndim - 1) + (index,)


# ------------------------------------------------------------------------------- Functions

class LinearAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, s0, z0, normalize, eps, method, chunk_size):
        be = ctx.backend
        forward_kernel, ctx.backward_kernel = _kernels(be, "linear_attention", method,
                                                       chunk_size)
        ctx.normalize = normalize
        if not normalize:
            o, s = forward_kernel(q, k, v, s0)
            ctx.save_for_backward(q, k, v, s0)
            return o, s
        B, H, L, Dk = q.shape
        Dv = v.shape[-1]
        v_aug = be.concatenate([v, be.full((B, H, L, 1), 1, q.dtype)], 3)
        s_aug = None
        if s0 is not None:
            s_aug = be.concatenate([s0, be.reshape(z0, (B, H, Dk, 1))], 3)
        o_aug, s_final = forward_kernel(q, k, v_aug, s_aug)
        den = be.add(be.getitem(o_aug, _last(4, slice(Dv, Dv + 1))), eps)    # (B, H, L, 1)
        y = be.div(be.getitem(o_aug, _last(4, slice(0, Dv))), den)
        ctx.save_for_backward(q, k, v_aug, s_aug, y, den)
        s = be.contiguous(be.getitem(s_final, _last(4, slice(0, Dv))))
        z = be.contiguous(be.getitem(s_final, _last(4, Dv)))
        return y, s, z

    @staticmethod
    def backward(ctx, *grads):
        be = ctx.backend
        needs = ctx.needs_input_grad
        if not ctx.normalize:
            do, ds = grads
            q, k, v, s0 = ctx.saved_tensors
            dq, dk, dv, ds0 = ctx.backward_kernel(do, ds, q, k, v, s0)
            return dq, dk, dv, (ds0 if needs[3] else None), None, None, None, None, None
        dy, ds, dz = grads
        q, k, v_aug, s_aug, y, den = ctx.saved_tensors
        B, H, L, Dk = q.shape
        Dv = y.shape[-1]
        # y = num / den:  d num = dy / den,  d den = -sum(dy * num) / den^2 = -sum(d num * y)
        dnum = be.div(dy, den)
        dden = be.neg(be.sum(be.mul(dnum, y), 3, True))
        do_aug = be.concatenate([dnum, dden], 3)
        ds_aug = be.concatenate([ds, be.reshape(dz, (B, H, Dk, 1))], 3)
        dq, dk, dv_aug, ds0_aug = ctx.backward_kernel(do_aug, ds_aug, q, k, v_aug, s_aug)
        dv = be.getitem(dv_aug, _last(4, slice(0, Dv)))
        ds0 = be.getitem(ds0_aug, _last(4, slice(0, Dv))) if needs[3] else None
        dz0 = be.getitem(ds0_aug, _last(4, Dv)) if needs[4] else None
        return dq, dk, dv, ds0, dz0, None, None, None, None


class DeltaRule(Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, s0, method, chunk_size):
        forward_kernel, ctx.backward_kernel = _kernels(ctx.backend, "delta_rule", method,
                                                       chunk_size)
        o, s, r = forward_kernel(q, k, v, beta, s0)
        ctx.save_for_backward(q, k, v, beta, s0, r)
        return o, s

    @staticmethod
    def backward(ctx, do, ds):
        q, k, v, beta, s0, r = ctx.saved_tensors
        dq, dk, dv, dbeta, ds0 = ctx.backward_kernel(do, ds, q, k, v, beta, s0, r)
        return dq, dk, dv, dbeta, (ds0 if ctx.needs_input_grad[4] else None), None, None


# ------------------------------------------------------------------------------- validation

def _check_tensor(op, name, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")


def _check_finite(op, named):
    """ValueError if any tensor holds NaN or Inf (one reduction each: 0 * x sums to NaN then)."""
    for name, t in named:
        be = backend_for(t.device)
        with np.errstate(invalid="ignore"):        # 0 * inf is the NaN we are looking for
            total = be.to_numpy(be.sum(be.mul(t.data, 0)))
        if not np.isfinite(total):
            raise ValueError(f"{op}: {name} {t.shape} contains NaN or Inf")


def _check_inputs(op, q, k, v, tensors):
    for name, t in (("q", q), ("k", k), ("v", v)) + tuple(tensors):
        _check_tensor(op, name, t)
    named = (("q", q), ("k", k), ("v", v)) + tuple(tensors)
    if len({t.dtype for _, t in named}) != 1:
        raise TypeError(f"{op}: inputs must share one dtype, got "
                        + ", ".join(f"{n} {t.dtype}" for n, t in named))
    if len({t.device for _, t in named}) != 1:
        raise ValueError(f"{op}: inputs must be on one device, got "
                         + ", ".join(f"{n} on {t.device}" for n, t in named))
    if q.ndim != 4 or k.shape != q.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{op}: need q, k (B, H, L, Dk) and v (B, H, L, Dv) with the same B, H "
                         f"and L; got q {q.shape}, k {k.shape}, v {v.shape}")
    if min(q.shape) < 1 or v.shape[-1] < 1:
        raise ValueError(f"{op}: every dimension must be >= 1, got q {q.shape}, v {v.shape}")


def _check_method(op, method, chunk_size):
    if method not in METHODS:
        raise ValueError(f"{op}: method must be one of {METHODS}, got {method!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or \
            chunk_size < 1:
        raise ValueError(f"{op}: chunk_size must be an integer >= 1, got {chunk_size!r}")


# ------------------------------------------------------------------------------- functions

def linear_attention(q, k, v, normalize=True, eps=1e-6, initial_state=None, return_state=False,
                     method="auto", chunk_size=64):
    """Causal linear attention, the fast-weight sum rule.

    q, k: (B, H, L, Dk), already feature-mapped (e.g. ``elu_plus_one``, ``dpfp``); v (B, H, L, Dv).
    ``normalize``: divide by ``q_t . z_t + eps`` with ``z_t`` the running sum of keys.
    ``initial_state``: S (B, H, Dk, Dv), or the pair ``(S, z)`` with z (B, H, Dk) when
    normalising (None: zeros). Returns y (B, H, L, Dv), and with ``return_state=True`` also the
    final state in the same form as ``initial_state``: ``(y, S)`` or ``(y, (S, z))``.
    """
    op = "linear_attention"
    _check_method(op, method, chunk_size)
    state = ()
    if initial_state is not None:
        if normalize:
            if not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 2):
                raise ValueError(f"{op}: with normalize=True the state is the pair (S, z) "
                                 f"returned with return_state=True, got "
                                 f"{type(initial_state).__name__}")
            state = (("S", initial_state[0]), ("z", initial_state[1]))
        else:
            state = (("S", initial_state),)
    _check_inputs(op, q, k, v, state)
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    for name, t in state:
        want = (B, H, Dk, Dv) if name == "S" else (B, H, Dk)
        if t.shape != want:
            raise ValueError(f"{op}: state {name} must be {want} to match q {q.shape} and "
                             f"v {v.shape}, got {t.shape}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps!r}")
    _check_finite(op, (("q", q), ("k", k), ("v", v)) + state)
    form = choose_method(method, backend_for(q.device), L, Dk, Dv + bool(normalize), chunk_size)
    s0 = state[0][1] if state else None
    z0 = state[1][1] if normalize and state else None
    out = LinearAttention.apply(q, k, v, s0, z0, bool(normalize), float(eps), form,
                                int(chunk_size))
    if not return_state:
        return out[0]
    return (out[0], (out[1], out[2])) if normalize else (out[0], out[1])


def delta_rule(q, k, v, beta, initial_state=None, return_state=False, method="auto",
               chunk_size=64):
    """The fast-weight delta rule: ``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T``.

    q, k: (B, H, L, Dk), feature-mapped and sum-normalised (so that ``beta |k|^2 <= 2`` keeps
    the state bounded); v (B, H, L, Dv); beta (B, H, L) in [0, 1], usually a sigmoid (whose
    float32 value can round to exactly 0 or 1, so the end points are allowed).
    ``initial_state``: S (B, H, Dk, Dv) or None (zeros). Returns y (B, H, L, Dv), or ``(y, S)``
    with ``return_state=True``.
    """
    op = "delta_rule"
    _check_method(op, method, chunk_size)
    state = (("initial_state", initial_state),) if initial_state is not None else ()
    _check_inputs(op, q, k, v, (("beta", beta),) + state)
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    if beta.shape != (B, H, L):
        raise ValueError(f"{op}: beta must be (B, H, L) = {(B, H, L)} to match q {q.shape}, got "
                         f"{beta.shape}")
    if state and initial_state.shape != (B, H, Dk, Dv):
        raise ValueError(f"{op}: initial_state must be (B, H, Dk, Dv) = {(B, H, Dk, Dv)} to "
                         f"match q {q.shape} and v {v.shape}, got {initial_state.shape}")
    _check_finite(op, (("q", q), ("k", k), ("v", v), ("beta", beta)) + state)
    be = backend_for(beta.device)
    lo, hi = float(be.to_numpy(be.min(beta.data))), float(be.to_numpy(be.max(beta.data)))
    if lo < 0 or hi > 1:
        raise ValueError(f"{op}: beta must lie in [0, 1] (a sigmoid), got values in "
                         f"[{lo:.6g}, {hi:.6g}]")
    form = choose_method(method, be, L, Dk, Dv, chunk_size)
    y, s = DeltaRule.apply(q, k, v, beta, initial_state, form, int(chunk_size))
    return (y, s) if return_state else y
