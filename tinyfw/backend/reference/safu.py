"""NumPy reference for the SAFU kernels: block-context attention with cached comparisons, and
the running mean that gives the document context.

SAFU (the self-attentive feed-forward unit, ``docs/WARM_START_AND_SAFU.md``) compares its
inputs to themselves through ONE matrix ``W_A``, with no key or value projections::

    s_tj = x_t^T W_A x_j            for the ``block`` positions j in (t - block, t]
    a_t  = softmax_j(s_t)
    h_t  = sum_j a_tj x_j

Cached comparisons: the caller computes ``q_t = x_t^T W_A`` ONCE per position (one matmul over
the whole sequence, ``q = x @ W_A``). Every comparison is then a dot product ``q_t . x_j`` of
width D, and the window of position t + 1 reuses x_{t-block+2..t} as they are, so a sequence of
n tokens costs ``O(n D^2)`` for q plus ``O(n * block * D)`` for the scores and the mixing:
linear in n. The uncached form (``safu_block_attention_uncached``, kept here as the
documentation and the test oracle) evaluates the bilinear form ``x_t^T W_A x_j`` for every pair
separately, ``O(n * block * D^2)``; both give the same numbers.

Layout: ``x, q, h, dx, dq, dh: (B, L, D)``; attention weights ``a, da: (B, L, block)`` with
``a[b, t, k]`` the weight of position ``j = t - k`` (k = 0 is the position itself). Window slots
before the start of the sequence (``t - k < 0``) are not attended to: their weight is exactly 0
and the softmax runs over the ``min(block, t + 1)`` real positions only.

The document context is the running mean ``d_t = (S0 + sum_{j <= t} x_j) / (n0 + t + 1)``
(``S0``, ``n0``: the sum and count carried over from earlier chunks of the same sequence, zero
for a fresh one): O(D) per step.

The three contexts together (``safu_contexts_forward/backward``): ``z_t = [h_t; r_t; d_t]`` with the
radial context ``r_t = [x_t; x_{t-1}; ...; x_{t-R+1}]`` (zeros before the start), in one call
each way. The inputs may begin with ``start`` positions of history (the end of the previous
chunk, a constant): their rows are read by the windows of the block and radial contexts, but
get no context of their own.

Every function returns arrays of the inputs' dtype (float32 or float64).
"""
import numpy as np

from .core import check_float

__all__ = [
    "safu_block_attention_forward", "safu_block_attention_backward",
    "safu_block_attention_uncached",
    "safu_running_mean_forward", "safu_running_mean_backward",
    "safu_contexts_forward", "safu_contexts_backward",
    "safu_score_table", "safu_block_scores_from_table",
]


def check_block_inputs(op, x, q, block):
    """Shared validation: x, q float (B, L, D) of one shape and dtype; block an int >= 1."""
    check_float(op, x=x, q=q)
    if x.ndim != 3 or q.shape != x.shape:
        raise ValueError(f"{op}: x and q must both be (batch, length, dim) of one shape, got "
                         f"x {tuple(x.shape)} and q {tuple(q.shape)}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"{op}: block must be an int >= 1, got {block!r}")
    return int(block)


def _shifted(x, k):
    """``x`` moved k steps later in time: ``out[:, t] = x[:, t - k]``, zeros for t < k."""
    if k == 0:
        return x
    out = np.zeros_like(x)
    out[:, k:] = x[:, :-k] if k < x.shape[1] else 0
    return out


def _valid(L, block):
    """``(L, block)`` bool: window slot k of position t holds a real position (t - k >= 0)."""
    return np.arange(L)[:, None] >= np.arange(block)[None, :]


def safu_block_attention_forward(x, q, block):
    """Block-context attention with cached comparisons.

    x: (B, L, D) inputs; q: (B, L, D) = x @ W_A, computed once per position; block: window size.
    Returns ``h (B, L, D)`` and ``a (B, L, block)`` (see the module docstring).
    """
    block = check_block_inputs("safu_block_attention_forward", x, q, block)
    B, L, D = x.shape
    scores = np.empty((B, L, block), dtype=x.dtype)
    for k in range(block):                      # one dot product q_t . x_{t-k} per slot
        scores[:, :, k] = np.einsum("bld,bld->bl", q, _shifted(x, k))
    scores = np.where(_valid(L, block)[None], scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)   # slot 0 is always valid: finite max
    e = np.exp(scores)
    a = (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)
    h = np.zeros_like(x)
    for k in range(block):
        h += a[:, :, k, None] * _shifted(x, k)
    return h, a


def safu_block_attention_backward(dh, da, x, q, a, block):
    """Gradients of ``safu_block_attention_forward``.

    dh: (B, L, D) = dL/dh; da: (B, L, block) = dL/da from other uses of ``a``, or None.
    Returns ``(dx, dq)``, both (B, L, D). With ``g_tk = dh_t . x_{t-k} + da_tk`` (the total
    gradient of the weight) and ``ds_tk = a_tk (g_tk - sum_k' a_tk' g_tk')`` (softmax backward):

        dq_t      = sum_k ds_tk x_{t-k}
        dx_{t-k} += a_tk dh_t + ds_tk q_t       (x is both a value and a compared vector)
    """
    block = check_block_inputs("safu_block_attention_backward", x, q, block)
    B, L, D = x.shape
    if dh.shape != x.shape or a.shape != (B, L, block):
        raise ValueError(f"safu_block_attention_backward: dh {tuple(dh.shape)} must match x "
                         f"{tuple(x.shape)} and a {tuple(a.shape)} must be {(B, L, block)}")
    g = np.empty_like(a)
    for k in range(block):
        g[:, :, k] = np.einsum("bld,bld->bl", dh, _shifted(x, k))
    if da is not None:
        g = g + da
    ds = a * (g - (a * g).sum(axis=-1, keepdims=True))   # a = 0 on invalid slots: ds = 0 there
    dq = np.zeros_like(x)
    dx = np.zeros_like(x)
    for k in range(block):
        dq += ds[:, :, k, None] * _shifted(x, k)
        # contributions to position j = t - k come from position t = j + k: shift back by k
        contribution = a[:, :, k, None] * dh + ds[:, :, k, None] * q
        if k == 0:
            dx += contribution
        elif k < L:
            dx[:, :-k] += contribution[:, k:]
    return dx, dq


def safu_block_attention_uncached(x, w_a, block):
    """The same attention without the cache: ``s_tj = x_t^T W_A x_j`` evaluated pair by pair.

    x: (B, L, D); w_a: (D, D). Returns ``(h, a)`` like ``safu_block_attention_forward(x, x @ w_a,
    block)``. Cost ``O(n * block * D^2)``: the oracle the cached kernels are tested against.
    """
    check_float("safu_block_attention_uncached", x=x, w_a=w_a)
    if w_a.shape != (x.shape[-1], x.shape[-1]):
        raise ValueError(f"safu_block_attention_uncached: w_a must be (D, D) = "
                         f"{(x.shape[-1],) * 2} for x {tuple(x.shape)}, got {tuple(w_a.shape)}")
    B, L, D = x.shape
    a = np.zeros((B, L, block), dtype=x.dtype)
    h = np.zeros_like(x)
    for b in range(B):
        for t in range(L):
            n = min(block, t + 1)
            s = np.array([x[b, t] @ w_a @ x[b, t - k] for k in range(n)])
            w = np.exp(s - s.max())
            w /= w.sum()
            a[b, t, :n] = w
            h[b, t] = sum(w[k] * x[b, t - k] for k in range(n))
    return h, a


def safu_running_mean_forward(x, prev_sum=None, prev_count=0):
    """Document context: ``d_t = (prev_sum + sum_{j<=t} x_j) / (prev_count + t + 1)``.

    x: (B, L, D); prev_sum: (B, D) or None (zeros); prev_count: int >= 0. Returns d (B, L, D).
    """
    check_float("safu_running_mean_forward", x=x)
    if x.ndim != 3:
        raise ValueError(f"safu_running_mean_forward: x must be (batch, length, dim), got "
                         f"{tuple(x.shape)}")
    if prev_count < 0:
        raise ValueError(f"safu_running_mean_forward: prev_count must be >= 0, got {prev_count}")
    total = np.cumsum(x, axis=1)
    if prev_sum is not None:
        if prev_sum.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"safu_running_mean_forward: prev_sum must be (B, D) = "
                             f"{(x.shape[0], x.shape[2])}, got {tuple(prev_sum.shape)}")
        total = total + prev_sum[:, None, :]
    counts = prev_count + np.arange(1, x.shape[1] + 1, dtype=x.dtype)
    return (total / counts[None, :, None]).astype(x.dtype)


def safu_running_mean_backward(dd, prev_count=0):
    """Gradient of the running mean w.r.t. x: ``dx_j = sum_{t >= j} dd_t / (prev_count + t + 1)``
    (a reversed cumulative sum). dd: (B, L, D) -> dx (B, L, D)."""
    counts = prev_count + np.arange(1, dd.shape[1] + 1, dtype=dd.dtype)
    scaled = dd / counts[None, :, None]
    return np.flip(np.cumsum(np.flip(scaled, axis=1), axis=1), axis=1).astype(dd.dtype)


def check_contexts_inputs(op, x, q, start, block, radial, use_document):
    """Shared validation of ``safu_contexts_forward/backward``; returns ``(start, block, radial,
    d_z)`` as ints."""
    check_float(op, x=x)
    if x.ndim != 3:
        raise ValueError(f"{op}: x must be (batch, history + length, dim), got {tuple(x.shape)}")
    for name, value, low in (("start", start, 0), ("block", block, 0), ("radial", radial, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{op}: {name} must be an int >= {low}, got {value!r}")
    B, S, D = x.shape
    if start > S:
        raise ValueError(f"{op}: start={start} is past the end of x {tuple(x.shape)}")
    if block:
        if q is None:
            raise ValueError(f"{op}: block={block} needs the cached comparisons q")
        check_float(op, x=x, q=q)
        if tuple(q.shape) != (B, S - start, D):
            raise ValueError(f"{op}: q must be (B, L, D) = {(B, S - start, D)} for x "
                             f"{tuple(x.shape)} and start={start}, got {tuple(q.shape)}")
    parts = (1 if block else 0) + radial + (1 if use_document else 0)
    if parts == 0:
        raise ValueError(f"{op}: block=0, radial=0 and use_document=False leave no context")
    return int(start), int(block), int(radial), parts * D


def safu_contexts_forward(x, q, start, block, radial, use_document, scale=1.0, prev_sum=None,
                          prev_count=0):
    """``z = [h; r; d]`` for the positions ``start..S-1`` of x.

    x: (B, S, D), the ``start`` rows of history then the L = S - start new inputs; q: (B, L, D)
    = ``x[:, start:] @ W_A`` (unscaled; the scores are ``scale * q_t . x_j``), None when
    block = 0; block, radial: window sizes (0: context left out); use_document: include the
    running mean (``prev_sum`` (B, D) or None, ``prev_count``: the sum and count of the inputs
    before x's new ones). Returns ``z (B, L, d_z)`` with ``d_z = (block > 0) + radial +
    use_document`` times D, and ``a (B, L, block)`` (None when block = 0).
    """
    start, block, radial, _ = check_contexts_inputs("safu_contexts_forward", x, q, start, block,
                                                    radial, use_document)
    B, S, D = x.shape
    parts, a = [], None
    if block:
        q_all = np.zeros_like(x)       # the history positions' rows are computed and dropped
        q_all[:, start:] = q * x.dtype.type(scale)
        h, a = safu_block_attention_forward(x, q_all, block)
        parts.append(h[:, start:])
        a = np.ascontiguousarray(a[:, start:])
    for k in range(radial):
        parts.append(_shifted(x, k)[:, start:])
    if use_document:
        parts.append(safu_running_mean_forward(x[:, start:], prev_sum, prev_count))
    z = np.concatenate(parts, axis=-1) if parts else np.zeros((B, S - start, 0), x.dtype)
    return z, a


def safu_contexts_backward(dz, da, x, q, a, start, block, radial, use_document, scale=1.0,
                           prev_count=0):
    """Gradients of ``safu_contexts_forward``: ``(dx (B, S, D), dq (B, L, D) or None)``.

    dz: (B, L, d_z); da: (B, L, block) or None; x, q, a as in and from the forward. ``dx``
    covers the history rows too (the caller drops them when the history is a constant).
    """
    start, block, radial, d_z = check_contexts_inputs("safu_contexts_backward", x, q, start,
                                                      block, radial, use_document)
    B, S, D = x.shape
    L = S - start
    if tuple(dz.shape) != (B, L, d_z):
        raise ValueError(f"safu_contexts_backward: dz must be (B, L, d_z) = {(B, L, d_z)}, got "
                         f"{tuple(dz.shape)}")
    dx = np.zeros_like(x)
    dq = None
    col = 0
    if block:
        if a is None or tuple(a.shape) != (B, L, block):
            raise ValueError(f"safu_contexts_backward: a must be (B, L, block) = {(B, L, block)}")
        pad = ((0, 0), (start, 0), (0, 0))
        q_all = np.pad(q * x.dtype.type(scale), pad)
        dh_all = np.pad(dz[:, :, :D].astype(x.dtype), pad)
        a_all = np.pad(a.astype(x.dtype), pad)
        da_all = None if da is None else np.pad(da.astype(x.dtype), pad)
        dx, dq_all = safu_block_attention_backward(dh_all, da_all, x, q_all, a_all, block)
        dq = (dq_all[:, start:] * x.dtype.type(scale)).astype(x.dtype)
        col = D
    for k in range(radial):
        dr = dz[:, :, col:col + D]
        if k < S:     # r_t's slot k is x_{t-k}: its gradient goes back k positions
            dx[:, max(0, start - k):S - k] += dr[:, max(0, k - start):]
        col += D
    if use_document:
        dx[:, start:] += safu_running_mean_backward(dz[:, :, col:col + D], prev_count)
    return dx, dq


def safu_score_table(vectors, w_a):
    """Per-type score table ``T[u, v] = e_u^T W_A e_v`` for token vectors ``vectors`` (V, D).

    With a finite vocabulary and no positional term every comparison is a look-up
    ``s_tj = T[id_t, id_j]`` (spec step 5). Returns (V, V).
    """
    check_float("safu_score_table", vectors=vectors, w_a=w_a)
    return (vectors @ w_a) @ vectors.T


def safu_block_scores_from_table(ids, table, block):
    """Block scores by look-up: ``s[b, t, k] = table[ids[b, t], ids[b, t - k]]``, ``-inf`` on
    slots before the start. ids: (B, L) int; table: (V, V). Returns (B, L, block)."""
    B, L = ids.shape
    s = np.full((B, L, block), -np.inf, dtype=table.dtype)
    for k in range(min(block, L)):
        s[:, k:, k] = table[ids[:, k:], ids[:, :L - k]]
    return s
