"""Token mixers on character-level language modelling: the language-modelling comparison of
Schlag, Irie & Schmidhuber (2021), "Linear Transformers Are Secretly Fast Weight Programmers",
at laptop size.

    python demos/mixers_lm.py                   # both corpora, the full grid (~6-7 min, 2 cores)
    python demos/mixers_lm.py --corpus builtin  # one corpus
    python demos/mixers_lm.py --quick           # a smoke run (well under a minute)
    python demos/mixers_lm.py --report demos/results/mixers_lm_builtin.json   # tables again

The same small ``LanguageModel`` (2 pre-norm blocks, 4 heads, context 64) is trained with each
token mixer (``--mixers``):

* ``softmax``: causal softmax attention;
* ``sum-elu``: the sum rule (linear attention) with the ELU + 1 feature map;
* ``sum-favor``: the sum rule with FAVOR+ random features (m = head width, so its feature
  dimension 2m equals DPFP-1's);
* ``sum-dpfp``: the sum rule with DPFP-1 (beside ``sum-favor`` it compares the two feature maps
  at the same size and update rule; beside ``delta-dpfp`` it isolates the update rule);
* ``delta-dpfp``: the delta rule with DPFP-1 and a learned sigmoid write strength beta;
* ``safu``: the self-attentive feed-forward unit as a mixer (tinyfw's adaptation, not in the
  paper).

Every run is ``tinyfw.train.train(TrainConfig(...))``, the function behind ``tinyfw train``
(AdamW, warm-up then cosine decay, gradient clipping, its fixed evaluation batches), with the same
steps, batch and learning rate for every mixer. Parameter counts are matched to the softmax
model's within 5%: the fast-weight mixers have the same projections as softmax attention (the
delta rule adds the beta layer, a fraction of a percent), and the SAFU model's width is chosen so
that its count is the closest to the softmax model's. Each mixer runs with learned position
embeddings and without any (``--positional``), with every seed (``--seeds``); runs with the same
seed see the same training and evaluation batches, so differences between mixers are paired.

Corpora (``--corpus``): ``shakespeare`` is ``../shared/data/tinyshakespeare.txt`` when present
(skipped with a message when not), ``builtin`` is ``tinyfw.data.builtin_corpus()`` (always
there). Each corpus writes ``OUT_<corpus>.json``, ``.md`` and ``.png`` (matplotlib optional), OUT
being ``--out`` (default ``demos/results/mixers_lm``); run folders (checkpoints, metrics) go to
``--work`` (default a temporary folder, removed at the end).
"""
import os
import sys

if __name__ in ("__main__", "__mp_main__"):
    # One thread per process: the runs go to ``--jobs`` worker processes instead, which keeps
    # each core busy with a whole training step (these matrices are too small for BLAS or Numba
    # threads to pay, and on a shared machine their spinning costs more than it gains). Set
    # before NumPy loads OpenBLAS; values in the environment win.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyfw.data import build_tokenizer, builtin_corpus, read_text  # noqa: E402
from tinyfw.data.corpora import shared_data_path  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.nn.model_kinds import build_model, model_settings  # noqa: E402
from tinyfw.train import TrainConfig, read_metrics, train  # noqa: E402

# name -> (registered mixer, mixer_options, description)
MIXERS = {
    "softmax": ("softmax", {}, "softmax attention"),
    "sum-elu": ("linear", {"feature_map": "elu"}, "sum rule, ELU+1: linear attention"),
    "sum-favor": ("linear", {"feature_map": "favor"}, "sum rule, FAVOR+, m = head width"),
    "sum-dpfp": ("linear", {"feature_map": "dpfp", "nu": 1}, "sum rule, DPFP-1"),
    "delta-dpfp": ("delta", {"feature_map": "dpfp", "nu": 1},
                   "delta rule, DPFP-1, learned sigmoid beta"),
    "safu": ("safu", {}, "SAFU, tinyfw's mixer adaptation"),
}
CORPORA = ("shakespeare", "builtin")
POSITIONAL = ("learned", "none")
SHAKESPEARE_FILE = "tinyshakespeare.txt"
MATCH_TOLERANCE = 0.05

DEFAULTS = dict(steps=300, d_model=64, n_layers=2, n_heads=4, context=64, batch_size=16,
                lr=2e-3, eval_every=50, eval_iters=10, seeds=[0, 1, 2])
QUICK = dict(steps=20, d_model=32, n_layers=1, n_heads=4, context=32, batch_size=8, lr=3e-3,
             eval_every=10, eval_iters=2, seeds=[0])


# ------------------------------------------------------------------------------------ corpora
def corpus_source(corpus):
    """``(data, text)`` for ``train``: data is a path, or None for the built-in corpus; None
    when the corpus file is missing."""
    if corpus == "builtin":
        return None, builtin_corpus()
    path = shared_data_path(SHAKESPEARE_FILE)
    if path is None:
        return None
    return str(path), read_text(path)


# ------------------------------------------------------------------------------------- models
def base_settings(args, mixer, positional):
    name, options, _ = MIXERS[mixer]
    return {"context_length": args.context, "n_layers": args.n_layers, "n_heads": args.n_heads,
            "d_model": args.d_model, "mixer": name, "mixer_options": dict(options),
            "positional": positional}


def count_parameters(settings, vocab_size):
    return build_model("transformer", model_settings("transformer", settings),
                       vocab_size).num_parameters()


def matched_settings(args, mixer, positional, vocab_size):
    """The model settings of ``mixer`` whose parameter count is the closest to the softmax
    model's; returns ``(settings, count, softmax_count)``. Attention-like mixers keep the
    width (their projections are the same); SAFU, which has no heads, takes any width."""
    target = count_parameters(base_settings(args, "softmax", positional), vocab_size)
    settings = base_settings(args, mixer, positional)
    if MIXERS[mixer][0] != "safu":
        return settings, count_parameters(settings, vocab_size), target
    best = None
    for width in range(max(4, args.d_model // 2), 2 * args.d_model + 1):
        trial = dict(settings, d_model=width, n_heads=1)
        n = count_parameters(trial, vocab_size)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (trial, n)
        if n > target:
            break
    return best[0], best[1], target


# --------------------------------------------------------------------------------------- runs
def run_one(job):
    """Train one (corpus, mixer, positional, seed); returns its record (metrics included).
    A finished run in the job's folder (``record.json``) is read instead of trained again."""
    done = os.path.join(job["out"], "record.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    cfg = TrainConfig(data=job["data"], tokenizer="char", out=job["out"], model=job["settings"],
                      steps=job["steps"], batch_size=job["batch_size"], lr=job["lr"],
                      eval_every=job["eval_every"], eval_iters=job["eval_iters"],
                      seed=job["seed"], eval_at_start=True, sample_tokens=0)
    result = train(cfg, quiet=True)
    metrics = read_metrics(result["metrics"])
    record = {"corpus": job["corpus"], "mixer": job["mixer"], "positional": job["positional"],
            "seed": job["seed"], "parameters": result["n_params"],
            "d_model": job["settings"]["d_model"],
            "steps": result["step"], "final_val_loss": metrics[-1]["val_loss"],
            "best_val_loss": min(m["val_loss"] for m in metrics),
            "curve": [(m["step"], m["val_loss"]) for m in metrics],
            "train_curve": [(m["step"], m["train_loss"]) for m in metrics],
            "wall_seconds": round(time.perf_counter() - wall_start, 2),
            "cpu_seconds": round(time.process_time() - cpu_start, 2)}
    atomic_write(done, lambda f: json.dump(record, f), mode="w", encoding="utf-8")
    return record


def run_jobs(jobs, n_workers, log):
    """Run the jobs in ``n_workers`` processes (1: in this process); records in job order."""
    records = [None] * len(jobs)

    def done(i, record):
        records[i] = record
        log(f"  {record['corpus']:>11} {record['mixer']:>10} pos={record['positional']:<7} "
            f"seed {record['seed']}: val loss {record['final_val_loss']:.4f}  "
            f"({record['wall_seconds']:.1f} s)")

    if n_workers <= 1:
        for i, job in enumerate(jobs):
            done(i, run_one(job))
        return records
    with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
        for i, record in enumerate(pool.imap(run_one, jobs)):
            done(i, record)
    return records


# ---------------------------------------------------------------------------------- summary
def mean_spread(values):
    values = [float(v) for v in values]
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def summarise(records):
    """Per (mixer, positional): parameters, width, mean and spread over seeds of the final and
    the best validation loss, and the mean validation curve."""
    groups = {}
    for r in records:
        groups.setdefault((r["mixer"], r["positional"]), []).append(r)
    rows = []
    for (mixer, positional), runs in sorted(groups.items(), key=lambda kv: (
            POSITIONAL.index(kv[0][1]), list(MIXERS).index(kv[0][0]))):
        steps = [s for s, _ in runs[0]["curve"]]
        rows.append({
            "mixer": mixer, "positional": positional, "seeds": sorted(r["seed"] for r in runs),
            "parameters": runs[0]["parameters"], "d_model": runs[0]["d_model"],
            "final_val_loss": mean_spread([r["final_val_loss"] for r in runs]),
            "best_val_loss": mean_spread([r["best_val_loss"] for r in runs]),
            "curve_steps": steps,
            "curve_mean": [float(np.mean([r["curve"][i][1] for r in runs]))
                           for i in range(len(steps))],
            "curve_min": [float(min(r["curve"][i][1] for r in runs)) for i in range(len(steps))],
            "curve_max": [float(max(r["curve"][i][1] for r in runs)) for i in range(len(steps))],
        })
    return rows


def paired(records, a, b, positional):
    """Final validation loss of mixer a minus mixer b, seed by seed (same batches)."""
    by = {(r["mixer"], r["seed"]): r["final_val_loss"] for r in records
          if r["positional"] == positional}
    return [by[(a, s)] - by[(b, s)] for (m, s) in sorted(by) if m == a and (b, s) in by]


# The paper's claims, each as (text, the pairs (better, worse) that must hold for it).
CLAIMS = [
    ("the delta rule beats the sum rule (DPFP-1 delta vs ELU+1 sum)", [("delta-dpfp", "sum-elu")]),
    ("the delta rule beats the sum rule with the same feature map (DPFP-1)",
     [("delta-dpfp", "sum-dpfp")]),
    ("DPFP beats FAVOR+ at equal feature dimension (both sum rule)", [("sum-dpfp", "sum-favor")]),
    ("softmax attention is the strongest",
     [("softmax", m) for m in MIXERS if m not in ("softmax", "safu")]),
]


def verdicts(records):
    """For each claim and positional setting: holds (on the mean), how many seeds agree, and the
    mean paired difference; claims whose mixers were not run are left out."""
    present = {(r["mixer"], r["positional"]) for r in records}
    out = []
    for text, pairs in CLAIMS:
        for positional in POSITIONAL:
            usable = [(a, b) for a, b in pairs if (a, positional) in present
                      and (b, positional) in present]
            if len(usable) < len(pairs):     # a claim is checked whole or not at all
                continue
            diffs = {f"{a} - {b}": paired(records, a, b, positional) for a, b in usable}
            holds = all(np.mean(d) < 0 for d in diffs.values())
            seeds = min(sum(x < 0 for x in d) for d in diffs.values())
            n = min(len(d) for d in diffs.values())
            out.append({"claim": text, "positional": positional, "holds": bool(holds),
                        "seeds_agreeing": int(seeds), "seeds": int(n),
                        "mean_differences": {k: float(np.mean(v)) for k, v in diffs.items()}})
    return out


def markdown(corpus, records, rows, args_record, seconds):
    def fmt(row):
        mean, spread = row["final_val_loss"]
        n = len(row["seeds"])
        return f"{mean:.3f} ± {spread:.3f}" + ("" if n == len(args_record["seeds"])
                                                else f" ({n} seed{'s' if n > 1 else ''})")

    cpu = sum(r["cpu_seconds"] for r in records)
    timing = (f"Wall time {seconds:.0f} s in {args_record['jobs']} processes; "
              if seconds is not None else "")
    lines = [f"# Token mixers on character-level language modelling: {corpus} "
             "(demos/mixers_lm.py)", "",
             f"Settings: {args_record['n_layers']} pre-norm blocks, {args_record['n_heads']} heads, "
             f"context {args_record['context']}, d_model {args_record['d_model']} (SAFU: the "
             f"width that matches the parameter count), {args_record['steps']} steps of "
             f"{args_record['batch_size']} x {args_record['context']} characters, AdamW lr "
             f"{args_record['lr']:g} (warm-up then cosine, `tinyfw.train`), seeds "
             f"{args_record['seeds']}; validation loss (nats per character) on the last 10% of "
             f"the corpus, {args_record['eval_iters']} fixed batches; mean ± sample standard "
             f"deviation over seeds. {timing}{cpu:.0f} CPU seconds over {len(records)} runs "
             f"(about {cpu / 2 / 60:.1f} minutes on 2 quiet cores).", "",
             "| mixer | parameters | vs softmax | d_model | final val loss, learned positions "
             "| final val loss, no positions |", "|---|---|---|---|---|---|"]
    by = {(r["mixer"], r["positional"]): r for r in rows}
    for mixer in MIXERS:
        cells = [by.get((mixer, p)) for p in POSITIONAL]
        first = next((c for c in cells if c is not None), None)
        if first is None:
            continue
        ref = by.get(("softmax", first["positional"]))
        ratio = (f"{100 * (first['parameters'] / ref['parameters'] - 1):+.1f}%"
                 if ref else "-")
        lines.append(f"| {mixer} ({MIXERS[mixer][2]}) | {first['parameters']:,} | {ratio} | "
                     f"{first['d_model']} | "
                     + " | ".join(fmt(c) if c else "-" for c in cells) + " |")
    grid = len(MIXERS) * len(POSITIONAL) * len(args_record["seeds"])
    if len(records) < grid:
        lines += ["", f"**Partial grid**: {len(records)} of the {grid} runs of the full grid are "
                  "here (the others did not finish in the time this run had); a cell with "
                  "fewer seeds says how many, a missing cell is '-', and a claim is checked only "
                  "where all its mixers ran."]
    lines += ["", "Parameter counts are those with learned positions (no positions: "
              f"{args_record['context']} x d_model fewer).", "",
              "## The paper's ordering, checked here", "",
              "| claim | positions | holds on the mean | seeds agreeing | mean paired difference "
              "(nats) |", "|---|---|---|---|---|"]
    checked = verdicts(records)
    for v in checked:
        diffs = ", ".join(f"{k}: {d:+.3f}" for k, d in v["mean_differences"].items())
        lines.append(f"| {v['claim']} | {v['positional']} | {'yes' if v['holds'] else 'no'} | "
                     f"{v['seeds_agreeing']}/{v['seeds']} | {diffs} |")
    lines += ["", PAPER, "", "Here: " + verdict_sentence(checked)]
    return "\n".join(lines) + "\n"


PAPER = ("What the paper reports (Schlag, Irie & Schmidhuber 2021, WikiText-103 word-level "
         "language modelling, much larger models and much longer training): the delta rule "
         "improves on the sum rule, the DPFP feature map does better than FAVOR+'s random "
         "features at the same feature dimension, and softmax attention keeps the lowest "
         "perplexity of all. This demo is far smaller (characters, 2 layers, a few hundred "
         "steps), so its differences say which mixer learns fastest at this size; a 'yes' "
         "needs the mean paired difference below zero, and the seeds column says how "
         "consistently.")


def verdict_sentence(checked):
    """One sentence per claim: holds with both position settings, with one, or with none."""
    parts = []
    for text, _ in CLAIMS:
        rows = [v for v in checked if v["claim"] == text]
        if not rows:
            continue
        held = [v["positional"] for v in rows if v["holds"]]
        seeds = ", ".join(f"{v['seeds_agreeing']}/{v['seeds']} seeds with positions "
                          f"{v['positional']}" for v in rows)
        if len(held) == len(rows):
            verdict = "holds"
        elif held:
            verdict = f"holds only with positions {held[0]}"
        else:
            verdict = "does not hold"
        parts.append(f"{text[0].upper() + text[1:]}: {verdict} ({seeds}).")
    return " ".join(parts)


def plot(corpus, rows, path):
    """Validation loss against steps, one panel per positional setting, the band the seeds'
    range."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    panels = [p for p in POSITIONAL if any(r["positional"] == p for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False,
                             sharey=True)
    for ax, positional in zip(axes[0], panels):
        for r in rows:
            if r["positional"] != positional:
                continue
            line, = ax.plot(r["curve_steps"], r["curve_mean"], label=r["mixer"])
            ax.fill_between(r["curve_steps"], r["curve_min"], r["curve_max"],
                            color=line.get_color(), alpha=0.15)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_title(f"{corpus}, positions: {positional}")
        finals = [r["curve_mean"][-1] for r in rows if r["positional"] == positional]
        ax.set_ylim(min(finals) - 0.2, max(finals) + 1.0)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True


def save(corpus, records, args_record, seconds, out):
    """Write OUT_<corpus>.json, .md and .png; returns the summary rows."""
    rows = summarise(records)
    path = f"{out}_{corpus}"
    complete = len(records) == len({(r["mixer"], r["positional"]) for r in records}) * len(
        args_record["seeds"]) and len(rows) == len(MIXERS) * len(POSITIONAL)
    report = {"corpus": corpus, "settings": args_record, "complete_grid": complete,
              "wall_seconds": None if seconds is None else round(seconds, 1),
              "cpu_seconds": round(sum(r["cpu_seconds"] for r in records), 1),
              "summary": rows, "verdicts": verdicts(records), "runs": records}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path + ".json", lambda f: json.dump(report, f, indent=1), mode="w",
                 encoding="utf-8")
    text = markdown(corpus, records, rows, args_record, seconds)
    atomic_write(path + ".md", lambda f: f.write(text), mode="w", encoding="utf-8")
    print("\n" + text)
    if plot(corpus, rows, path + ".png"):
        print(f"written {path}.json, .md and .png")
    return rows


# -------------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", nargs="+", choices=CORPORA, default=None,
                   help="corpora to run (default: both; shakespeare is skipped with a message "
                        "when ../shared/data/tinyshakespeare.txt is missing)")
    p.add_argument("--mixers", nargs="+", choices=list(MIXERS), default=None,
                   help="mixers to compare (default: all)")
    p.add_argument("--positional", nargs="+", choices=POSITIONAL, default=None,
                   help="position embeddings: learned, none (default: both)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: tiny model, 20 steps, one seed, built-in corpus")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--n-layers", type=int, default=None)
    p.add_argument("--n-heads", type=int, default=None)
    p.add_argument("--context", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-iters", type=int, default=None)
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes, one run each at a time (default: 2, or 1 with "
                        "--quick)")
    p.add_argument("--out", default=None,
                   help="output prefix (default demos/results/mixers_lm): writes "
                        "OUT_<corpus>.json, .md, .png")
    p.add_argument("--work", default=None,
                   help="folder for the run folders (default: a temporary one, removed after); "
                        "finished runs found there are reused, so an interrupted grid resumes")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: report the runs of the grid already finished in --work "
                        "(an interrupted grid's partial results)")
    p.add_argument("--report", nargs="+", metavar="RESULTS_JSON",
                   help="rewrite the Markdown and plot of saved results without training")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.jobs is None:
        args.jobs = 1 if args.quick else 2
    if args.corpus is None:
        args.corpus = ["builtin"] if args.quick else list(CORPORA)
    args.mixers = args.mixers or list(MIXERS)
    args.positional = args.positional or (["learned"] if args.quick else list(POSITIONAL))
    problems = [f"--{k.replace('_', '-')} {getattr(args, k)} must be >= 1"
                for k in ("steps", "d_model", "n_layers", "n_heads", "context", "batch_size",
                          "eval_every", "eval_iters", "jobs") if getattr(args, k) < 1]
    if not (math.isfinite(args.lr) and args.lr > 0):
        problems.append(f"--lr {args.lr} must be a positive number")
    if args.d_model % args.n_heads:
        problems.append(f"--d-model {args.d_model} must be a multiple of --n-heads "
                        f"{args.n_heads}")
    elif args.d_model // args.n_heads < 2:
        problems.append(f"--d-model {args.d_model} / --n-heads {args.n_heads} leaves heads "
                        "narrower than 2 (DPFP needs nu < head width)")
    if args.collect and args.work is None:
        problems.append("--collect needs --work, the folder of the finished runs")
    if problems:
        p.error("; ".join(problems))
    if args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                "mixers_lm" + ("_quick" if args.quick else ""))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        for path in args.report:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            save(report["corpus"], report["runs"], report["settings"], report["wall_seconds"],
                 os.path.splitext(path)[0].rsplit("_", 1)[0])
        return None
    record = {k: getattr(args, k) for k in ("steps", "d_model", "n_layers", "n_heads",
                                             "context", "batch_size", "lr", "eval_every",
                                             "eval_iters", "seeds", "jobs", "quick")}
    work = args.work or tempfile.mkdtemp(prefix="mixers_lm_")
    summaries = {}
    try:
        for corpus in args.corpus:
            source = corpus_source(corpus)
            if source is None:
                print(f"mixers_lm: skipping the {corpus} corpus: ../shared/data/"
                      f"{SHAKESPEARE_FILE} is not there (put Tiny Shakespeare there to run it; "
                      "the built-in corpus needs nothing)")
                continue
            data, text = source
            vocab_size = build_tokenizer("char", text).vocab_size
            print(f"{corpus}: {len(text):,} characters, {vocab_size} symbols")
            cells = []
            for positional in args.positional:
                for mixer in args.mixers:
                    settings, n, target = matched_settings(args, mixer, positional, vocab_size)
                    print(f"  {mixer:>10} pos={positional:<7} d_model {settings['d_model']:>3}: "
                          f"{n:,} parameters ({100 * (n / target - 1):+.1f}% vs softmax "
                          f"{target:,})")
                    if abs(n / target - 1) > MATCH_TOLERANCE:
                        raise SystemExit(f"mixers_lm: {mixer} has {n:,} parameters, more than "
                                         f"{MATCH_TOLERANCE:.0%} from softmax's {target:,}")
                    cells.append((mixer, positional, settings))
            # Seed by seed: a grid cut short still has every cell, with fewer seeds.
            jobs = [{"corpus": corpus, "data": data, "mixer": mixer, "positional": positional,
                     "seed": seed, "settings": settings,
                     "out": os.path.join(work, f"{corpus}-{mixer}-{positional}-s{seed}"),
                     **{k: getattr(args, k) for k in ("steps", "batch_size", "lr", "eval_every",
                                                      "eval_iters")}}
                    for seed in args.seeds for mixer, positional, settings in cells]
            if args.collect:
                jobs = [j for j in jobs if os.path.exists(os.path.join(j["out"], "record.json"))]
                print(f"{corpus}: {len(jobs)} finished runs in {work}")
                if not jobs:
                    continue
            start = time.perf_counter()
            records = run_jobs(jobs, args.jobs, print)
            seconds = None if args.collect else time.perf_counter() - start
            summaries[corpus] = save(corpus, records, record, seconds, args.out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return summaries


if __name__ == "__main__":
    main()
