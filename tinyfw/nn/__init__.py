"""``tinyfw.nn``: modules, layers and models (``import tinyfw.nn as nn``)."""
from .module import Module, Parameter, ModuleList, Sequential  # noqa: F401
from .layers import Linear, Embedding, Dropout, GELU, ReLU, SiLU, Tanh, Identity  # noqa: F401
from .normalization import LayerNorm, RMSNorm  # noqa: F401
from .attention import CausalSelfAttention, attention_probabilities  # noqa: F401
from .fast_weights import FastWeightAttention  # noqa: F401
from .safu import SAFU, SAFUMixer, SAFULanguageModel  # noqa: F401
from .models import ModelConfig, LanguageModel, Block, MLP  # noqa: F401
from . import functional, init, utils  # noqa: F401
from .lora import LoRALinear, apply_lora, lora_layers, merge_lora, unmerge_lora  # noqa: F401
from .freezing import (freeze, unfreeze, trainable_parameters, count_parameters,  # noqa: F401
                       GradualUnfreezing)
from .classifier import SequenceClassifier, POOLINGS  # noqa: F401
