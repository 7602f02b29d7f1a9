"""Numba kernels for softmax attention (same names and meaning as
``backend/reference/attention.py``, which documents the math and the causal ``offset``).

Two paths, chosen by length (``DENSE_MAX_LENGTH``, 128):

- short contexts (W1: T = 64): the dense path, one head at a time as whole tiles: scores
  ``scale k q^T`` with BLAS (``runtime/blas.gemm``), the causal mask as a select, the softmax with
  vectorised loops (float32 exp from ``fastmath.exp_float32``, float64 keeps libm), then
  ``p v`` (backward: ``p^T do``, ``do v^T``, ``ds^T q``, ``ds k``) with BLAS. BLAS reads the
  caller's strided q/k/v/do views and writes the outputs (which may be views too: ``out=``)
  where they lie, so nothing is copied (see the dense section). The queries are taken in
  blocks of ``QUERY_BLOCK`` (32): a causal block only multiplies the keys up to its last query,
  so at T = 64 a quarter of the products (the fully masked upper-right block) is skipped. The
  smaller GEMMs run less efficiently, so this saves only about 5%; smaller blocks gain nothing
  more.
- long contexts: the row loops below, memory ``O(L)`` per thread.

The row path uses plain loops, not ``np.dot`` per head (why: at the end of this docstring).

- The units of work are the ``B * H`` (batch, head) pairs; each pair owns its slices of every
  output, so threads never write the same memory (``runtime/launch.py``, policy ``ATTENTION``,
  decides between this thread, helper threads and Numba's pool).
- One query row at a time, never the ``(Lq, Lk)`` score matrix: the scores of row ``i`` live in an
  ``Lk`` buffer, so memory stays ``O(L)`` per thread at any context length, and causal rows stop
  at their last visible key (half the work of a dense masked product).
- Keys (and in the backward, values) are copied transposed, ``(D, Lk)``, once per head, so the
  innermost score loop runs along contiguous memory over ``j`` and vectorises without needing to
  reorder a floating-point sum.
- The backward recomputes ``p = exp(s - lse)`` row by row from the forward's log-sum-exp.
- Arithmetic stays in the input dtype (float32 SIMD is twice as wide); the softmax denominator is
  summed in float64. ``fastmath`` allows reassociating sums (the dot products over ``d`` become
  SIMD reductions) but keeps IEEE inf/NaN semantics (masked keys are skipped, never set to
  ``-inf``, so no inf arithmetic is needed in the first place).

Single-threaded, BLAS per head would win the small backward (its GEMMs are register-tiled), but
called inside ``prange`` at the larger shapes it starts threads of its own, which compete with
Numba's for the cores, and becomes slow and erratic, while the loops keep their single-thread
speed: they are the robust choice. The timings behind both paths are in ``bench/NOTES.md``.
"""
import numpy as np
from numba import njit

from .fastmath import exp_of_dtype as _exp
from .runtime import launch
from .runtime.blas import gemm, gemm_scratch, rows_are_contiguous
from ..reference.attention import packed_heads

__all__ = ["attention_forward", "attention_backward", "packed_attention_forward",
           "packed_attention_backward"]

# Reassociation/contraction for SIMD sums; not 'nnan'/'ninf', so inf and NaN still behave.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# The dense path only contracts (FMA): reassociation could undo exp_float32's Cody-Waite split
# of u - n ln 2, and its loops need no reordered sums to vectorise (they run along query rows).
_FASTMATH_DENSE = {"contract"}


# Up to this many keys (and queries) per head the dense path runs: the (Lk, Lq) score tile of a
# head, 4 * 128 * 128 bytes = 64 KiB in float32, fits in L2, and BLAS on whole tiles beats the
# row loops even though it also computes the masked upper triangle. Longer contexts take the row
# path, whose memory stays O(L) per thread. Tests set it to 0 or a huge value to run both paths.
DENSE_MAX_LENGTH = 128

# The dense path works on blocks of this many queries: a causal block sees only the keys up to
# its last query, so the masked upper triangle is skipped block by block (see the dense kernels).
QUERY_BLOCK = 32


# Each kernel handles the (batch, head) pairs bh in [start, stop), flattened as bh = b * H + h;
# ``launch.run`` (policy ``ATTENTION``) runs them on this thread, with helpers or in the pool.

@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _attention_forward_heads(q, k, v, scale, causal, offset, o, lse, start, stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        kT = np.ascontiguousarray(k[b, h].T)       # (D, Lk)
        vb = v[b, h]                                # (Lk, Dv)
        s = np.empty(Lk, dtype=q.dtype)             # scores, then probabilities, of one row
        acc = np.empty(Dv, dtype=q.dtype)
        for i in range(Lq):
            n = min(Lk, i + offset + 1) if causal else Lk   # keys 0..n-1 are visible
            s[:n] = 0
            for d in range(D):
                qd = q[b, h, i, d] * scale
                for j in range(n):
                    s[j] += qd * kT[d, j]
            m = s[0]
            for j in range(1, n):
                m = max(m, s[j])
            for j in range(n):
                s[j] = np.exp(s[j] - m)             # <= 1: no overflow
            denom = 0.0
            for j in range(n):
                denom += s[j]
            acc[:] = 0
            for j in range(n):
                pj = s[j]
                for d in range(Dv):
                    acc[d] += pj * vb[j, d]
            inv = 1.0 / denom
            for d in range(Dv):
                o[b, h, i, d] = acc[d] * inv
            lse[b, h, i] = m + np.log(denom)


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _attention_backward_heads(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv, start,
                              stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        kT = np.ascontiguousarray(k[b, h].T)       # (D, Lk)
        vT = np.ascontiguousarray(v[b, h].T)       # (Dv, Lk)
        dkb = np.zeros((Lk, D), dtype=q.dtype)      # accumulated over all query rows
        dvb = np.zeros((Lk, Dv), dtype=q.dtype)
        kb = k[b, h]                                # (Lk, D)
        p = np.empty(Lk, dtype=q.dtype)
        ds = np.empty(Lk, dtype=q.dtype)
        dqi = np.empty(D, dtype=q.dtype)
        for i in range(Lq):
            n = min(Lk, i + offset + 1) if causal else Lk
            delta = do[b, h, i, 0] * o[b, h, i, 0]  # sum_j p_ij dp_ij, computed as do_i . o_i
            for d in range(1, Dv):
                delta += do[b, h, i, d] * o[b, h, i, d]
            p[:n] = 0
            ds[:n] = 0
            for d in range(D):
                qd = q[b, h, i, d] * scale
                for j in range(n):
                    p[j] += qd * kT[d, j]
            for d in range(Dv):
                dod = do[b, h, i, d]
                for j in range(n):
                    ds[j] += dod * vT[d, j]         # dp_ij = do_i . v_j
            li = lse[b, h, i]
            for j in range(n):
                p[j] = np.exp(p[j] - li)
            for j in range(n):
                ds[j] = p[j] * (ds[j] - delta) * scale
            qi = q[b, h, i]
            doi = do[b, h, i]
            dqi[:] = 0
            for j in range(n):                      # one pass over the keys for all three
                pj = p[j]
                dsj = ds[j]
                for d in range(Dv):
                    dvb[j, d] += pj * doi[d]
                for d in range(D):
                    dkb[j, d] += dsj * qi[d]
                    dqi[d] += dsj * kb[j, d]
            dq[b, h, i] = dqi
        dk[b, h] = dkb
        dv[b, h] = dvb


# The dense path, for short contexts (Lq, Lk <= DENSE_MAX_LENGTH): per head, the whole score
# tile with BLAS, the softmax with vectorised loops, the output (and in the backward the four
# gradient products) again with BLAS. The products read the heads where they lie and write the
# outputs in place (``blas.gemm`` passes each view's row stride to BLAS): no per-head copies of
# q, k, v, do, and the scale, the accumulation of dk and dv over query blocks and dq's scale
# are BLAS's alpha and beta. The tiles are held transposed, (Lk, Lq): the softmax statistics
# are per query, so with queries along the contiguous axis the max, exp and sums run as
# elementwise vector operations over query columns (no horizontal reductions, no short causal
# rows), and the mask is a select.

@njit(inline="always")
def _probabilities_t(st, stat, first_query, causal, offset, zero, pt):
    """pt[j, i] = exp(st[j, i] - stat[i]) where key j is visible to query first_query + i,
    else 0."""
    n, nq = st.shape
    for j in range(n):
        first = j - offset - first_query if causal else 0   # column i sees key j iff i >= first
        for i in range(nq):
            e = _exp(st[j, i] - stat[i])
            pt[j, i] = e if i >= first else zero


@njit(inline="always")
def _tile(buffer, rows, cols):
    """A C-contiguous (rows, cols) tile at the start of a flat scratch buffer."""
    return buffer[:rows * cols].reshape((rows, cols))


@njit(inline="always")
def _block_scores(kh, qh, scale, i0, qb, causal, offset, st_buf, scalars):
    """The query block [i0, i1) of qb queries (fewer at the end): (i1, n, st) with n the keys
    visible to its last query (keys 0..n-1; all of them when not causal) and st the (n, nq)
    transposed score tile scale * k[:n] . q[i0:i1], a view of st_buf."""
    Lq, Lk = qh.shape[0], kh.shape[0]
    i1 = min(Lq, i0 + qb)
    n = min(Lk, i1 + offset) if causal else Lk
    st = _tile(st_buf, n, i1 - i0)
    gemm(scale, kh[:n], False, qh[i0:i1], True, scale - scale, st, scalars)
    return i1, n, st


@njit(nogil=True, cache=True, fastmath=_FASTMATH_DENSE, error_model="numpy")
def _dense_attention_forward_heads(q, k, v, scale, causal, offset, o, lse, query_block, start,
                                   stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    dt = o.dtype
    zero = np.zeros(1, dtype=dt)[0]
    one = zero + scale / scale
    qb = max(1, min(Lq, query_block))
    scalars = gemm_scratch(o)
    st_buf = np.empty(Lk * qb, dtype=dt)        # scores of one query block, transposed
    pt_buf = np.empty(Lk * qb, dtype=dt)        # unnormalised probabilities exp(s - max)
    m = np.empty(qb, dtype=dt)
    denom = np.empty(qb, dtype=np.float64)      # softmax denominators, summed in float64
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        oh = o[b, h]
        for i0 in range(0, Lq, qb):
            i1, n, st = _block_scores(k[b, h], q[b, h], scale, i0, qb, causal, offset, st_buf,
                                      scalars)
            nq = i1 - i0
            pt = _tile(pt_buf, n, nq)
            m[:nq] = -np.inf
            for j in range(n):
                first = j - offset - i0 if causal else 0
                for i in range(nq):
                    x = st[j, i]
                    # a NaN score never wins here, but exp(NaN - m) carries it into its row
                    m[i] = x if i >= first and x > m[i] else m[i]
            _probabilities_t(st, m, i0, causal, offset, zero, pt)
            denom[:nq] = 0
            for j in range(n):
                for i in range(nq):
                    denom[i] += pt[j, i]
            gemm(one, pt, True, v[b, h][:n], False, zero, oh[i0:i1], scalars)
            for i in range(nq):
                inv = 1.0 / denom[i]
                for d in range(oh.shape[1]):
                    oh[i0 + i, d] = oh[i0 + i, d] * inv
                lse[b, h, i0 + i] = m[i] + np.log(denom[i])


@njit(nogil=True, cache=True, fastmath=_FASTMATH_DENSE, error_model="numpy")
def _dense_attention_backward_heads(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv,
                                    query_block, start, stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    dt = dq.dtype
    zero = np.zeros(1, dtype=dt)[0]
    one = zero + scale / scale
    qb = max(1, min(Lq, query_block))
    scalars = gemm_scratch(dq)
    st_buf = np.empty(Lk * qb, dtype=dt)
    pt_buf = np.empty(Lk * qb, dtype=dt)        # p^T of one query block, recomputed from lse
    dst_buf = np.empty(Lk * qb, dtype=dt)       # dp^T, then ds^T
    li = np.empty(Lq, dtype=dt)
    delta = np.empty(Lq, dtype=dt)
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        qh, kh, vh, doh = q[b, h], k[b, h], v[b, h], do[b, h]
        dqh, dkh, dvh = dq[b, h], dk[b, h], dv[b, h]
        for i in range(Lq):
            li[i] = lse[b, h, i]
            acc = doh[i, 0] * o[b, h, i, 0]      # sum_j p_ij dp_ij, computed as do_i . o_i
            for d in range(1, Dv):
                acc += doh[i, d] * o[b, h, i, d]
            delta[i] = acc
        # dk, dv add up over the query blocks (beta = 1); keys no query sees keep 0
        dkh[:, :] = 0
        dvh[:, :] = 0
        for i0 in range(0, Lq, qb):
            i1, n, st = _block_scores(kh, qh, scale, i0, qb, causal, offset, st_buf, scalars)
            nq = i1 - i0
            pt = _tile(pt_buf, n, nq)
            dst = _tile(dst_buf, n, nq)
            _probabilities_t(st, li[i0:i1], i0, causal, offset, zero, pt)
            gemm(one, vh[:n], False, doh[i0:i1], True, zero, dst, scalars)   # dp^T = v do^T
            for j in range(n):
                for i in range(nq):
                    dst[j, i] = pt[j, i] * (dst[j, i] - delta[i0 + i])
            gemm(one, pt, False, doh[i0:i1], False, one, dvh[:n], scalars)      # dv += p^T do
            gemm(scale, dst, False, qh[i0:i1], False, one, dkh[:n], scalars)   # dk += s ds^T q
            gemm(scale, dst, True, kh[:n], False, zero, dqh[i0:i1], scalars)   # dq = s ds k


def _dense(q, k):
    return 1 <= q.shape[2] <= DENSE_MAX_LENGTH and k.shape[2] <= DENSE_MAX_LENGTH


def _work(q, k, v):
    """Multiply-adds of one call, B * H * Lq * Lk * (D + Dv): what the thresholds compare."""
    B, H, Lq, D = q.shape
    return B * H * Lq * k.shape[2] * (D + v.shape[3])


def _check(name, q, k, v, offset):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{name}: q, k, v must be (B, H, L, D), got shapes {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if (q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[3] != k.shape[3]
            or k.shape[2] < 1 or q.shape[3] < 1 or v.shape[3] < 1):
        raise ValueError(f"{name}: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape} "
                         "(need q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), "
                         "Lk, D, Dv >= 1)")
    if offset < 0:
        raise ValueError(f"{name}: causal offset must be >= 0, got {offset}")


def _as_dtype(a, dt):
    """a in dtype dt; a strided view whose rows BLAS can read (``rows_are_contiguous``) passes as
    it is: the dense kernels hand each head's rows to BLAS where they lie."""
    a = np.asarray(a)
    return a if a.dtype == dt and rows_are_contiguous(a) else np.ascontiguousarray(a, dtype=dt)


def _launch(dense, work, args, n_heads, dense_heads, row_heads):
    """Run the dense or the row kernel on all heads (``launch.ATTENTION`` decides where)."""
    if dense:
        launch.run(launch.ATTENTION, dense_heads, args + (QUERY_BLOCK,), n_heads, work)
    else:
        launch.run(launch.ATTENTION, row_heads, args, n_heads, work)


def _outputs(dense, outs, shapes, dt):
    """The arrays the kernels write: the caller's ``outs`` (views are fine) where the dense path
    can write them in place, else new C-contiguous arrays (copied into ``outs`` afterwards)."""
    if outs is None or not (dense and all(a.dtype == dt and rows_are_contiguous(a)
                                          and a.flags.writeable for a in outs)):
        return tuple(np.empty(shape, dtype=dt) for shape in shapes)
    return outs


def _check_outs(name, outs, shapes):
    if outs is not None and tuple(tuple(a.shape) for a in outs) != tuple(shapes):
        raise ValueError(f"{name}: out must have the shapes {list(shapes)}, got "
                         f"{[tuple(a.shape) for a in outs]}")


def _deliver(outs, results):
    """The results, written into the caller's ``outs`` where the kernels did not write there."""
    if outs is None:
        return results
    for out, result in zip(outs, results):
        if out is not result:
            out[...] = result
    return outs


def attention_forward(q, k, v, scale, causal, offset=0, out=None):
    """Softmax attention -> (o (B, H, Lq, Dv), lse (B, H, Lq)); see the reference. With ``out``
    (an array or view of o's shape), o is written there."""
    _check("attention_forward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    dense = _dense(q, k)
    # the dense kernels read strided views themselves; the row kernels want contiguous heads
    prepare = _as_dtype if dense else (lambda a, dt: np.ascontiguousarray(a, dtype=dt))
    q, k, v = (prepare(a, dt) for a in (q, k, v))
    shape = q.shape[:3] + (v.shape[3],)
    outs = None if out is None else (out,)
    _check_outs("attention_forward", outs, [shape])
    o, = _outputs(dense, outs, [shape], dt)
    lse = np.empty(q.shape[:3], dtype=dt)
    args = (q, k, v, dt.type(scale), bool(causal), int(offset), o, lse)
    _launch(dense, _work(q, k, v), args, q.shape[0] * q.shape[1],
            _dense_attention_forward_heads, _attention_forward_heads)
    return _deliver(outs, (o,))[0], lse


def attention_backward(do, q, k, v, o, lse, scale, causal, offset=0, out=None):
    """Gradients of ``attention_forward`` -> (dq, dk, dv); see the reference. With ``out`` (three
    arrays or views shaped like q, k, v), the gradients are written there."""
    _check("attention_backward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    dense = _dense(q, k)
    prepare = _as_dtype if dense else (lambda a, dt: np.ascontiguousarray(a, dtype=dt))
    q, k, v, do, o, lse = (prepare(a, dt) for a in (q, k, v, do, o, lse))
    shapes = [q.shape, k.shape, v.shape]
    _check_outs("attention_backward", out, shapes)
    dq, dk, dv = _outputs(dense, out, shapes, dt)
    args = (do, q, k, v, o, lse, dt.type(scale), bool(causal), int(offset), dq, dk, dv)
    _launch(dense, _work(q, k, v), args, q.shape[0] * q.shape[1],
            _dense_attention_backward_heads, _attention_backward_heads)
    return tuple(_deliver(out, (dq, dk, dv)))


def packed_attention_forward(qkv, n_heads, scale):
    """Causal self-attention of the heads packed in qkv -> (y (B, L, H Dh), lse); see the
    reference. The kernels read the heads in place and write o straight into y's layout."""
    q, k, v = packed_heads(np.asarray(qkv), n_heads, "packed_attention_forward")
    B, H, L, Dh = q.shape
    y = np.empty((B, L, H, Dh), dtype=q.dtype)
    _, lse = attention_forward(q, k, v, scale, True, 0, out=y.transpose(0, 2, 1, 3))
    return y.reshape(B, L, H * Dh), lse


def packed_attention_backward(dy, qkv, y, lse, n_heads, scale):
    """Gradient of ``packed_attention_forward`` w.r.t. qkv, (B, L, 3 H Dh); see the reference.
    dq, dk, dv are written side by side into it, as the heads were packed."""
    q, k, v = packed_heads(np.asarray(qkv), n_heads, "packed_attention_backward")
    B, H, L, Dh = q.shape
    o, do = (np.reshape(a, (B, L, H, Dh)).transpose(0, 2, 1, 3) for a in (y, dy))
    dqkv = np.empty((B, L, 3, H, Dh), dtype=q.dtype)
    attention_backward(do, q, k, v, o, lse, scale, True, 0,
                       out=tuple(dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3)))
    return dqkv.reshape(B, L, 3 * H * Dh)
