"""The training loop: a causal language model on a text corpus, with a warm start, evaluation,
checkpoints and exact resumption.

    from tinyfw.train import TrainConfig, train
    result = train(TrainConfig(steps=200, out="out", model={"n_layers": 2}))
    result = train(TrainConfig(model_kind="safu", init="explicit", out="out-safu"))
    result["val_loss"], result["sample"]

What one run does, in named stages (each a function below):

1. **data** (``load_data``): reads the corpus (a UTF-8 file, or the built-in corpus), trains a
   tokenizer on it (or takes the checkpoint's when resuming) and encodes it; the token array is
   cached in ``OUT/tokens.npy`` (``OUT/tokens.json`` says which text and tokenizer produced it,
   and holds the array's length and checksum: a cut or altered cache is encoded again, with a
   message).
   Validation is the last 10% of the tokens, or the file ``val_data``; ``train_fraction`` keeps
   the first part of the training tokens (data-size studies: the validation set stays the same).
2. **model** (``build_run_model``): a ``transformer`` (``LanguageModel``) or a ``safu``
   (``SAFULanguageModel``), seeded, then warm-started by ``init`` (``tinyfw.warmstart``):
   ``random`` leaves the random initialisation, ``cipher``/``cooc`` set the token vectors,
   ``explicit`` also sets the output layer (the transformer) or solves every SAFU layer in closed
   form (the SAFU model).
3. **optimiser**: AdamW, linear warm-up then cosine decay, gradient clipping. With
   ``grad_accum`` N a step draws N * ``batch_size`` windows, runs them as N micro-batches of
   ``batch_size`` and sums their gradients scaled by 1/N: the update is the one a single batch
   of N * ``batch_size`` windows gives (``accumulate_gradients``).
4. **loop** (``TrainingRun``: ``step_once``, ``evaluate``, ``checkpoint_state``): every
   ``eval_every`` steps (and at step 0 of a warm start) it estimates the training
   and validation loss on ``eval_iters`` fixed batches, appends them to ``OUT/metrics.jsonl``
   and writes a checkpoint, ``OUT/ckpt.npz`` (and ``OUT/best.npz`` when the validation loss
   improved). ``patience`` stops early when the validation loss has not improved for that many
   evaluations.
5. **sample**: a text sample at the end.

Fine-tuning (``init_from``, ``tinyfw train --init-from``): stage 2 comes first and loads a
trained model with its tokenizer (``load_init_source``) from a Hugging Face GPT-2 folder or a
tinyfw checkpoint (weights only: step 0, a new optimiser and schedule); stage 1 then encodes the
corpus with that tokenizer. The model keeps its own settings (only ``dropout`` may change) and
trains on windows of ``window`` tokens, at most its context_length. The checkpoints record the
full model settings and the tokenizer, so ``--resume`` and ``tinyfw sample --ckpt`` rebuild the
fine-tuned model without the source.

Nothing is written to ``OUT`` until every setting, the data and the model have been checked, so a
run that fails on bad input leaves an earlier run's files as they were.

A loss, an evaluation loss or a gradient norm that is NaN or infinite stops the run at once with
``TrainingDiverged`` naming the step and the value, before the optimiser applies that step; no
checkpoint is written from a state whose parameters are not finite, so ``OUT/ckpt.npz`` keeps the
last good state.

A checkpoint (``tinyfw.checkpoint``) holds everything needed to continue bit for bit: the model
kind, weights and settings, the optimizer's moments, the scheduler's step, the tokenizer, the
step count, the best validation loss, the loss history, both random generators (the global one,
used by dropout, and the one that draws the training batches) and the run's settings. It is
written atomically: a crash or a full disk while writing leaves the previous checkpoint untouched.

Randomness: ``seed`` seeds the global generator (parameter initialisation, dropout) and a
separate batch generator. Evaluation draws its batches from a fresh generator seeded the same way
every time, so it never disturbs training and every evaluation sees the same batches.
"""
import dataclasses
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

from . import random as _random
from .autograd import no_grad
from .checkpoint import (CheckpointError, checkpoint_tokenizer, config_mismatch, load_checkpoint,
                         load_model_state, model_from_checkpoint, save_checkpoint)
from .data import (build_tokenizer, encode_corpus, get_batch, load_corpus, load_tokenizer,
                   load_tokens, read_text, save_tokens, train_val_split)
from .fileio import atomic_write
from .nn.init import skip_init
from .nn.model_kinds import (MODEL_KINDS, TRANSFORMER_DEFAULTS, build_model, model_from_settings,
                             model_settings, prompt_limit, saved_settings)
from .nn.models import ModelConfig
from .nn.utils import clip_grad_norm_
from .optim import AdamW, WarmupCosine
from .pretrained import load_gpt2_folder
from .progress import NullStream, Progress, StopRequest, format_seconds
from .tensor import tensor
from .warmstart.init import METHODS as INIT_METHODS
from .warmstart.init import init_language_model, safu_input_width

TOKENIZERS = ("char", "word", "bpe")
DEFAULT_MODEL = TRANSFORMER_DEFAULTS
# Options of the warm start (``tinyfw.warmstart.init.init_language_model``) a run may set.
INIT_OPTIONS = ("bits", "window", "embedding", "rounds", "eps", "max_tokens", "emb_scale",
                "strict")


class TrainingDiverged(FloatingPointError):
    """A loss or gradient norm became NaN or infinite; the run stopped before applying that step
    and wrote no checkpoint from it. ``exit_code`` is the command line's exit status for it."""
    exit_code = 3


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (the model's own settings are in ``model``)."""
    # data
    data: str = None               # path of a UTF-8 text file; None = the built-in corpus
    tokenizer: str = "char"        # 'char' | 'word' | 'bpe'
    vocab_size: int = None         # bpe: 256 bytes + merges (default 512); word: the most
                                   # frequent vocab_size - 1 words and <unk> (default: all)
    val_fraction: float = 0.1      # the last 10% of the tokens validate (without val_data)
    val_data: str = None           # a separate UTF-8 validation file
    train_fraction: float = 1.0    # train on the first part of the training tokens
    # model: 'transformer' or 'safu', its settings (missing ones take the kind's defaults) and
    # the warm start it begins from
    model_kind: str = "transformer"
    model: dict = dataclasses.field(default_factory=dict)
    init: str = "random"           # 'random' | 'cipher' | 'cooc' | 'explicit'
    init_options: dict = dataclasses.field(default_factory=dict)
    # fine-tuning: a Hugging Face GPT-2 folder or a tinyfw checkpoint whose model and tokenizer
    # the run starts from (``load_init_source``), and the training window in tokens (None: the
    # model's context_length); ``model`` may then only change the dropout
    init_from: str = None
    window: int = None
    # optimisation
    steps: int = 800
    batch_size: int = 16           # sequences per micro-batch
    grad_accum: int = 1            # micro-batches per step: a step sees grad_accum * batch_size
    lr: float = 2e-3               # peak; high for a short run (the demos use nanoGPT's 1e-3)
    min_lr: float = 1e-4
    warmup: int = None             # linear warm-up steps; None = min(100, steps // 10)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99            # nanoGPT's choice for small models: the moments adapt faster
    grad_clip: float = 1.0         # 0 turns clipping off
    # evaluation, logging, output
    eval_every: int = 200
    eval_iters: int = 20
    eval_at_start: bool = None     # evaluate before the first step; None = for a warm start
    patience: int = 0              # stop after this many evaluations without improvement; 0 off
    log_every: int = 0             # plain-text progress lines every n steps; 0 = about 20 per run
    seed: int = 1337
    out: str = "out"
    device: str = "cpu"
    sample_tokens: int = 300       # length of the sample printed at the end (0: none)
    temperature: float = 0.8
    plot: bool = False             # write OUT/loss.png at the end (needs matplotlib)

    def __post_init__(self):
        problems = []
        if self.warmup is None and isinstance(self.steps, int):
            self.warmup = min(100, self.steps // 10)

        def check(ok, text):
            if not ok:
                problems.append(text)

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if self.vocab_size is not None:
            check(isinstance(self.vocab_size, int) and not isinstance(self.vocab_size, bool)
                  and self.vocab_size >= 2, f"vocab_size={self.vocab_size!r} must be an integer "
                  ">= 2 (or null: the tokenizer's default)")
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_iters"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                  f"{name}={value!r} must be a positive integer")
        for name in ("warmup", "log_every", "seed", "sample_tokens", "patience"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                  f"{name}={value!r} must be a non-negative integer")
        for name in ("val_fraction", "train_fraction", "lr", "min_lr", "weight_decay",
                     "grad_clip", "beta1", "beta2", "temperature"):
            value = getattr(self, name)
            check(is_number(value) and math.isfinite(value),
                  f"{name}={value!r} must be a finite number")
        if problems:
            raise ValueError("TrainConfig: " + "; ".join(problems))
        check(self.tokenizer in TOKENIZERS or (self.init_from is not None
                                               and self.tokenizer == "gpt2"),
              f"tokenizer={self.tokenizer!r} must be one of {TOKENIZERS} ('gpt2' comes with "
              "init_from)")
        check(self.init_from is None or (isinstance(self.init_from, str) and self.init_from),
              f"init_from={self.init_from!r} must be a path (a GPT-2 folder or a checkpoint)")
        if self.window is not None:
            check(isinstance(self.window, int) and not isinstance(self.window, bool)
                  and self.window >= 1, f"window={self.window!r} must be a positive integer")
            check(self.init_from is not None, f"window={self.window!r} applies only with "
                  "init_from (a new model's window is its context_length)")
        check(self.init_from is None or self.init == "random",
              f"init={self.init!r} (--init) warm-starts a new model, while init_from="
              f"{self.init_from!r} (--init-from) starts from trained weights: use one of them")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in (0, 1)")
        check(0.0 < self.train_fraction <= 1.0,
              f"train_fraction={self.train_fraction} must be in (0, 1]")
        check(self.val_data is None or isinstance(self.val_data, str),
              f"val_data={self.val_data!r} must be a file path")
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(0 <= self.min_lr <= self.lr, f"min_lr={self.min_lr} must be in [0, lr={self.lr}]")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        check(self.grad_clip >= 0, f"grad_clip={self.grad_clip} must be >= 0 (0 = no clipping)")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)")
        check(self.temperature >= 0, f"temperature={self.temperature} must be >= 0")
        check(self.eval_at_start in (None, True, False),
              f"eval_at_start={self.eval_at_start!r} must be true, false or null")
        if isinstance(self.warmup, int) and isinstance(self.steps, int):
            check(self.warmup <= self.steps, f"warmup={self.warmup} must be <= steps={self.steps}")
        check(self.model_kind in MODEL_KINDS,
              f"model_kind={self.model_kind!r} must be one of {MODEL_KINDS}")
        check(self.init in INIT_METHODS, f"init={self.init!r} must be one of {INIT_METHODS}")
        check(isinstance(self.init_options, dict) and not set(self.init_options) - set(
            INIT_OPTIONS), f"init_options={self.init_options!r} may only set {INIT_OPTIONS}")
        check(isinstance(self.model, dict), "model must be a dict of model settings")
        if isinstance(self.model, dict) and self.model_kind in MODEL_KINDS:
            try:
                settings = model_settings(self.model_kind, self.model)
            except ValueError as e:
                problems.append(str(e))
            else:
                check(not (self.model_kind == "transformer" and self.init == "explicit"
                           and settings["tie_weights"]),
                      "init='explicit' (--init explicit) sets the output layer, which "
                      "tie_weights=True (--tie-weights) shares with the token embedding: untie "
                      "the weights or use init='cipher'")
        if problems:
            raise ValueError("TrainConfig: " + "; ".join(problems))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig.from_dict: unknown fields {unknown}")
        return cls(**d)

    def model_settings(self):
        """The model's full settings: the kind's defaults updated by ``model``."""
        return model_settings(self.model_kind, self.model)

    def model_config(self, vocab_size):
        """The full ``ModelConfig`` of a transformer run for a tokenizer of ``vocab_size`` ids."""
        if self.model_kind != "transformer":
            raise ValueError(f"TrainConfig.model_config: a {self.model_kind} model has no "
                             "ModelConfig (use model_settings)")
        return ModelConfig(vocab_size=vocab_size, **self.model_settings())

    def window_length(self):
        """Tokens per training window: ``window`` (an init_from run's, once resolved) or the
        model's context_length."""
        return self.window if self.window is not None else self.model_settings()["context_length"]

    @property
    def evaluates_at_start(self):
        if self.eval_at_start is not None:
            return self.eval_at_start
        return self.init != "random" or self.init_from is not None


# ---------------------------------------------------------------------------------------- data
def _sha256(text):
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def _tokenizer_options(cfg):
    """The options of ``build_tokenizer`` for the run's tokenizer."""
    if cfg.tokenizer == "bpe":
        return {"vocab_size": cfg.vocab_size or 512}
    if cfg.tokenizer == "word" and cfg.vocab_size is not None:
        return {"max_size": cfg.vocab_size}
    return {}


def _tokenizer_spec(cfg):
    """What decides the tokenizer a run trains (the cache key besides the text)."""
    options = _tokenizer_options(cfg)
    return {"kind": cfg.tokenizer,
            "vocab_size": options.get("vocab_size", options.get("max_size"))}


def _source_name(path):
    return "builtin" if path in (None, "builtin") else os.path.abspath(path)


def _encode_cached(cfg, text, tokenizer=None, log=None):
    """``(tokenizer, ids, info, write_cache)`` for the corpus ``text``: the cached encoding in
    ``cfg.out`` when it matches (same text, same tokenizer settings), else a fresh one.
    ``write_cache()`` stores a fresh encoding (None when the cache was used): the caller runs it
    once the run is known to go ahead."""
    log = log or (lambda line: None)
    source = _source_name(cfg.data)
    digest = _sha256(text)
    info = {"source": source, "text_sha256": digest, "chars": len(text)}
    tokens_path = os.path.join(cfg.out, "tokens.npy")
    meta_path = os.path.join(cfg.out, "tokens.json")
    tok_path = os.path.join(cfg.out, "tokenizer.json")
    spec = _tokenizer_spec(cfg)

    cached, problem = _read_token_cache(meta_path, tokens_path, tok_path)
    if problem is not None:
        log(f"data: the token cache in {cfg.out} is unusable ({problem}); encoding the corpus "
            "again")
    if cached is not None:
        meta, cached_ids, cached_tok = cached
        same_text = meta.get("text_sha256") == digest
        if tokenizer is not None:
            usable = same_text and cached_tok.to_dict() == tokenizer.to_dict()
        else:
            usable = same_text and meta.get("tokenizer_spec") == spec
        if usable:
            log(f"data: {source}: {len(cached_ids):,} tokens (cached in {tokens_path})")
            return (tokenizer or cached_tok), cached_ids, info, None
    if tokenizer is None:
        options = _tokenizer_options(cfg)
        if cfg.tokenizer == "bpe":
            log(f"data: training a byte-level BPE tokenizer with {options['vocab_size']} tokens "
                "...")
        tokenizer = build_tokenizer(cfg.tokenizer, text, **options)
    try:
        ids = encode_corpus(text, tokenizer)
    except ValueError as e:
        raise ValueError(f"train: the corpus {source} cannot be encoded with the checkpoint's "
                         f"tokenizer: {e}") from None

    def write_cache():
        os.makedirs(cfg.out, exist_ok=True)
        tokenizer.save(tok_path)
        # The array first, the description last: a crash in between leaves a cache that does
        # not describe the array, which the next run simply rebuilds.
        save_tokens(ids, tokens_path)
        _write_json(meta_path, {"source": source, "text_sha256": digest, "tokenizer_spec": spec,
                                "n_tokens": int(len(ids)), "ids_sha256": _ids_sha256(ids)})
        log(f"data: {source}: {len(text):,} characters -> {len(ids):,} tokens "
            f"({tokenizer.kind} tokenizer, {tokenizer.vocab_size} ids; cached in {tokens_path})")

    return tokenizer, ids, info, write_cache


def prepare_data(cfg, tokenizer=None, log=None):
    """Read, tokenize and encode the corpus of ``cfg``; returns ``(tokenizer, ids, info)``.

    ids: 1-D unsigned array of the whole corpus. ``tokenizer`` given (when resuming) is used as
    is; otherwise one is trained. The encoded array is cached in ``cfg.out`` and reused when the
    same text and tokenizer settings come again.
    """
    text = load_corpus(cfg.data)  # FileNotFoundError / ValueError (empty, not UTF-8) name the file
    tokenizer, ids, info, write_cache = _encode_cached(cfg, text, tokenizer, log)
    if write_cache is not None:
        write_cache()
    return tokenizer, ids, info


def _ids_sha256(ids):
    """The checksum of a token array as the cache stores it (dtype and values)."""
    ids = np.ascontiguousarray(ids)
    return hashlib.sha256(ids.dtype.str.encode() + ids.tobytes()).hexdigest()


def _read_token_cache(meta_path, tokens_path, tok_path):
    """``((meta, ids, tokenizer), None)`` from a previous run's cache; ``(None, problem)`` when
    a part of it is missing, truncated or does not match its description (the caller encodes
    the corpus again), ``problem`` being None when there is no cache at all. The ids are
    checked against the description's length and checksum, so a cut or altered file is never
    used."""
    if not os.path.exists(meta_path):
        return None, None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"{meta_path} is not readable JSON: {e}"
    try:
        ids = load_tokens(tokens_path)
        tok = load_tokenizer(tok_path)
    except (OSError, ValueError) as e:
        return None, str(e) or type(e).__name__
    if not isinstance(meta, dict):
        return None, f"{meta_path} is not a JSON object"
    if meta.get("n_tokens") != len(ids):
        return None, (f"{tokens_path} holds {len(ids):,} tokens, {meta_path} says "
                      f"{meta.get('n_tokens')!r}")
    if "ids_sha256" not in meta:
        return None, f"{meta_path} has no checksum of the ids"
    if meta["ids_sha256"] != _ids_sha256(ids):
        return None, f"the checksum of {tokens_path} does not match {meta_path}"
    if len(ids) and int(ids.max()) >= tok.vocab_size:
        return None, (f"{tokens_path} holds id {int(ids.max())}, past the vocabulary of "
                      f"{tok.vocab_size} ids in {tok_path}")
    return (meta, ids, tok), None


def _write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w", encoding="utf-8")


def split_tokens(ids, cfg, context_length):
    """``(train, val)`` token arrays, checked to be long enough for one window each."""
    train_ids, val_ids = train_val_split(ids, cfg.val_fraction)
    need = context_length + 1
    if len(train_ids) < need or len(val_ids) < need:
        raise ValueError(
            f"train: the corpus has {len(ids):,} tokens: {len(train_ids):,} for training and "
            f"{len(val_ids):,} for validation, but each part needs at least context + 1 = {need} "
            f"tokens (use more text or a smaller --context)")
    return train_ids, val_ids


def _validation_ids(path, tokenizer, need):
    """The token ids of the validation file ``path`` (``--val-data``), checked."""
    try:
        text = read_text(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"train: --val-data {path}: {e}") from None
    try:
        ids = encode_corpus(text, tokenizer)
    except ValueError as e:
        raise ValueError(f"train: --val-data {path} cannot be encoded with the {tokenizer.kind} "
                         f"tokenizer of the training data: {e}") from None
    if len(ids) < need:
        raise ValueError(f"train: --val-data {path} has {len(ids):,} tokens, fewer than context "
                         f"+ 1 = {need} (use a longer file or a smaller --context)")
    return ids


@dataclasses.dataclass
class RunData:
    """The tokens of one run. ``write_cache`` (or None) stores a fresh encoding in ``OUT``."""
    tokenizer: object
    ids: np.ndarray          # the whole encoded corpus (1-D)
    train_ids: np.ndarray    # what the model trains on (after train_fraction)
    val_ids: np.ndarray
    info: dict
    write_cache: object = None


def load_data(cfg, context_length, tokenizer=None, log=None):
    """Stage 1: the run's tokens (see the module docstring), checked to be long enough for
    windows of ``context_length + 1`` tokens. Writes nothing."""
    text = load_corpus(cfg.data)  # FileNotFoundError / ValueError (empty, not UTF-8) name the file
    tokenizer, ids, info, write_cache = _encode_cached(cfg, text, tokenizer, log)
    need = context_length + 1
    if cfg.val_data is not None:
        val_ids = _validation_ids(cfg.val_data, tokenizer, need)
        train_ids = ids
        if len(train_ids) < need:
            raise ValueError(f"train: the corpus {info['source']} has {len(ids):,} tokens, fewer "
                             f"than context + 1 = {need}")
        info["val_source"] = _source_name(cfg.val_data)
    else:
        train_ids, val_ids = split_tokens(ids, cfg, context_length)
    if cfg.train_fraction < 1.0:
        kept = int(len(train_ids) * cfg.train_fraction)
        if kept < need:
            raise ValueError(f"train: --train-fraction {cfg.train_fraction} keeps {kept:,} of "
                             f"{len(train_ids):,} training tokens, fewer than context + 1 = "
                             f"{need}")
        train_ids = train_ids[:kept]
    info["train_tokens"] = int(len(train_ids))
    info["val_tokens"] = int(len(val_ids))
    return RunData(tokenizer, ids, train_ids, val_ids, info, write_cache)


# --------------------------------------------------------------------------------------- model
def resolve_model_settings(cfg, vocab_size):
    """The full model settings of a run: the kind's defaults, ``cfg.model``, and for a SAFU model
    the token-vector width ``d_in`` its warm start needs (``safu_input_width``)."""
    settings = cfg.model_settings()
    if cfg.model_kind == "safu":
        opts = cfg.init_options
        settings["d_in"] = safu_input_width(vocab_size, cfg.init, settings["d_in"],
                                            opts.get("window", 2), opts.get("embedding", "cipher"),
                                            opts.get("strict", False))
    return settings


def build_run_model(cfg, settings, data, ckpt=None, ckpt_path="checkpoint", log=None):
    """Stage 2: the model of ``settings``, seeded with ``cfg.seed``; then either the checkpoint's
    weights or the warm start ``cfg.init`` on the training tokens. Returns ``(model, report)``,
    the report of the warm start (None when resuming)."""
    _random.manual_seed(cfg.seed)
    if ckpt is not None:
        with skip_init():      # every weight comes from the checkpoint: nothing to draw
            model = build_model(cfg.model_kind, settings, data.tokenizer.vocab_size)
        load_model_state(model, ckpt, ckpt_path, settings["context_length"])
        return model, None
    model = build_model(cfg.model_kind, settings, data.tokenizer.vocab_size)
    options = dict(cfg.init_options)
    if cfg.model_kind == "transformer":
        for key in ("rounds", "eps"):          # options of the SAFU solve only
            options.pop(key, None)
    report = init_language_model(model, data.train_ids, cfg.init, seed=cfg.seed,
                                 window_length=settings["context_length"], log=log, **options)
    return model, report


@dataclasses.dataclass
class InitSource:
    """What an init_from run starts from: the trained model, its tokenizer, the model settings
    (``vocab_size`` left out) and ``cfg``, the run's settings resolved against them (model kind,
    tokenizer kind, training window)."""
    model: object
    tokenizer: object
    settings: dict
    cfg: TrainConfig


def load_init_source(cfg):
    """Stage 2 of an init_from run, before any data: the model and tokenizer of
    ``cfg.init_from``, a Hugging Face GPT-2 folder (``tinyfw.pretrained``: config.json,
    model.safetensors, vocab.json, merges.txt) or a tinyfw checkpoint (its weights and
    tokenizer only: the new run starts at step 0 with a fresh optimiser). ``cfg.model`` may
    set the dropout; any other model setting must equal the loaded model's. The training window
    (``cfg.window``, default the model's context_length) must fit the model's positions. Every
    problem raises an error naming the path and the setting."""
    path = cfg.init_from
    where = f"train: --init-from {path}"
    wanted = dict(cfg.model)
    if os.path.isdir(path):
        model, tokenizer = load_gpt2_folder(path, dropout=wanted.get("dropout", 0.0), op=where)
        kind = "transformer"
    elif os.path.isfile(path):
        ckpt = load_checkpoint(path)
        kind = ckpt["model_kind"]
        saved = dict(ckpt["model_config"])
        if kind == "transformer":
            saved = ModelConfig.from_dict(saved).to_dict()   # fields an older file lacks
            if "dropout" in wanted:
                saved["dropout"] = wanted["dropout"]          # dropout holds no weights
        try:
            with skip_init():          # every weight comes from the checkpoint
                model = model_from_settings(kind, saved)
            load_model_state(model, {**ckpt, "model_config": saved}, path)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: cannot rebuild the model: {e}") from None
        tokenizer = checkpoint_tokenizer(ckpt)
        if tokenizer.vocab_size != saved["vocab_size"]:
            raise ValueError(f"{where}: the checkpoint's tokenizer has {tokenizer.vocab_size} "
                             f"ids but its model's vocab_size is {saved['vocab_size']}")
    else:
        raise FileNotFoundError(f"{where}: no such file or folder (give a Hugging Face GPT-2 "
                                "folder or a tinyfw checkpoint)")
    settings = saved_settings(model)
    settings.pop("vocab_size")
    differ = [f"{k}: the model has {settings.get(k, '<no such setting>')!r}, the run asks for "
              f"{v!r}" for k, v in sorted(wanted.items())
              if not (k == "dropout" and kind == "transformer") and settings.get(k) != v]
    if differ:
        raise ValueError(f"{where}: the model's settings come from {path} (only the dropout "
                         "may change): " + "; ".join(differ))
    limit = prompt_limit(model)
    window = cfg.window if cfg.window is not None else (
        limit if limit is not None else settings["context_length"])
    if limit is not None and window > limit:
        raise ValueError(f"{where}: the training window (--context / window) of {window} tokens "
                         f"is longer than the model's context_length of {limit} tokens (its "
                         f"learned positions end there): use --context {limit} or less")
    if kind == "safu":
        settings["context_length"] = window    # a SAFU model's context_length is its window
    resolved = dataclasses.replace(cfg, model_kind=kind, tokenizer=tokenizer.kind, window=window,
                                   vocab_size=None)
    return InitSource(model, tokenizer, settings, resolved)


def _describe(cfg, settings, n_params):
    if cfg.model_kind == "safu":
        return (f"SAFU model: {n_params:,} parameters ({settings['n_layers']} layer"
                f"{'s' if settings['n_layers'] != 1 else ''}, token vectors of {settings['d_in']}, "
                f"block {settings['block']}, radial {settings['radial']}, document context "
                f"{'on' if settings['use_document'] else 'off'}), init {cfg.init}")
    start = f"from {cfg.init_from}" if cfg.init_from is not None else f"init {cfg.init}"
    return (f"model: {n_params:,} parameters ({settings['n_layers']} layers, d_model "
            f"{settings['d_model']}, {settings['n_heads']} heads, context "
            f"{settings['context_length']}, mixer {settings['mixer']}), {start}")


# ----------------------------------------------------------------------------------- optimiser
def param_groups(model, weight_decay):
    """Weight decay only on matrices (linear and embedding weights), not on biases and norm
    gains: decaying a gain towards 0 fights the normalisation (the nanoGPT/GPT-2 practice).
    Parameters that do not require gradients (a frozen embedding) are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in params if p.ndim >= 2]
    vectors = [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}]
    if vectors:
        groups.append({"params": vectors, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg, model):
    """Stage 3: AdamW over the trainable parameters and its warm-up + cosine schedule."""
    optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    return optimizer, WarmupCosine(optimizer, cfg.warmup, cfg.steps, cfg.min_lr)


def accumulate_gradients(model, x, y, micro_batches=1, device="cpu"):
    """Backward passes over the windows ``x``, ``y`` (int ``(N, T)``) in ``micro_batches``
    equal parts, adding to each parameter's ``.grad`` the gradient of its part's mean loss
    scaled by 1 / ``micro_batches``: in sum the gradient of the mean loss over all N windows.
    Returns that mean loss (a float). Parts of N / micro_batches windows keep the memory of one
    step at that size."""
    if micro_batches < 1 or x.shape[0] % micro_batches:
        raise ValueError(f"accumulate_gradients: {x.shape[0]} windows do not split into "
                         f"{micro_batches} equal micro-batches")
    total = 0.0
    for xm, ym in zip(np.split(x, micro_batches), np.split(y, micro_batches)):
        _, loss = model(tensor(xm, device=device), tensor(ym, device=device))
        total += loss.item()
        if micro_batches > 1:
            loss = loss * (1.0 / micro_batches)
        loss.backward()
    return total / micro_batches


# ---------------------------------------------------------------------------------- evaluation
@no_grad()
def estimate_loss(model, ids, batch_size, context_length, iters, seed, device="cpu"):
    """Mean loss over ``iters`` batches drawn from a fresh generator seeded with ``seed``."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    total = 0.0
    try:
        for _ in range(iters):
            x, y = get_batch(ids, batch_size, context_length, rng)
            _, loss = model(tensor(x, device=device), tensor(y, device=device))
            total += loss.item()
    finally:
        model.train(was_training)
    return total / iters


class MetricsLog:
    """``OUT/metrics.jsonl``: one JSON object per evaluation, appended and flushed line by line,
    so a crash loses nothing already measured."""

    def __init__(self, path):
        self.path = path

    def start(self, keep_upto=None):
        """Begin a fresh file, or (``keep_upto``: a resumed run) keep the lines of the steps up
        to the checkpoint's and drop later ones, which describe a state that no longer exists."""
        lines = []
        if keep_upto is not None and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break                  # a line cut short by a crash ends the file
                    if isinstance(record, dict) and record.get("step", math.inf) <= keep_upto:
                        lines.append(line if line.endswith("\n") else line + "\n")
        atomic_write(self.path, lambda f: f.writelines(lines), mode="w", encoding="utf-8")

    def append(self, record):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_metrics(path):
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------------ training
def train(cfg, resume=False, stop_after=None, stream=None, quiet=False):
    """Run (or continue, ``resume=True``) the training described by ``cfg``.

    cfg: a ``TrainConfig``. When resuming, ``cfg`` should be the checkpoint's settings with any
    deliberate changes (``resolve_resume_config`` builds it); the model settings must match.
    stop_after: stop (and write the checkpoint) once this many steps are done, without changing
    the schedule (which still runs to ``cfg.steps``): a planned interruption.
    stream: where progress goes (default stdout). ``quiet`` prints nothing.

    Returns a dict: ``step``, ``train_loss`` (last step), ``val_loss`` (last evaluation),
    ``best_val_loss``, ``best_step``, ``history``, ``sample`` (text, or None), ``elapsed``
    (seconds of the warm start and of training over all runs), ``init_seconds``, ``init_report``,
    ``checkpoint`` (path), ``metrics`` (path), ``tokens_per_s``, ``n_params``, ``model``,
    ``tokenizer``.
    """
    stream = NullStream() if quiet else (sys.stdout if stream is None else stream)
    progress = Progress(stream, cfg.steps, cfg.log_every or max(1, cfg.steps // 20))
    log = progress.message
    ckpt_path = os.path.join(cfg.out, "ckpt.npz")
    metrics = MetricsLog(os.path.join(cfg.out, "metrics.jsonl"))

    ckpt = None
    if resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"train: --resume given but there is no checkpoint at "
                                    f"{ckpt_path}")
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["model_kind"] != cfg.model_kind:
            raise ValueError(f"train --resume: {ckpt_path} holds a {ckpt['model_kind']} model, "
                             f"not a {cfg.model_kind} model")
    device = _check_device(cfg.device)

    # Fine-tuning (init_from, not resumed): the trained model and its tokenizer come first.
    source = None
    if ckpt is None and cfg.init_from is not None:
        init_start = time.perf_counter()
        source = load_init_source(cfg)
        cfg = source.cfg
        source_seconds = time.perf_counter() - init_start

    # Stage 1: data (the checkpoint's or the source's tokenizer, so the ids mean the same).
    if ckpt is not None:
        tokenizer = checkpoint_tokenizer(ckpt)
    else:
        tokenizer = source.tokenizer if source is not None else None
    context = cfg.window_length()
    data = load_data(cfg, context, tokenizer, log)
    trained_on = (ckpt or {}).get("data", {}).get("text_sha256")
    if trained_on is not None and trained_on != data.info["text_sha256"]:
        log(f"warning: the corpus {data.info['source']} differs from the one the checkpoint was "
            "trained on; training continues on the new text")

    # Stage 2: model (built fresh from the seed, then warm-started or overwritten from the
    # checkpoint, so both paths build the very same objects).
    if source is not None:
        settings, model, init_seconds = source.settings, source.model, source_seconds
        init_report = {"init_from": os.path.abspath(cfg.init_from)}
        _random.manual_seed(cfg.seed)   # dropout draws as in a run of a new model
        model.train()
    else:
        settings = resolve_model_settings(cfg, data.tokenizer.vocab_size)
        init_start = time.perf_counter()
        model, init_report = build_run_model(cfg, settings, data, ckpt, ckpt_path, log)
        init_seconds = (time.perf_counter() - init_start if ckpt is None
                        else float(ckpt.get("init_seconds", 0.0)))
        if ckpt is None:
            init_report = _jsonable(init_report)
        else:
            init_report = ckpt.get("init_report")
    if device != "cpu":
        model.to(device)

    # Every check has passed: from here on the run writes into OUT.
    if data.write_cache is not None:
        data.write_cache()
    _write_json(os.path.join(cfg.out, "config.json"), cfg.to_dict())

    # Stage 3: optimiser and schedule.
    optimizer, scheduler = build_optimizer(cfg, model)
    batch_rng = np.random.default_rng(cfg.seed)
    if ckpt is None:
        state = (0, float("inf"), None, init_seconds, _empty_history(), 0)
        metrics.start()
    else:
        state = _restore_run(ckpt, cfg, optimizer, scheduler, batch_rng)
        metrics.start(keep_upto=state[0])
        log(f"resumed from {ckpt_path} at step {state[0]} (best val loss {state[1]:.4f})")

    run = TrainingRun(cfg, model, optimizer, scheduler, data, context, batch_rng, device,
                      metrics, log, init_report, init_seconds, state)
    if ckpt is not None:
        run.saved_step = run.step
    if ckpt is None:
        accum = f" ({cfg.grad_accum} micro-batches)" if cfg.grad_accum > 1 else ""
        log(_describe(cfg, settings, run.n_params) + f"; training {cfg.steps} steps of "
            f"{cfg.grad_accum * cfg.batch_size}x{run.T} tokens{accum} "
            f"({data.info['train_tokens']:,} training tokens) on {device}")
        if cfg.evaluates_at_start:
            run.evaluate(optimizer.param_groups[0]["lr"])

    # Stage 4: the loop.
    stop_at = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    run.loop(stop_at, progress)
    step, history = run.step, run.history

    # Stage 5: a sample and the loss curve.
    sample = None
    if cfg.sample_tokens and (step >= cfg.steps or run.early_stopped):
        from .sample import generate_text
        sample = generate_text(model, data.tokenizer, "", cfg.sample_tokens,
                               temperature=cfg.temperature, seed=cfg.seed, device=device)
        log("sample:\n" + sample)
    if cfg.plot:
        plot_path = os.path.join(cfg.out, "loss.png")
        try:
            from .plots import plot_loss_curve
            plot_loss_curve(history, plot_path)
            log(f"loss curve written to {plot_path}")
        except ImportError as e:
            log(f"plot: {e}")
    return {"step": step, "train_loss": run.last_loss, "val_loss": run.val_loss,
            "best_val_loss": run.best_val, "best_step": run.best_step, "history": history,
            "sample": sample, "elapsed": run.elapsed, "init_seconds": init_seconds,
            "init_report": init_report, "checkpoint": run.ckpt_path, "metrics": metrics.path,
            "tokens_per_s": run.tokens_per_s, "n_params": run.n_params, "model": model,
            "tokenizer": data.tokenizer, "early_stopped": run.early_stopped}


class TrainingRun:
    """The state of a run between its set-up and its end: the step count, the best validation
    loss, the history and the clock; ``step_once`` (stage 4a), ``evaluate`` (4b) and
    ``checkpoint_state`` (4c) act on it, and ``loop`` strings them together."""

    def __init__(self, cfg, model, optimizer, scheduler, data, context_length, batch_rng,
                 device, metrics, log, init_report, init_seconds, state):
        self.cfg, self.model, self.optimizer, self.scheduler = cfg, model, optimizer, scheduler
        self.data, self.T, self.B = data, context_length, cfg.batch_size
        self.batch_rng, self.device, self.metrics, self.log = batch_rng, device, metrics, log
        self.init_report, self.init_seconds = init_report, init_seconds
        self.step, self.best_val, self.best_step, self.elapsed, self.history, tokens = state
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.n_params = model.num_parameters()
        self.ckpt_path = os.path.join(cfg.out, "ckpt.npz")
        self.best_path = os.path.join(cfg.out, "best.npz")
        self.last_loss, self.val_loss = float("nan"), None
        self.tokens_per_s, self.early_stopped = 0.0, False
        self.tokens = tokens
        self.saved_step = None        # the step ckpt_path holds, once this run wrote or resumed it

    def step_once(self):
        """Stage 4a: one optimisation step on a fresh batch of ``grad_accum * batch_size``
        windows; returns ``(loss, lr)``, the loss being the mean over the whole batch. A
        non-finite loss or gradient norm raises TrainingDiverged before the parameters change."""
        n = self.cfg.grad_accum
        x, y = get_batch(self.data.train_ids, n * self.B, self.T, self.batch_rng)
        self.optimizer.zero_grad()
        lr = self.optimizer.param_groups[0]["lr"]
        loss = accumulate_gradients(self.model, x, y, n, self.device)
        if not math.isfinite(loss):
            raise self._diverged(f"the loss became {loss}", lr)
        # Clipping off still measures the norm: an infinite gradient must not reach the weights.
        norm = clip_grad_norm_(self.params, self.cfg.grad_clip if self.cfg.grad_clip > 0
                               else math.inf)
        if not math.isfinite(norm):
            raise self._diverged(f"the gradient norm became {norm} (loss {loss:.6g})", lr)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.tokens += x.size
        return loss, lr

    def _kept(self):
        """Which checkpoint keeps the last good state (for the TrainingDiverged messages)."""
        if self.saved_step is None:
            return "no checkpoint was written by this run"
        return f"{self.ckpt_path} keeps step {self.saved_step}, the last good state"

    def _diverged(self, what, lr):
        """The TrainingDiverged error for the step being taken: what went wrong, at which step,
        and which checkpoint keeps the last good state."""
        return TrainingDiverged(
            f"train: training diverged: {what} at step {self.step + 1} (lr {lr:.3g}); stopped "
            f"without applying it: {self._kept()} (try a lower --lr, or --grad-clip)")

    def save(self, path):
        """Write the checkpoint of the current state to ``path``, after checking every
        parameter is finite (a poisoned state never replaces a good checkpoint)."""
        for name, p in self.model.named_parameters():
            if not np.isfinite(p.numpy()).all():
                raise TrainingDiverged(
                    f"train: training diverged: the parameter {name} holds NaN or Inf after "
                    f"step {self.step}; {path} was not written: {self._kept()} (try a lower "
                    "--lr, or --grad-clip)")
        save_checkpoint(path, self.checkpoint_state())
        if path == self.ckpt_path:
            self.saved_step = self.step

    def evaluate(self, lr):
        """Stage 4b: losses on fixed batches, the metrics line, the checkpoints."""
        cfg, B, T = self.cfg, self.B, self.T
        train_loss = estimate_loss(self.model, self.data.train_ids, B, T, cfg.eval_iters,
                                   cfg.seed + 1, self.device)
        val_loss = estimate_loss(self.model, self.data.val_ids, B, T, cfg.eval_iters,
                                 cfg.seed + 2, self.device)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise TrainingDiverged(
                f"train: training diverged: the evaluation at step {self.step} gave train loss "
                f"{train_loss}, val loss {val_loss}; no checkpoint written from it: "
                f"{self._kept()} (try a lower --lr, or --grad-clip)")
        self.history["eval_step"].append(self.step)
        self.history["eval_train_loss"].append(train_loss)
        self.history["val_loss"].append(val_loss)
        self.val_loss = val_loss
        improved = val_loss < self.best_val
        if improved:
            self.best_val, self.best_step = val_loss, self.step
        self.metrics.append({
            "step": self.step, "tokens": self.tokens, "elapsed_s": round(self.elapsed, 4),
            "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 700.0)), "best_val_loss": self.best_val,
            "model": cfg.model_kind, "init": cfg.init})
        self.log(f"step {self.step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}"
                 + ("  (best so far)" if improved else "")
                 + f"  [{format_seconds(self.elapsed)}]")
        self.save(self.ckpt_path)
        if improved:
            self.save(self.best_path)
        stale = len(self.history["val_loss"]) - 1 - int(np.argmin(self.history["val_loss"]))
        self.early_stopped = cfg.patience > 0 and stale >= cfg.patience

    def checkpoint_state(self):
        """Stage 4c: everything a checkpoint holds to continue this run bit for bit."""
        cfg, data = self.cfg, self.data
        return {
            "model_kind": cfg.model_kind,
            "init": cfg.init,
            "init_report": self.init_report,
            "init_seconds": self.init_seconds,
            "model": self.model.state_dict(),
            "model_config": saved_settings(self.model, self.T),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_config": cfg.to_dict(),
            "tokenizer": json.dumps(data.tokenizer.to_dict()),
            "step": self.step,
            "tokens": self.tokens,
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "elapsed": self.elapsed,
            "history": self.history,
            "rng": {"global": _random.get_rng_state(),
                    "batches": self.batch_rng.bit_generator.state},
            "data": {"source": data.info["source"], "text_sha256": data.info["text_sha256"],
                     "n_tokens": int(len(data.ids)), "train_tokens": data.info["train_tokens"],
                     "val_tokens": data.info["val_tokens"]},
        }

    def loop(self, stop_at, progress):
        """Stage 4: steps until ``stop_at``, a Ctrl-C or an early stop, with an evaluation and a
        checkpoint every ``eval_every`` steps and a checkpoint at the end."""
        cfg, history = self.cfg, self.history
        step_time_ema = None
        loop_start, elapsed_before = time.perf_counter(), self.elapsed
        with StopRequest(progress) as stop:
            while self.step < stop_at and not stop.requested and not self.early_stopped:
                t0 = time.perf_counter()
                try:
                    loss, lr = self.step_once()
                except TrainingDiverged:
                    progress.close()
                    raise
                self.last_loss = loss
                now = time.perf_counter()
                self.elapsed = elapsed_before + (now - loop_start)  # evaluations included
                history["step"].append(self.step)
                history["loss"].append(loss)
                history["lr"].append(lr)
                # The first steps include Numba compilation; the moving average forgets them.
                dt = now - t0
                step_time_ema = dt if step_time_ema is None else 0.9 * step_time_ema + 0.1 * dt
                self.tokens_per_s = cfg.grad_accum * self.B * self.T / step_time_ema
                progress.update(self.step, loss, lr, self.tokens_per_s,
                                (stop_at - self.step) * step_time_ema)
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    try:
                        self.evaluate(lr)
                    except TrainingDiverged:
                        progress.close()
                        raise
            progress.close()
            self.elapsed = elapsed_before + (time.perf_counter() - loop_start)
            if not history["eval_step"] or history["eval_step"][-1] != self.step:
                self.save(self.ckpt_path)  # not yet written
            if self.early_stopped:
                self.log(f"early stop at step {self.step}: the validation loss has not improved "
                         f"for {cfg.patience} evaluations (best {self.best_val:.4f} at step "
                         f"{self.best_step}, kept in {self.best_path})")
            elif self.step < cfg.steps:
                self.log(f"stopped at step {self.step} of {cfg.steps}; checkpoint written to "
                         f"{self.ckpt_path} (continue with: tinyfw train --resume --out "
                         f"{cfg.out})")


def _empty_history():
    """The loss history of a run: per step, and per evaluation."""
    return {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_train_loss": [],
            "val_loss": []}


def _restore_run(ckpt, cfg, optimizer, scheduler, batch_rng):
    """Put the optimiser, the schedule and both random generators back where the checkpoint
    left them; returns ``(step, best_val, best_step, elapsed, history, tokens)``."""
    if "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    rng = ckpt.get("rng", {})
    if "global" in rng:
        _random.set_rng_state(rng["global"])
    if "batches" in rng:
        batch_rng.bit_generator.state = rng["batches"]
    # The schedule follows this run's settings (the same as the checkpoint's unless the command
    # changed --steps, --lr, ...); only the position in it comes from the checkpoint.
    scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
    scheduler._apply()
    history = {**_empty_history(), **{k: list(v) for k, v in ckpt.get("history", {}).items()}}
    step = int(ckpt["step"])
    # Checkpoints without a token count come from runs of one fixed batch shape.
    tokens = int(ckpt.get("tokens", step * cfg.batch_size * cfg.grad_accum
                          * cfg.window_length()))
    return (step, float(ckpt.get("best_val_loss", float("inf"))), ckpt.get("best_step"),
            float(ckpt.get("elapsed", 0.0)), history, tokens)


def _jsonable(value):
    """``value`` with NumPy scalars turned into Python numbers (for checkpoints and JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_device(device):
    from .backend import backend_for, normalize_device
    name = normalize_device(device)
    if name != "cpu":
        try:
            backend_for(name)
        except Exception as e:  # numba.cuda raises several kinds when no GPU is usable
            raise ValueError(f"train: device {device!r} is not usable here ({e})") from None
    return name


# ------------------------------------------------------------------------ resume configuration
def resolve_resume_config(ckpt_path, overrides):
    """The settings to resume with: the checkpoint's, updated by ``overrides`` (a dict of
    TrainConfig fields, ``model`` being a dict of model settings). A model setting, model kind
    or warm start that differs from the checkpoint raises ValueError naming it (the weights
    could not be loaded, or the run would not be the one it continues)."""
    ckpt = load_checkpoint(ckpt_path)
    saved = dict(ckpt.get("train_config") or {})
    kind = ckpt["model_kind"]
    if overrides.get("model_kind", kind) != kind:
        raise ValueError(f"train --resume: the checkpoint {ckpt_path} holds a {kind} model, not "
                         f"a {overrides['model_kind']} model (--model)")
    if overrides.get("init", ckpt["init"]) != ckpt["init"]:
        raise ValueError(f"train --resume: the checkpoint {ckpt_path} was initialised with "
                         f"--init {ckpt['init']}; a resumed run cannot change it to "
                         f"{overrides['init']!r}")
    saved_model = dict(ckpt["model_config"])
    if kind == "transformer":
        saved_model = ModelConfig.from_dict(saved_model).to_dict()
    wanted_model = dict(overrides.get("model") or {})
    if saved.get("init_from") is not None and "context_length" in wanted_model:
        # a fine-tuning run's --context is its training window, not the model's positions
        window = wanted_model.pop("context_length")
        if window != saved.get("window"):
            raise ValueError(f"train --resume: the checkpoint {ckpt_path} trains on windows of "
                             f"{saved.get('window')} tokens (--context); a resumed run cannot "
                             f"change it to {window}")
    diff = [f"{k}: checkpoint {saved_model[k]!r}, requested {v!r}"
            for k, v in sorted(wanted_model.items()) if saved_model.get(k, v) != v]
    unknown = sorted(set(wanted_model) - set(saved_model))
    if diff or unknown:
        raise ValueError(f"train --resume: the checkpoint {ckpt_path} was trained with a "
                         "different model configuration: " + "; ".join(diff + [
                             f"{k}: not a model field" for k in unknown])
                         + " (drop these options, or train into a new --out directory)")
    if "tokenizer" in overrides and overrides["tokenizer"] != saved.get("tokenizer"):
        raise ValueError(f"train --resume: the checkpoint {ckpt_path} uses the "
                         f"{saved.get('tokenizer')!r} tokenizer, not {overrides['tokenizer']!r}")
    merged = {**saved, **{k: v for k, v in overrides.items() if k != "model"}}
    merged["model"] = {k: v for k, v in saved_model.items() if k != "vocab_size"}
    merged["model_kind"], merged["init"] = kind, ckpt["init"]
    return TrainConfig.from_dict(merged)


__all__ = ["TrainConfig", "DEFAULT_MODEL", "TOKENIZERS", "INIT_OPTIONS", "train", "load_data",
           "prepare_data", "split_tokens", "resolve_model_settings", "build_run_model",
           "build_optimizer", "param_groups", "accumulate_gradients", "estimate_loss",
           "TrainingRun", "TrainingDiverged", "MetricsLog", "read_metrics", "save_checkpoint",
           "load_checkpoint", "load_model_state", "model_from_checkpoint",
           "resolve_resume_config", "config_mismatch", "CheckpointError", "Progress",
           "format_seconds"]
