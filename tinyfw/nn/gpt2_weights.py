"""Hugging Face GPT-2 folders (``GPT2LMHeadModel``: ``config.json`` + ``model.safetensors``) in
tinyfw's terms: the config's fields, the tensor names, and the weights stored transposed.

GPT-2 is a ``LanguageModel`` with learned positions, pre-norm LayerNorm, softmax attention,
biases and a GELU MLP (tanh form, 'gelu_new'). Only names and one layout differ::

    Hugging Face (prefix 'transformer.' optional)   tinyfw                        matrix
    wte.weight                 (V, D)                tok_emb.weight                as is
    wpe.weight                 (P, D)                pos_emb.weight                as is
    h.{i}.ln_1.weight / .bias  (D,)                  blocks.{i}.norm1.*            as is
    h.{i}.attn.c_attn.weight   (D, 3D) + bias (3D,)  blocks.{i}.mixer.qkv.*        transposed
    h.{i}.attn.c_proj.weight   (D, D)  + bias        blocks.{i}.mixer.proj.*       transposed
    h.{i}.ln_2.weight / .bias                        blocks.{i}.norm2.*            as is
    h.{i}.mlp.c_fc.weight      (D, rD) + bias (rD,)  blocks.{i}.mlp.fc.*           transposed
    h.{i}.mlp.c_proj.weight    (rD, D) + bias        blocks.{i}.mlp.proj.*         transposed
    ln_f.weight / .bias                              norm_f.*                      as is
    lm_head.weight             (V, D), no prefix     head.weight (absent: tied to wte)

Hugging Face's ``Conv1D`` keeps its weight as (in, out) and computes ``x W + b``; tinyfw's
``Linear`` keeps (out, in) and computes ``x W^T + b``: those matrices are transposed on the way
in and out. ``c_attn``'s output is q, k and v side by side, each D wide with the heads contiguous
inside it, which is the layout of tinyfw's packed ``qkv`` projection: it maps unchanged. The
``h.{i}.attn.bias`` / ``masked_bias`` entries of older files are causal-mask buffers, not weights.

    with GPT2Folder("gpt2/") as folder:     # config and every tensor's name and shape checked
        folder.settings                     # ModelConfig fields
        folder.read("blocks.0.mixer.qkv.weight", np.float32)
    save_gpt2_folder("out/", settings, arrays)
"""
import json
import os
import re

import numpy as np

from ..fileio import atomic_write
from ..safetensors import SafetensorsFile, save_file

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "GPT2Folder", "settings_from_gpt2_config",
           "gpt2_config_from_settings", "weight_names", "save_gpt2_folder"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Hugging Face's activation_function -> tinyfw's ModelConfig.activation
_ACTIVATIONS_IN = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu"}
_ACTIVATIONS_OUT = {"gelu_new": "gelu_new", "gelu": "gelu"}
_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
_FLOAT_CODES = ("F16", "BF16", "F32", "F64")
_PREFIX = "transformer."
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")

# (tinyfw name, Hugging Face name, stored transposed) for the parts outside the blocks ...
_OUTER = [("tok_emb.weight", "wte.weight", False), ("pos_emb.weight", "wpe.weight", False),
          ("norm_f.weight", "ln_f.weight", False), ("norm_f.bias", "ln_f.bias", False)]
# ... and inside block i ("blocks.{i}." and "h.{i}." in front)
_BLOCK = [("norm1.weight", "ln_1.weight", False), ("norm1.bias", "ln_1.bias", False),
          ("mixer.qkv.weight", "attn.c_attn.weight", True),
          ("mixer.qkv.bias", "attn.c_attn.bias", False),
          ("mixer.proj.weight", "attn.c_proj.weight", True),
          ("mixer.proj.bias", "attn.c_proj.bias", False),
          ("norm2.weight", "ln_2.weight", False), ("norm2.bias", "ln_2.bias", False),
          ("mlp.fc.weight", "mlp.c_fc.weight", True), ("mlp.fc.bias", "mlp.c_fc.bias", False),
          ("mlp.proj.weight", "mlp.c_proj.weight", True),
          ("mlp.proj.bias", "mlp.c_proj.bias", False)]
_HEAD = ("head.weight", "lm_head.weight", False)


def weight_names(n_layers, tied=True):
    """[(tinyfw name, Hugging Face name without prefix, transposed)] of a GPT-2 of ``n_layers``;
    the head only when it is not tied to the token embedding."""
    names = list(_OUTER)
    for i in range(n_layers):
        names += [(f"blocks.{i}.{ours}", f"h.{i}.{theirs}", t) for ours, theirs, t in _BLOCK]
    return names if tied else names + [_HEAD]


def _hf_shapes(s):
    """Hugging Face name (no prefix) -> the shape ``settings`` s call for."""
    D, V, P, F = s["d_model"], s["vocab_size"], s["context_length"], s["mlp_ratio"] * s["d_model"]
    block = {"ln_1.weight": (D,), "ln_1.bias": (D,), "attn.c_attn.weight": (D, 3 * D),
             "attn.c_attn.bias": (3 * D,), "attn.c_proj.weight": (D, D),
             "attn.c_proj.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
             "mlp.c_fc.weight": (D, F), "mlp.c_fc.bias": (F,), "mlp.c_proj.weight": (F, D),
             "mlp.c_proj.bias": (D,)}
    shapes = {"wte.weight": (V, D), "wpe.weight": (P, D), "ln_f.weight": (D,),
              "ln_f.bias": (D,), "lm_head.weight": (V, D)}
    for i in range(s["n_layers"]):
        shapes.update({f"h.{i}.{k}": v for k, v in block.items()})
    return shapes


# ---------------------------------------------------------------------------------- config.json
def settings_from_gpt2_config(config, path=CONFIG_FILE):
    """A GPT-2 ``config.json`` (a dict) -> ``ModelConfig`` fields (dropout left out). Another
    architecture, or a GPT-2 option tinyfw's model lacks, raises ValueError naming the key."""
    def fail(key, message):
        raise ValueError(f"from_pretrained: {path}: {key}: {message}")

    if not isinstance(config, dict):
        raise ValueError(f"from_pretrained: {path} must hold a JSON object")
    if config.get("model_type", "gpt2") != "gpt2":
        fail("model_type", f"{config['model_type']!r} is not 'gpt2' (only Hugging Face GPT-2 "
             "folders load)")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or any(a not in _ARCHITECTURES for a in architectures):
        fail("architectures", f"{architectures!r}: only {' or '.join(_ARCHITECTURES)} load")

    def positive_int(key, *aliases):
        for k in (key, *aliases):
            if k in config:
                value = config[k]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    fail(k, f"must be a positive integer, got {value!r}")
                return value
        fail(key, "missing")

    d_model, n_heads = positive_int("n_embd"), positive_int("n_head")
    if d_model % n_heads:
        fail("n_embd", f"{d_model} is not divisible by n_head={n_heads}")
    activation = config.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS_IN:
        fail("activation_function", f"{activation!r} is not supported (one of "
             f"{sorted(_ACTIVATIONS_IN)})")
    inner = config.get("n_inner")
    if inner is not None and (not isinstance(inner, int) or inner < 1 or inner % d_model):
        fail("n_inner", f"{inner!r} is not a positive multiple of n_embd={d_model} (tinyfw's "
             "MLP is mlp_ratio x d_model wide)")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        fail("layer_norm_epsilon", f"must be a positive number, got {eps!r}")
    for key, unsupported in (("scale_attn_weights", False),
                             ("scale_attn_by_inverse_layer_idx", True),
                             ("add_cross_attention", True)):
        if config.get(key, not unsupported) is unsupported:
            fail(key, f"{unsupported} is not supported (tinyfw's attention scales the scores "
                 "by 1/sqrt(head width) and has no cross-attention)")
    tied = config.get("tie_word_embeddings", True)
    if not isinstance(tied, bool):
        fail("tie_word_embeddings", f"must be true or false, got {tied!r}")
    return dict(vocab_size=positive_int("vocab_size"),
                context_length=positive_int("n_positions", "n_ctx"),
                n_layers=positive_int("n_layer"), n_heads=n_heads, d_model=d_model,
                mlp_ratio=4 if inner is None else inner // d_model, norm="layer",
                prenorm=True, mixer="softmax", tie_weights=tied, bias=True,
                positional="learned", activation=_ACTIVATIONS_IN[activation],
                norm_eps=float(eps))


def _read_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"from_pretrained: no {CONFIG_FILE} in the folder: missing "
                                f"{path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"from_pretrained: {path} is not valid JSON ({e})") from None
    return settings_from_gpt2_config(config, path)


# What tinyfw settings a GPT-2 needs: setting -> the value (or values) GPT-2 has.
_GPT2_SHAPE = {"positional": ("learned",), "norm": ("layer",), "prenorm": (True,),
               "mixer": ("softmax",), "bias": (True,), "activation": tuple(_ACTIVATIONS_OUT),
               "mixer_options": ({},)}


def gpt2_config_from_settings(settings, dtype=np.float32):
    """``ModelConfig`` fields -> a Hugging Face ``config.json`` dict for ``GPT2LMHeadModel``.
    A setting GPT-2 has no equivalent for raises ValueError naming it."""
    for key, allowed in _GPT2_SHAPE.items():
        if settings.get(key) not in allowed:
            raise ValueError(f"save_pretrained: the Hugging Face GPT-2 layout has no {key}="
                             f"{settings.get(key)!r} (GPT-2 needs {key} in {list(allowed)})")
    eps = settings.get("norm_eps")
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": settings["vocab_size"], "n_positions": settings["context_length"],
        "n_embd": settings["d_model"], "n_layer": settings["n_layers"],
        "n_head": settings["n_heads"],
        "n_inner": None if settings["mlp_ratio"] == 4 else
        settings["mlp_ratio"] * settings["d_model"],
        "activation_function": _ACTIVATIONS_OUT[settings["activation"]],
        "layer_norm_epsilon": 1e-5 if eps is None else eps,
        "resid_pdrop": settings["dropout"], "embd_pdrop": settings["dropout"],
        "attn_pdrop": settings["dropout"], "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": settings["tie_weights"],
        "torch_dtype": np.dtype(dtype).name, "use_cache": True,
    }
    # GPT-2's own vocabulary begins and ends texts with <|endoftext|>; another has no such id
    end_of_text = 50256 if settings["vocab_size"] == 50257 else None
    config.update(bos_token_id=end_of_text, eos_token_id=end_of_text)
    return config


# ---------------------------------------------------------------------------------- weights
class GPT2Folder:
    """A Hugging Face GPT-2 folder opened for reading. Opening checks ``config.json`` and every
    tensor of ``model.safetensors`` (names, dtypes, shapes against the config, the tied head),
    so a model built from it is never partial. ``settings``: the ``ModelConfig`` fields;
    ``read(tinyfw_name, dtype)``: one weight as tinyfw stores it (a new array)."""

    def __init__(self, folder):
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"from_pretrained: {folder} is not a folder (expected a "
                                    f"folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
        self.settings = _read_config(os.path.join(folder, CONFIG_FILE))
        self.path = os.path.join(folder, WEIGHTS_FILE)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"from_pretrained: no {WEIGHTS_FILE} in the folder: missing "
                                    f"{self.path} (only safetensors weights load)")
        self.file = SafetensorsFile(self.path)
        try:
            self._keys = self._match_names()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.file.close()

    def _fail(self, key, message):
        raise ValueError(f"from_pretrained: {self.path}: {key}: {message}")

    def _match_names(self):
        """tinyfw name -> (key in the file, transposed), after checking every key of the file."""
        in_file = {}
        for key in self.file.keys():
            bare = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            if bare in in_file:
                self._fail(key, f"stored twice (also as {in_file[bare]!r})")
            in_file[bare] = key
        s = self.settings
        shapes = _hf_shapes(s)
        wanted = weight_names(s["n_layers"], tied=s["tie_weights"])
        unexpected = sorted(key for bare, key in in_file.items()
                            if bare not in shapes and not _MASK_BUFFER.fullmatch(bare))
        if unexpected:
            self._fail(unexpected[0], f"not a GPT-2 weight of this config ({len(unexpected)} "
                       f"such: {unexpected[:5]})")
        missing = [theirs for _, theirs, _ in wanted if theirs not in in_file]
        if missing:
            self._fail(missing[0], f"missing ({len(missing)} GPT-2 weights missing: "
                       f"{missing[:5]})")
        checked = [theirs for _, theirs, _ in wanted]
        if s["tie_weights"] and "lm_head.weight" in in_file:
            checked.append("lm_head.weight")
        for bare in checked:
            key = in_file[bare]
            if self.file.dtype(key) not in _FLOAT_CODES:
                self._fail(key, f"dtype {self.file.dtype(key)} is not a float type "
                           f"({', '.join(_FLOAT_CODES)})")
            if self.file.shape(key) != shapes[bare]:
                self._fail(key, f"shape {list(self.file.shape(key))} disagrees with the config "
                           f"(n_embd={s['d_model']}, n_positions={s['context_length']}, "
                           f"vocab_size={s['vocab_size']}, mlp width "
                           f"{s['mlp_ratio'] * s['d_model']}), which calls for "
                           f"{list(shapes[bare])}")
        if s["tie_weights"] and "lm_head.weight" in in_file and not np.array_equal(
                self.file.read(in_file["lm_head.weight"]), self.file.read(in_file["wte.weight"])):
            self._fail(in_file["lm_head.weight"], "differs from wte.weight while the config ties "
                       "them (tie_word_embeddings is true)")
        return {ours: (in_file[theirs], t) for ours, theirs, t in wanted}

    def names(self):
        """The tinyfw names of the weights this folder provides."""
        return list(self._keys)

    def read(self, name, dtype=np.float32):
        """The weight tinyfw calls ``name``, as a new ``dtype`` array in tinyfw's layout."""
        key, transposed = self._keys[name]
        return self.file.read(key, dtype=dtype, transpose=transposed)


def save_gpt2_folder(folder, settings, arrays):
    """Write ``config.json`` and ``model.safetensors`` for ``GPT2LMHeadModel`` into ``folder``.

    ``settings``: the ``ModelConfig`` fields; ``arrays``: tinyfw name -> NumPy array (a state
    dict's arrays). The weights keep their dtype; names get the 'transformer.' prefix that
    Hugging Face writes."""
    dtype = arrays["tok_emb.weight"].dtype
    config = gpt2_config_from_settings(settings, dtype)
    tensors = {}
    for ours, theirs, transposed in weight_names(settings["n_layers"], settings["tie_weights"]):
        key = theirs if theirs == "lm_head.weight" else _PREFIX + theirs
        tensors[key] = arrays[ours].T if transposed else arrays[ours]
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"})
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(folder, CONFIG_FILE), lambda f: f.write(text), mode="w",
                 encoding="utf-8")
