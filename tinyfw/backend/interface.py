"""The primitives every backend provides, each with its NumPy meaning.

A backend is a module (``tinyfw.backend.cpu``, ``tinyfw.backend.cuda``) whose attributes are the
names below. The ops in ``tinyfw/ops`` call only these names, through ``backend_for(device)``, so
a new device is added by writing one module, never by touching an op.

Arrays are the backend's own type (``numpy.ndarray`` on the CPU, a numba.cuda device array on the
GPU). Every primitive takes the dtype from its inputs: float32 for training, float64 for checks,
int64 for token ids, bool for masks.

Keep this list short: every primitive costs a CUDA kernel and a parity test.

Creation and transfer
---------------------
- ``from_numpy(a, copy=False)``          np.ndarray -> backend array (may share memory with a on
                                          the CPU unless ``copy``; a copy on other devices)
- ``to_numpy(x)``                        backend array -> np.ndarray (a host copy)
- ``zeros(shape, dtype)``, ``full(shape, value, dtype)``
- ``arange(start, stop, step, dtype)``

Elementwise (NumPy broadcasting rules for the binary ones)
---------------------------------------------------------
- unary: ``neg exp log sqrt tanh sigmoid abs sign erf``
- binary: ``add sub mul div pow maximum minimum``
- comparisons (-> bool): ``eq ne lt le gt ge``
- ``where(cond, a, b)``
- ``clip(x, lo, hi)``                    lo / hi may be None

Reductions (``axis`` an int, a tuple of ints or None)
----------------------------------------------------
- ``sum(x, axis, keepdims)``, ``max(x, axis, keepdims)``, ``min(x, axis, keepdims)``
- ``argmax(x, axis)``, ``argmin(x, axis)``                  (int64 result)

Shape and memory
----------------
- ``reshape(x, shape)``, ``transpose(x, axes)``, ``broadcast_to(x, shape)``
- ``contiguous(x)`` (C-ordered copy when needed), ``astype(x, dtype)``, ``copy(x)``
- ``concatenate(xs, axis)``
- ``getitem(x, index)``                  ``x[index]``: ints, slices, None, integer arrays
- ``index_add(shape, index, values)``    ``out = zeros(shape); np.add.at(out, index, values)``:
                                         the scatter-add that is the backward of ``getitem``

Linear algebra
--------------
- ``matmul(a, b)``                       batched and broadcast, as ``numpy.matmul``
- ``addmm(c, a, b)``                     ``c + a @ b`` for 2-D a ``(M, K)``, b ``(K, N)`` and c
                                         broadcast to ``(M, N)`` (a bias row ``(N,)``): BLAS's
                                         gemm starts from c, so no second pass over the output

Fused kernels (forward/backward pairs; the NumPy versions in ``backend/reference`` define them)
-----------------------------------------------------------------------------------------------
- ``softmax_forward(x) -> y`` and ``softmax_backward(y, dy) -> dx``           over the last axis
- ``log_softmax_forward(x) -> y`` and ``log_softmax_backward(y, dy) -> dx``   over the last axis
- ``cross_entropy_forward(logits, target, ignore_index) -> (loss, lse)``
      logits ``(N, C)``, target ``(N,)`` int64; ``loss (N,)`` (0 where ignored), ``lse (N,)``
- ``cross_entropy_backward(dloss, logits, target, lse, ignore_index) -> dlogits``   ``dloss (N,)``
- ``embedding_backward(ids, dout, num_embeddings) -> dweight``
      ids ``(N,)`` int64, dout ``(N, D)``; a scatter-add of rows
- ``gelu_forward(x, approximate) -> y`` and ``gelu_backward(x, dy, approximate) -> dx``
      approximate ``'none'`` (erf) or ``'tanh'``
- ``elu_plus_one_forward(x) -> y`` and ``elu_plus_one_backward(g, y) -> dx``
      ``y = elu(x) + 1``; the backward needs only y (``dx = g`` where ``y > 1``, else ``g y``)
- ``adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
  decoupled)``: updates ``param``, ``exp_avg``, ``exp_avg_sq`` in place with PyTorch's exact rule
  (``decoupled=True`` is AdamW)

- ``layer_norm_forward(x, w, b, eps) -> (y, mean, rstd)``,
  ``layer_norm_backward(dy, x, w, mean, rstd) -> (dx, dw, db)``                 over the last axis
- ``rms_norm_forward(x, w, eps) -> (y, rstd)``, ``rms_norm_backward(dy, x, w, rstd) -> (dx, dw)``
- ``attention_forward(q, k, v, scale, causal, offset) -> (o, lse)``,
  ``attention_backward(do, q, k, v, o, lse, scale, causal, offset) -> (dq, dk, dv)``,
  ``attention_probabilities(...)``        softmax attention, (B, H, L, D); see reference/attention.py
- ``packed_attention_forward(qkv, n_heads, scale) -> (y, lse)``,
  ``packed_attention_backward(dy, qkv, y, lse, n_heads, scale) -> dqkv``: causal self-attention
  of q, k, v packed in one (B, L, 3 H Dh) projection, output (B, L, H Dh) with the heads merged
- fast weights (reference/fast_weights.py): ``linear_attention_forward/backward``,
  ``linear_attention_chunked_forward/backward``, ``delta_rule_forward/backward``,
  ``delta_rule_chunked_forward/backward``: token recurrences and chunked matrix forms
- SAFU (reference/safu.py): ``safu_block_attention_forward/backward`` (cached comparisons),
  ``safu_block_attention_uncached``, ``safu_score_table``, ``safu_block_scores_from_table``,
  ``safu_running_mean_forward/backward``, ``safu_contexts_forward/backward`` (the block,
  radial and document contexts ``z = [h; r; d]`` in one call each way)

Each fused pair has its NumPy reference in ``backend/reference`` and a kernel in every backend
(on the CPU the chunked fast-weight forms are the NumPy ones: their work is BLAS matmuls).
"""

CREATION = ("from_numpy", "to_numpy", "zeros", "full", "arange")
UNARY = ("neg", "exp", "log", "sqrt", "tanh", "sigmoid", "abs", "sign", "erf")
BINARY = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
COMPARISON = ("eq", "ne", "lt", "le", "gt", "ge")
REDUCTION = ("sum", "max", "min", "argmax", "argmin")
SHAPE = ("reshape", "transpose", "broadcast_to", "contiguous", "astype", "copy",
         "concatenate", "getitem", "index_add")
OTHER = ("where", "clip", "matmul", "addmm")
#: fused kernels of the engine core (backend/reference/core.py, backend/cpu/core_kernels.py)
CORE_FUSED = (
    "softmax_forward", "softmax_backward",
    "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "embedding_backward",
    "gelu_forward", "gelu_backward",
    "elu_plus_one_forward", "elu_plus_one_backward",
    "adam_step",
)
FUSED = CORE_FUSED + (
    "layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward",
    "attention_forward", "attention_backward", "attention_probabilities",
    "packed_attention_forward", "packed_attention_backward",
    "linear_attention_forward", "linear_attention_backward",
    "linear_attention_chunked_forward", "linear_attention_chunked_backward",
    "delta_rule_forward", "delta_rule_backward",
    "delta_rule_chunked_forward", "delta_rule_chunked_backward",
    "safu_block_attention_forward", "safu_block_attention_backward",
    "safu_block_attention_uncached", "safu_score_table", "safu_block_scores_from_table",
    "safu_running_mean_forward", "safu_running_mean_backward",
    "safu_contexts_forward", "safu_contexts_backward",
)

#: every name a complete backend must define; tests check each backend against it.
PRIMITIVES = CREATION + UNARY + BINARY + COMPARISON + REDUCTION + SHAPE + OTHER + FUSED


def missing_primitives(backend_module):
    """Names from ``PRIMITIVES`` the backend does not define."""
    return [name for name in PRIMITIVES if not hasattr(backend_module, name)]
