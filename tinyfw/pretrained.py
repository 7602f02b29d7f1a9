"""A Hugging Face GPT-2 folder as the command line uses it: the model and its tokenizer together.

    model, tokenizer = load_gpt2_folder("gpt2/")          # what `tinyfw sample --pretrained` reads
    model, tokenizer = load_gpt2_folder("gpt2/", dropout=0.1)   # ... `tinyfw train --init-from`

The folder holds Hugging Face's files for ``GPT2LMHeadModel``: ``config.json`` and
``model.safetensors`` (``LanguageModel.from_pretrained``), ``vocab.json`` and ``merges.txt``
(``GPT2Tokenizer.from_pretrained``; OpenAI's ``encoder.json`` and ``vocab.bpe`` also read).
Nothing is downloaded. The tokenizer is read first (it is small, so a folder without one fails
before the weights are read) and must have exactly the model's vocabulary size: an id of one
that the other lacks would be an embedding row without a token, or a token without a row.
"""
import os

import numpy as np

from .data.gpt2_tokenizer import GPT2Tokenizer
from .nn.gpt2_weights import CONFIG_FILE, WEIGHTS_FILE
from .nn.models import LanguageModel

__all__ = ["load_gpt2_folder", "check_vocabulary"]


def check_vocabulary(tokenizer, model, where):
    """Raise ValueError unless ``tokenizer`` and ``model`` have the same number of ids;
    ``where`` names their source in the message."""
    n_tok, n_model = tokenizer.vocab_size, model.config.vocab_size
    if n_tok != n_model:
        raise ValueError(f"{where}: the tokenizer has {n_tok} ids but the model's vocab_size is "
                         f"{n_model} (in {CONFIG_FILE}): they must be one vocabulary")


def load_gpt2_folder(folder, dtype=np.float32, dropout=0.0, op="from_pretrained"):
    """``(model, tokenizer)`` from a Hugging Face GPT-2 folder: a ``LanguageModel`` (CPU, eval
    mode, weights of ``dtype``, ``dropout`` for fine-tuning) and a ``GPT2Tokenizer``. A missing
    file, a bad file or a vocabulary that does not fit raises an error naming the file; ``op``
    begins the messages this function writes itself."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        what = "no such folder" if not os.path.exists(folder) else "not a folder"
        raise FileNotFoundError(f"{op}: {folder}: {what} (expected a Hugging Face GPT-2 folder: "
                                f"{CONFIG_FILE}, {WEIGHTS_FILE}, vocab.json, merges.txt)")
    tokenizer = GPT2Tokenizer.from_pretrained(folder)
    model = LanguageModel.from_pretrained(folder, dtype=dtype, dropout=dropout)
    check_vocabulary(tokenizer, model, f"{op}: {folder}")
    return model, tokenizer
