"""The training loop: a causal language model on a text corpus, with evaluation, checkpoints and
exact resumption.

    from tinyfw.train import TrainConfig, train
    result = train(TrainConfig(steps=200, out="out", model={"n_layers": 2}))
    result["val_loss"], result["sample"]

What one run does, in order:

1. Reads the corpus (a UTF-8 file, or the built-in corpus), trains a tokenizer on it (or takes the
   checkpoint's when resuming) and encodes it. The token array is cached in ``OUT/tokens.npy``
   (with ``OUT/tokens.json`` saying which text and tokenizer produced it) so a second run on the
   same data skips the encoding.
2. Splits the tokens 90/10 (contiguous) into training and validation parts.
3. Trains with AdamW, linear warm-up then cosine decay of the learning rate, and gradient
   clipping. Every ``eval_every`` steps it estimates the training and validation loss on
   ``eval_iters`` fixed batches and writes a checkpoint, ``OUT/ckpt.npz`` (and ``OUT/best.npz``
   when the validation loss improved).
4. Ends with a text sample.

A checkpoint holds everything needed to continue bit for bit: the model weights and config, the
optimizer's moments, the scheduler's step, the tokenizer, the step count, the best validation
loss, the loss history, both random generators (the global one, used by dropout, and the one that
draws the training batches) and the run's settings. It is written atomically (``fw.save``): a
crash or a full disk while writing leaves the previous checkpoint untouched.

Randomness: ``seed`` seeds the global generator (parameter initialisation, dropout) and a
separate batch generator. Evaluation draws its batches from a fresh generator seeded the same way
every time, so it never disturbs training and every evaluation sees the same batches (less
noise when comparing two evaluations).
"""
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from . import random as _random
from .autograd import no_grad
from .data import (build_tokenizer, encode_corpus, get_batch, load_corpus, load_tokenizer,
                   load_tokens, train_val_split)
from .data.tokenizers import Tokenizer
from .nn.models import LanguageModel, ModelConfig
from .nn.utils import clip_grad_norm_
from .optim import AdamW, WarmupCosine
from .serialization import load, save
from .tensor import tensor
from .fileio import atomic_write

CHECKPOINT_FORMAT = "tinyfw-train-checkpoint"
CHECKPOINT_VERSION = 1
TOKENIZERS = ("char", "word", "bpe")

# The model used when nothing else is asked for: a small character-level Transformer that learns
# visibly in a few minutes on two CPU cores. The vocabulary size comes from the tokenizer.
# Measured with the defaults below on the built-in corpus: 800 steps, ~160 s of CPU time on one
# core, validation loss 4.6 -> 1.59 (lr 1e-3 reached only 1.69 in the same steps).
DEFAULT_MODEL = dict(context_length=64, n_layers=4, n_heads=4, d_model=128, mlp_ratio=4,
                     dropout=0.0, norm="layer", prenorm=True, mixer="softmax",
                     tie_weights=False, bias=True)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (the model's own settings are in ``model``)."""
    # data
    data: str = None               # path of a UTF-8 text file; None = the built-in corpus
    tokenizer: str = "char"        # 'char' | 'word' | 'bpe'
    vocab_size: int = 512          # for 'bpe' only: 256 bytes + merges
    val_fraction: float = 0.1      # the last 10% of the tokens validate
    # model: ModelConfig fields except vocab_size (missing ones come from DEFAULT_MODEL)
    model: dict = dataclasses.field(default_factory=dict)
    # optimisation
    steps: int = 800
    batch_size: int = 16
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

        for name in ("steps", "batch_size", "eval_every", "eval_iters", "vocab_size"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                  f"{name}={value!r} must be a positive integer")
        for name in ("warmup", "log_every", "seed", "sample_tokens"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                  f"{name}={value!r} must be a non-negative integer")
        check(self.tokenizer in TOKENIZERS, f"tokenizer={self.tokenizer!r} must be one of "
              f"{TOKENIZERS}")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in (0, 1)")
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(0 <= self.min_lr <= self.lr, f"min_lr={self.min_lr} must be in [0, lr={self.lr}]")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        check(self.grad_clip >= 0, f"grad_clip={self.grad_clip} must be >= 0 (0 = no clipping)")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)")
        check(self.temperature >= 0, f"temperature={self.temperature} must be >= 0")
        if isinstance(self.warmup, int) and isinstance(self.steps, int):
            check(self.warmup <= self.steps, f"warmup={self.warmup} must be <= steps={self.steps}")
        check(isinstance(self.model, dict), "model must be a dict of ModelConfig fields")
        if isinstance(self.model, dict):
            known = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
            unknown = sorted(set(self.model) - known)
            check(not unknown, f"model has unknown fields {unknown} (known: {sorted(known)})")
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

    def model_config(self, vocab_size):
        """The full ``ModelConfig`` of this run for a tokenizer of ``vocab_size`` ids."""
        return ModelConfig(vocab_size=vocab_size, **{**DEFAULT_MODEL, **self.model})


# ---------------------------------------------------------------------------------------- data
def _sha256(text):
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def _tokenizer_spec(cfg):
    """What decides the tokenizer a run trains (the cache key besides the text)."""
    return {"kind": cfg.tokenizer, "vocab_size": cfg.vocab_size if cfg.tokenizer == "bpe" else None}


def prepare_data(cfg, tokenizer=None, log=None):
    """Read, tokenize and encode the corpus of ``cfg``; returns ``(tokenizer, ids, info)``.

    ids: 1-D unsigned array of the whole corpus. ``tokenizer`` given (when resuming) is used as
    is; otherwise one is trained. The encoded array is cached in ``cfg.out`` and reused when the
    same text and tokenizer settings come again.
    """
    text = load_corpus(cfg.data)  # FileNotFoundError / ValueError (empty, not UTF-8) name the file
    source = "builtin" if cfg.data in (None, "builtin") else os.path.abspath(cfg.data)
    digest = _sha256(text)
    os.makedirs(cfg.out, exist_ok=True)
    tokens_path = os.path.join(cfg.out, "tokens.npy")
    meta_path = os.path.join(cfg.out, "tokens.json")
    tok_path = os.path.join(cfg.out, "tokenizer.json")
    spec = _tokenizer_spec(cfg)

    cached = _read_token_cache(meta_path, tokens_path, tok_path)
    if cached is not None:
        meta, cached_ids, cached_tok = cached
        same_text = meta.get("text_sha256") == digest
        if tokenizer is not None:
            usable = same_text and cached_tok.to_dict() == tokenizer.to_dict()
        else:
            usable = same_text and meta.get("tokenizer_spec") == spec
        if usable:
            if log:
                log(f"data: {source}: {len(cached_ids):,} tokens (cached in {tokens_path})")
            return (tokenizer or cached_tok), cached_ids, {"source": source, "text_sha256": digest,
                                                           "chars": len(text)}
    if tokenizer is None:
        if log and cfg.tokenizer == "bpe":
            log(f"data: training a byte-level BPE tokenizer with {cfg.vocab_size} tokens ...")
        options = {"vocab_size": cfg.vocab_size} if cfg.tokenizer == "bpe" else {}
        tokenizer = build_tokenizer(cfg.tokenizer, text, **options)
    try:
        ids = encode_corpus(text, tokenizer)
    except ValueError as e:
        raise ValueError(f"train: the corpus {source} cannot be encoded with the checkpoint's "
                         f"tokenizer: {e}") from None
    tokenizer.save(tok_path)
    # The array first, the description last: a crash in between leaves a cache that does not
    # describe the array, which the next run simply rebuilds.
    from .data import save_tokens
    save_tokens(ids, tokens_path)
    _write_json(meta_path, {"source": source, "text_sha256": digest, "tokenizer_spec": spec,
                            "n_tokens": int(len(ids))})
    if log:
        log(f"data: {source}: {len(text):,} characters -> {len(ids):,} tokens "
            f"({tokenizer.kind} tokenizer, {tokenizer.vocab_size} ids; cached in {tokens_path})")
    return tokenizer, ids, {"source": source, "text_sha256": digest, "chars": len(text)}


def _read_token_cache(meta_path, tokens_path, tok_path):
    """``(meta, ids, tokenizer)`` from a previous run's cache, or None if any part is unusable."""
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        ids = load_tokens(tokens_path)
        tok = load_tokenizer(tok_path)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("n_tokens") != len(ids):
        return None
    return meta, ids, tok


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


# --------------------------------------------------------------------------------- checkpoints
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
    """Read a training checkpoint; a missing, foreign or incomplete file raises a clear error."""
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
    return ckpt


def config_mismatch(saved, wanted):
    """The fields where two ModelConfig dicts differ, as ``['d_model: 128 != 64', ...]``."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key, "<absent>"), wanted.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: checkpoint {a!r}, requested {b!r}")
    return out


def load_model_state(model, ckpt, path="checkpoint"):
    """Copy the checkpoint's weights into ``model`` after checking that both have the same
    configuration; a difference raises ValueError naming each mismatched field."""
    saved = ModelConfig.from_dict(ckpt["model_config"]).to_dict()
    diff = config_mismatch(saved, model.config.to_dict())
    if diff:
        raise ValueError(f"{path} was written by a model with a different configuration: "
                         + "; ".join(diff))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: the weights do not fit the model ({e})") from None


def model_from_checkpoint(ckpt, device="cpu"):
    """A ``LanguageModel`` rebuilt from a checkpoint's config and weights, plus its tokenizer."""
    model = LanguageModel(ModelConfig.from_dict(ckpt["model_config"]))
    load_model_state(model, ckpt)
    if device != "cpu":
        model.to(device)
    tok = ckpt["tokenizer"]
    tokenizer = Tokenizer.from_dict(json.loads(tok) if isinstance(tok, str) else tok)
    return model, tokenizer


# --------------------------------------------------------------------------------- evaluation
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


# ---------------------------------------------------------------------------------- progress
class Progress:
    """Progress reporting: one line rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, stream, total_steps, every, tty=None):
        self.stream = stream
        self.total = total_steps
        self.every = every
        self.tty = stream.isatty() if tty is None and hasattr(stream, "isatty") else bool(tty)
        self._last_draw = 0.0
        self._width = 0

    def _clear(self):
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def message(self, text):
        """A line that stays (evaluation results, notes)."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, step, loss, lr, tokens_per_s, eta_s, force=False):
        line = (f"step {step:>{len(str(self.total))}}/{self.total}  loss {loss:.4f}  "
                f"lr {lr:.2e}  {tokens_per_s:,.0f} tok/s  ETA {format_seconds(eta_s)}")
        if self.tty:
            now = time.monotonic()
            if force or now - self._last_draw > 0.1 or step == self.total:
                self.stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
                self.stream.flush()
                self._last_draw = now
        elif force or step % self.every == 0 or step == self.total:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self):
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
            self.stream.flush()


def format_seconds(s):
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current step (so the checkpoint
    holds a complete step); a second Ctrl-C interrupts at once."""

    def __init__(self, progress):
        self.requested = False
        self.progress = progress
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            if self._previous is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._handle)
            else:
                self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.progress.message("interrupt: stopping after this step and writing a checkpoint "
                              "(Ctrl-C again to abort without saving)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# ----------------------------------------------------------------------------------- training
def train(cfg, resume=False, stop_after=None, stream=None, quiet=False):
    """Run (or continue, ``resume=True``) the training described by ``cfg``.

    cfg: a ``TrainConfig``. When resuming, ``cfg`` should be the checkpoint's settings with any
    deliberate changes (``resolve_resume_config`` builds it); the model settings must match.
    stop_after: stop (and write the checkpoint) once this many steps are done, without changing
    the schedule (which still runs to ``cfg.steps``): a planned interruption.
    stream: where progress goes (default stdout). ``quiet`` prints nothing.

    Returns a dict: ``step``, ``train_loss`` (last step), ``val_loss`` (last evaluation),
    ``best_val_loss``, ``history``, ``sample`` (text, or None), ``elapsed`` (seconds of training
    over all runs), ``checkpoint`` (path), ``tokens_per_s``.
    """
    stream = _NullStream() if quiet else (sys.stdout if stream is None else stream)
    progress = Progress(stream, cfg.steps, cfg.log_every or max(1, cfg.steps // 20))
    log = progress.message
    ckpt_path = os.path.join(cfg.out, "ckpt.npz")
    best_path = os.path.join(cfg.out, "best.npz")

    ckpt = None
    if resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"train: --resume given but there is no checkpoint at "
                                    f"{ckpt_path}")
        ckpt = load_checkpoint(ckpt_path)
    device = _check_device(cfg.device)

    # Data and tokenizer (the checkpoint's tokenizer when resuming, so the ids mean the same).
    tokenizer = None
    if ckpt is not None:
        tok = ckpt["tokenizer"]
        tokenizer = Tokenizer.from_dict(json.loads(tok) if isinstance(tok, str) else tok)
    tokenizer, ids, data_info = prepare_data(cfg, tokenizer, log)
    trained_on = (ckpt or {}).get("data", {}).get("text_sha256")
    if trained_on is not None and trained_on != data_info["text_sha256"]:
        log(f"warning: the corpus {data_info['source']} differs from the one the checkpoint was "
            "trained on; training continues on the new text")

    # Model, optimizer, schedule: built fresh from the seed, then overwritten from the
    # checkpoint when resuming (so both paths build the very same objects).
    _random.manual_seed(cfg.seed)
    model_cfg = cfg.model_config(tokenizer.vocab_size)
    train_ids, val_ids = split_tokens(ids, cfg, model_cfg.context_length)
    model = LanguageModel(model_cfg)
    if ckpt is not None:
        load_model_state(model, ckpt, ckpt_path)
    if device != "cpu":
        model.to(device)
    params = list(model.parameters())
    optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(optimizer, cfg.warmup, cfg.steps, cfg.min_lr)
    batch_rng = np.random.default_rng(cfg.seed)
    step, best_val, elapsed = 0, float("inf"), 0.0
    history = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_train_loss": [],
               "val_loss": []}
    if ckpt is not None:
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            scheduler.load_state_dict(ckpt["scheduler"])
        step = int(ckpt["step"])
        best_val = float(ckpt.get("best_val_loss", float("inf")))
        elapsed = float(ckpt.get("elapsed", 0.0))
        history = {k: list(v) for k, v in ckpt.get("history", history).items()}
        rng = ckpt.get("rng", {})
        if "global" in rng:
            _random.set_rng_state(rng["global"])
        if "batches" in rng:
            batch_rng.bit_generator.state = rng["batches"]
        # The schedule follows this run's settings (the same as the checkpoint's unless the
        # command changed --steps, --lr, ...); only the position in it comes from the checkpoint.
        scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
        scheduler._apply()
        log(f"resumed from {ckpt_path} at step {step} (best val loss {best_val:.4f})")

    n_params = model.num_parameters()
    T, B = model_cfg.context_length, cfg.batch_size
    if ckpt is None:
        log(f"model: {n_params:,} parameters ({model_cfg.n_layers} layers, d_model "
            f"{model_cfg.d_model}, {model_cfg.n_heads} heads, context {T}, mixer "
            f"{model_cfg.mixer}); training {cfg.steps} steps of {B}x{T} tokens on {device}")
    _write_json(os.path.join(cfg.out, "config.json"), cfg.to_dict())

    def checkpoint_state():
        return {
            "model": model.state_dict(),
            "model_config": model_cfg.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "train_config": cfg.to_dict(),
            "tokenizer": json.dumps(tokenizer.to_dict()),
            "step": step,
            "best_val_loss": best_val,
            "elapsed": elapsed,
            "history": history,
            "rng": {"global": _random.get_rng_state(), "batches": batch_rng.bit_generator.state},
            "data": {"source": data_info["source"], "text_sha256": data_info["text_sha256"],
                     "n_tokens": int(len(ids))},
        }

    def evaluate():
        train_loss = estimate_loss(model, train_ids, B, T, cfg.eval_iters, cfg.seed + 1, device)
        val_loss = estimate_loss(model, val_ids, B, T, cfg.eval_iters, cfg.seed + 2, device)
        return train_loss, val_loss

    last_loss, val_loss = float("nan"), None
    step_time_ema = None
    tokens_per_s = 0.0
    stop_at = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    loop_start, elapsed_before = time.perf_counter(), elapsed
    with _StopRequest(progress) as stop:
        while step < stop_at and not stop.requested:
            t0 = time.perf_counter()
            x, y = get_batch(train_ids, B, T, batch_rng)
            _, loss = model(tensor(x, device=device), tensor(y, device=device))
            optimizer.zero_grad()
            loss.backward()
            if cfg.grad_clip > 0:
                clip_grad_norm_(params, cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            last_loss = loss.item()
            step += 1
            now = time.perf_counter()
            dt = now - t0
            elapsed = elapsed_before + (now - loop_start)  # wall time, evaluations included
            if not math.isfinite(last_loss):
                progress.close()
                raise FloatingPointError(
                    f"train: the loss became {last_loss} at step {step}; the checkpoint "
                    f"{ckpt_path} keeps the last good state (try a lower --lr or --grad-clip)")
            history["step"].append(step)
            history["loss"].append(last_loss)
            history["lr"].append(lr)
            # The first steps include Numba compilation; the moving average forgets them.
            step_time_ema = dt if step_time_ema is None else 0.9 * step_time_ema + 0.1 * dt
            tokens_per_s = B * T / step_time_ema
            progress.update(step, last_loss, lr, tokens_per_s, (stop_at - step) * step_time_ema)

            if step % cfg.eval_every == 0 or step == cfg.steps:
                train_loss, val_loss = evaluate()
                history["eval_step"].append(step)
                history["eval_train_loss"].append(train_loss)
                history["val_loss"].append(val_loss)
                improved = val_loss < best_val
                best_val = min(best_val, val_loss)
                log(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}"
                    + ("  (best so far)" if improved else "") + f"  [{format_seconds(elapsed)}]")
                state = checkpoint_state()
                save_checkpoint(ckpt_path, state)
                if improved:
                    save_checkpoint(best_path, state)
        progress.close()
        elapsed = elapsed_before + (time.perf_counter() - loop_start)
        if not history["eval_step"] or history["eval_step"][-1] != step:
            save_checkpoint(ckpt_path, checkpoint_state())  # the last state not yet written
        if step < cfg.steps:
            log(f"stopped at step {step} of {cfg.steps}; checkpoint written to {ckpt_path} "
                f"(continue with: tinyfw train --resume --out {cfg.out})")

    sample = None
    if cfg.sample_tokens and step >= cfg.steps:
        from .sample import generate_text
        sample = generate_text(model, tokenizer, "", cfg.sample_tokens,
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
    return {"step": step, "train_loss": last_loss, "val_loss": val_loss,
            "best_val_loss": best_val, "history": history, "sample": sample,
            "elapsed": elapsed, "checkpoint": ckpt_path, "tokens_per_s": tokens_per_s,
            "n_params": n_params, "model": model, "tokenizer": tokenizer}


def param_groups(model, weight_decay):
    """Weight decay only on matrices (linear and embedding weights), not on biases and norm
    gains: decaying a gain towards 0 fights the normalisation (the nanoGPT/GPT-2 practice)."""
    params = list(model.parameters())
    matrices = [p for p in params if p.ndim >= 2]
    vectors = [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}]
    if vectors:
        groups.append({"params": vectors, "weight_decay": 0.0})
    return groups


class _NullStream:
    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


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
    TrainConfig fields, ``model`` being a dict of model fields). A model field that differs from
    the checkpoint raises ValueError naming it (the weights could not be loaded)."""
    ckpt = load_checkpoint(ckpt_path)
    saved = dict(ckpt.get("train_config") or {})
    saved_model = ModelConfig.from_dict(ckpt["model_config"]).to_dict()
    wanted_model = dict(overrides.get("model") or {})
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
    return TrainConfig.from_dict(merged)


__all__ = ["TrainConfig", "DEFAULT_MODEL", "train", "prepare_data", "split_tokens",
           "estimate_loss", "save_checkpoint", "load_checkpoint", "load_model_state",
           "model_from_checkpoint", "resolve_resume_config", "config_mismatch",
           "CheckpointError", "Progress", "format_seconds"]
