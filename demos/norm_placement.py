"""Where the normalisation goes: Pre-LN against Post-LN, with and without learning-rate warm-up,
and RMSNorm against LayerNorm, at depths 2, 6 and 12 (Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture").

    python demos/norm_placement.py                      # built-in corpus, the full grid
    python demos/norm_placement.py --corpus shakespeare # ../shared/data/tinyshakespeare.txt
    python demos/norm_placement.py --quick              # a smoke run (well under a minute)
    python demos/norm_placement.py --report demos/results/norm_placement.json   # tables again

Xiong et al. show that in the original Post-LN Transformer (``x = norm(x + f(x))``) the expected
gradient of the parameters near the output is large at initialisation and does not shrink with
depth, so that Adam without a learning-rate warm-up is unstable, while in the Pre-LN Transformer
(``x = x + f(norm(x))``, a final norm before the output layer) the gradients are of the same
size in every layer and shrink with depth, and training works without warm-up. Gopher (Rae et
al. 2021) uses RMSNorm (no mean subtraction, no bias) instead of LayerNorm. This demo measures,
for every (depth, placement, norm, warm-up, seed):

* **the gradient at initialisation**: the norm of the gradient of each block's parameters (all of
  them, and the two feed-forward weight matrices alone, the quantity of the paper's figure 3),
  from the mean loss over ``--grad-batches`` batches, before any step. It is measured under two
  initialisations: ``xavier``, the paper's (Xavier-uniform linear weights, unit-scale N(0, 1)
  token and position embeddings as in the original Transformer's sqrt(d)-scaled embeddings,
  zero biases, unit gains), and ``gpt2``, tinyfw's own ``LanguageModel`` initialisation
  (N(0, 0.02) weights and embeddings, residual output projections scaled by 1/sqrt(2 L)).
* **training** (under ``--init``, the paper's by default): ``--steps`` AdamW steps with tinyfw's
  own optimiser set-up (``tinyfw.train.build_optimizer``: AdamW, betas (0.9, 0.99), weight decay
  0.1 on matrices, linear warm-up then cosine decay to 1e-4, and ``clip_grad_norm_`` at 1.0 as
  in ``tinyfw train``), on character-level batches of ``--batch-size`` x ``--context``
  (``tinyfw.data.get_batch``; the same batches for every configuration of a seed). "Without
  warm-up" is ``warmup = 0``: the first step already uses the peak learning rate.
  A run whose loss becomes NaN or infinite is recorded as **diverged** and stopped (not
  crashed); a **blow-up** is a rise of the 10-step mean training loss by more than 1 nat above
  its lowest earlier value; a run is **stuck** when its final validation loss is no better than
  the unigram loss (the cross-entropy of the validation characters under the training
  characters' frequencies), i.e. it learned nothing beyond letter frequencies. The bigram loss
  (the previous character's pair counts) is reported beside it as a second reference.
  The validation loss is ``tinyfw.train.estimate_loss`` on ``--eval-iters`` fixed batches.

Tables give mean ± spread (sample standard deviation) over the seeds of the finite values and
the counts of diverged, blown-up and stuck runs. Finished runs are kept in ``--work`` (one JSON
per run) and reused when their settings match, so an interrupted grid continues where it
stopped and more seeds can be added later. Writes ``OUT.json``,
``OUT.md`` and ``OUT.png`` (matplotlib optional) atomically, OUT = ``--out`` (default
``demos/results/norm_placement``).
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyfw import random as tf_random  # noqa: E402
from tinyfw.data import get_batch  # noqa: E402
from tinyfw.data.corpora import shared_data_path  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.nn import init  # noqa: E402
from tinyfw.nn.models import LanguageModel, ModelConfig  # noqa: E402
from tinyfw.nn.utils import clip_grad_norm_  # noqa: E402
from tinyfw.tensor import tensor  # noqa: E402
from tinyfw.train import TrainConfig, build_optimizer, estimate_loss, load_data  # noqa: E402

PLACEMENTS = ("post", "pre")
NORMS = ("layer", "rms")
INITS = ("xavier", "gpt2")
BLOW_UP_NATS = 1.0     # a rise of the smoothed training loss above its earlier minimum
SMOOTH = 10            # steps in the moving mean of the training loss
# The options a saved run in --work must match to be reused (else it is run again).
RUN_SETTINGS = ("init", "d_model", "n_heads", "context", "batch_size", "steps", "lr",
                "eval_every", "eval_iters", "grad_batches")


# ------------------------------------------------------------------------------------ models
def paper_init(model):
    """Xiong et al.'s initialisation, in place: Xavier-uniform linear weights, N(0, 1) token
    and position embeddings (the original Transformer's sqrt(d)-scaled embeddings), zero biases,
    unit gains (the norms' defaults, left as built)."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            init.zeros_(p)
        elif name in ("tok_emb.weight", "pos_emb.weight"):
            init.normal_(p, 0.0, 1.0)
        elif p.ndim == 2:
            init.xavier_uniform_(p)


def build(args, vocab_size, depth, placement, norm, seed, init_kind):
    """The ``LanguageModel`` of one configuration, initialised from ``seed``."""
    tf_random.manual_seed(seed)
    model = LanguageModel(ModelConfig(vocab_size=vocab_size, context_length=args.context,
                                      n_layers=depth, n_heads=args.n_heads,
                                      d_model=args.d_model, norm=norm,
                                      prenorm=placement == "pre"))
    if init_kind == "xavier":
        paper_init(model)
    return model


def gradient_profile(model, ids, args, seed):
    """Per block: the gradient norm of all its parameters and of its two feed-forward weight
    matrices, from the mean loss over ``args.grad_batches`` batches. Returns two lists of
    length ``n_layers`` and the mean loss."""
    rng = np.random.default_rng(10_000 + seed)
    named = list(model.named_parameters())
    sums = {name: 0.0 for name, _ in named}
    total = 0.0
    for _ in range(args.grad_batches):
        x, y = get_batch(ids, args.batch_size, args.context, rng)
        _, loss = model(tensor(x), tensor(y))
        model.zero_grad()
        loss.backward()
        total += loss.item()
        for name, p in named:
            sums[name] = sums[name] + p.grad.numpy() / args.grad_batches
    model.zero_grad()
    depth = model.config.n_layers
    block = [0.0] * depth
    ffn = [0.0] * depth
    for name, g in sums.items():
        if not name.startswith("blocks."):
            continue
        layer = int(name.split(".")[1])
        sq = float(np.sum(np.square(g)))
        block[layer] += sq
        if name.endswith(("mlp.fc.weight", "mlp.proj.weight")):
            ffn[layer] += sq
    return [math.sqrt(v) for v in block], [math.sqrt(v) for v in ffn], total / args.grad_batches


def train_run(model, data, args, warmup, seed):
    """AdamW with tinyfw's optimiser set-up for ``args.steps`` steps; stops at a non-finite
    loss. Returns the per-step training losses, the evaluations and whether it diverged."""
    cfg = TrainConfig(steps=args.steps, warmup=warmup, lr=args.lr, batch_size=args.batch_size,
                      seed=seed)
    optimizer, scheduler = build_optimizer(cfg, model)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    rng = np.random.default_rng(seed)
    losses, evals = [], []
    diverged = False

    def evaluate(step):
        val = estimate_loss(model, data.val_ids, args.batch_size, args.context, args.eval_iters,
                            seed + 2)
        evals.append({"step": step, "val_loss": val if math.isfinite(val) else None})

    # A diverging run overflows on its way to NaN: that is what is being measured, not an
    # error, so NumPy's overflow warnings are silenced here.
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(1, args.steps + 1):
            x, y = get_batch(data.train_ids, args.batch_size, args.context, rng)
            _, loss = model(tensor(x), tensor(y))
            optimizer.zero_grad()
            loss.backward()
            value = loss.item()
            if not math.isfinite(value):
                diverged = True
                break
            clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(value)
            if step % args.eval_every == 0 or step == args.steps:
                evaluate(step)
    if diverged:
        evals.append({"step": len(losses) + 1, "val_loss": None})
    return losses, evals, diverged


def max_rise(losses):
    """The largest rise of the ``SMOOTH``-step mean training loss above its lowest earlier
    value (0 when it never rises)."""
    if len(losses) < SMOOTH + 1:
        return 0.0
    smooth = np.convolve(losses, np.ones(SMOOTH) / SMOOTH, mode="valid")
    return float(np.max(smooth - np.minimum.accumulate(smooth)))


def run_one(args, data, depth, placement, norm, warmup, seed):
    """One configuration (or its saved record from ``--work``); None when ``--only-finished``
    is given and there is no saved record."""
    name = f"d{depth}-{placement}-{norm}-w{warmup}-s{seed}"
    path = os.path.join(args.work, name + ".json")
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    settings["corpus"] = os.path.basename(args.corpus)
    if os.path.exists(path) and not args.fresh:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("settings") == settings:
            return saved
    if args.only_finished:
        return None
    start = time.perf_counter()
    record = {"depth": depth, "placement": placement, "norm": norm, "warmup": warmup,
              "seed": seed, "settings": settings, "gradients": {}}
    for init_kind in INITS:
        model = build(args, data.tokenizer.vocab_size, depth, placement, norm, seed, init_kind)
        block, ffn, loss = gradient_profile(model, data.train_ids, args, seed)
        record["gradients"][init_kind] = {"block": block, "ffn": ffn, "loss": loss}
    model = build(args, data.tokenizer.vocab_size, depth, placement, norm, seed, args.init)
    record["parameters"] = model.num_parameters()
    losses, evals, diverged = train_run(model, data, args, warmup, seed)
    final = evals[-1]["val_loss"]
    record.update({
        "train_losses": losses, "evals": evals, "diverged": diverged,
        "final_val_loss": final,
        "best_val_loss": min((e["val_loss"] for e in evals if e["val_loss"] is not None),
                             default=None),
        "max_rise": max_rise(losses),
        "stuck": final is None or final >= data.unigram_loss,
        "seconds": time.perf_counter() - start})
    atomic_write(path, lambda f: json.dump(record, f), mode="w", encoding="utf-8")
    return record


# ------------------------------------------------------------------------------------- data
def unigram_loss(train_ids, val_ids, vocab_size):
    """Cross-entropy (nats) of the validation tokens under the training tokens' frequencies
    (add-one smoothed): what a model that ignores the context can reach."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val_ids].mean())


def bigram_loss(train_ids, val_ids, vocab_size):
    """Cross-entropy (nats) of each validation token given the previous one under the training
    tokens' pair counts (add-one smoothed): a reference for how much of the context a model
    uses after a short run."""
    counts = np.ones((vocab_size, vocab_size))
    np.add.at(counts, (train_ids[:-1].astype(np.int64), train_ids[1:].astype(np.int64)), 1.0)
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    return float(-logp[val_ids[:-1].astype(np.int64), val_ids[1:].astype(np.int64)].mean())


def corpus_path(name):
    """``None`` for the built-in corpus, the shared Tiny Shakespeare, or a file path."""
    if name == "builtin":
        return None
    if name == "shakespeare":
        path = shared_data_path("tinyshakespeare.txt")
        if path is None:
            raise SystemExit("norm_placement: tinyshakespeare.txt is not in ../shared/data/ "
                             "(use --corpus builtin or --corpus PATH)")
        return str(path)
    if not os.path.isfile(name):
        raise SystemExit(f"norm_placement: --corpus {name!r} is neither 'builtin', "
                         "'shakespeare' nor an existing file")
    return name


# ---------------------------------------------------------------------------------- summary
def mean_spread(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return [None, None]
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def summarise(results):
    """One row per (depth, placement, norm, warm-up): statistics over seeds."""
    groups = {}
    for r in results:
        groups.setdefault((r["depth"], r["placement"], r["norm"], r["warmup"]), []).append(r)
    rows = []
    for (depth, placement, norm, warmup), runs in sorted(groups.items()):
        grads = {}
        for init_kind in INITS:
            ffn = np.array([r["gradients"][init_kind]["ffn"] for r in runs])
            block = np.array([r["gradients"][init_kind]["block"] for r in runs])
            grads[init_kind] = {"ffn_mean": ffn.mean(axis=0).tolist(),
                                "block_mean": block.mean(axis=0).tolist(),
                                "ffn_last_over_first": mean_spread(
                                    (ffn[:, -1] / ffn[:, 0]).tolist())}
        rows.append({
            "depth": depth, "placement": placement, "norm": norm, "warmup": warmup,
            "seeds": len(runs), "parameters": runs[0]["parameters"],
            "final_val_loss": mean_spread([r["final_val_loss"] for r in runs]),
            "best_val_loss": mean_spread([r["best_val_loss"] for r in runs]),
            "diverged": sum(r["diverged"] for r in runs),
            "blew_up": sum(r["max_rise"] > BLOW_UP_NATS for r in runs),
            "stuck": sum(r["stuck"] for r in runs),
            "max_rise": mean_spread([r["max_rise"] for r in runs]),
            "gradients": grads})
    return rows


def fmt(pair, digits=3):
    mean, spread = pair
    return "-" if mean is None else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def label(placement, norm, warmup):
    return (f"{'Pre' if placement == 'pre' else 'Post'}-{'LN' if norm == 'layer' else 'RMS'}, "
            f"{'warm-up ' + str(warmup) if warmup else 'no warm-up'}")


def tables(saved, rows):
    a = saved["args"]
    depths = sorted({r["depth"] for r in rows})
    configs = sorted({(r["placement"], r["norm"], r["warmup"]) for r in rows},
                     key=lambda c: (PLACEMENTS.index(c[0]), NORMS.index(c[1]), c[2]))
    lines = [f"\n## Final validation loss (nats; mean ± spread over seeds; unigram loss "
             f"{saved['unigram_loss']:.3f}, bigram loss {saved.get('bigram_loss', float('nan')):.3f}, "
             f"uniform {math.log(saved['vocab_size']):.3f})\n",
             "(d/b/s): diverged (NaN), blew up (smoothed loss rose > 1 nat), stuck (final loss "
             "no better than the unigram loss), out of the seeds\n",
             "| configuration | " + " | ".join(f"depth {d}" for d in depths) + " |",
             "|---" + "|---:" * len(depths) + "|"]
    for c in configs:
        cells = []
        for d in depths:
            r = next((r for r in rows if (r["placement"], r["norm"], r["warmup"]) == c
                      and r["depth"] == d), None)
            cells.append("-" if r is None else f"{fmt(r['final_val_loss'])} "
                         f"({r['diverged']}/{r['blew_up']}/{r['stuck']} of {r['seeds']})")
        lines.append(f"| {label(*c)} | " + " | ".join(cells) + " |")
    deepest = max(depths)
    warm0 = min(r["warmup"] for r in rows)
    for init_kind in INITS:
        lines.append(f"\n## Gradient norm of each layer's feed-forward weights at initialisation "
                     f"(depth {deepest}, init {init_kind}, mean over seeds)\n")
        lines.append("| placement, norm | " + " | ".join(
            f"L{i + 1}" for i in range(deepest)) + " | last / first |")
        lines.append("|---" + "|---:" * (deepest + 1) + "|")
        for placement in PLACEMENTS:
            for norm in NORMS:
                r = next((r for r in rows if r["depth"] == deepest and r["warmup"] == warm0
                          and r["placement"] == placement and r["norm"] == norm), None)
                if r is None:
                    continue
                g = r["gradients"][init_kind]
                lines.append(f"| {placement.capitalize()}-{'LN' if norm == 'layer' else 'RMS'} | "
                             + " | ".join(f"{v:.3g}" for v in g["ffn_mean"])
                             + f" | {fmt(g['ffn_last_over_first'], 2)} |")
    return "\n".join(lines)


def plot(saved, rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return False
    results = saved["results"]
    depths = sorted({r["depth"] for r in rows})
    deepest = max(depths)
    warm0 = min(r["warmup"] for r in rows)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    colors = {("post", "layer"): "tab:red", ("post", "rms"): "tab:orange",
              ("pre", "layer"): "tab:blue", ("pre", "rms"): "tab:cyan"}
    for (placement, norm), color in colors.items():
        r = next((r for r in rows if r["depth"] == deepest and r["warmup"] == warm0
                  and r["placement"] == placement and r["norm"] == norm), None)
        if r is None:
            continue
        name = f"{placement.capitalize()}-{'LN' if norm == 'layer' else 'RMS'}"
        layers = np.arange(1, deepest + 1)
        for init_kind, style in zip(INITS, ("-", ":")):
            axes[0].plot(layers, r["gradients"][init_kind]["ffn_mean"], style, marker="o",
                         ms=3, color=color, label=f"{name} ({init_kind} init)")
        for warmup, style in ((w, "-" if w else "--") for w in sorted({x["warmup"] for x in rows})):
            runs = [x for x in results if x["depth"] == deepest and x["placement"] == placement
                    and x["norm"] == norm and x["warmup"] == warmup]
            for i, run in enumerate(runs):
                losses = np.asarray(run["train_losses"])
                if len(losses) >= SMOOTH:
                    smooth = np.convolve(losses, np.ones(SMOOTH) / SMOOTH, mode="valid")
                    axes[1].plot(np.arange(SMOOTH, len(losses) + 1), smooth, style, color=color,
                                 alpha=0.7, label=label(placement, norm, warmup) if i == 0
                                 else None)
            summary = [x for x in rows if x["placement"] == placement and x["norm"] == norm
                       and x["warmup"] == warmup]
            pts = [(x["depth"], x["final_val_loss"]) for x in summary if
                   x["final_val_loss"][0] is not None]
            if pts:
                axes[2].errorbar([p[0] for p in pts], [p[1][0] for p in pts],
                                 yerr=[p[1][1] for p in pts], fmt=style, marker="o",
                                 color=color, capsize=3, label=label(placement, norm, warmup))
    axes[0].set(title=f"gradient norm of each layer's FFN weights at init (depth {deepest})",
                xlabel="layer (1 = next to the input)", ylabel="‖∂L/∂W_ffn‖", yscale="log")
    axes[1].set(title=f"training loss, depth {deepest} ({SMOOTH}-step mean, every seed; "
                "dashed: no warm-up)", xlabel="step", ylabel="loss (nats)")
    axes[1].axhline(saved["unigram_loss"], color="gray", lw=1, ls=":", label="unigram loss")
    axes[2].set(title="final validation loss (mean ± spread; diverged runs left out)",
                xlabel="depth (blocks)", ylabel="loss (nats)", xticks=depths)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return True


def write_report(saved, out):
    rows = summarise(saved["results"])
    a = saved["args"]
    header = (f"# Pre-LN against Post-LN, RMSNorm against LayerNorm ({a['corpus']} corpus, "
              f"character level, vocabulary {saved['vocab_size']})\n\n"
              f"`python demos/norm_placement.py {saved['command']}`: width {a['d_model']}, "
              f"{a['n_heads']} heads, context {a['context']}, {a['steps']} AdamW steps of "
              f"{a['batch_size']} x {a['context']} characters, peak learning rate {a['lr']}, "
              f"warm-up {a['warmups']} steps then cosine decay, gradient clipping 1.0, training "
              f"init {a['init']}, seeds {a['seeds']}; validation loss on {a['eval_iters']} fixed "
              f"batches. {saved['machine']} Wall-clock: {saved['seconds']:.0f} s for this "
              f"invocation; the runs themselves (summed, reused ones included) took "
              f"{sum(r['seconds'] for r in saved['results']):.0f} s.\n")
    missing = saved.get("missing") or []
    if missing:
        header += (f"\n**Partial grid**: {len(missing)} configuration(s) of the command were not "
                   f"run (left out of every table): {', '.join(missing)}.\n")
    text = header + tables(saved, rows) + "\n"
    saved["summary"] = rows
    atomic_write(out + ".json", lambda f: json.dump(saved, f, indent=1), mode="w",
                 encoding="utf-8")
    atomic_write(out + ".md", lambda f: f.write(text), mode="w", encoding="utf-8")
    if plot(saved, rows, out + ".png"):
        print(f"wrote {out}.png")
    print(text)


# ------------------------------------------------------------------------------------- main
def int_list(option, text, minimum):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"norm_placement: {option} takes comma-separated integers, got "
                         f"{text!r}") from None
    if any(v < minimum for v in values):
        raise SystemExit(f"norm_placement: {option} values must be >= {minimum}, got {text!r}")
    return values


def name_list(option, text, known):
    values = text.split(",")
    bad = [v for v in values if v not in known]
    if bad:
        raise SystemExit(f"norm_placement: unknown {option} {bad} (choose from {list(known)})")
    return values


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="builtin", help="builtin, shakespeare or a file path")
    p.add_argument("--depths", default="2,6,12")
    p.add_argument("--placements", default=",".join(PLACEMENTS))
    p.add_argument("--norms", default=",".join(NORMS))
    p.add_argument("--warmups", default="0,30", help="warm-up steps (0: none)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--init", default="xavier", choices=INITS,
                   help="initialisation of the trained models")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-3, help="peak learning rate")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-iters", type=int, default=8)
    p.add_argument("--grad-batches", type=int, default=4,
                   help="batches in the gradient at initialisation")
    p.add_argument("--out", default=None)
    p.add_argument("--work", default=None, help="finished runs (default runs/norm_placement)")
    p.add_argument("--fresh", action="store_true", help="rerun finished runs too")
    p.add_argument("--only-finished", action="store_true",
                   help="run nothing: report the runs already saved in --work (the report "
                   "lists the configurations left out)")
    p.add_argument("--quick", action="store_true", help="depths 1 and 3, one seed, 20 steps of "
                   "8 x 16 characters, width 32 (replaces those options)")
    p.add_argument("--report", metavar="RESULTS_JSON",
                   help="only rebuild the tables and the plot from a saved results file")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            saved = json.load(f)
        write_report(saved, os.path.splitext(args.report)[0])
        return 0
    if args.quick:
        args.depths, args.seeds, args.steps, args.warmups = "1,3", "0", 20, "0,5"
        args.d_model, args.n_heads, args.context, args.batch_size = 32, 2, 16, 8
        args.eval_every, args.eval_iters, args.grad_batches = 10, 2, 2
    for name in ("d_model", "n_heads", "context", "batch_size", "steps", "eval_every",
                 "eval_iters", "grad_batches"):
        if getattr(args, name) < 1:
            raise SystemExit(f"norm_placement: --{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    if not args.lr > 0:
        raise SystemExit(f"norm_placement: --lr must be > 0, got {args.lr}")
    if args.d_model % args.n_heads:
        raise SystemExit(f"norm_placement: --d-model {args.d_model} is not divisible by "
                         f"--n-heads {args.n_heads}")
    depths = int_list("--depths", args.depths, 1)
    warmups = int_list("--warmups", args.warmups, 0)
    seeds = int_list("--seeds", args.seeds, 0)
    if max(warmups) > args.steps:
        raise SystemExit(f"norm_placement: --warmups {args.warmups} exceeds --steps "
                         f"{args.steps}")
    placements = name_list("placements", args.placements, PLACEMENTS)
    norms = name_list("norms", args.norms, NORMS)
    corpus = corpus_path(args.corpus)
    name = os.path.basename(args.corpus).split(".")[0]
    suffix = "" if args.corpus == "builtin" else "_" + name
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "norm_placement" + suffix)
    args.work = args.work or os.path.join("runs", "norm_placement" + suffix
                                          + ("-quick" if args.quick else ""))
    command = " ".join(argv if argv is not None else sys.argv[1:])

    data = load_data(TrainConfig(data=corpus, tokenizer="char"), args.context)
    vocab = data.tokenizer.vocab_size
    data.unigram_loss = unigram_loss(data.train_ids, data.val_ids, vocab)
    start = time.perf_counter()
    results, missing = [], []
    for depth in depths:
        for placement in placements:
            for norm in norms:
                for warmup in warmups:
                    for seed in seeds:
                        r = run_one(args, data, depth, placement, norm, warmup, seed)
                        if r is None:
                            missing.append(f"d{depth}-{placement}-{norm}-w{warmup}-s{seed}")
                            continue
                        results.append(r)
                        final = r["final_val_loss"]
                        print(f"depth {depth:2d} {label(placement, norm, warmup):28s} seed "
                              f"{seed}: final val "
                              f"{'NaN' if final is None else f'{final:.3f}'}"
                              f"{'  DIVERGED' if r['diverged'] else ''}, max rise "
                              f"{r['max_rise']:.2f}, FFN grad last/first (xavier) "
                              f"{r['gradients']['xavier']['ffn'][-1] / r['gradients']['xavier']['ffn'][0]:.2f}"
                              f" ({r['seconds']:.1f} s)", flush=True)
    import numba
    saved = {"args": vars(args), "command": command, "vocab_size": vocab,
             "unigram_loss": data.unigram_loss,
             "bigram_loss": bigram_loss(data.train_ids, data.val_ids, vocab), "seconds": time.perf_counter() - start,
             "machine": (f"Machine: {platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores, {numba.get_num_threads()} Numba thread(s), "
                         f"Python {platform.python_version()}."),
             "missing": missing, "results": results}
    if not results:
        raise SystemExit(f"norm_placement: no finished runs in {args.work}")
    write_report(saved, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
