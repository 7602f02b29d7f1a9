"""Warm starts vs a cold start: validation perplexity against steps and against data size.

    python demos/warm_start.py                                  # built-in corpus, SAFU model
    python demos/warm_start.py --corpus shakespeare --model both --steps 600
    python demos/warm_start.py --quick                           # a couple of minutes

The same model is trained from several initialisations (``tinyfw.warmstart``):

* ``random``          random token vectors and weights, then Adam (the cold start);
* ``cipher``          bit-cipher token vectors, random weights, then Adam;
* ``cooc``            [cipher; causal co-occurrence] token vectors, random weights, then Adam;
* ``explicit``        cipher vectors and the explicit (closed-form) solutions, no backprop at all
                      (flat in the steps plot: it is the step-0 value of the next one);
* ``explicit+adam``   the explicit solutions, then Adam;
* ``cooc-explicit+adam``  co-occurrence vectors, explicit solutions, then Adam.

Models (``--model``): ``safu`` is a one-layer ``SAFULanguageModel`` (block, radial and document
contexts over the token vectors; the explicit training of ``explicit_training.py``); ``transformer``
is a small ``LanguageModel`` (softmax attention) warm-started with ``init_language_model`` (the
explicit output layer is the bigram solution projected on its features). In every Adam run the
token vectors are trained too, so all runs train the same parameters from different starting
points.

Data: a word-level tokenisation (lower-cased words and punctuation; the ``--vocab`` - 1 most
frequent training words, the rest mapped to ``<unk>``, id 0) of the built-in corpus
(``tinyfw.data.builtin_corpus()``, Python's pydoc topics) or ``../shared/data/tinyshakespeare.txt``.
The last 10% of the tokens is the validation set; the models are trained on the first 10%, 30%
and 100% of the rest (``--fractions``). Validation perplexity is ``exp`` of the mean
cross-entropy over all validation windows (``--val-tokens`` tokens).

Writes ``OUT/results.json``, ``OUT/results.md`` (the tables) and, with matplotlib,
``OUT/warm_start.png``.
"""
import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw as fw  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.nn.safu import SAFULanguageModel  # noqa: E402
from tinyfw.warmstart.explicit_training import (evaluate_loss, fine_tune,  # noqa: E402
                                                stream_windows)
from tinyfw.warmstart.init import init_language_model  # noqa: E402

SAFU_METHODS = ["random", "cipher", "cooc", "explicit", "explicit+adam", "cooc-explicit+adam"]
WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


# ------------------------------------------------------------------------------------ data
def load_text(name):
    if name == "builtin":
        from tinyfw.data.corpora import builtin_corpus
        return builtin_corpus()
    if name == "shakespeare":
        from tinyfw.data.corpora import read_text, shared_data_path
        path = shared_data_path("tinyshakespeare.txt")
        if path is None:
            raise SystemExit("tinyshakespeare.txt not found in ../shared/data/")
        return read_text(path)
    from tinyfw.data.corpora import read_text
    return read_text(name)


def word_ids(text, vocab_size, val_fraction=0.1):
    """(train ids, val ids, vocabulary): words of the text, vocabulary from the training part."""
    words = WORD.findall(text.lower())
    if not words:
        raise SystemExit("the corpus has no words (empty corpus)")
    n_val = int(len(words) * val_fraction)
    train_words, val_words = words[:-n_val], words[-n_val:]
    counts = Counter(train_words)
    vocab = ["<unk>"] + [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                         [:vocab_size - 1]]
    index = {w: i for i, w in enumerate(vocab)}
    encode = lambda ws: np.array([index.get(w, 0) for w in ws], dtype=np.int64)  # noqa: E731
    return encode(train_words), encode(val_words), vocab


# ------------------------------------------------------------------------------------ models
def make_model(kind, vocab_size, args):
    if kind == "safu":
        return SAFULanguageModel(vocab_size, args.bits, n_layers=1, block=args.block,
                                 radial=args.radial, use_document=True, hidden=None,
                                 freeze_embedding=False)
    from tinyfw.nn.models import LanguageModel, ModelConfig
    return LanguageModel(ModelConfig(vocab_size=vocab_size, context_length=args.context,
                                     n_layers=2, n_heads=4, d_model=args.d_model, mlp_ratio=4))


def initialise(kind, model, method, train_ids, args):
    """Apply one warm start; returns (report, whether Adam follows)."""
    adam = method not in ("explicit",)
    if method in ("random", "cipher", "cooc"):
        return init_language_model(model, train_ids, method, window=args.window), adam
    embedding = "cooc" if method.startswith("cooc") else "cipher"
    if kind == "safu":
        report = init_language_model(model, train_ids, "explicit", embedding=embedding,
                                     window=args.window, rounds=args.rounds, eps=args.eps,
                                     max_tokens=args.explicit_tokens)
    else:
        report = init_language_model(model, train_ids, "explicit", embedding=embedding,
                                     window=args.window, max_tokens=args.explicit_tokens)
    return report, adam


def run_one(kind, method, train_ids, val, args):
    fw.manual_seed(args.seed)
    V = args.vocab
    model = make_model(kind, V, args)
    start = time.time()
    report, adam = initialise(kind, model, method, train_ids, args)
    init_seconds = time.time() - start
    X, T = stream_windows(train_ids, args.context)
    Xv, Tv = val
    evaluate = lambda m: evaluate_loss(m, Xv, Tv, batch_size=64)  # noqa: E731
    start = time.time()
    if adam:
        history = fine_tune(model, X, T, steps=args.steps, batch_size=args.batch, lr=args.lr,
                            eval_every=args.eval_every, eval_fn=evaluate, seed=args.seed)
    else:
        loss = evaluate(model)
        history = {"steps": list(range(0, args.steps + 1, args.eval_every)),
                   "eval": [loss] * len(range(0, args.steps + 1, args.eval_every))}
    train_seconds = time.time() - start
    return {"model": kind, "method": method, "train_tokens": int(len(train_ids)),
            "steps": history["steps"], "val_ppl": [math.exp(v) for v in history["eval"]],
            "init": {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                     for k, v in report.items()},
            "init_seconds": init_seconds, "train_seconds": train_seconds,
            "parameters": model.num_parameters()}


# ------------------------------------------------------------------------------------ report
def tables(results, fractions):
    lines = []
    for kind in sorted({r["model"] for r in results}):
        rs = [r for r in results if r["model"] == kind]
        methods = [m for m in SAFU_METHODS if any(r["method"] == m for r in rs)]
        lines.append(f"\n### {kind}: validation perplexity vs steps\n")
        for frac in fractions:
            sub = [r for r in rs if r["fraction"] == frac]
            if not sub:
                continue
            steps = sub[0]["steps"]
            lines.append(f"\n{int(frac * 100)}% of the training data "
                         f"({sub[0]['train_tokens']} tokens)\n")
            lines.append("| method | " + " | ".join(f"step {s}" for s in steps) + " |")
            lines.append("|---" * (len(steps) + 1) + "|")
            for m in methods:
                r = next((r for r in sub if r["method"] == m), None)
                if r:
                    lines.append(f"| {m} | " + " | ".join(f"{p:.1f}" for p in r["val_ppl"])
                                 + " |")
        lines.append(f"\n### {kind}: final validation perplexity vs data size\n")
        lines.append("| method | " + " | ".join(f"{int(f * 100)}%" for f in fractions) + " |")
        lines.append("|---" * (len(fractions) + 1) + "|")
        for m in methods:
            row = []
            for f in fractions:
                r = next((r for r in rs if r["method"] == m and r["fraction"] == f), None)
                row.append(f"{r['val_ppl'][-1]:.1f}" if r else "-")
            lines.append(f"| {m} | " + " | ".join(row) + " |")
        lines.append(f"\n### {kind}: best validation perplexity over the evaluated steps "
                     "(what early stopping would keep)\n")
        lines.append("| method | " + " | ".join(f"{int(f * 100)}%" for f in fractions) + " |")
        lines.append("|---" * (len(fractions) + 1) + "|")
        for m in methods:
            row = []
            for f in fractions:
                r = next((r for r in rs if r["method"] == m and r["fraction"] == f), None)
                if r:
                    best = int(np.argmin(r["val_ppl"]))
                    row.append(f"{r['val_ppl'][best]:.1f} (step {r['steps'][best]})")
                else:
                    row.append("-")
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results, fractions, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    kinds = sorted({r["model"] for r in results})
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 4.5 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds):
        rs = [r for r in results if r["model"] == kind]
        methods = [m for m in SAFU_METHODS if any(r["method"] == m for r in rs)]
        full = max(fractions)
        for m in methods:
            r = next((r for r in rs if r["method"] == m and r["fraction"] == full), None)
            if r:
                row[0].plot(r["steps"], r["val_ppl"], marker="o", label=m)
            pts = [(f, next(r for r in rs if r["method"] == m and r["fraction"] == f)
                    ["val_ppl"][-1]) for f in fractions
                   if any(r["method"] == m and r["fraction"] == f for r in rs)]
            row[1].plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=m)
        row[0].set(title=f"{kind}: {int(full * 100)}% data", xlabel="Adam steps",
                   ylabel="validation perplexity", yscale="log")
        row[1].set(title=f"{kind}: after the last step", xlabel="% of training data",
                   ylabel="validation perplexity", yscale="log")
        for ax in row:
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="builtin", help="builtin, shakespeare or a file path")
    p.add_argument("--model", default="safu", choices=["safu", "transformer", "both"])
    p.add_argument("--methods", default=",".join(SAFU_METHODS))
    p.add_argument("--fractions", default="0.1,0.3,1.0")
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--bits", type=int, default=36,
                   help="SAFU token-vector width (cooc: [cipher; 2 offsets], bits/3 each)")
    p.add_argument("--window", type=int, default=2, help="co-occurrence window (causal)")
    p.add_argument("--block", type=int, default=8)
    p.add_argument("--radial", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="explicit attention rounds")
    p.add_argument("--eps", type=float, default=0.1, help="explicit solution count smoothing")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--val-tokens", type=int, default=20000)
    p.add_argument("--explicit-tokens", type=int, default=300000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "warm_start"))
    p.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    p.add_argument("--report", metavar="RESULTS_JSON",
                   help="only rebuild the tables and the plot from a saved results.json")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        results = saved["results"]
        fractions = sorted({r["fraction"] for r in results})
        out = os.path.dirname(args.report)
        write_tables(tables(results, fractions), saved["args"]["corpus"],
                     saved["args"]["vocab"], out)
        plot(results, fractions, os.path.join(out, "warm_start.png"))
        return
    if args.quick:
        args.vocab, args.steps, args.eval_every, args.val_tokens = 500, 60, 30, 4000
        args.fractions = "0.1,1.0"
    fractions = [float(f) for f in args.fractions.split(",")]
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(SAFU_METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {SAFU_METHODS}")
    kinds = ["safu", "transformer"] if args.model == "both" else [args.model]

    train_all, val_ids, vocab = word_ids(load_text(args.corpus), args.vocab)
    args.vocab = len(vocab)
    val = stream_windows(val_ids[:args.val_tokens + 1], args.context)
    print(f"corpus {args.corpus}: {len(train_all)} training and {len(val_ids)} validation words, "
          f"vocabulary {len(vocab)} (unk rate in validation "
          f"{np.mean(val_ids == 0):.1%}); validation on {val[0].size} tokens")
    os.makedirs(args.out, exist_ok=True)
    results = []
    for kind in kinds:
        for frac in fractions:
            train_ids = train_all[:max(args.context + 1, int(len(train_all) * frac))]
            for method in methods:
                r = run_one(kind, method, train_ids, val, args)
                r["fraction"] = frac
                results.append(r)
                print(f"{kind:11s} {int(frac * 100):3d}% {method:20s} ppl "
                      + " ".join(f"{v:8.1f}" for v in r["val_ppl"])
                      + f"   (init {r['init_seconds']:.1f}s, train {r['train_seconds']:.1f}s)",
                      flush=True)
    atomic_write(os.path.join(args.out, "results.json"),
                 lambda f: json.dump({"args": vars(args), "results": results}, f, indent=1),
                 mode="w", encoding="utf-8")
    write_tables(tables(results, fractions), args.corpus, args.vocab, args.out)
    plot(results, fractions, os.path.join(args.out, "warm_start.png"))


def write_tables(text, corpus, vocab, out):
    print(text)
    atomic_write(os.path.join(out, "results.md"),
                 lambda f: f.write(f"# Warm starts on {corpus} (word level, vocabulary {vocab})\n"
                                   + text + "\n"), mode="w", encoding="utf-8")


if __name__ == "__main__":
    main()
