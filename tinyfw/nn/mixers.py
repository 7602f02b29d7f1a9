"""The token mixers a ``LanguageModel`` block can use, by name.

A token mixer is the part of a Transformer block that moves information between positions:
a Module mapping (B, T, D) -> (B, T, D) causally, with ``forward(x, state=None,
return_state=False)`` (see ``models.py``). ``MIXERS`` maps each name to a constructor
``constructor(cfg, **options) -> Module``, where ``cfg`` is the ``ModelConfig`` and ``options``
is its ``mixer_options``. ``ModelConfig`` checks ``mixer=`` against this mapping, ``make_mixer``
builds from it and the command line offers its names for ``--mixer``, so one call adds a mixer
everywhere:

    register_mixer("mine", lambda cfg, **options: MyMixer(cfg.d_model, **options))
"""
from .attention import CausalSelfAttention
from .fast_weights import FastWeightAttention
from .safu import SAFUMixer

#: mixer name -> constructor(cfg, **options), in the order they were registered
MIXERS = {}


def register_mixer(name, constructor):
    """Make ``constructor(cfg, **options)`` the mixer called ``name``; returns ``constructor``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_mixer: name must be a non-empty string, got {name!r}")
    if name in MIXERS:
        raise ValueError(f"register_mixer: a mixer called {name!r} is already registered")
    if not callable(constructor):
        raise TypeError(f"register_mixer({name!r}): constructor must be callable, got "
                        f"{type(constructor).__name__}")
    MIXERS[name] = constructor
    return constructor


def softmax_attention(cfg, **options):
    """Causal multi-head softmax attention (``attention.py``)."""
    return CausalSelfAttention(cfg.d_model, cfg.n_heads, dropout=cfg.dropout, bias=cfg.bias,
                               **options)


def linear_attention(cfg, feature_map="elu", **options):
    """Fast weights with the sum rule: linear attention (``fast_weights.py``)."""
    return FastWeightAttention(cfg.d_model, cfg.n_heads, feature_map=feature_map, update="sum",
                               **options)


def delta_rule_attention(cfg, feature_map="dpfp", **options):
    """Fast weights with the delta rule (``fast_weights.py``)."""
    return FastWeightAttention(cfg.d_model, cfg.n_heads, feature_map=feature_map,
                               update="delta", **options)


def safu_mixer(cfg, **options):
    """The self-attentive feed-forward unit as a mixer (``safu.py``)."""
    return SAFUMixer(cfg.d_model, **options)


register_mixer("softmax", softmax_attention)
register_mixer("linear", linear_attention)
register_mixer("delta", delta_rule_attention)
register_mixer("safu", safu_mixer)
