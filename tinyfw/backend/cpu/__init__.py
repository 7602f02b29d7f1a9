"""The CPU backend: NumPy for the primitives, Numba kernels for the fused operations.

Every name in ``tinyfw.backend.interface.PRIMITIVES`` is an attribute of this module, imported
below from the file that defines it: a Numba kernel where there is one, else the NumPy reference
(``backend/reference/``), which is also what each kernel is tested against.
"""
# Before anything below imports NumPy: OpenBLAS reads its idle spin from the environment when
# NumPy loads it, which is why tinyfw/__init__.py imports this package first (runtime/).
from . import runtime

runtime.configure()

from .primitives import (  # noqa: E402,F401  (after configure(), see above)
    from_numpy, to_numpy, zeros, full, arange,
    neg, exp, log, sqrt, tanh, sigmoid, abs, sign, erf,
    add, sub, mul, div, pow, maximum, minimum,
    eq, ne, lt, le, gt, ge, where, clip,
    max, min, argmax, argmin,
    reshape, transpose, broadcast_to, contiguous, astype, copy,
    concatenate, getitem, index_add, matmul,
)
from .bias import addmm, iadd, sum  # noqa: E402,F401  bias as gemm's start, row add, column sum
from .core_kernels import (  # noqa: E402,F401
    softmax_forward, softmax_backward, log_softmax_forward, log_softmax_backward,
    cross_entropy_forward, cross_entropy_backward, embedding_backward,
    gelu_forward, gelu_backward, elu_plus_one_forward, elu_plus_one_backward, adam_step,
)
from .norms import layer_norm_forward, layer_norm_backward  # noqa: E402,F401
from .rms_norm import rms_norm_forward, rms_norm_backward  # noqa: E402,F401
from .attention import (  # noqa: E402,F401  softmax attention (dense tiles or rows, from lse)
    attention_forward, attention_backward, packed_attention_forward, packed_attention_backward,
)
from .fast_weights import (  # noqa: E402,F401  sum rule and delta rule, token by token
    linear_attention_forward, linear_attention_backward, delta_rule_forward, delta_rule_backward,
)
from .safu import (  # noqa: E402,F401  SAFU block attention and contexts
    safu_block_attention_forward, safu_block_attention_backward,
    safu_contexts_forward, safu_contexts_backward,
)
# No Numba kernel: the NumPy references serve (their work is BLAS matmuls or one-off tables).
from ..reference.attention import attention_probabilities  # noqa: E402,F401
from ..reference.fast_weights import (  # noqa: E402,F401
    linear_attention_chunked_forward, linear_attention_chunked_backward,
    delta_rule_chunked_forward, delta_rule_chunked_backward,
)
from ..reference.safu import (  # noqa: E402,F401
    safu_block_attention_uncached, safu_score_table, safu_block_scores_from_table,
    safu_running_mean_forward, safu_running_mean_backward,
)
