"""Training checkpoints: writing them atomically, reading and checking them, rebuilding the model.

A checkpoint is a ``fw.save`` file (``.npz`` with JSON metadata, never pickle) holding a dict:
``format``/``version``, ``model_kind`` ('transformer' or 'safu'), ``init`` (the warm start the
run began from), ``model`` (the weights), ``model_config`` (the settings that rebuild the model),
``tokenizer``, ``step`` and, from ``tinyfw train``, everything else needed to continue bit for
bit (optimizer, scheduler, random generators, history). Version 1 files (before SAFU models could
be trained) have no ``model_kind`` and hold a transformer.
"""
import json
import os

from .data.tokenizers import Tokenizer
from .nn.init import skip_init
from .nn.model_kinds import check_kind, kind_of, model_from_settings, saved_settings
from .nn.models import ModelConfig
from .serialization import load, save

CHECKPOINT_FORMAT = "tinyfw-train-checkpoint"
CHECKPOINT_VERSION = 2
# Every .npz archive that holds at least one array starts with a zip local-file header.
_NPZ_MAGIC = b"PK\x03\x04"


class CheckpointError(OSError):
    """A checkpoint could not be written (the previous one, if any, is intact)."""


def save_checkpoint(path, state):
    """Write ``state`` (a dict) to ``path`` atomically; on failure raise CheckpointError."""
    try:
        save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, path)
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        existing = " is unchanged" if os.path.exists(path) else " was never written"
        error = CheckpointError(f"train: could not write the checkpoint {path} ({reason}); "
                                f"the previous checkpoint there{existing}")
        error.errno = e.errno
        raise error from e


def load_checkpoint(path):
    """Read a training checkpoint; a missing, foreign or incomplete file raises a clear error.
    The returned dict always has ``model_kind``."""
    _check_is_archive(path)
    ckpt = load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"load_checkpoint: {path} is a tinyfw file but not a training "
                         "checkpoint (no model/optimizer/step record)")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"load_checkpoint: {path} was written by a newer tinyfw (checkpoint "
                         f"version {ckpt['version']})")
    missing = [k for k in ("model", "model_config", "tokenizer", "step") if k not in ckpt]
    if missing:
        raise ValueError(f"load_checkpoint: {path} lacks {missing}")
    ckpt.setdefault("model_kind", "transformer")
    ckpt.setdefault("init", "random")
    try:
        check_kind(ckpt["model_kind"])
    except ValueError as e:
        raise ValueError(f"load_checkpoint: {path}: {e}") from None
    return ckpt


def _check_is_archive(path):
    """Refuse a file that is not a .npz archive before NumPy guesses another format for it
    (random bytes would otherwise be read as a pickle and refused as one)."""
    if not os.path.isfile(path):
        return                        # load() names a missing file
    with open(path, "rb") as f:
        head = f.read(len(_NPZ_MAGIC))
    if head != _NPZ_MAGIC:
        what = "the file is empty" if not head else (
            f"not a .npz archive: it starts with {head!r}, an archive with {_NPZ_MAGIC!r}")
        raise ValueError(f"load_checkpoint: {path} is not a tinyfw checkpoint ({what})")


def config_mismatch(saved, wanted):
    """The fields where two settings dicts differ, as ``['d_model: checkpoint 128, requested
    64', ...]``."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key, "<absent>"), wanted.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: checkpoint {a!r}, requested {b!r}")
    return out


def load_model_state(model, ckpt, path="checkpoint", context_length=None):
    """Copy the checkpoint's weights into ``model`` after checking that both have the same kind
    and settings; a difference raises ValueError naming each mismatched field."""
    kind = kind_of(model)
    if kind != ckpt["model_kind"]:
        raise ValueError(f"{path} holds a {ckpt['model_kind']} model, not a {kind} model")
    saved = dict(ckpt["model_config"])
    wanted = saved_settings(model, saved.get("context_length") if context_length is None
                            else context_length)
    if kind == "transformer":   # fill in fields a file written by an older tinyfw lacks
        saved = ModelConfig.from_dict(saved).to_dict()
    diff = config_mismatch(saved, wanted)
    if diff:
        raise ValueError(f"{path} was written by a model with a different configuration: "
                         + "; ".join(diff))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: the weights do not fit the model ({e})") from None


def checkpoint_tokenizer(ckpt):
    """The tokenizer stored in a checkpoint."""
    tok = ckpt["tokenizer"]
    return Tokenizer.from_dict(json.loads(tok) if isinstance(tok, str) else tok)


def model_from_checkpoint(ckpt, device="cpu"):
    """The model (of the checkpoint's kind) rebuilt from its settings and weights, plus its
    tokenizer."""
    try:
        with skip_init():      # every weight comes from the checkpoint: nothing to draw
            model = model_from_settings(ckpt["model_kind"], ckpt["model_config"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"the checkpoint's model settings are incomplete ({e})") from None
    load_model_state(model, ckpt)
    if device != "cpu":
        model.to(device)
    return model, checkpoint_tokenizer(ckpt)


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "save_checkpoint",
           "load_checkpoint", "config_mismatch", "load_model_state", "checkpoint_tokenizer",
           "model_from_checkpoint"]
