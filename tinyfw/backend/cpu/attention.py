"""Numba kernels for softmax attention (same names and meaning as
``backend/reference/attention.py``), computed tile by tile as in FlashAttention (Dao et al.,
2022; the backward's loop order as in FlashAttention-2). ``backend/reference/tiled_attention.py``
writes the same algorithm out in NumPy; read it first: this file adds only the loops that make it
fast.

- The units of work are the ``B * H`` (batch, head) pairs; each pair owns its slices of every
  output, so threads never write the same memory (``runtime/launch.py``, policy ``ATTENTION``,
  decides between this thread, helper threads and Numba's pool).
- Per head, the queries go in blocks of ``QUERY_BLOCK`` and the keys in blocks of ``KEY_BLOCK``.
  The scores of one query block against one key block are a BLAS product into a
  ``(KEY_BLOCK, QUERY_BLOCK)`` tile; the forward's softmax runs online over the key blocks, so
  the ``(Lq, Lk)`` score matrix is never stored: the scratch of a thread is a few tiles and one
  head's worth of ``(L, D)`` rows (its transposed queries; in the backward also do and dq), at
  any context length. The backward recomputes each tile's probabilities from the forward's
  log-sum-exp.
- Causal: tiles wholly above the diagonal are never computed; only the tiles it crosses are
  masked.
- The tiles are held transposed, (keys, queries): the softmax statistics are per query, so with
  queries along the contiguous axis the maxima, exps and sums run as elementwise vector
  operations over query columns (no horizontal reductions), and the mask is a select.
- The products go to BLAS (``runtime/blas.gemm``) on the caller's strided views, with the scale
  and the accumulations as BLAS's alpha and beta. The per-head copies are the transposed
  queries (and do) of the score products (``_transpose_into``) and, for heads packed side by
  side, the rows read on every pass: keys and values in the forward, queries and do in the
  backward (``_rows_together``).
  BLAS runs on one thread meanwhile (``blas.one_blas_thread``): the kernel splits the heads over
  the cores itself, and BLAS threads started inside every split would fight it for them.
- Arithmetic stays in the input dtype (float32 SIMD is twice as wide; float32 exp from
  ``fastmath``); the softmax denominators are summed per tile in the input dtype and across tiles
  in float64.
"""
import numpy as np
from numba import njit

from .fastmath import exp_of_dtype as _exp
from .runtime import launch
from .runtime.blas import gemm, gemm_scratch, one_blas_thread, rows_are_contiguous
from ..reference.attention import packed_heads

__all__ = ["attention_forward", "attention_backward", "packed_attention_forward",
           "packed_attention_backward"]

# Contraction (FMA) only: reassociation could undo exp_float32's Cody-Waite split of u - n ln 2,
# and the loops need no reordered sums to vectorise (they run along query columns).
_FASTMATH = {"contract"}

# Tile sizes: a (128, 64) float32 tile is 32 KiB, and the operands of its products (a block of
# 64 queries or 128 keys by D = 64) are as large again, so a tile's work stays in L2. Up to
# SHORT_QUERIES queries the blocks are half as tall: in a causal 64-query context, blocks of 32
# skip the masked quarter of the products, which there outweighs the smaller products' lower
# efficiency. Tests set the sizes to a few rows to run every edge of the tiling.
QUERY_BLOCK = 64
KEY_BLOCK = 128
SHORT_QUERIES = 128


@njit(inline="always")
def _tile(buffer, rows, cols):
    """A C-contiguous (rows, cols) tile at the start of a flat scratch buffer."""
    return buffer[:rows * cols].reshape((rows, cols))


@njit(inline="always")
def _visible_keys(i1, offset, causal, Lk):
    """Keys 0..n-1 are visible to query i1 - 1 (all of them when not causal)."""
    return min(Lk, i1 + offset) if causal else Lk


@njit(inline="always")
def _whole(causal, j1, i0, offset):
    """Whether every key before j1 is visible to query i0 (then the tile needs no mask)."""
    return not causal or j1 - 1 <= i0 + offset


@njit(inline="always")
def _tile_max(st, m_new, j0, i0, offset, whole):
    """m_new[i] = max(m_new[i], max over the visible keys j of st[j, i]). A NaN score never wins
    here, but exp(NaN - m) later carries it into its row."""
    nk, nq = st.shape
    for j in range(nk):
        first = 0 if whole else j0 + j - offset - i0    # column i sees key j0 + j iff i >= first
        for i in range(nq):
            x = st[j, i]
            m_new[i] = x if i >= first and x > m_new[i] else m_new[i]


@njit(inline="always")
def _tile_exp(st, m_new, j0, i0, offset, whole, zero, pt, tile_sum):
    """pt[j, i] = exp(st[j, i] - m_new[i]) where key j0 + j is visible to query i0 + i, else 0;
    tile_sum[i] = sum over j of pt[j, i]."""
    nk, nq = st.shape
    tile_sum[:nq] = 0
    for j in range(nk):
        first = 0 if whole else j0 + j - offset - i0
        for i in range(nq):
            e = _exp(st[j, i] - m_new[i])
            p = e if i >= first else zero
            pt[j, i] = p
            tile_sum[i] += p


@njit(inline="always")
def _tile_softmax_grad(st, dst, lse, delta, j0, i0, offset, whole, zero, pt):
    """The backward's tile: pt = exp(st - lse) (masked to 0), then
    dst = pt * (dst - delta) in place (dst holds dp^T on entry, ds^T on return)."""
    nk, nq = st.shape
    for j in range(nk):
        first = 0 if whole else j0 + j - offset - i0
        for i in range(nq):
            e = _exp(st[j, i] - lse[i0 + i])
            p = e if i >= first else zero
            pt[j, i] = p
            dst[j, i] = p * (dst[j, i] - delta[i0 + i])


@njit(inline="always")
def _transpose_into(x, xT):
    """xT[:, :n] = x.T for x (n, d): the score products read the queries (and do) transposed, as
    BLAS's plain (untransposed) operand, which its kernels multiply markedly faster here than
    the same rows passed with the transpose flag."""
    n, d = x.shape
    for i in range(n):
        for c in range(d):
            xT[c, i] = x[i, c]


@njit(inline="always")
def _rows_together(x, scratch, reads):
    """x (n, d), or its copy in scratch when its rows lie apart in memory and the kernel reads
    them ``reads`` times: the rows of one head in a packed (B, L, 3, H, D) projection are 3 H D
    elements apart, and from the third pass on, reading them from further caches costs more
    than one contiguous copy."""
    if reads <= 2 or x.shape[0] < 2 or x.strides[0] == x.shape[1] * x.itemsize:
        return x
    scratch[:, :] = x
    return scratch[:, :]


@njit(cache=True)
def _rescale_factors(m, m_new, rescale, nq):
    """rescale[i] = exp(m[i] - m_new[i]): what a sum made under the old running max is
    multiplied by to stand under the new one. (A called function, not inlined: inlined into the
    kernel's branch, the float32 exp's select trips Numba's IR checks with a warning.)"""
    for i in range(nq):
        rescale[i] = _exp(m[i] - m_new[i])


# Each kernel handles the (batch, head) pairs bh in [start, stop), flattened as bh = b * H + h;
# ``launch.run`` (policy ``ATTENTION``) runs them on this thread, with helpers or in the pool.

@njit(nogil=True, cache=True, fastmath=_FASTMATH, error_model="numpy")
def _tiled_forward_heads(q, k, v, scale, causal, offset, o, lse, query_block, key_block, start,
                         stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    dt = o.dtype
    zero = np.zeros(1, dtype=dt)[0]
    one = zero + scale / scale
    bq = max(1, min(Lq, query_block))
    bk = max(1, min(Lk, key_block))
    scalars = gemm_scratch(o)
    st_buf = np.empty(bk * bq, dtype=dt)        # scores of one tile, transposed (keys, queries)
    pt_buf = np.empty(bk * bq, dtype=dt)        # exp(s - running max), transposed
    acc_buf = np.empty(bq * Dv, dtype=dt)       # sum of p v of one query block, unnormalised
    qT = np.empty((D, Lq), dtype=dt)            # one head's queries, transposed
    k_rows = np.empty((Lk, D), dtype=dt)        # one head's keys and values, when strided
    v_rows = np.empty((Lk, Dv), dtype=dt)
    m = np.empty(bq, dtype=dt)                  # running max of each query's scores
    m_new = np.empty(bq, dtype=dt)
    tile_sum = np.empty(bq, dtype=dt)
    rescale = np.empty(bq, dtype=dt)            # exp(old max - new max)
    denom = np.empty(bq, dtype=np.float64)      # running softmax denominators
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        qh, oh = q[b, h], o[b, h]
        kh = _rows_together(k[b, h], k_rows, -(-Lq // bq))     # read by every query block
        vh = _rows_together(v[b, h], v_rows, -(-Lq // bq))
        _transpose_into(qh, qT)
        for i0 in range(0, Lq, bq):
            i1 = min(Lq, i0 + bq)
            nq = i1 - i0
            acc = _tile(acc_buf, nq, Dv)
            m[:nq] = -np.inf
            for j0 in range(0, _visible_keys(i1, offset, causal, Lk), bk):
                j1 = min(_visible_keys(i1, offset, causal, Lk), j0 + bk)
                nk = j1 - j0
                st = _tile(st_buf, nk, nq)
                pt = _tile(pt_buf, nk, nq)
                gemm(scale, kh[j0:j1], False, qT[:, i0:i1], False, zero, st, scalars)
                whole = _whole(causal, j1, i0, offset)
                m_new[:nq] = m[:nq]
                _tile_max(st, m_new, j0, i0, offset, whole)
                _tile_exp(st, m_new, j0, i0, offset, whole, zero, pt, tile_sum)
                if j0 == 0:                     # every query sees key 0: m_new is its max
                    for i in range(nq):
                        denom[i] = tile_sum[i]
                    gemm(one, pt, True, vh[j0:j1], False, zero, acc, scalars)
                else:                           # rescale what was summed under the old max
                    _rescale_factors(m, m_new, rescale, nq)
                    for i in range(nq):
                        denom[i] = denom[i] * rescale[i] + tile_sum[i]
                        if rescale[i] != one:   # 1: this tile did not raise the max
                            for d in range(Dv):
                                acc[i, d] *= rescale[i]
                    gemm(one, pt, True, vh[j0:j1], False, one, acc, scalars)
                m[:nq] = m_new[:nq]
            for i in range(nq):
                inv = 1.0 / denom[i]
                for d in range(Dv):
                    oh[i0 + i, d] = acc[i, d] * inv
                lse[b, h, i0 + i] = m[i] + np.log(denom[i])


@njit(nogil=True, cache=True, fastmath=_FASTMATH, error_model="numpy")
def _tiled_backward_heads(do, q, k, v, o, lse, scale, causal, offset, dq, dk, dv, query_block,
                          key_block, start, stop):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    Dv = v.shape[3]
    dt = dq.dtype
    zero = np.zeros(1, dtype=dt)[0]
    one = zero + scale / scale
    bq = max(1, min(Lq, query_block))
    bk = max(1, min(Lk, key_block))
    scalars = gemm_scratch(dq)
    st_buf = np.empty(bk * bq, dtype=dt)
    pt_buf = np.empty(bk * bq, dtype=dt)        # p^T of one tile, recomputed from lse
    dst_buf = np.empty(bk * bq, dtype=dt)       # dp^T, then ds^T
    dk_buf = np.empty(bk * D, dtype=dt)         # dk, dv of one key block, summed over queries
    dv_buf = np.empty(bk * Dv, dtype=dt)
    dq_acc = np.empty((Lq, D), dtype=dt)        # dq of one head, summed over key blocks
    qT = np.empty((D, Lq), dtype=dt)            # one head's queries and do, transposed
    doT = np.empty((Dv, Lq), dtype=dt)
    q_rows = np.empty((Lq, D), dtype=dt)        # one head's queries and do, when strided
    do_rows = np.empty((Lq, Dv), dtype=dt)
    lse_h = np.empty(Lq, dtype=dt)
    delta = np.empty(Lq, dtype=dt)
    for bh in range(start, stop):
        b = bh // H
        h = bh % H
        kh, vh = k[b, h], v[b, h]                # read once per key block: left in place
        qh = _rows_together(q[b, h], q_rows, -(-Lk // bk))     # read by every key block
        doh = _rows_together(do[b, h], do_rows, -(-Lk // bk))
        _transpose_into(qh, qT)
        _transpose_into(doh, doT)
        for i in range(Lq):
            lse_h[i] = lse[b, h, i]
            acc = doh[i, 0] * o[b, h, i, 0]      # sum_j p_ij dp_ij, computed as do_i . o_i
            for d in range(1, Dv):
                acc += doh[i, d] * o[b, h, i, d]
            delta[i] = acc
        dq_acc[:, :] = 0
        for j0 in range(0, Lk, bk):
            j1 = min(Lk, j0 + bk)
            dk_j = _tile(dk_buf, j1 - j0, D)
            dv_j = _tile(dv_buf, j1 - j0, Dv)
            dk_j[:, :] = 0                      # keys no query sees keep 0
            dv_j[:, :] = 0
            first_query = max(0, j0 - offset) if causal else 0   # the first that sees key j0
            for i0 in range((first_query // bq) * bq, Lq, bq):
                i1 = min(Lq, i0 + bq)
                nq = i1 - i0
                nk = min(j1, _visible_keys(i1, offset, causal, Lk)) - j0
                kj, vj = kh[j0:j0 + nk], vh[j0:j0 + nk]
                st = _tile(st_buf, nk, nq)
                pt = _tile(pt_buf, nk, nq)
                dst = _tile(dst_buf, nk, nq)
                gemm(scale, kj, False, qT[:, i0:i1], False, zero, st, scalars)    # s k q^T
                gemm(one, vj, False, doT[:, i0:i1], False, zero, dst, scalars)    # v do^T
                _tile_softmax_grad(st, dst, lse_h, delta, j0, i0, offset,
                                   _whole(causal, j0 + nk, i0, offset), zero, pt)
                gemm(one, pt, False, doh[i0:i1], False, one, dv_j[:nk], scalars)    # p^T do
                gemm(scale, dst, False, qh[i0:i1], False, one, dk_j[:nk], scalars)  # s ds^T q
                gemm(scale, dst, True, kj, False, one, dq_acc[i0:i1], scalars)     # s ds k
            dk[b, h, j0:j1] = dk_j
            dv[b, h, j0:j1] = dv_j
        dq[b, h] = dq_acc


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
    it is: the kernels hand each head's rows to BLAS where they lie."""
    a = np.asarray(a)
    return a if a.dtype == dt and rows_are_contiguous(a) else np.ascontiguousarray(a, dtype=dt)


def _launch(kernel, args, q, k, v):
    """Run ``kernel`` on all (batch, head) pairs (``launch.ATTENTION`` decides where), BLAS on
    one thread meanwhile."""
    query_block = QUERY_BLOCK if q.shape[2] > SHORT_QUERIES else max(1, QUERY_BLOCK // 2)
    with one_blas_thread():
        launch.run(launch.ATTENTION, kernel, args + (query_block, KEY_BLOCK),
                   q.shape[0] * q.shape[1], _work(q, k, v))


def _outputs(outs, shapes, dt):
    """The arrays the kernels write: the caller's ``outs`` (views are fine) where BLAS can write
    them in place, else new C-contiguous arrays (copied into ``outs`` afterwards)."""
    if outs is None or not all(a.dtype == dt and rows_are_contiguous(a) and a.flags.writeable
                               for a in outs):
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
    q, k, v = (_as_dtype(a, dt) for a in (q, k, v))
    shape = q.shape[:3] + (v.shape[3],)
    outs = None if out is None else (out,)
    _check_outs("attention_forward", outs, [shape])
    o, = _outputs(outs, [shape], dt)
    lse = np.empty(q.shape[:3], dtype=dt)
    _launch(_tiled_forward_heads, (q, k, v, dt.type(scale), bool(causal), int(offset), o, lse),
            q, k, v)
    return _deliver(outs, (o,))[0], lse


def attention_backward(do, q, k, v, o, lse, scale, causal, offset=0, out=None):
    """Gradients of ``attention_forward`` -> (dq, dk, dv); see the reference. With ``out`` (three
    arrays or views shaped like q, k, v), the gradients are written there."""
    _check("attention_backward", q, k, v, offset)
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v, do, o, lse = (_as_dtype(a, dt) for a in (q, k, v, do, o, lse))
    shapes = [q.shape, k.shape, v.shape]
    _check_outs("attention_backward", out, shapes)
    dq, dk, dv = _outputs(out, shapes, dt)
    _launch(_tiled_backward_heads, (do, q, k, v, o, lse, dt.type(scale), bool(causal),
                                    int(offset), dq, dk, dv), q, k, v)
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
