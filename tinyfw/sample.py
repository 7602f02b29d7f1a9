"""Text generation from a trained language model.

    from tinyfw.sample import load_model, generate_text
    model, tokenizer = load_model("out/ckpt.npz")
    model, tokenizer = load_pretrained("gpt2/")       # a Hugging Face GPT-2 folder
    print(generate_text(model, tokenizer, "ROMEO:", max_new_tokens=200, temperature=0.8,
                        top_k=40, seed=1))
    print(generate_text(model, tokenizer, "ROMEO:", max_new_tokens=200, top_p=0.9, seed=1))

Prompts longer than a transformer's context are cropped from the left: the model only ever sees
the last ``context_length`` tokens (the whole prompt is still part of the returned text). A SAFU
model reads the whole prompt and carries its state from token to token. An empty prompt starts
from ``<|endoftext|>`` with the GPT-2 tokenizer (GPT-2 saw it between documents), otherwise from a
newline token when the tokenizer has one (else from token 0).
"""
import math

import numpy as np

from . import random as _random
from .checkpoint import load_checkpoint, model_from_checkpoint
from .data.gpt2_tokenizer import ENDOFTEXT
from .pretrained import load_gpt2_folder
from .tensor import tensor


def load_model(path, device="cpu"):
    """``(model, tokenizer)`` from a training checkpoint (a transformer or a SAFU model), the
    model in eval mode. Weights that are not finite raise a ValueError naming the file."""
    ckpt = load_checkpoint(path)
    try:
        model, tokenizer = model_from_checkpoint(ckpt, device)
    except ValueError as e:
        raise ValueError(f"sample: cannot rebuild the model from {path}: {e}") from None
    for name, p in model.named_parameters():
        if not np.isfinite(p.numpy()).all():
            raise ValueError(f"sample: the checkpoint {path} holds NaN or Inf in {name}: it was "
                             "written from a diverged run")
    model.eval()
    return model, tokenizer


def load_pretrained(folder, device="cpu"):
    """``(model, tokenizer)`` from a Hugging Face GPT-2 folder (``tinyfw.pretrained``), the
    model in eval mode on ``device``. Nothing is downloaded."""
    model, tokenizer = load_gpt2_folder(folder, op="sample --pretrained")
    if device != "cpu":
        model.to(device)
    return model.eval(), tokenizer


def start_ids(tokenizer):
    """The ids an empty prompt starts from: ``<|endoftext|>`` when the tokenizer has it as a
    special token (GPT-2's), else a newline if the tokenizer can encode one, else id 0."""
    special = getattr(tokenizer, "special_tokens", {})
    if ENDOFTEXT in special:
        return [special[ENDOFTEXT]]
    try:
        ids = tokenizer.encode("\n")
    except ValueError:
        ids = []
    return list(ids) if ids else [0]


def encode_prompt(tokenizer, prompt):
    """The prompt's ids; characters the tokenizer cannot encode raise a ValueError naming them."""
    if not isinstance(prompt, str):
        raise TypeError(f"sample: the prompt must be a str, got {type(prompt).__name__}")
    if prompt == "":
        return start_ids(tokenizer)
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:
        raise ValueError(f"sample: the prompt cannot be encoded by the checkpoint's "
                         f"{tokenizer.kind} tokenizer: {e}") from None
    return list(ids) if ids else start_ids(tokenizer)


def generate_ids(model, ids, max_new_tokens, temperature=1.0, top_k=None, seed=None,
                 device="cpu", top_p=None):
    """Extend ``ids`` (a list of ints) by ``max_new_tokens`` sampled ids; returns the whole list.

    ``temperature`` (>= 0; 0 takes the most likely token), ``top_k`` and ``top_p`` (nucleus
    sampling, in (0, 1]) shape the distribution as ``tinyfw.nn.sampling`` describes. ``seed``
    re-seeds the global generator first, so the same seed gives the same text.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 0:
        raise ValueError(f"sample: max_new_tokens must be a non-negative int, got "
                         f"{max_new_tokens!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"sample: temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"sample: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"sample: top_p must be in (0, 1], got {top_p}")
    if seed is not None:
        _random.manual_seed(seed)
    x = tensor(np.asarray([ids], dtype=np.int64), device=device)
    # generate() crops the input to the last context_length tokens before each step.
    out = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    return [int(i) for i in out.numpy()[0]]


def generate_text(model, tokenizer, prompt="", max_new_tokens=200, temperature=1.0, top_k=None,
                  seed=None, device="cpu", top_p=None):
    """The prompt followed by ``max_new_tokens`` sampled tokens, decoded to text."""
    ids = encode_prompt(tokenizer, prompt)
    out = generate_ids(model, ids, max_new_tokens, temperature, top_k, seed, device, top_p)
    if prompt == "":
        out = out[len(ids):]  # the start token is not part of the user's text
    return tokenizer.decode(out)


__all__ = ["load_model", "load_pretrained", "start_ids", "encode_prompt", "generate_ids",
           "generate_text"]
