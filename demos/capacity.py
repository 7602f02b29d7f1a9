"""The capacity experiment of Schlag, Irie & Schmidhuber (2021), "Linear Transformers Are Secretly
Fast Weight Programmers", section 6.1: how many associations can one fast-weight memory hold?

    python demos/capacity.py                       # the reduced sweep (2 CPU cores: ~tens of min)
    python demos/capacity.py --setting 1 --models elu dpfp1 dpfp2 --keys 20 60 100 140
    python demos/capacity.py --full                # the paper's sweep (days on a CPU)
    python demos/capacity.py --completion          # DPFP-3, FAVOR+ m=192, setting 2 at S=20..80

The task (docs/FAST_WEIGHTS.md). A vocabulary of S keys and S values.
  Setting 1: a sequence of L = S (key, value) pairs, every key exactly once (a random
    permutation) and the values a random bijection; then one query, a key of the sequence; the
    target is its value.
  Setting 2: L = 2S pairs, keys and values drawn with replacement; the target is the value at
    the query key's *last* occurrence, so the memory must overwrite old associations.
The model. Keys -> a trainable embedding of size 2.2 S (N(0, 1) init); values -> fixed one-hot
vectors of size S; per step ``x_t = [onehot(v_t); emb(k_t)]``, ``k_t = phi(W_k x_t)`` with
``W_k x_t`` of size d_key = 64, the value written is ``onehot(v_t)`` itself and, for the delta
rule, ``beta_t = sigmoid(W_beta x_t)``. After the sequence one read with the query
``phi(W_q emb(query key))`` gives ``y_hat`` in R^S. Sum rule: ``y = S^T q / (z . q + eps)``;
delta rule: keys and query sum-normalised, ``y = S^T q``. Softmax attention (setting 1 only)
reads ``softmax(q . k_t / 8) onehot(v_t)``.
Training. Loss ``0.5 |onehot(target) - y_hat|^2`` (0.5 is the loss of predicting zeros), Adam
lr 1e-3, batch 32. Every 100 steps the evaluation loss is measured on fresh sequences with every
key of the sequence queried; a run is *solved* at evaluation loss <= 1e-3 and stops then, or
when the evaluation loss has not improved for ``--patience`` evaluations, or at ``--max-steps``.

What the paper shows: capacity follows the feature dimension. Linear attention (ELU+1, dim 64)
stops solving setting 1 between 40 and 80 keys; DPFP nu = 1, 2, 3 (dims 128, 256, 384) hold up to
about 120, 250 and 350 keys; FAVOR+ never solves it cleanly; softmax solves it throughout. In
setting 2 the sum rule stalls (near loss 0.1) while the delta rule solves it as long as the
number of unique keys stays below the feature dimension.

Model names for ``--models``: ``softmax``, ``elu``, ``dpfpN`` (DPFP with nu = N), ``favorM``
(FAVOR+ with M random features, dim 2M), each optionally followed by ``-sum`` (default) or
``-delta``: ``elu``, ``dpfp2-delta``, ``favor64``.
"""
import argparse
import json
import math
import os
import re
import sys
import time

# The matrices here are small: BLAS threads only add synchronisation (a training step was
# measured 5-10x slower with them on a busy 2-core machine). Set before NumPy loads OpenBLAS;
# an explicit OPENBLAS_NUM_THREADS in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw as fw  # noqa: E402
import tinyfw.nn as nn  # noqa: E402
from tinyfw.nn import init  # noqa: E402
from tinyfw.ops import fast_weights as FW  # noqa: E402
from tinyfw.ops import feature_maps as FM  # noqa: E402
from tinyfw.ops import nn as N  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.optim import Adam  # noqa: E402

D_KEY = 64
REDUCED = {1: (["elu", "dpfp1"], [20, 40, 80]), 2: (["dpfp1", "dpfp1-delta"], [20, 40])}
FULL = {1: (["softmax", "elu", "favor64", "favor128", "favor192", "dpfp1", "dpfp2", "dpfp3"],
            list(range(20, 601, 20))),
        2: (["elu", "dpfp1", "dpfp2", "elu-delta", "dpfp1-delta", "dpfp2-delta"],
            list(range(20, 201, 20)))}
# The configurations that complete the reduced sweep (``--completion``): in setting 1 FAVOR+ with
# m = 192 (dimension 384) beside m = 64 and 128, and DPFP-3 (dimension 384) at 160 keys and at
# 320, where DPFP-2 fails; in setting 2 the sum and the delta rule with DPFP-1 at S = 20 to 80.
COMPLETION = [(1, "favor192", [40, 80]), (2, "dpfp1", [20, 40, 60, 80]),
              (2, "dpfp1-delta", [20, 40, 60, 80]), (1, "dpfp3", [160, 320])]


# ------------------------------------------------------------------------------------ the task

def make_batch(rng, setting, n_keys, batch_size):
    """Sequences and one query each: keys, values (B, L) int, query (B,) int, target (B,) int."""
    B, S = batch_size, n_keys
    if setting == 1:
        keys = np.argsort(rng.random((B, S)), axis=1)            # a permutation per row
        values = np.argsort(rng.random((B, S)), axis=1)          # a random bijection
    else:
        keys = rng.integers(0, S, (B, 2 * S))
        values = rng.integers(0, S, (B, 2 * S))
    L = keys.shape[1]
    query = keys[np.arange(B), rng.integers(0, L, B)]
    # the target is the value at the query's last occurrence (its only one in setting 1)
    last = np.where(keys == query[:, None], np.arange(L), -1).max(axis=1)
    return keys, values, query, values[np.arange(B), last]


def all_queries(keys, values):
    """Every distinct key of each sequence as a query: (B, Q) queries, targets and a mask."""
    B, L = keys.shape
    uniques = [np.unique(row) for row in keys]
    Q = max(len(u) for u in uniques)
    query = np.zeros((B, Q), dtype=np.int64)
    target = np.zeros((B, Q), dtype=np.int64)
    mask = np.zeros((B, Q), dtype=bool)
    for b, u in enumerate(uniques):
        last = np.array([np.nonzero(keys[b] == key)[0][-1] for key in u])
        query[b, :len(u)], target[b, :len(u)], mask[b, :len(u)] = u, values[b, last], True
    return query, target, mask


# ------------------------------------------------------------------------------------ the model

def parse_model(name):
    """'dpfp2-delta' -> ('dpfp', 2, 'delta'); returns (feature_map, arg, update)."""
    m = re.fullmatch(r"(softmax|elu|dpfp(\d+)|favor(\d+))(?:-(sum|delta))?", name)
    if m is None:
        raise ValueError(f"capacity: unknown model {name!r}: use softmax, elu, dpfpN or favorM, "
                         "optionally followed by -sum or -delta")
    base, nu, m_features, update = m.groups()
    if base == "softmax":
        if update == "delta":
            raise ValueError("capacity: softmax attention has no delta rule")
        return "softmax", None, None
    kind = "elu" if base == "elu" else ("dpfp" if nu else "favor")
    arg = int(nu) if nu else (int(m_features) if m_features else None)
    if arg is not None and arg < 1:
        raise ValueError(f"capacity: {name!r} needs a positive number")
    return kind, arg, update or "sum"


def feature_dim(name):
    kind, arg, _ = parse_model(name)
    return {"softmax": None, "elu": D_KEY, "dpfp": 2 * D_KEY * (arg or 1),
            "favor": 2 * (arg or 1)}[kind]


class CapacityModel(nn.Module):
    """One fast-weight memory written with the whole sequence and read once per query."""

    def __init__(self, name, n_keys, embedding_dim=None, dtype=np.float32):
        super().__init__()
        self.name = name
        self.kind, self.arg, self.update = parse_model(name)
        self.n_keys = n_keys
        E = embedding_dim or int(2.2 * n_keys)
        self.embedding = nn.Embedding(n_keys, E, dtype=dtype)          # N(0, 1)
        self.w_k = nn.Linear(n_keys + E, D_KEY, dtype=dtype)
        self.w_q = nn.Linear(E, D_KEY, dtype=dtype)
        bound = 1.0 / math.sqrt(D_KEY)                                  # as the paper's code
        init.uniform_(self.w_k.weight, -bound, bound)
        init.uniform_(self.w_q.weight, -bound, bound)
        if self.update == "delta":
            self.w_beta = nn.Linear(n_keys + E, 1, dtype=dtype)
        self.eye = np.eye(n_keys, dtype=dtype)

    def _phi(self, x, projection):
        if self.kind == "elu":
            return FM.elu_plus_one(x)
        if self.kind == "dpfp":
            return FM.dpfp(x, self.arg)
        return FM.favor_features(x, projection)

    def forward(self, keys, values, query):
        """keys, values (B, L), query (B, Q) int arrays -> y_hat (B, Q, S)."""
        B, L = keys.shape
        v = fw.tensor(self.eye[values])                                        # (B, L, S)
        x = fw.cat([v, self.embedding(fw.tensor(keys))], dim=2)
        k = self.w_k(x)                                                        # (B, L, 64)
        q = self.w_q(self.embedding(fw.tensor(query)))                         # (B, Q, 64)
        if self.kind == "softmax":
            scores = q @ k.transpose(1, 2) * (1.0 / math.sqrt(D_KEY))
            return N.softmax(scores, dim=-1) @ v
        projection = None
        if self.kind == "favor":       # redrawn at every forward, shared by keys and queries
            projection = FM.favor_projection(D_KEY, self.arg, dtype=k.dtype)
        k, q = self._phi(k, projection), self._phi(q, projection)
        Dk = k.shape[-1]
        k, v = k.reshape(B, 1, L, Dk), v.reshape(B, 1, L, self.n_keys)
        nothing = fw.zeros(B, 1, L, Dk, dtype=k.dtype)   # no reads during the sequence
        if self.update == "sum":
            _, (S, z) = FW.linear_attention(nothing, k, v, return_state=True)
            num = q @ S.reshape(B, Dk, self.n_keys)                             # (B, Q, S)
            den = (q * z.reshape(B, 1, Dk)).sum(dim=-1, keepdim=True) + 1e-6
            return num / den
        k, q = FM.sum_normalize(k), FM.sum_normalize(q)
        beta = self.w_beta(x).sigmoid().reshape(B, 1, L)
        _, S = FW.delta_rule(nothing, k, v, beta, return_state=True)
        return q @ S.reshape(B, Dk, self.n_keys)


def retrieval_loss(model, keys, values, query, target, mask=None):
    """0.5 |onehot(target) - y_hat|^2 summed over the S outputs, averaged over the queries."""
    y_hat = model(keys, values, query)
    diff = y_hat - fw.tensor(model.eye[target])
    per_query = (diff * diff).sum(dim=-1) * 0.5                                  # (B, Q)
    if mask is None:
        return per_query.mean()
    weights = mask.astype(model.eye.dtype) / mask.sum()
    return (per_query * fw.tensor(weights)).sum()


# ------------------------------------------------------------------------------------ training

def run(setting, name, n_keys, max_steps=3000, eval_every=100, patience=10, eval_batches=1,
        batch_size=32, lr=1e-3, seed=0, log=print):
    """Train one model on one task size; returns a dict of results (and the eval curve)."""
    fw.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CapacityModel(name, n_keys)
    opt = Adam(model.parameters(), lr=lr)
    eval_rng = np.random.default_rng(seed + 1_000_003)
    curve, best, since_best, step, start = [], math.inf, 0, 0, time.perf_counter()
    solved = False
    while step < max_steps:
        step += 1
        keys, values, query, target = make_batch(rng, setting, n_keys, batch_size)
        loss = retrieval_loss(model, keys, values, query[:, None], target[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == max_steps:
            with fw.no_grad():
                losses = []
                for _ in range(eval_batches):
                    keys, values, _, _ = make_batch(eval_rng, setting, n_keys, batch_size)
                    q, t, m = all_queries(keys, values)
                    losses.append(retrieval_loss(model, keys, values, q, t, m).item())
            ev = float(np.mean(losses))
            curve.append((step, ev))
            log(f"  setting {setting} {name:>12} S={n_keys:<4} step {step:6d}  "
                f"train {loss.item():.5f}  eval {ev:.5f}")
            if ev <= 1e-3:
                solved = True
                best = min(best, ev)
                break
            if ev < best:
                best, since_best = ev, 0
            else:
                since_best += 1
                if since_best > patience:
                    break
    return {"setting": setting, "model": name, "feature_dim": feature_dim(name),
            "keys": n_keys, "steps": step, "final_eval_loss": curve[-1][1],
            "best_eval_loss": best, "solved": solved,
            "seconds": round(time.perf_counter() - start, 1), "curve": curve}


def results_table(results):
    """A Markdown table of the results, one row per run."""
    lines = ["| setting | model | feature dim | keys S | steps | best eval loss | final eval loss "
             "| solved | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['setting']} | {r['model']} | {r['feature_dim'] or '-'} | {r['keys']} "
                     f"| {r['steps']} | {r['best_eval_loss']:.5f} | {r['final_eval_loss']:.5f} "
                     f"| {'yes' if r['solved'] else 'no'} | {r['seconds']} |")
    return "\n".join(lines)


def plot(results, path):
    """Best evaluation loss against the number of keys, one line per model and setting."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    settings = sorted({r["setting"] for r in results})
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for name in dict.fromkeys(r["model"] for r in results if r["setting"] == setting):
            rows = sorted((r["keys"], r["best_eval_loss"]) for r in results
                          if r["setting"] == setting and r["model"] == name)
            ax.plot([k for k, _ in rows], [max(v, 1e-5) for _, v in rows], "o-", label=name)
        ax.axhline(1e-3, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("number of unique keys S")
        ax.set_ylabel("best evaluation loss")
        ax.set_title(f"setting {setting}" + (" (overwrite)" if setting == 2 else ""))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", type=int, nargs="+", choices=(1, 2), default=None,
                   help="which settings to run (default: both)")
    p.add_argument("--models", nargs="+", default=None,
                   help="model names (default: the reduced sweep's, or the paper's with --full)")
    p.add_argument("--keys", type=int, nargs="+", default=None,
                   help="numbers of unique keys S to try")
    p.add_argument("--full", action="store_true", help="the paper's sweep (very long on a CPU)")
    p.add_argument("--completion", action="store_true",
                   help="the runs that complete the reduced sweep: DPFP-3 and FAVOR+ m=192 in "
                        "setting 1, the sum and delta rules at S = 20, 40, 60, 80 in setting 2 "
                        "(DPFP-3 at 320 keys alone takes about an hour on 2 cores); "
                        "--setting/--models/--keys select among them")
    p.add_argument("--max-steps", type=int, default=None,
                   help="training steps per run at most (default 3000, --full: 100000)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=1,
                   help="fresh batches of 32 sequences per evaluation, every key queried")
    p.add_argument("--patience", type=int, default=10,
                   help="stop after this many evaluations without improvement")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write results.json and results.md here")
    p.add_argument("--plot", default=None, help="save the loss-vs-keys plot to this PNG")
    p.add_argument("--quiet", action="store_true", help="no per-evaluation log lines")
    p.add_argument("--report", nargs="+", metavar="RESULTS_JSON",
                   help="only merge saved results.json files (of several runs) into one table, "
                        "--out and --plot")
    p.add_argument("--threads", type=int, default=1,
                   help="Numba threads for the fast-weight kernels (default 1: the batch is "
                        "small and extra threads only pay on an otherwise idle machine)")
    args = p.parse_args(argv)
    if args.report:
        results = []
        for path in args.report:
            with open(path) as f:
                results += json.load(f)
        results.sort(key=lambda r: (r["setting"], r["model"], r["keys"]))
        save(results, args)
        return results
    if args.full and args.completion:
        p.error("--full and --completion are two different sweeps: give one")
    import numba
    numba.set_num_threads(max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS)))
    sweep = FULL if args.full else REDUCED
    max_steps = args.max_steps or (100_000 if args.full else 3000)
    for name in args.models or ():
        parse_model(name)
    results = []
    for setting, name, n_keys in planned_runs(args, sweep):
        r = run(setting, name, n_keys, max_steps=max_steps, eval_every=args.eval_every,
                patience=args.patience, eval_batches=args.eval_batches,
                batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                log=(lambda *a: None) if args.quiet else print)
        print(f"setting {setting} {name:>12} S={n_keys:<4} -> best eval loss "
              f"{r['best_eval_loss']:.5f} after {r['steps']} steps "
              f"({'solved' if r['solved'] else 'not solved'}, {r['seconds']} s)",
              flush=True)
        results.append(r)
    save(results, args)
    return results


def planned_runs(args, sweep):
    """The (setting, model, keys) triples to run, in order: the sweep's (or ``COMPLETION``'s)
    filtered by ``--setting``/``--models``/``--keys`` (those replace the sweep's lists unless
    ``--completion`` is given, where they select from it)."""
    if args.completion:
        return [(setting, name, n_keys) for setting, name, keys in COMPLETION for n_keys in keys
                if (args.setting is None or setting in args.setting)
                and (args.models is None or name in args.models)
                and (args.keys is None or n_keys in args.keys)]
    planned = []
    for setting in args.setting or (1, 2):
        for name in args.models or sweep[setting][0]:
            if setting == 2 and name == "softmax":
                print("skipping softmax in setting 2 (no positions: it cannot tell the last "
                      "occurrence)")
                continue
            planned += [(setting, name, n_keys) for n_keys in args.keys or sweep[setting][1]]
    return planned


def save(results, args):
    """Print the table; write it (``--out``) and the plot (``--plot``)."""
    table = results_table(results)
    print("\n" + table)
    if args.out:
        atomic_write(os.path.join(args.out, "results.json"),
                     lambda f: json.dump(results, f, indent=1), mode="w", encoding="utf-8")
        atomic_write(os.path.join(args.out, "results.md"), lambda f: f.write(table + "\n"),
                     mode="w", encoding="utf-8")
    if args.plot:
        if plot(results, args.plot):
            print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
