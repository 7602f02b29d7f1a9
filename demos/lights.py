"""A tiny model that turns a transcribed voice command into ON / OFF / NOTHING for the lights.

    python demos/lights.py                # about 30 s of CPU time on one core
    python demos/lights.py --seed 3 --steps 600

The commands are generated from parts (verbs, objects, polite wrappers, word orders, filler
words such as "uh", other devices, questions, statements and negations), lower-case with no
punctuation, like a speech recogniser's transcript. Generalisation is measured on **held-out
phrasings**: whole combinations (a verb phrase with the particle after the object, wrappers,
objects and negation forms) that never occur in training, some containing words the model has
never seen (they become the unknown token ``<unk>``, id 0, as every unseen word does at encode
time; training replaces 10% of the words by ``<unk>``, ``--unk-rate``, so the model learns to
read past them). Accuracy is reported for both kinds of held-out commands.

The model, trained from scratch with Adam: a word embedding (width 16) feeding one SAFU layer
(``tinyfw.nn.SAFU``: block context of 4 words, radial context of the last 2 words, document
context = running mean of all words, a hidden softmax layer of 16 units) whose three outputs at
the command's last word are the class scores. It prints held-out accuracy, a confusion matrix,
the parameter count and the size in bytes (float32 weights, and the saved checkpoint file).
"""
import argparse
import itertools
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw as fw  # noqa: E402
from tinyfw.nn import Embedding, Module  # noqa: E402
from tinyfw.nn.safu import SAFU  # noqa: E402
from tinyfw.ops import nn as N  # noqa: E402
from tinyfw.optim import Adam  # noqa: E402

CLASSES = ["on", "off", "nothing"]

ON_VERBS = ["turn on", "switch on", "put on", "flip on", "power on", "light up", "activate",
            "enable", "start"]
OFF_VERBS = ["turn off", "switch off", "shut off", "put out", "flip off", "power off", "kill",
             "deactivate", "disable", "cut"]
LIGHTS = ["the lights", "the light", "the lamp", "the living room lights", "the kitchen light",
          "the bedroom lamp", "the ceiling light", "all the lights", "my lights", "the lamps",
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


class CommandClassifier(Module):
    """Embedding -> SAFU (causal) -> the 3 class scores at the last word."""

    def __init__(self, vocab_size, width=16, block=4, radial=2, hidden=16):
        super().__init__()
        self.emb = Embedding(vocab_size, width)
        fw.nn.init.normal_(self.emb.weight, 0.0, 0.5)
        self.safu = SAFU(width, len(CLASSES), block=block, radial=radial, use_document=True,
                         hidden=hidden)

    def forward(self, ids, last):
        logits = self.safu(self.emb(fw.tensor(ids)))            # (B, L, 3), causal
        return logits[np.arange(len(last)), last]               # the scores after the last word


def accuracy(model, vocab, data):
    with fw.no_grad():
        ids, last = vocab.batch([t for t, _ in data])
        pred = model(ids, last).numpy().argmax(1)
    labels = np.array([y for _, y in data])
    confusion = np.zeros((3, 3), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    return float((pred == labels).mean()), confusion, pred


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--unk-rate", type=float, default=0.1,
                   help="word dropout: training words replaced by <unk> with this chance, so "
                        "the model learns what to do with words it has never seen")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train = generate(rng, args.train, held_out=False)
    test = generate(rng, args.test, held_out=True)
    train_texts = {t for t, _ in train}
    overlap = sum(t in train_texts for t, _ in test)
    vocab = Vocabulary(t for t, _ in train)
    unseen = sum(any(w not in vocab.index for w in t.split()) for t, _ in test)
    print(f"{len(train)} training commands ({len(train_texts)} distinct), {len(test)} held-out "
          f"({overlap} identical to a training command, {unseen} with words never seen in "
          f"training -> <unk>); vocabulary {len(vocab.words)} words")
    print("examples (held out):", "; ".join(f"'{t}' -> {CLASSES[y]}" for t, y in test[:4]))

    fw.manual_seed(args.seed)
    model = CommandClassifier(len(vocab.words))
    opt = Adam(model.parameters(), lr=args.lr)
    start = time.time()
    for step in range(1, args.steps + 1):
        rows = rng.integers(0, len(train), args.batch)
        ids, last = vocab.batch([train[r][0] for r in rows], args.unk_rate, rng)
        y = fw.tensor(np.array([train[r][1] for r in rows]))
        loss = N.cross_entropy(model(ids, last), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.3f}  train acc "
                  f"{accuracy(model, vocab, train[:500])[0]:.3f}", flush=True)
    seconds = time.time() - start

    acc, confusion, pred = accuracy(model, vocab, test)
    known = np.array([all(w in vocab.index for w in t.split()) for t, _ in test])
    correct = pred == np.array([y for _, y in test])
    n_params = model.num_parameters()
    raw_bytes = sum(p.numel() * p.dtype.itemsize for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lights.npz")
        fw.save(model.state_dict(), path)
        file_bytes = os.path.getsize(path)
    print(f"\nheld-out accuracy {acc:.3f} on {len(test)} commands "
          f"(training {seconds:.1f}s, {args.steps} steps)")
    print(f"  new combinations of known words: {correct[known].mean():.3f} on {known.sum()}; "
          f"with words never seen in training: {correct[~known].mean():.3f} on "
          f"{(~known).sum()}")
    print("confusion (rows: true on/off/nothing, columns: predicted):")
    for name, row in zip(CLASSES, confusion):
        print(f"  {name:8s}" + "".join(f"{v:6d}" for v in row))
    print(f"parameters {n_params}; {raw_bytes} bytes of float32 weights; "
          f"checkpoint file {file_bytes} bytes")
    wrong = [(t, CLASSES[y], CLASSES[p_]) for (t, y), p_ in zip(test, pred) if y != p_]
    if wrong:
        print("some errors:", "; ".join(f"'{t}' ({y} -> {p_})" for t, y, p_ in
                                        itertools.islice(wrong, 6)))
    return acc


if __name__ == "__main__":
    main()
