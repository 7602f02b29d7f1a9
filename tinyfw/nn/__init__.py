"""``tinyfw.nn``: modules, layers and models (``import tinyfw.nn as nn``)."""
from .module import Module, Parameter, ModuleList, Sequential  # noqa: F401
from .layers import Linear, Embedding, Dropout, GELU, ReLU, SiLU, Tanh, Identity  # noqa: F401
from . import functional, init, utils  # noqa: F401
