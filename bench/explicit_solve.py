"""The explicit (closed-form) SAFU solve against 100 Adam steps of the same model on the same data.

    python bench/explicit_solve.py                    # 100% and 10% of the built-in corpus
    python bench/explicit_solve.py --repeats 5 --phases
    python bench/explicit_solve.py --threads 1        # Numba and BLAS on one thread
    OPENBLAS_NUM_THREADS=1 python bench/explicit_solve.py --threads 1 --cpu-time

The setup of the warm-start demo (``demos/warm_start.py`` as of issue 14): the built-in corpus
split into words (vocabulary 2000 with ``<unk>``, the last 10% held out), a one-layer
``SAFULanguageModel(2000, 36, block=8, radial=3, use_document=True)`` with bit-cipher token
vectors, windows of 64 tokens. The solve is ``explicit_train(model, windows, targets, rounds=1,
eps=0.1)`` (what ``init_language_model(model, ids, 'explicit', rounds=1, eps=0.1)`` runs after
setting the cipher vectors); the Adam steps are ``fine_tune(model, windows, targets, steps=100,
batch_size=16, lr=3e-3)``. Both are timed in the same process, alternating, after one untimed
run of each (Numba's caches, BLAS's threads); the ratio is the median solve time over the
median time of 100 steps (below 1: the solve is faster). ``--phases`` also times the solve's
parts (features, counts and solves, passes over the positions, attention targets).
``--cpu-time`` times both in CPU seconds of the process instead of wall-clock seconds: with one
thread, the work each does, which other jobs on a busy machine disturb far less than the wall
clock.
"""
import argparse
import os
import re
import statistics
import sys
import time
from collections import Counter

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw  # noqa: E402  before NumPy: it sets OpenBLAS's spin (backend/cpu/runtime)
import numpy as np  # noqa: E402
from tinyfw.data import builtin_corpus  # noqa: E402
from tinyfw.nn.safu import SAFULanguageModel  # noqa: E402
from tinyfw.warmstart import explicit_training as ET  # noqa: E402
from tinyfw.warmstart.init import init_language_model  # noqa: E402

WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def word_ids(text, vocab_size=2000, val_fraction=0.1):
    """Training ids as the warm-start demo made them: lower-cased words and punctuation, the
    last ``val_fraction`` held out, the ``vocab_size - 1`` most frequent training words (ties
    by spelling) and ``<unk>`` (id 0) for the rest. Returns (ids, vocabulary)."""
    words = WORD.findall(text.lower())
    train_words = words[:len(words) - int(len(words) * val_fraction)]
    counts = Counter(train_words)
    vocab = ["<unk>"] + [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                         [:vocab_size - 1]]
    index = {w: i for i, w in enumerate(vocab)}
    return np.array([index.get(w, 0) for w in train_words], dtype=np.int64), vocab


def make_model(train_ids, seed=0):
    tinyfw.manual_seed(seed)
    model = SAFULanguageModel(2000, 36, n_layers=1, block=8, radial=3, use_document=True,
                              hidden=None, freeze_embedding=False)
    init_language_model(model, train_ids, "cipher")
    return model


class PhaseTimer:
    """Wall-clock seconds spent in the solver's methods, by phase (wraps them while active)."""

    PHASES = {"features": "features (through the layer)",
              "solve_output": "output counts + solve",
              "evaluate": "passes over the positions (logits, softmax, loss, dL/dh)",
              "solve_attention": "attention targets + counts + solve"}

    def __init__(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self._saved = {}

    def __enter__(self):
        for name in self.PHASES:
            original = getattr(ET._Solver, name)
            self._saved[name] = original

            def timed(*args, _original=original, _name=name, **kwargs):
                start = clock()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_name] += clock() - start
            setattr(ET._Solver, name, timed)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(ET._Solver, name, original)


clock = time.perf_counter


def time_solve(train_ids, windows, targets, phases=False):
    model = make_model(train_ids)
    timer = PhaseTimer() if phases else None
    start = clock()
    if timer:
        with timer:
            report = ET.explicit_train(model, windows, targets, rounds=1, eps=0.1)
    else:
        report = ET.explicit_train(model, windows, targets, rounds=1, eps=0.1)
    return clock() - start, report, (timer.seconds if timer else None)


def time_adam(train_ids, windows, targets, steps):
    model = make_model(train_ids)
    start = clock()
    ET.fine_tune(model, windows, targets, steps=steps, batch_size=16, lr=3e-3)
    return clock() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", default="1.0,0.1",
                   help="fractions of the training words to solve on (default 1.0,0.1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    p.add_argument("--steps", type=int, default=100, help="Adam steps per timed run")
    p.add_argument("--phases", action="store_true", help="also time the solve's phases")
    p.add_argument("--threads", type=int, default=None,
                   help="Numba threads (set OPENBLAS_NUM_THREADS too, before starting, for BLAS)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time in CPU seconds of the process (use with --threads 1 and "
                        "OPENBLAS_NUM_THREADS=1 on a busy machine)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        raise SystemExit("--repeats and --steps must be >= 1")
    if args.cpu_time:
        global clock
        clock = time.process_time
    if args.threads:
        import numba
        numba.set_num_threads(args.threads)
    train_all, vocab = word_ids(builtin_corpus())
    print(f"built-in corpus: {len(train_all)} training words, vocabulary {len(vocab)}; "
          f"{os.cpu_count()} CPUs, Numba threads {__import__('numba').get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; "
          + ("CPU seconds" if args.cpu_time else "wall-clock seconds"))
    for fraction in (float(f) for f in args.fractions.split(",")):
        train_ids = train_all[:max(65, int(len(train_all) * fraction))]
        windows, targets = ET.stream_windows(train_ids, 64)
        time_solve(train_ids, windows, targets)                      # untimed: warm-up
        time_adam(train_ids, windows, targets, 5)
        solves, adams, phase_runs = [], [], []
        for _ in range(args.repeats):
            seconds, report, phase = time_solve(train_ids, windows, targets, args.phases)
            solves.append(seconds)
            phase_runs.append(phase)
            adams.append(time_adam(train_ids, windows, targets, args.steps))
        solve, adam = statistics.median(solves), statistics.median(adams)
        print(f"\n{int(round(fraction * 100))}% of the training words ({len(train_ids)} tokens, "
              f"{windows.shape[0]} windows of 64)")
        print(f"  solve            median {solve:7.3f} s   runs "
              + " ".join(f"{s:.3f}" for s in solves))
        print(f"  {args.steps} Adam steps  median {adam:7.3f} s   runs "
              + " ".join(f"{s:.3f}" for s in adams))
        print(f"  ratio solve / {args.steps} Adam steps: {solve / adam:.2f} "
              f"(the solve is worth {args.steps * solve / adam:.0f} steps); training loss "
              f"after the solve {report['loss']:.4f}")
        print(f"  load average now {os.getloadavg()[0]:.1f}")
        if args.phases:
            print("  phases (median s): " + ", ".join(
                f"{PhaseTimer.PHASES[k]} {statistics.median(r[k] for r in phase_runs):.3f}"
                for k in PhaseTimer.PHASES))


if __name__ == "__main__":
    main()
