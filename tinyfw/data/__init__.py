"""The data layer: tokenizers, corpora and batching (plain Python and NumPy, no Tensors)."""

from .tokenizers import (
    Tokenizer,
    CharTokenizer,
    WordTokenizer,
    ByteBPETokenizer,
    build_tokenizer,
    load_tokenizer,
)
from .gpt2_tokenizer import GPT2Tokenizer
from .corpora import builtin_corpus, read_text, shared_data_path, load_corpus
from .batching import (
    token_dtype,
    encode_corpus,
    save_tokens,
    load_tokens,
    train_val_split,
    get_batch,
)

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "ByteBPETokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "GPT2Tokenizer",
    "builtin_corpus",
    "read_text",
    "shared_data_path",
    "load_corpus",
    "token_dtype",
    "encode_corpus",
    "save_tokens",
    "load_tokens",
    "train_val_split",
    "get_batch",
]
