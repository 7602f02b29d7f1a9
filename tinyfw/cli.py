"""The command line: ``python -m tinyfw {train,sample,bench} ...`` (also the ``tinyfw`` script).

    tinyfw train                                  # char-level model on the built-in corpus
    tinyfw train --model safu --init explicit     # the SAFU model, solved in closed form first
    tinyfw train --data input.txt --steps 2000 --out run1 --plot
    tinyfw train --out run1 --resume --steps 3000 # continue (and lengthen) an earlier run
    tinyfw sample --ckpt run1/ckpt.npz --prompt "ROMEO:" --max-new-tokens 300 --top-k 40
    tinyfw sample --ckpt run1/ckpt.npz --prompt "ROMEO:" --top-p 0.9  # nucleus sampling
    tinyfw sample --pretrained gpt2/ --prompt "Hello"  # a Hugging Face GPT-2 folder on disk
    tinyfw train --init-from gpt2/ --data input.txt --context 256  # fine-tune it
    tinyfw bench ...                              # the benchmark suite, when installed

Settings come from three places, later ones winning: the defaults (or, with ``--resume``, the
checkpoint's settings), a ``--config FILE.json`` and the flags given on the command line.

Exit status: 0 done; 1 an error (a bad file, a setting the run cannot use); 2 a usage error (a
bad flag value, named with the value, before anything runs); 3 ``train`` stopped because the loss
or the gradient norm became NaN or infinite (the last good checkpoint is kept); 130 interrupted.
"""
import argparse
import dataclasses
import importlib
import json
import math
import os
import sys

# Flags that set TrainConfig fields (argparse dest -> field).
_TRAIN_FLAGS = {"data": "data", "tokenizer": "tokenizer", "vocab_size": "vocab_size",
                "val_data": "val_data", "train_fraction": "train_fraction",
                "model_kind": "model_kind", "init": "init", "init_from": "init_from",
                "steps": "steps",
                "batch_size": "batch_size", "grad_accum": "grad_accum", "lr": "lr",
                "min_lr": "min_lr", "warmup": "warmup",
                "weight_decay": "weight_decay", "grad_clip": "grad_clip",
                "eval_every": "eval_every", "eval_iters": "eval_iters", "patience": "patience",
                "log_every": "log_every", "seed": "seed", "out": "out", "device": "device",
                "sample_tokens": "sample_tokens", "temperature": "temperature", "plot": "plot"}
# Flags that set model settings (argparse dest -> setting), and the model kinds each serves.
_MODEL_FLAGS = {"n_layers": "n_layers", "context": "context_length", "n_heads": "n_heads",
                "d_model": "d_model", "dropout": "dropout", "norm": "norm", "prenorm": "prenorm",
                "mixer": "mixer", "tie_weights": "tie_weights", "mlp_ratio": "mlp_ratio",
                "d_in": "d_in", "block": "block", "radial": "radial",
                "use_document": "use_document", "hidden": "hidden", "stack": "stack"}
_FLAG_KINDS = {"n_layers": ("transformer", "safu"), "context": ("transformer", "safu"),
               "d_in": ("safu",), "block": ("safu",), "radial": ("safu",),
               "use_document": ("safu",), "hidden": ("safu",), "stack": ("safu",)}
_FLAG_NAMES = {"prenorm": "--prenorm/--postnorm", "use_document": "--no-document",
               "model_kind": "--model"}
# With --init-from the model and the tokenizer come from FOLDER|CKPT: of the model flags only
# these apply (--context becomes the training window), and these other flags do not.
_INIT_FROM_MODEL_FLAGS = ("dropout", "context")
_INIT_FROM_EXCLUDES = ("model_kind", "tokenizer", "vocab_size")


class _UsageError(Exception):
    pass


def _argument_type(convert, ok, expected):
    """An argparse type: ``convert(text)``, accepted when ``ok(value)``; otherwise the error
    says what was expected and what was given."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _argument_type(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _argument_type(int, lambda v: v >= 0, "an integer >= 0")
_fraction = _argument_type(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
_finite = _argument_type(float, math.isfinite, "a finite number")
_positive_finite = _argument_type(float, lambda v: math.isfinite(v) and v > 0,
                                  "a finite number > 0")
_non_negative_finite = _argument_type(float, lambda v: math.isfinite(v) and v >= 0,
                                      "a finite number >= 0")
_probability = _argument_type(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")

# Exit statuses (see the module docstring).
EXIT_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130
_EXIT_STATUS_HELP = ("exit status: 0 done, 1 error, 2 bad flag value, 3 the loss or gradient "
                     "norm became NaN or infinite (training stopped before applying that step; "
                     "OUT/ckpt.npz keeps the last good state), 130 interrupted")


def build_parser():
    from .nn.mixers import MIXERS
    from .nn.model_kinds import MODEL_KINDS, SAFU_DEFAULTS, TRANSFORMER_DEFAULTS
    from .train import TrainConfig
    from .warmstart.init import METHODS
    d = TrainConfig()
    m = TRANSFORMER_DEFAULTS
    sd = SAFU_DEFAULTS
    S = argparse.SUPPRESS  # flags not given stay absent, so they do not override anything

    parser = argparse.ArgumentParser(
        prog="tinyfw", description="tinyfw: train and sample small language models, run the "
        "benchmarks.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"tinyfw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,bench}")

    # ------------------------------------------------------------------------------ train
    t = sub.add_parser(
        "train", help="train a language model on a text file or the built-in corpus",
        description="Train a causal language model with AdamW and a warm-up + cosine schedule. "
        "Writes OUT/ckpt.npz (latest), OUT/best.npz (best validation loss), OUT/config.json, "
        "OUT/tokenizer.json, the encoded corpus OUT/tokens.npy and OUT/metrics.jsonl (one JSON "
        "line per evaluation). Flags override --config; "
        "with --resume the checkpoint's settings are the starting point; with --init-from "
        "(fine-tuning) the model and tokenizer of a GPT-2 folder or a checkpoint. The first Ctrl-C "
        "stops after the current step and writes a checkpoint.",
        epilog=_EXIT_STATUS_HELP, argument_default=S)
    g = t.add_argument_group("data")
    g.add_argument("--data", metavar="PATH",
                   help="UTF-8 text file to train on (default: the built-in corpus, Python's "
                   "own documentation texts)")
    g.add_argument("--tokenizer", choices=("char", "word", "bpe"),
                   help=f"tokenizer kind (default {d.tokenizer})")
    g.add_argument("--vocab-size", type=_positive_int,
                   help="bpe: vocabulary size (default 512); word: keep the N - 1 most frequent "
                   "words and <unk> (default: every word)")
    g.add_argument("--val-data", metavar="PATH",
                   help="UTF-8 text file to validate on (default: the last "
                   f"{d.val_fraction:.0%}% of the corpus)")
    g.add_argument("--train-fraction", type=_fraction, metavar="F",
                   help="train on the first F of the training tokens, F in (0, 1] (default 1)")
    g = t.add_argument_group("model")
    g.add_argument("--config", metavar="FILE.json",
                   help="JSON object of settings: any TrainConfig field (steps, lr, ...) and "
                   "model fields either flat (n_layers, d_model, context_length, ...) or under "
                   "\"model\"")
    g.add_argument("--model", dest="model_kind", choices=MODEL_KINDS,
                   help="transformer: token + position embeddings and Transformer blocks; safu: "
                   "SAFU layers over bit-cipher token vectors, the model the explicit solution "
                   f"solves (default {d.model_kind})")
    g.add_argument("--init", choices=METHODS,
                   help="warm start: random (none), cipher (bit-cipher token vectors), cooc "
                   "([cipher; co-occurrence] token vectors), explicit (also the closed-form "
                   f"output layer; for safu every layer solved) (default {d.init})")
    g.add_argument("--init-from", metavar="FOLDER|CKPT",
                   help="fine-tune: start from a Hugging Face GPT-2 folder (config.json, "
                   "model.safetensors, vocab.json, merges.txt) or a tinyfw checkpoint, with its "
                   "tokenizer; weights only (step 0, a new optimiser, unlike --resume). The "
                   "model's shape is its own: of the model flags only --dropout and --context "
                   "(the training window, at most the model's context; default: all of it) "
                   "apply")
    g.add_argument("--n-layers", type=_positive_int,
                   help=f"blocks or SAFU layers (default {m['n_layers']} / {sd['n_layers']})")
    g.add_argument("--context", type=_positive_int,
                   help=f"context length in tokens: the training window (default "
                   f"{m['context_length']}; with --init-from the model's context length, which "
                   "it may not exceed)")
    g = t.add_argument_group("transformer model (--model transformer)")
    g.add_argument("--n-heads", type=_positive_int, help=f"heads (default {m['n_heads']})")
    g.add_argument("--d-model", type=_positive_int, help=f"width (default {m['d_model']})")
    g.add_argument("--mlp-ratio", type=_positive_int,
                   help=f"MLP width / model width (default {m['mlp_ratio']})")
    g.add_argument("--dropout", type=_probability,
                   help=f"dropout probability, in [0, 1) (default {m['dropout']})")
    g.add_argument("--norm", choices=("layer", "rms"), help=f"LayerNorm or RMSNorm (default "
                   f"{m['norm']})")
    g.add_argument("--prenorm", dest="prenorm", action="store_true",
                   help="normalise the input of each branch (default)")
    g.add_argument("--postnorm", dest="prenorm", action="store_false",
                   help="normalise after each residual addition (the original Transformer)")
    g.add_argument("--mixer", choices=tuple(MIXERS),
                   help=f"token mixer of each block (default {m['mixer']})")
    g.add_argument("--tie-weights", action="store_true",
                   help="share the token embedding with the output layer")
    g = t.add_argument_group("SAFU model (--model safu)")
    g.add_argument("--d-in", type=_positive_int,
                   help="token-vector width (default: 36, more when the vocabulary needs it)")
    g.add_argument("--block", type=_non_negative_int,
                   help=f"block context: positions attended to, 0 off (default {sd['block']})")
    g.add_argument("--radial", type=_non_negative_int,
                   help=f"radial context: recent inputs concatenated, 0 off (default "
                   f"{sd['radial']})")
    g.add_argument("--no-document", dest="use_document", action="store_false",
                   help="leave out the document context (the running mean of the inputs)")
    g.add_argument("--hidden", type=_positive_int,
                   help="width of a hidden softmax layer (default: none)")
    g.add_argument("--stack", choices=("concat", "mix"),
                   help=f"what a layer above the first reads (default {sd['stack']})")
    g = t.add_argument_group("optimisation")
    g.add_argument("--steps", type=_positive_int, help=f"training steps (default {d.steps})")
    g.add_argument("--batch-size", type=_positive_int,
                   help=f"sequences per micro-batch (default {d.batch_size})")
    g.add_argument("--grad-accum", type=_positive_int, metavar="N",
                   help="micro-batches per step, their gradients summed and scaled by 1/N: a "
                   "step on N x --batch-size sequences in the memory of one micro-batch "
                   f"(default {d.grad_accum})")
    g.add_argument("--lr", type=_positive_finite, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--min-lr", type=_non_negative_finite,
                   help=f"learning rate at the end of the cosine (default {d.min_lr})")
    g.add_argument("--warmup", type=_non_negative_int,
                   help="linear warm-up steps (default: min(100, steps / 10))")
    g.add_argument("--weight-decay", type=_non_negative_finite,
                   help=f"AdamW decoupled weight decay of the matrices (default {d.weight_decay})")
    g.add_argument("--grad-clip", type=_non_negative_finite,
                   help=f"clip the global gradient norm to this (0: off; default {d.grad_clip})")
    g.add_argument("--seed", type=_non_negative_int, help=f"random seed (default {d.seed})")
    g.add_argument("--device", help=f"cpu or cuda (default {d.device})")
    g = t.add_argument_group("evaluation and output")
    g.add_argument("--eval-every", type=_positive_int,
                   help=f"evaluate and checkpoint every n steps (default {d.eval_every})")
    g.add_argument("--eval-iters", type=_positive_int,
                   help=f"batches per loss estimate (default {d.eval_iters})")
    g.add_argument("--patience", type=_non_negative_int,
                   help="stop early after this many evaluations without a better validation "
                   "loss (default 0: never)")
    g.add_argument("--log-every", type=_non_negative_int,
                   help="progress line every n steps when not on a terminal (default: ~20 "
                   "lines per run)")
    g.add_argument("--out", metavar="DIR", help=f"output directory (default {d.out})")
    g.add_argument("--resume", action="store_true",
                   help="continue from DIR/ckpt.npz exactly where it stopped")
    g.add_argument("--stop-after", type=_non_negative_int,
                   help="stop after this many steps (the schedule still spans --steps); resume "
                   "later with --resume")
    g.add_argument("--sample-tokens", type=_non_negative_int,
                   help=f"length of the sample printed at the end (default {d.sample_tokens})")
    g.add_argument("--temperature", type=_non_negative_finite,
                   help=f"sampling temperature of that sample (default {d.temperature})")
    g.add_argument("--plot", action="store_true", help="write DIR/loss.png (needs matplotlib)")
    g.add_argument("--quiet", action="store_true", help="print only errors")
    t.set_defaults(func=_cmd_train)

    # ----------------------------------------------------------------------------- sample
    s = sub.add_parser(
        "sample", help="generate text from a checkpoint or a pretrained GPT-2",
        description="Generate text from a training checkpoint (--ckpt) or from a Hugging Face "
        "GPT-2 folder (--pretrained). A prompt longer than the model's "
        "context is cropped from the left (the model sees its last context_length tokens). "
        "--top-k, then --top-p, narrow the distribution after the temperature.",
        epilog="exit status: 0 done, 1 error (such as a checkpoint that is missing parts or "
        "not a tinyfw checkpoint, or a GPT-2 folder with a missing or bad file), 2 bad flag "
        "value")
    source = s.add_mutually_exclusive_group()
    source.add_argument("--ckpt", default=None,
                        help="checkpoint file (default out/ckpt.npz)")
    source.add_argument("--pretrained", metavar="FOLDER", default=None,
                        help="a Hugging Face GPT-2 folder (config.json, model.safetensors, "
                        "vocab.json, merges.txt, e.g. the files of the 'gpt2' model "
                        "downloaded beforehand; nothing is downloaded here)")
    s.add_argument("--prompt", default="",
                   help="text to continue (default: start of a line; with the GPT-2 tokenizer "
                   "<|endoftext|>, the start of a document)")
    s.add_argument("--max-new-tokens", type=_non_negative_int, default=500,
                   help="tokens to generate (default 500)")
    s.add_argument("--temperature", type=_non_negative_finite, default=0.8,
                   help="softmax temperature; 0 = always the most likely token (default 0.8)")
    s.add_argument("--top-k", type=_positive_int, default=None,
                   help="sample only among the k most likely tokens (default: all)")
    s.add_argument("--top-p", type=_fraction, default=None, metavar="P",
                   help="nucleus sampling: only among the most likely tokens whose "
                   "probabilities add up to P, in (0, 1] (default: all)")
    s.add_argument("--seed", type=_non_negative_int, default=None,
                   help="random seed (the same seed gives the same text)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    s.set_defaults(func=_cmd_sample)

    # ------------------------------------------------------------------------------ bench
    # Everything after `bench` goes to the suite untouched (main() dispatches it before parsing);
    # the subparser is here so that --help lists the command.
    sub.add_parser("bench", help="run the benchmark suite (arguments are passed on to it)",
                   add_help=False)
    return parser


# ------------------------------------------------------------------------------------ train
def _read_config_file(path):
    """The settings in a JSON config file as ``(train_overrides, model_overrides)``."""
    from .nn.model_kinds import MODEL_KINDS, setting_keys
    from .train import TrainConfig
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise _UsageError(f"--config: no such file: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _UsageError(f"--config: {path} is not a valid JSON file ({e})") from None
    if not isinstance(data, dict):
        raise _UsageError(f"--config: {path} must hold a JSON object, not "
                          f"{type(data).__name__}")
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    model_keys = set().union(*(setting_keys(kind) for kind in MODEL_KINDS))
    model = data.pop("model", None) or {}
    if not isinstance(model, dict):
        raise _UsageError(f"--config: {path}: \"model\" must be a JSON object of model "
                          f"settings (the model kind is \"model_kind\"), got {model!r}")
    model = dict(model)
    train = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        if key in train_keys:
            train[key] = value
        elif key in model_keys or key in _MODEL_FLAGS:
            model[_MODEL_FLAGS.get(key, key)] = value
        elif key == "vocab_size":  # written by a checkpoint's model config: not a setting
            continue
        else:
            raise _UsageError(f"--config: {path} has an unknown setting {key!r} (training: "
                              f"{sorted(train_keys)}; model: {sorted(model_keys)})")
    bad_model = sorted(set(model) - model_keys - {"vocab_size"})
    if bad_model:
        raise _UsageError(f"--config: {path} has unknown model settings {bad_model}")
    model.pop("vocab_size", None)
    return train, model


def _flag(dest):
    return _FLAG_NAMES.get(dest, "--" + dest.replace("_", "-"))


def train_overrides(args):
    """The settings a parsed ``train`` command asks for: ``{..., 'model': {...}}`` holding only
    what the config file or the flags set. A model flag of the other model kind is an error."""
    train, model = ({}, {}) if "config" not in args else _read_config_file(args.config)
    given = vars(args)
    for dest, key in _TRAIN_FLAGS.items():
        if dest in given:
            train[key] = given[dest]
    if "init_from" in train:
        return _init_from_overrides(args, train, model)
    # A resumed run's kind is the checkpoint's: resolve_resume_config checks its settings.
    kind = train.get("model_kind", None if given.get("resume") else "transformer")
    for dest, key in _MODEL_FLAGS.items():
        if dest in given:
            kinds = _FLAG_KINDS.get(dest, ("transformer",))
            if kind is not None and kind not in kinds:
                raise _UsageError(f"{_flag(dest)} applies only to --model {kinds[0]}, not to "
                                  f"--model {kind}")
            model[key] = given[dest]
    train["model"] = model
    return train


def _init_from_overrides(args, train, model):
    """``train_overrides`` of an --init-from run: the model flags that apply (--dropout, and
    --context as the training window); any flag that would shape a new model, pick another
    tokenizer or warm start, or resume, is an error naming it."""
    given = vars(args)
    source = f"--init-from {train['init_from']}"
    if given.get("resume"):
        raise _UsageError(f"--resume continues OUT's own checkpoint; {source} starts a new run "
                          "from trained weights: give one of them")
    if train.get("init", "random") != "random":
        raise _UsageError(f"--init {train['init']} warm-starts a new model; {source} starts from "
                          "trained weights: give one of them")
    for key in _INIT_FROM_EXCLUDES:
        if key in train:
            raise _UsageError(f"{_flag(key)} cannot be combined with {source}: the model kind "
                              "and the tokenizer are the ones stored there")
    config_keys = dict(model)          # model settings from --config
    for dest in _MODEL_FLAGS:
        if dest in given and dest not in _INIT_FROM_MODEL_FLAGS:
            raise _UsageError(f"{_flag(dest)} sets the shape of a new model; the model of "
                              f"{source} has its own (drop {_flag(dest)})")
    extra = sorted(k for k in config_keys if k not in ("dropout", "context_length"))
    if extra:
        raise _UsageError(f"--config {args.config}: the model settings {extra} shape a new "
                          f"model; the model of {source} has its own")
    out = {}
    if "dropout" in config_keys or "dropout" in given:
        out["dropout"] = given.get("dropout", config_keys.get("dropout"))
    if "context" in given or "context_length" in config_keys:
        train["window"] = given.get("context", config_keys.get("context_length"))
    train["model"] = out
    return train


def _cmd_train(args):
    from .train import TrainConfig, resolve_resume_config, train
    overrides = train_overrides(args)
    out = overrides.get("out", TrainConfig.out)
    init_from = overrides.get("init_from")
    if init_from is not None and not os.path.exists(init_from):
        raise _UsageError(f"--init-from: no such file or folder: {init_from} (give a Hugging "
                          "Face GPT-2 folder or a tinyfw checkpoint)")
    if getattr(args, "resume", False):
        ckpt_path = os.path.join(out, "ckpt.npz")
        if not os.path.exists(ckpt_path):
            raise _UsageError(f"--resume: there is no checkpoint at {ckpt_path} (give the "
                              "run's directory with --out)")
        cfg = resolve_resume_config(ckpt_path, overrides)
    else:
        cfg = TrainConfig.from_dict(overrides)
    result = train(cfg, resume=getattr(args, "resume", False),
                   stop_after=getattr(args, "stop_after", None),
                   quiet=getattr(args, "quiet", False))
    if not getattr(args, "quiet", False) and result["val_loss"] is not None:
        print(f"done: step {result['step']}, val loss {result['val_loss']:.4f} (best "
              f"{result['best_val_loss']:.4f} at step {result['best_step']}), "
              f"{result['elapsed']:.1f} s; checkpoint {result['checkpoint']}, metrics "
              f"{result['metrics']}")
    return 0


# ----------------------------------------------------------------------------------- sample
def _cmd_sample(args):
    from .nn.model_kinds import prompt_limit
    from .sample import encode_prompt, generate_ids, load_model, load_pretrained
    if args.pretrained is not None:
        if not os.path.isdir(args.pretrained):
            what = "no such folder" if not os.path.exists(args.pretrained) else "not a folder"
            raise _UsageError(f"--pretrained: {what}: {args.pretrained} (give a Hugging Face "
                              "GPT-2 folder: config.json, model.safetensors, vocab.json, "
                              "merges.txt)")
        model, tokenizer = load_pretrained(args.pretrained, args.device)
    else:
        ckpt = os.path.join("out", "ckpt.npz") if args.ckpt is None else args.ckpt
        if not os.path.exists(ckpt):
            raise _UsageError(f"--ckpt: no such file: {ckpt}")
        model, tokenizer = load_model(ckpt, args.device)
    ids = encode_prompt(tokenizer, args.prompt)
    ctx = prompt_limit(model)
    if ctx is not None and len(ids) > ctx:
        print(f"note: the prompt has {len(ids)} tokens; the model sees only the last {ctx}",
              file=sys.stderr)
    out = generate_ids(model, ids, args.max_new_tokens, args.temperature, args.top_k,
                       args.seed, args.device, top_p=args.top_p)
    if args.prompt == "":
        out = out[len(ids):]
    text = tokenizer.decode(out)
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()
    return 0


# ------------------------------------------------------------------------------------ bench
def run_bench(argv):
    """Run ``tinyfw.bench`` or the repository's ``bench/run.py`` (whichever exists), lazily:
    the benchmarks import PyTorch and more, which ``train`` and ``sample`` never need."""
    for name in ("tinyfw.bench", "bench.run"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            parts = name.split(".")
            if e.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
                continue  # this location does not exist; try the next
            raise
        if not hasattr(module, "main"):
            continue
        code = module.main(list(argv))
        return 0 if code is None else int(code)
    print("tinyfw bench: the benchmark suite is not available: neither the module "
          "tinyfw.bench nor bench/run.py (run from the repository root) was found",
          file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------- main
def main(argv=None):
    """Entry point; returns the exit status (0 ok, 1 error, 2 usage error, 3 training
    diverged, 130 interrupted)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return run_bench(argv[1:])
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except _UsageError as e:
        print(f"tinyfw {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\ntinyfw {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, FloatingPointError) as e:
        if os.environ.get("TINYFW_DEBUG"):
            raise
        print(f"tinyfw {args.command}: error: {e}", file=sys.stderr)
        # train.TrainingDiverged carries its own status (the module is not imported here).
        return getattr(e, "exit_code", EXIT_ERROR)


__all__ = ["main", "build_parser", "train_overrides"]
