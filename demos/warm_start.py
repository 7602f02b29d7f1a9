"""Warm starts against cold starts, measured with ``tinyfw train`` itself: validation perplexity
against steps, wall-clock and data size, over several seeds.

    python demos/warm_start.py                                  # built-in corpus, the full grid
    python demos/warm_start.py --corpus shakespeare
    python demos/warm_start.py --quick                          # a smoke run (a minute or two)
    python demos/warm_start.py --report demos/results/warm_start_builtin.json   # tables again

Every run is ``tinyfw.train.train(TrainConfig(...))``, the function behind ``tinyfw train``, on
the same word-level tokens (``--tokenizer word --vocab-size``), so what is measured here is what a
user gets from the command line:

* models (``--models``): ``safu``, a ``SAFULanguageModel`` (one SAFU layer over token vectors),
  and ``transformer``, a ``LanguageModel`` with softmax attention whose width is chosen so that
  its parameter count is within 10% of the SAFU model's (the same parameter budget);
* warm starts (``--inits``): ``random`` (the cold start), ``cipher``, ``cooc`` and ``explicit``
  (``tinyfw train --init``);
* data sizes (``--fractions``): the first 5%, 10%, 30% and 100% of the training tokens
  (``--train-fraction``); the validation tokens are the same for every size;
* seeds (``--seeds``): each (model, init, size) runs with every seed; tables give the mean and
  the spread (sample standard deviation) over the seeds.

Each run evaluates before its first step and every ``--eval-every`` steps (``metrics.jsonl``).
The tables report, per (model, init, size): the perplexity before training, the best validation
perplexity over the evaluations (what early stopping keeps), the final one, and the wall-clock
(warm start included) each run needs to reach the cold softmax transformer's best validation
loss at the same size (its mean over seeds), and the warm start's own seconds. Writes
``OUT.json``, ``OUT.md`` and ``OUT.png`` (matplotlib) where OUT is ``--out`` (default
``demos/results/warm_start_<corpus>``); the run directories go to ``--work``.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyfw.checkpoint import load_checkpoint  # noqa: E402
from tinyfw.data.corpora import shared_data_path  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.nn.model_kinds import build_model, model_settings  # noqa: E402
from tinyfw.train import TrainConfig, read_metrics, train  # noqa: E402
from tinyfw.warmstart.init import safu_input_width  # noqa: E402

INITS = ("random", "cipher", "cooc", "explicit")
MODELS = ("safu", "transformer")


# ------------------------------------------------------------------------------------ models
def safu_settings(args):
    return {"context_length": args.context, "d_in": args.d_in, "block": args.block,
            "radial": args.radial, "n_layers": 1}


def count_parameters(kind, settings, vocab_size):
    return build_model(kind, model_settings(kind, settings), vocab_size).num_parameters()


def matched_transformer(args, vocab_size):
    """Transformer settings whose parameter count is closest to the SAFU model's (the width is
    a multiple of the head count)."""
    safu = safu_settings(args)
    safu["d_in"] = safu_input_width(vocab_size, "explicit", args.d_in)
    target = count_parameters("safu", safu, vocab_size)
    best = None
    for width in range(args.n_heads * 2, 1024, args.n_heads):
        settings = {"context_length": args.context, "n_layers": args.n_layers,
                    "n_heads": args.n_heads, "d_model": width}
        n = count_parameters("transformer", settings, vocab_size)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (settings, n)
        if n > target:
            break
    return best[0], target, best[1]


# -------------------------------------------------------------------------------------- runs
def run_one(args, corpus, kind, model, init, fraction, seed):
    """Train one configuration (or read the finished run from ``--work``); returns its record."""
    name = f"{kind}-{init}-{fraction:g}-s{seed}"
    out = os.path.join(args.work, name)
    done = os.path.join(out, "run.json")
    if os.path.exists(done) and not args.fresh:
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    cfg = TrainConfig(data=corpus, tokenizer="word", vocab_size=args.vocab_size, out=out,
                      model_kind=kind, model=model, init=init, train_fraction=fraction,
                      seed=seed, steps=args.steps, eval_every=args.eval_every,
                      eval_iters=args.eval_iters, batch_size=args.batch_size,
                      lr=args.lr if init == "random" else args.warm_lr,
                      warmup=args.warmup if init == "random" else args.warm_warmup,
                      eval_at_start=True, sample_tokens=0)
    start = time.perf_counter()
    result = train(cfg, quiet=True)
    record = {"model": kind, "init": init, "fraction": fraction, "seed": seed,
              "parameters": result["n_params"], "init_seconds": result["init_seconds"],
              "wall_seconds": time.perf_counter() - start,
              "train_tokens": load_checkpoint(result["checkpoint"])["data"]["train_tokens"],
              "metrics": read_metrics(result["metrics"])}
    atomic_write(done, lambda f: json.dump(record, f), mode="w", encoding="utf-8")
    return record


# ----------------------------------------------------------------------------------- summary
def mean_spread(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def summarise(results):
    """Per (model, init, fraction): mean and spread over seeds of the start, best and final
    perplexity, and the time to reach the cold transformer's final loss at that fraction."""
    groups = {}
    for r in results:
        groups.setdefault((r["model"], r["init"], r["fraction"]), []).append(r)
    # The target is the cold transformer's best validation loss (mean over seeds): at small
    # sizes its final loss is that of an overfitted model, which any run reaches early.
    targets = {}
    for (model, init, fraction), runs in groups.items():
        if model == "transformer" and init == "random":
            targets[fraction] = float(np.mean([min(m["val_loss"] for m in r["metrics"])
                                               for r in runs]))
    best = {(r["model"], r["init"], r["fraction"], r["seed"]):
            min(m["val_loss"] for m in r["metrics"]) for r in results}
    rows = []
    for (model, init, fraction), runs in sorted(groups.items(), key=lambda kv: (
            MODELS.index(kv[0][0]), kv[0][2], INITS.index(kv[0][1]))):
        val = [[m["val_loss"] for m in r["metrics"]] for r in runs]
        target = targets.get(fraction)
        reach = []
        for r in runs:
            hit = [m["elapsed_s"] for m in r["metrics"]
                   if target is not None and m["val_loss"] <= target]
            reach.append(hit[0] if hit else None)
        # Paired with the cold run of the same seed: the same training batches and the same
        # validation batches, so the difference is far less noisy than the two means.
        paired = [best[(model, init, fraction, r["seed"])] - best[(model, "random", fraction,
                                                                   r["seed"])]
                  for r in runs if (model, "random", fraction, r["seed"]) in best]
        rows.append({
            "model": model, "init": init, "fraction": fraction, "seeds": len(runs),
            "paired_best_loss_difference": mean_spread(paired) if paired else (None, None),
            "paired_ahead": sum(d < 0 for d in paired),
            "train_tokens": runs[0]["train_tokens"], "parameters": runs[0]["parameters"],
            "start_ppl": mean_spread([math.exp(v[0]) for v in val]),
            "best_ppl": mean_spread([math.exp(min(v)) for v in val]),
            "final_ppl": mean_spread([math.exp(v[-1]) for v in val]),
            "init_seconds": mean_spread([r["init_seconds"] for r in runs]),
            "wall_seconds": mean_spread([r["metrics"][-1]["elapsed_s"] for r in runs]),
            "target_loss": target,
            "reached": sum(t is not None for t in reach),
            "seconds_to_target": mean_spread(reach),
        })
    return rows


def fmt(pair, digits=1):
    mean, spread = pair
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def table(rows, fractions, inits, cell, header):
    """Markdown lines of one table: a row per init with a run, a column per data size, each cell
    ``cell(row)`` (``'-'`` where that size was not run)."""
    lines = ["| init | " + " | ".join(header(f) for f in fractions) + " |",
             "|---" + "|---:" * len(fractions) + "|"]
    for init in inits:
        cells = [next((cell(r) for r in rows if r["init"] == init and r["fraction"] == f), "-")
                 for f in fractions]
        if any(c != "-" for c in cells):
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return lines


def tables(rows, fractions):
    lines = []
    percent = "{:.0%}".format
    for model in MODELS:
        sub = [r for r in rows if r["model"] == model]
        if not sub:
            continue
        tokens = {r["fraction"]: r["train_tokens"] for r in sub}
        lines.append(f"\n### {model} ({sub[0]['parameters']:,} parameters): best validation "
                     "perplexity (mean ± spread over seeds)\n")
        lines += table(sub, fractions, INITS, lambda r: fmt(r["best_ppl"]),
                       lambda f: f"{f:.0%} ({tokens[f]:,} tokens)")
        lines.append(f"\n{model}: best validation loss minus the cold run's of the same seed "
                     "(nats; negative: the warm start is better), mean ± spread; (k/n): seeds "
                     "where the warm start is better\n")
        lines += table(sub, fractions, INITS[1:], lambda r: (
            f"{fmt(r['paired_best_loss_difference'], 3)} ({r['paired_ahead']}/{r['seeds']})"),
            percent)
        for title, key in (("before the first step", "start_ppl"),
                           ("after the last step", "final_ppl")):
            lines.append(f"\n{model}: validation perplexity {title}\n")
            lines += table(sub, fractions, INITS, lambda r: fmt(r[key]), percent)
        lines.append(f"\n{model}: wall-clock seconds (warm start included) to reach the cold "
                     "softmax transformer's best validation loss (mean over seeds); (k/n): runs "
                     "that reached it\n")
        lines += table(sub, fractions, INITS, lambda r: (
            f"{fmt(r['seconds_to_target'])} ({r['reached']}/{r['seeds']})"), percent)
        lines.append(f"\n{model}: seconds of the warm start itself (counting and solving)\n")
        lines += table(sub, fractions, INITS[1:], lambda r: fmt(r["init_seconds"], 2), percent)
    return "\n".join(lines)


def plot(results, rows, fractions, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    models = [m for m in MODELS if any(r["model"] == m for r in results)]
    fig, axes = plt.subplots(len(models), 3, figsize=(16, 4.6 * len(models)), squeeze=False)
    colors = dict(zip(INITS, ("tab:gray", "tab:blue", "tab:green", "tab:red")))
    small = min(fractions)
    for row, model in zip(axes, models):
        for init in INITS:
            runs = [r for r in results if r["model"] == model and r["init"] == init
                    and r["fraction"] == small]
            if not runs:
                continue
            steps = [m["step"] for m in runs[0]["metrics"]]
            ppl = np.exp([[m["val_loss"] for m in r["metrics"]] for r in runs])
            row[0].plot(steps, ppl.mean(axis=0), color=colors[init], label=init)
            row[0].fill_between(steps, ppl.min(axis=0), ppl.max(axis=0), color=colors[init],
                                alpha=0.15)
            for i, r in enumerate(runs):
                row[1].plot([m["elapsed_s"] for m in r["metrics"]],
                            [math.exp(m["val_loss"]) for m in r["metrics"]], color=colors[init],
                            alpha=0.7, label=init if i == 0 else None)
            pts = [(r["fraction"], r["best_ppl"]) for r in rows
                   if r["model"] == model and r["init"] == init]
            row[2].errorbar([p[0] * 100 for p in pts], [p[1][0] for p in pts],
                            yerr=[p[1][1] for p in pts], marker="o", color=colors[init],
                            label=init, capsize=3)
        row[0].set(title=f"{model}: {small:.0%} of the data, mean and range over seeds",
                   xlabel="steps", ylabel="validation perplexity", yscale="log")
        row[1].set(title=f"{model}: {small:.0%} of the data, against wall-clock",
                   xlabel="seconds (warm start included)", ylabel="validation perplexity",
                   yscale="log")
        row[2].set(title=f"{model}: best validation perplexity", xlabel="% of the training data",
                   ylabel="perplexity", xscale="log", yscale="log")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def write_report(saved, out):
    rows = summarise(saved["results"])
    fractions = sorted({r["fraction"] for r in saved["results"]})
    a = saved["args"]
    header = (f"# Warm starts on {a['corpus']} (word level, vocabulary {saved['vocab_size']})\n\n"
              f"`python demos/warm_start.py {saved['command']}`: {a['steps']} steps of "
              f"{a['batch_size']} x {a['context']} tokens, evaluation every {a['eval_every']} "
              f"steps on {a['eval_iters']} fixed batches, seeds {a['seeds']}; cold runs: lr "
              f"{a['lr']}, warm-up {a['warmup']}; warm runs: lr {a['warm_lr']}, warm-up "
              f"{a['warm_warmup']}. {saved['machine']}\n")
    text = header + tables(rows, fractions) + "\n"
    atomic_write(out + ".md", lambda f: f.write(text), mode="w", encoding="utf-8")
    saved["summary"] = rows
    atomic_write(out + ".json", lambda f: json.dump(saved, f, indent=1), mode="w",
                 encoding="utf-8")
    plot(saved["results"], rows, fractions, out + ".png")
    print(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="builtin", help="builtin, shakespeare or a file path")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--inits", default=",".join(INITS))
    p.add_argument("--fractions", default="0.05,0.1,0.3,1.0")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--vocab-size", type=int, default=2000)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--d-in", type=int, default=36, help="SAFU token-vector width")
    p.add_argument("--block", type=int, default=8)
    p.add_argument("--radial", type=int, default=3)
    p.add_argument("--n-layers", type=int, default=2, help="transformer blocks")
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-iters", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of cold runs")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--warm-lr", type=float, default=2e-3, help="peak learning rate after a "
                   "warm start")
    p.add_argument("--warm-warmup", type=int, default=30)
    p.add_argument("--out", default=None)
    p.add_argument("--work", default=None, help="run directories (default runs/warm_start/...)")
    p.add_argument("--fresh", action="store_true", help="rerun finished runs too")
    p.add_argument("--quick", action="store_true", help="small settings for a smoke run (they "
                   "replace the size, step and seed options)")
    p.add_argument("--report", metavar="RESULTS_JSON",
                   help="only rebuild the tables and the plot from a saved results file")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            saved = json.load(f)
        write_report(saved, os.path.splitext(args.report)[0])
        return 0
    command = " ".join(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.vocab_size, args.steps, args.eval_every, args.eval_iters = 300, 10, 5, 2
        args.context, args.seeds, args.fractions = 16, "0,1", "0.05,0.2"
        args.batch_size, args.warmup, args.warm_warmup, args.n_heads = 4, 2, 2, 1
    name = os.path.basename(args.corpus).split(".")[0]
    args.out = args.out or os.path.join("demos", "results", f"warm_start_{name}")
    args.work = args.work or os.path.join("runs", "warm_start", name + ("-quick" if args.quick
                                                                          else ""))
    if args.corpus == "builtin":
        corpus = None
    elif args.corpus == "shakespeare":
        corpus = shared_data_path("tinyshakespeare.txt")
        if corpus is None:
            print("warm_start: tinyshakespeare.txt is not in ../shared/data/ (use --corpus PATH)",
                  file=sys.stderr)
            return 2
        corpus = str(corpus)
    else:
        corpus = args.corpus
    models = args.models.split(",")
    inits = args.inits.split(",")
    bad = sorted(set(models) - set(MODELS)) + sorted(set(inits) - set(INITS))
    if bad:
        print(f"warm_start: unknown models or inits {bad}", file=sys.stderr)
        return 2
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    # The vocabulary size decides both models' shapes: a tiny run reads it. A second one
    # compiles the transformer's kernels, so that no timed run pays for Numba's compilation.
    probe = train(TrainConfig(data=corpus, tokenizer="word", vocab_size=args.vocab_size,
                              out=os.path.join(args.work, "probe"), steps=1, eval_iters=1,
                              batch_size=1, sample_tokens=0, model_kind="safu",
                              model={"context_length": args.context}), quiet=True)
    vocab = probe["tokenizer"].vocab_size
    transformer, safu_params, transformer_params = matched_transformer(args, vocab)
    train(TrainConfig(data=corpus, tokenizer="word", vocab_size=args.vocab_size,
                      out=os.path.join(args.work, "probe"), steps=1, eval_iters=1, batch_size=1,
                      sample_tokens=0, model=transformer), quiet=True)
    print(f"vocabulary {vocab}; SAFU model {safu_params:,} parameters, transformer (width "
          f"{transformer['d_model']}) {transformer_params:,} "
          f"({transformer_params / safu_params - 1:+.1%})", flush=True)
    settings = {"safu": safu_settings(args), "transformer": transformer}
    results = []
    for fraction in fractions:
        for kind in models:
            for init in inits:
                for seed in seeds:
                    r = run_one(args, corpus, kind, settings[kind], init, fraction, seed)
                    results.append(r)
                    ppl = [math.exp(m["val_loss"]) for m in r["metrics"]]
                    print(f"{kind:11s} {fraction:5.0%} {init:8s} seed {seed}: ppl start "
                          f"{ppl[0]:8.1f} best {min(ppl):8.1f} final {ppl[-1]:8.1f} "
                          f"(warm start {r['init_seconds']:.1f} s, run "
                          f"{r['metrics'][-1]['elapsed_s']:.1f} s)", flush=True)
    import platform
    import numba
    machine = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
               f"cores, {numba.get_num_threads()} Numba thread(s) per run, Python "
               f"{platform.python_version()}.")
    saved = {"args": vars(args), "command": command, "vocab_size": vocab, "machine": machine,
             "results": results}
    write_report(saved, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
