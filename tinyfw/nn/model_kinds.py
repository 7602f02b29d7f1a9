"""The two kinds of language model that ``tinyfw train`` builds, and their settings.

    settings = model_settings("safu", {"block": 4})     # defaults + overrides, checked
    model = build_model("safu", settings, vocab_size=65)
    kind_of(model), saved_settings(model)                # what a checkpoint records

* ``transformer``: :class:`~tinyfw.nn.models.LanguageModel`, token + position embeddings and
  Transformer blocks with a chosen token mixer (``ModelConfig``).
* ``safu``: :class:`~tinyfw.nn.safu.SAFULanguageModel`, a stack of SAFU layers over non-negative
  token vectors (bit-cipher or co-occurrence codes), the model the explicit (closed-form)
  solution applies to. Its ``context_length`` is the training window only: the model carries a
  state and can read sequences of any length.

Settings are plain dicts (they go into JSON config files and checkpoints). Each kind has its own
keys; a key of the other kind is an error that says which kind it belongs to.
"""
import dataclasses

from .models import LanguageModel, ModelConfig
from .safu import SAFULanguageModel

MODEL_KINDS = ("transformer", "safu")

# A small character-level Transformer that learns visibly in a few minutes on two CPU cores.
TRANSFORMER_DEFAULTS = dict(context_length=64, n_layers=4, n_heads=4, d_model=128, mlp_ratio=4,
                            dropout=0.0, norm="layer", prenorm=True, mixer="softmax",
                            tie_weights=False, bias=True)

# One SAFU layer over 36-wide token vectors (36 bits hold any vocabulary; 36 = 3 x 12 also holds
# [cipher; two co-occurrence offsets] of 12 bits each). d_in=None: chosen from the vocabulary and
# the warm start when the model is built (``tinyfw.warmstart.init.safu_input_width``).
SAFU_DEFAULTS = dict(context_length=64, n_layers=1, d_in=None, block=8, radial=3,
                     use_document=True, hidden=None, stack="concat", mix=0.5,
                     freeze_embedding=False)

_TRANSFORMER_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {"vocab_size"}
_SAFU_KEYS = frozenset(SAFU_DEFAULTS)


def setting_keys(kind):
    """The setting names of a model kind (``vocab_size`` excluded: it comes from the data)."""
    check_kind(kind)
    return _TRANSFORMER_KEYS if kind == "transformer" else _SAFU_KEYS


def check_kind(kind):
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    return kind


def model_settings(kind, overrides=None):
    """The full settings of ``kind``: its defaults updated by ``overrides`` (a dict). A key that
    belongs to the other kind, or to none, raises ValueError naming it."""
    overrides = dict(overrides or {})
    own = setting_keys(kind)
    other = setting_keys("safu" if kind == "transformer" else "transformer")
    foreign = sorted(k for k in overrides if k not in own and k in other)
    unknown = sorted(k for k in overrides if k not in own and k not in other)
    problems = []
    if foreign:
        problems.append(f"{foreign} apply only to the "
                        f"{'safu' if kind == 'transformer' else 'transformer'} model")
    if unknown:
        problems.append(f"unknown fields {unknown}")
    if problems:
        raise ValueError(f"model settings for the {kind} model: " + "; ".join(problems)
                         + f" (its settings: {sorted(own)})")
    defaults = TRANSFORMER_DEFAULTS if kind == "transformer" else SAFU_DEFAULTS
    return {**defaults, **overrides}


def build_model(kind, settings, vocab_size):
    """A freshly initialised model of ``kind`` from full ``settings`` (``model_settings``).
    A SAFU model needs ``d_in`` resolved to an int."""
    settings = model_settings(kind, settings)
    if kind == "transformer":
        return LanguageModel(ModelConfig(vocab_size=vocab_size, **settings))
    if settings["d_in"] is None:
        raise ValueError("build_model: the SAFU model's d_in is not set (resolve it from the "
                         "vocabulary first)")
    options = {k: v for k, v in settings.items() if k != "context_length"}
    return SAFULanguageModel(vocab_size, **options)


def kind_of(model):
    """'transformer' or 'safu' for a model built here."""
    if isinstance(model, SAFULanguageModel):
        return "safu"
    if isinstance(model, LanguageModel):
        return "transformer"
    raise TypeError(f"kind_of: not a tinyfw language model: {type(model).__name__}")


def saved_settings(model, context_length=None):
    """The settings dict that rebuilds ``model`` (``vocab_size`` included), as a checkpoint
    stores it. A SAFU model does not know its training window: pass ``context_length``."""
    if kind_of(model) == "transformer":
        return model.config.to_dict()
    out = {k: v for k, v in model.config.items()}
    out["context_length"] = context_length
    return out


def model_from_settings(kind, saved):
    """Rebuild a model from :func:`saved_settings` output (weights not loaded)."""
    saved = dict(saved)
    vocab_size = saved.pop("vocab_size")
    return build_model(kind, saved, vocab_size)


def prompt_limit(model):
    """How many trailing tokens of a prompt the model reads (None: all of them)."""
    if kind_of(model) == "safu" or model.config.positional == "none":
        return None
    return model.config.context_length


__all__ = ["MODEL_KINDS", "TRANSFORMER_DEFAULTS", "SAFU_DEFAULTS", "setting_keys", "check_kind",
           "model_settings", "build_model", "kind_of", "saved_settings", "model_from_settings",
           "prompt_limit"]
