"""Lights on little data: a tiny command -> ON / OFF / NOTHING model, warm-started against random.

    python demos/lights.py               # full study: about 4 minutes of CPU time on one core
    python demos/lights.py --quick       # a few seconds' version (what the test runs)

The talk (Williams & Zhao) says a tiny task model (lights on/off from voice commands) trained on
little data runs offline on a microprocessor, and that warm starts (explicit closed-form
solutions) matter most on small data. This demo measures both.

**Data.** Commands are generated from parts (verbs, rooms and lamps, polite wrappers, word orders,
filler words such as "uh", other devices, questions, statements and negations such as "don't turn
on the lights"), lower-case with no punctuation, like a speech recogniser's transcript. The
held-out set (fixed: the same commands for every run) uses **held-out phrasings**: whole
combinations (a verb with its particle after the object, wrappers, verb-object pairs) that never
occur in training, some with words that never occur in training (objects, wrappers, negations,
chatter). A word not in a run's training vocabulary becomes ``<unk>`` (id 0). Accuracy is
reported on all held-out commands and split into commands made only of known words (new
combinations) and commands with at least one unseen word; the split depends on each run's
vocabulary. Training sets are nested per seed: the first 25, 50, ... commands of one stream.

**Model** (the same for every arm): a word embedding of width 64 feeding one SAFU layer
(``tinyfw.nn.SAFU``: block context of 4 words, radial context of the last 2 words, document
context = running mean of all words, no hidden layer by default) whose three outputs at the
command's last word are the class scores. Width 64 = 64 cipher bits: the 64 most frequent
training words get one-hot codes, for which the explicit solution is exact (with 16 bits most
words share bits with others and the explicit solution is much worse).

**Arms.**

* ``random``: embedding ~ N(0, 0.5), SAFU weights Xavier-uniform, then Adam.
* ``warm``: the explicit solution alone, no gradient step. The embedding holds the bit-cipher
  vectors of the training words (ranked by frequency, ``<unk>`` the all-zero code) and the SAFU
  layer is solved in closed form by ``tinyfw.warmstart.explicit_training.explicit_train_safu``.
  The closed form needs a target at every position, so it is solved with a fourth class,
  "not the end of the command", at every position but the last (the padding after the last word
  included), and the fourth output column is dropped afterwards. Dropping it changes neither the
  argmax nor the 3-class softmax: the explicit weights are per-feature log conditionals, and
  their per-feature normalisers add the same amount to every class.
* ``warm+adam``: ``warm``, then the same Adam loop as ``random``: the same number of steps,
  the same batches and, by default, the same learning rate (``--warm-lr`` sets another).

Adam (both arms): 300 steps, learning rate 0.01, random batches of 32 commands, cross-entropy
of the 3 scores at the last word, 10% of the training words replaced by ``<unk>`` (word dropout,
``--unk-rate``) so that the model learns to read past unseen words; every parameter (embedding
included) is trained. Held-out accuracy is also recorded after 0, 25, 50, 100 and 200 steps.

It also reports the deployed model (warm+adam, trained on 400 commands, seed 0): its parameter
count, its float32 weight bytes, the size of its ``tinyfw.save`` checkpoint file, and the time of
one command on one core (``numba.set_num_threads(1)``), timed over the full path text -> word ids
-> model -> label, the median of many calls.

Outputs (``--out``, default ``demos/results``): ``lights.json``, ``lights.md`` and
``lights.png`` (held-out accuracy against the number of training commands, mean and spread over
seeds), each written atomically.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw as fw  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.nn import Embedding, Module, init  # noqa: E402
from tinyfw.nn.safu import SAFU  # noqa: E402
from tinyfw.ops import nn as N  # noqa: E402
from tinyfw.optim import Adam  # noqa: E402
from tinyfw.warmstart import BitCipher  # noqa: E402
from tinyfw.warmstart.explicit_training import explicit_train_safu  # noqa: E402

CLASSES = ["on", "off", "nothing"]

ON_VERBS = ["turn on", "switch on", "put on", "flip on", "power on", "light up", "activate",
            "enable", "start"]
OFF_VERBS = ["turn off", "switch off", "shut off", "put out", "flip off", "power off", "kill",
             "deactivate", "disable", "cut"]
LIGHTS = ["the lights", "the light", "the lamp", "the living room lights", "the kitchen light",
          "the bedroom lamp", "the ceiling light", "all the lights", "my lights", "the lamps",
          "the bathroom light", "the garage lights", "the office lamp", "the dining room lights",
          "the hallway light", "the porch light", "the desk lamp"]
OTHER = ["the tv", "the radio", "the music", "the fan", "the heater", "the oven", "the alarm",
         "the computer", "the coffee machine", "the dishwasher"]
PREFIXES = ["", "please", "hey", "could you", "can you", "would you", "hey could you",
            "i want you to", "go ahead and", "uh", "ok", "computer"]
SUFFIXES = ["", "please", "now", "thanks", "right now", "for me", "thank you", "again"]
NEGATIONS = ["don't", "do not", "never", "no need to", "stop asking me to"]
CHATTER = ["what time is it", "how is the weather today", "play some music", "set a timer",
           "what is on the news", "tell me a joke", "are the lights on", "is the lamp off",
           "the lights look nice", "i like this lamp", "who left the lights on",
           "the light bulb is broken", "buy new lamps tomorrow", "why is the light off",
           "remind me to turn off the oven", "the kitchen is dark", "good night",
           "turn the page", "switch to channel four", "the game is on tonight",
           "thanks for turning the lights on"]

# Held out from training (whole phrasings), two kinds:
# * new combinations of known words: these verbs with the particle after the object (they are
#   seen with it before the object), one verb-object pair in five, one wrapper pair in five;
# * phrasings with new words: these objects, wrappers, negations and chatter.
HELD_VERB_OBJECT_ORDER = {"switch on", "flip off", "power on", "shut off"}
HELD_LIGHTS = {"the hallway light", "the porch light", "the desk lamp"}
HELD_PREFIXES = {"i want you to", "computer"}
HELD_SUFFIXES = {"for me", "again"}
HELD_NEGATIONS = {"never", "stop asking me to"}
HELD_CHATTER = {"why is the light off", "remind me to turn off the oven", "good night",
                "thanks for turning the lights on"}


def hash_words(text):
    """A fixed small hash of a phrase (the same on every run, unlike ``hash``)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(text))


def phrase(verb, obj, particle_last):
    """'turn on the lights' or, with ``particle_last``, 'turn the lights on'."""
    words = verb.split()
    if particle_last and len(words) == 2 and words[1] in ("on", "off", "up", "out"):
        return f"{words[0]} {obj} {words[1]}"
    return f"{verb} {obj}"


def generate(rng, n, held_out):
    """``n`` (text, label) pairs, all from the held-out phrasings or none of them."""
    out = []
    while len(out) < n:
        kind = rng.choice(["on", "off", "other", "negated", "chatter"], p=[.3, .3, .15, .1, .15])
        prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
        held = prefix in HELD_PREFIXES or suffix in HELD_SUFFIXES
        held |= (PREFIXES.index(prefix) * 3 + SUFFIXES.index(suffix)) % 5 == 4
        if kind in ("on", "off", "other", "negated"):
            on = rng.random() < 0.5 if kind in ("other", "negated") else kind == "on"
            verb = rng.choice(ON_VERBS if on else OFF_VERBS)
            obj = rng.choice(OTHER if kind == "other" else LIGHTS)
            last = bool(rng.random() < 0.5)
            held |= obj in HELD_LIGHTS or (last and verb in HELD_VERB_OBJECT_ORDER)
            held |= (hash_words(verb) + hash_words(obj)) % 5 == 0
            text = phrase(verb, obj, last)
            label = CLASSES.index("on" if on else "off") if kind in ("on", "off") else 2
            if kind == "negated":
                negation = rng.choice(NEGATIONS)
                held |= negation in HELD_NEGATIONS
                text = f"{negation} {text}"
                prefix = "please" if prefix in ("could you", "can you", "would you",
                                                "hey could you", "go ahead and") else prefix
        else:
            text = rng.choice(CHATTER)
            held |= text in HELD_CHATTER
            label = 2
        if rng.random() < 0.15:                       # recogniser fillers
            words = text.split()
            words.insert(int(rng.integers(0, len(words) + 1)), rng.choice(["uh", "um"]))
            text = " ".join(words)
        text = " ".join(w for w in (prefix, text, suffix) if w)
        if held == held_out:
            out.append((text, label))
    return out


class Vocabulary:
    """Words seen in training; every other word encodes to ``<unk>`` (id 0)."""

    def __init__(self, texts):
        words = sorted({w for t in texts for w in t.split()})
        self.words = ["<unk>"] + words
        self.index = {w: i for i, w in enumerate(self.words)}

    def encode(self, text):
        return [self.index.get(w, 0) for w in text.split()]

    def batch(self, texts, unk_rate=0.0, rng=None):
        """Right-padded ids (B, L) and the index of each text's last word. ``unk_rate``: the
        chance that a word is replaced by ``<unk>`` (word dropout, for training)."""
        ids = [self.encode(t) for t in texts]
        if unk_rate:
            ids = [[0 if rng.random() < unk_rate else i for i in seq] for seq in ids]
        if any(len(i) == 0 for i in ids):
            raise ValueError("lights: an empty command has nothing to classify")
        L = max(len(i) for i in ids)
        out = np.zeros((len(ids), L), dtype=np.int64)
        for row, seq in enumerate(ids):
            out[row, :len(seq)] = seq
        return out, np.array([len(i) - 1 for i in ids])


SIZES = (25, 50, 100, 200, 400)
ARMS = ("random", "warm", "warm+adam")
NOT_END = len(CLASSES)          # the explicit solve's extra class: "the command goes on"
HELD_OUT_SEED = 20240          # the held-out set is the same for every run
CURVE_STEPS = (0, 25, 50, 100, 200)   # held-out accuracy is also recorded after these steps


class Vocabulary:
    """Words of the training commands, most frequent first (id 1 = most frequent); every other
    word encodes to ``<unk>`` (id 0)."""

    def __init__(self, texts):
        counts = {}
        for text in texts:
            for w in text.split():
                counts[w] = counts.get(w, 0) + 1
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        self.words = ["<unk>"] + ranked
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self):
        return len(self.words)

    def encode(self, text):
        return [self.index.get(w, 0) for w in text.split()]

    def knows(self, text):
        return all(w in self.index for w in text.split())

    def batch(self, texts, unk_rate=0.0, rng=None):
        """Right-padded ids (B, L) (padding: id 0) and the index of each text's last word.
        ``unk_rate``: the chance that a word is replaced by ``<unk>`` (word dropout)."""
        ids = [self.encode(t) for t in texts]
        if unk_rate:
            ids = [[0 if rng.random() < unk_rate else i for i in seq] for seq in ids]
        if any(len(i) == 0 for i in ids):
            raise ValueError("lights: an empty command has nothing to classify")
        L = max(len(i) for i in ids)
        out = np.zeros((len(ids), L), dtype=np.int64)
        for row, seq in enumerate(ids):
            out[row, :len(seq)] = seq
        return out, np.array([len(i) - 1 for i in ids])

    def cipher_vectors(self, bits):
        """Bit-cipher vectors (len(self), bits) in id order: row 0 (``<unk>``) is the all-zero
        code, the most frequent words get the one-hot codes."""
        cipher = BitCipher.from_vocab(self.words[1:], bits)
        return np.vstack([np.zeros((1, cipher.bits)), cipher.vectors])


class CommandClassifier(Module):
    """Word ids (B, L) -> embedding (B, L, width) -> SAFU (causal) -> 3 class scores at the
    last word (B, 3)."""

    def __init__(self, vocab_size, width=64, block=4, radial=2, hidden=None, n_out=3):
        super().__init__()
        self.emb = Embedding(vocab_size, width)
        init.normal_(self.emb.weight, 0.0, 0.5)
        self.safu = SAFU(width, n_out, block=block, radial=radial, use_document=True,
                         hidden=hidden)

    def forward(self, ids, last):
        logits = self.safu(self.emb(fw.tensor(ids)))            # (B, L, 3), causal
        return logits[np.arange(len(last)), last]               # the scores after the last word

    @fw.no_grad()
    def predict(self, ids, last):
        return self(ids, last).numpy().argmax(1)


def classify(model, vocab, text):
    """The deployed path: one transcript -> its label ('on', 'off' or 'nothing')."""
    ids = vocab.encode(text)
    if not ids:
        return CLASSES[2]
    with fw.no_grad():
        logits = model(np.array([ids], dtype=np.int64), [len(ids) - 1])
    return CLASSES[int(logits.numpy()[0].argmax())]


# ----------------------------------------------------------------------------------- training
def warm_start_(model, vocab, train, eps):
    """The explicit solution (module docstring): cipher embedding, closed-form SAFU layer.
    Returns the solver's report (training losses of its stages, in nats, 4 classes)."""
    width = model.emb.weight.shape[1]
    vectors = vocab.cipher_vectors(width)
    ids, last = vocab.batch([t for t, _ in train])
    targets = np.full(ids.shape, NOT_END, dtype=np.int64)
    targets[np.arange(len(last)), last] = [y for _, y in train]
    safu = model.safu
    solver_layer = SAFU(width, NOT_END + 1, block=safu.block, radial=safu.radial,
                        use_document=safu.use_document, hidden=safu.hidden)
    report = explicit_train_safu(solver_layer, vectors[ids], targets, eps=eps)
    init.copy_(model.emb.weight, vectors)
    if safu.block:
        init.copy_(safu.w_a, solver_layer.w_a.numpy())
    if safu.hidden is None:
        init.copy_(safu.w_o, solver_layer.w_o.numpy()[:, :NOT_END])
    else:
        init.copy_(safu.w_1, solver_layer.w_1.numpy())
        init.copy_(safu.w_2, solver_layer.w_2.numpy()[:, :NOT_END])
    return report


def adam_train_(model, vocab, train, steps, lr, batch, unk_rate, seed, eval_at=(),
                eval_fn=None):
    """``steps`` Adam steps on random batches of ``train`` (the same batches for a given seed).
    Returns ``{step: eval_fn(model)}`` for the steps in ``eval_at`` (0 = before the first)."""
    rng = np.random.default_rng(seed)
    opt = Adam(model.parameters(), lr=lr)
    labels = np.array([y for _, y in train])
    curve = {}
    if 0 in eval_at:
        curve[0] = eval_fn(model)
    for step in range(1, steps + 1):
        rows = rng.integers(0, len(train), batch)
        ids, last = vocab.batch([train[r][0] for r in rows], unk_rate, rng)
        loss = N.cross_entropy(model(ids, last), fw.tensor(labels[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in eval_at:
            curve[step] = eval_fn(model)
    return curve


def evaluate(model, vocab, test):
    """Held-out accuracy: all, known-word commands, commands with unseen words (None if the
    subset is empty), and the subset sizes."""
    ids, last = vocab.batch([t for t, _ in test])
    correct = model.predict(ids, last) == np.array([y for _, y in test])
    known = np.array([vocab.knows(t) for t, _ in test])

    def mean(mask):
        return float(correct[mask].mean()) if mask.any() else None

    return {"all": float(correct.mean()), "known": mean(known), "unseen": mean(~known),
            "n_known": int(known.sum()), "n_unseen": int((~known).sum())}


def run_one(train, test, arm, args, seed):
    """Train one arm on ``train``; returns (model, vocab, evaluation)."""
    vocab = Vocabulary(t for t, _ in train)
    fw.manual_seed(seed)
    model = CommandClassifier(len(vocab), width=args.width, hidden=args.hidden)
    start = time.perf_counter()
    if arm in ("warm", "warm+adam"):
        warm_start_(model, vocab, train, args.eps)
    curve = {}
    if arm in ("random", "warm+adam"):
        lr = args.lr if arm == "random" else args.warm_lr
        eval_at = [k for k in CURVE_STEPS if k < args.steps]
        curve = adam_train_(model, vocab, train, args.steps, lr, args.batch, args.unk_rate,
                            seed, eval_at, lambda m: evaluate(m, vocab, test)["all"])
    seconds = time.perf_counter() - start       # (includes the few curve evaluations)
    result = evaluate(model, vocab, test)
    curve[args.steps if arm != "warm" else 0] = result["all"]
    result["train_seconds"] = seconds
    result["curve"] = {str(k): v for k, v in sorted(curve.items())}
    return model, vocab, result


# --------------------------------------------------------------------------- the deployed model
def model_size(model):
    """Parameter count, float32 weight bytes and the ``tinyfw.save`` checkpoint's file size."""
    n_params = model.num_parameters()
    raw = sum(p.numel() * p.dtype.itemsize for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lights.npz")
        fw.save(model.state_dict(), path)
        file_bytes = os.path.getsize(path)
    return {"parameters": int(n_params), "weight_bytes": int(raw),
            "checkpoint_bytes": int(file_bytes), "vocabulary": int(model.emb.weight.shape[0])}


def time_inference(model, vocab, texts, repeats):
    """Median seconds of one command on one thread: text -> ids -> model -> label. Each command
    is timed alone; the median is over ``repeats`` passes over ``texts``."""
    import numba
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for text in texts[:20]:                    # warm-up (compiled kernels, caches)
            classify(model, vocab, text)
        times = []
        for _ in range(repeats):
            for text in texts:
                start = time.perf_counter()
                classify(model, vocab, text)
                times.append(time.perf_counter() - start)
    finally:
        numba.set_num_threads(threads)
    times = np.array(times)
    return {"median_s": float(np.median(times)), "p90_s": float(np.percentile(times, 90)),
            "calls": int(len(times))}


# ------------------------------------------------------------------------------------- study
def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.array(values)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(len(a))}


def study(args, log=print):
    test = generate(np.random.default_rng(HELD_OUT_SEED), args.test, held_out=True)
    runs = []
    for seed in range(args.seeds):
        stream = generate(np.random.default_rng(1000 + seed), max(args.sizes), held_out=False)
        for n in args.sizes:
            train = stream[:n]
            for arm in ARMS:
                _, vocab, result = run_one(train, test, arm, args, seed)
                result.update(arm=arm, n_train=n, seed=seed, vocabulary=len(vocab),
                              distinct_train=len({t for t, _ in train}))
                runs.append(result)
            log(f"seed {seed} n {n:4d}: " + "  ".join(
                f"{r['arm']} {r['all']:.3f}" for r in runs[-len(ARMS):]), flush=True)
    summary = {arm: {str(n): {part: summarise([r[part] for r in runs
                                               if r["arm"] == arm and r["n_train"] == n])
                              for part in ("all", "known", "unseen", "n_known", "n_unseen",
                                           "train_seconds")}
                     for n in args.sizes} for arm in ARMS}
    for arm in ARMS:
        for n in args.sizes:
            mine = [r["curve"] for r in runs if r["arm"] == arm and r["n_train"] == n]
            summary[arm][str(n)]["curve"] = {k: summarise([c[k] for c in mine])
                                             for k in mine[0]}
    return test, runs, summary


def deployed_model(args, test):
    """The warm+adam model on the largest training set (seed 0): size and one-core speed."""
    stream = generate(np.random.default_rng(1000), max(args.sizes), held_out=False)
    model, vocab, result = run_one(stream, test, "warm+adam", args, 0)
    out = model_size(model)
    out["held_out_accuracy"] = result["all"]
    out["n_train"] = len(stream)
    out["inference"] = time_inference(model, vocab, [t for t, _ in test[:args.time_commands]],
                                      args.time_repeats)
    return out


# ------------------------------------------------------------------------------------ output
def fmt(stat, digits=3, sign=""):
    if stat is None:
        return "-"
    return f"{stat['mean']:{sign}.{digits}f} ± {stat['std']:.{digits}f}"


def paired_difference(runs, arm, n):
    """Accuracy of ``arm`` minus random's on the same seed (same training set and batches)."""
    by_seed = {r["seed"]: r["all"] for r in runs if r["arm"] == "random" and r["n_train"] == n}
    diffs = [r["all"] - by_seed[r["seed"]] for r in runs
             if r["arm"] == arm and r["n_train"] == n]
    return {"stat": summarise(diffs), "ahead": sum(d > 0 for d in diffs),
            "behind": sum(d < 0 for d in diffs)}


def markdown(args, summary, runs, deployed, seconds, test_info):
    L = ["# Lights on little data (demos/lights.py)", ""]
    L.append(f"Command -> ON / OFF / NOTHING, held-out accuracy against the number of training "
             f"commands; {args.seeds} seeds per size (a seed draws the training stream, the "
             f"random initialisation and the Adam batches), mean ± standard deviation over seeds "
             f"(min-max in lights.json). Held-out set: {test_info['n']} commands of held-out "
             f"phrasings, the same for every run ({test_info['identical']} identical to a "
             f"command of the largest training streams; always answering 'nothing', the most "
             f"frequent label, scores {test_info['majority']:.3f}).")
    L.append("")
    L.append(f"Arms: **random** = N(0, 0.5) embedding + Xavier SAFU, then {args.steps} Adam "
             f"steps at lr {args.lr:g}; **warm** = explicit solution only (bit-cipher "
             f"embedding, closed-form SAFU, eps {args.eps:g}), no gradient step; **warm+adam** = "
             f"warm, then the same {args.steps} Adam steps (same batches) at lr "
             f"{args.warm_lr:g}. Adam: batch {args.batch}, word dropout {args.unk_rate:g}, all "
             f"parameters trained. Model: embedding width {args.width}, one SAFU layer "
             f"(block 4, radial 2, document context, hidden {args.hidden}).")
    L.append("")
    for part, title in (("all", "All held-out commands"),
                        ("known", "Held-out commands made only of words seen in training "
                                  "(new combinations)"),
                        ("unseen", "Held-out commands with at least one word never seen in "
                                   "training")):
        L += [f"## {title}", "", "| training commands | " + " | ".join(ARMS) +
              (" | commands in this subset |" if part != "all" else " |"),
              "|---:|" + "---:|" * len(ARMS) + ("---:|" if part != "all" else "")]
        for n in args.sizes:
            row = f"| {n} | " + " | ".join(fmt(summary[arm][str(n)][part]) for arm in ARMS)
            if part != "all":
                count = summary["random"][str(n)][f"n_{part}"]
                row += f" | {count['mean']:.0f} |" if count else " | - |"
            else:
                row += " |"
            L.append(row)
        L.append("")
    L += ["## Paired differences (the same seed: the same training commands and batches)", "",
          "Difference of held-out accuracy (all held-out commands) against random, mean ± std "
          "over seeds, and the seeds where the warm arm is ahead / behind.", "",
          "| training commands | warm - random | ahead / behind | warm+adam - random | "
          "ahead / behind |", "|---:|---:|---:|---:|---:|"]
    for n in args.sizes:
        row = f"| {n} |"
        for arm in ("warm", "warm+adam"):
            d = paired_difference(runs, arm, n)
            row += f" {fmt(d['stat'], sign='+')} | {d['ahead']} / {d['behind']} |"
        L.append(row)
    L.append("")
    steps = sorted({int(k) for arm in ("random", "warm+adam")
                    for k in summary[arm][str(args.sizes[0])]["curve"]})
    L += ["## Held-out accuracy against Adam steps (all held-out commands)", "",
          "Step 0 of warm+adam is the warm start alone; step 0 of random is the untrained "
          "model.", "",
          "| training commands | arm | " + " | ".join(f"step {k}" for k in steps) + " |",
          "|---:|---|" + "---:|" * len(steps)]
    for n in args.sizes:
        for arm in ("random", "warm+adam"):
            curve = summary[arm][str(n)]["curve"]
            L.append(f"| {n} | {arm} | " + " | ".join(fmt(curve.get(str(k))) for k in steps)
                     + " |")
    L.append("")
    inf = deployed["inference"]
    L += ["## The deployed model", "",
          f"warm+adam trained on {deployed['n_train']} commands (seed 0), held-out accuracy "
          f"{deployed['held_out_accuracy']:.3f}: **{deployed['parameters']} parameters** "
          f"(vocabulary of {deployed['vocabulary']} words), {deployed['weight_bytes']} bytes of "
          f"float32 weights, **checkpoint file {deployed['checkpoint_bytes']} bytes** "
          f"(`tinyfw.save`, an .npz with JSON metadata; the vocabulary's words are not in it). "
          f"**Inference on one core: median {inf['median_s'] * 1e6:.0f} µs per command** "
          f"(90th percentile {inf['p90_s'] * 1e6:.0f} µs, {inf['calls']} calls; text -> word "
          f"ids -> model -> label, numba.set_num_threads(1), tinyfw on NumPy/Numba: almost all "
          f"of it is per-operation overhead of the framework, not arithmetic).", ""]
    L += [f"Measured on {platform.processor() or platform.machine()} "
          f"({os.cpu_count()} cores, shared with other jobs, so times are noisy); the whole "
          f"study took {seconds:.0f} s. Reproduce: `python demos/lights.py"
          f"{' --quick' if args.quick else ''}`."]
    return "\n".join(L) + "\n"


def plot(args, summary, majority, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    titles = {"all": "all held-out commands", "known": "known words, new combinations",
              "unseen": "with unseen words"}
    for ax, part in zip(axes, ("all", "known", "unseen")):
        for arm, style in zip(ARMS, ("o-", "s-", "^-")):
            ns, mean, std = [], [], []
            for n in args.sizes:
                stat = summary[arm][str(n)][part]
                if stat is not None:
                    ns.append(n), mean.append(stat["mean"]), std.append(stat["std"])
            mean, std = np.array(mean), np.array(std)
            ax.plot(ns, mean, style, label=arm)
            ax.fill_between(ns, mean - std, mean + std, alpha=0.2)
        ax.axhline(majority, color="grey", ls=":", lw=1, label="always 'nothing'")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(args.sizes))
        ax.set_xticklabels([str(n) for n in args.sizes])
        ax.set_xlabel("training commands")
        ax.set_title(titles[part])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"held-out accuracy (mean ± std, {args.seeds} seeds)")
    axes[0].legend()
    fig.suptitle("lights: ON / OFF / NOTHING from commands, warm start vs random")
    fig.tight_layout()

    def write(f):
        fig.savefig(f, format="png", dpi=110)

    atomic_write(path, write)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 seeds, 60 Adam steps, 200 held-out commands (a few seconds)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"),
                   help="folder for lights.json, lights.md and lights.png")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--seeds", type=int, default=None, help="seeds per size (default 10; 2 quick)")
    p.add_argument("--steps", type=int, default=None,
                   help="Adam steps per run, both arms (default 300; 60 quick)")
    p.add_argument("--test", type=int, default=None,
                   help="held-out commands (default 1000; 200 quick)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of random")
    p.add_argument("--warm-lr", type=float, default=None,
                   help="Adam learning rate after the warm start (default: --lr)")
    p.add_argument("--eps", type=float, default=0.1,
                   help="smoothing of the explicit solution's counts (F + eps)")
    p.add_argument("--width", type=int, default=64, help="embedding width = cipher bits")
    p.add_argument("--hidden", type=int, default=None, help="SAFU hidden layer (default none)")
    p.add_argument("--unk-rate", type=float, default=0.1,
                   help="word dropout: training words replaced by <unk> with this chance")
    p.add_argument("--time-commands", type=int, default=None,
                   help="commands timed for the inference time (default 200; 20 quick)")
    p.add_argument("--time-repeats", type=int, default=None,
                   help="passes over them (default 10; 2 quick)")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("seeds", 10, 2), ("steps", 300, 60), ("test", 1000, 200),
                              ("time_commands", 200, 20), ("time_repeats", 10, 2)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    for name in ("seeds", "test", "batch", "time_commands", "time_repeats", "width"):
        if getattr(args, name) < 1:
            raise SystemExit(f"lights: --{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    if args.steps < 0:
        raise SystemExit(f"lights: --steps must be >= 0, got {args.steps}")
    if any(n < 1 for n in args.sizes):
        raise SystemExit(f"lights: --sizes must all be >= 1, got {args.sizes}")
    if not args.eps > 0:
        raise SystemExit(f"lights: --eps must be > 0, got {args.eps}")
    args.sizes = sorted(set(args.sizes))
    if args.warm_lr is None:
        args.warm_lr = args.lr

    start = time.perf_counter()
    test, runs, summary = study(args)
    deployed = deployed_model(args, test)
    seconds = time.perf_counter() - start
    stream_texts = set()
    for seed in range(args.seeds):
        stream_texts |= {t for t, _ in generate(np.random.default_rng(1000 + seed),
                                                max(args.sizes), held_out=False)}
    test_info = {"n": len(test), "identical": sum(t in stream_texts for t, _ in test),
                 "labels": {c: sum(y == i for _, y in test) for i, c in enumerate(CLASSES)},
                 "seed": HELD_OUT_SEED}
    test_info["majority"] = max(test_info["labels"].values()) / len(test)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    paired = {arm: {str(n): paired_difference(runs, arm, n) for n in args.sizes}
              for arm in ("warm", "warm+adam")}
    result = {"settings": settings, "arms": list(ARMS), "sizes": args.sizes,
              "held_out": test_info, "summary": summary, "paired_vs_random": paired,
              "runs": runs,
              "deployed_model": deployed, "seconds": seconds,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "lights.json"),
                 lambda f: json.dump(result, f, indent=1), mode="w", encoding="utf-8")
    text = markdown(args, summary, runs, deployed, seconds, test_info)
    atomic_write(os.path.join(args.out, "lights.md"), lambda f: f.write(text), mode="w",
                 encoding="utf-8")
    plot(args, summary, test_info["majority"], os.path.join(args.out, "lights.png"))
    print(text)
    return result


if __name__ == "__main__":
    main()
