"""``tinyfw.nn.functional``: the ops as plain functions (``import tinyfw.nn.functional as F``)."""
from ..ops.activations import relu, gelu, silu, elu  # noqa: F401
from ..ops.elementwise import sigmoid, tanh  # noqa: F401
from ..ops.linalg import linear  # noqa: F401
from ..ops.nn import (softmax, log_softmax, cross_entropy, embedding, dropout,  # noqa: F401
                      one_hot)
from ..ops.norms import layer_norm, rms_norm  # noqa: F401
from ..ops.attention import (scaled_dot_product_attention, causal_attention,  # noqa: F401
                             attention_probabilities)
from ..ops.feature_maps import (elu_plus_one, dpfp, favor_features, favor_projection,  # noqa: F401
                                sum_normalize)
from ..ops.fast_weights import linear_attention, delta_rule  # noqa: F401
from ..ops.safu import safu_block_attention, running_mean, radial_context  # noqa: F401
