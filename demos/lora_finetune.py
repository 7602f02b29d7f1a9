"""LoRA and fine-tuning: pretrain a small language model on the built-in corpus, then adapt it.

    python demos/lora_finetune.py            # the full study: about 10 minutes on 2 quiet cores
    python demos/lora_finetune.py --quick    # under a minute (what the test runs)

The claims checked (Hu et al. 2021, "LoRA"; Howard & Ruder 2018, "ULMFiT"): low-rank adapters
on a frozen pretrained model come close to full fine-tuning while training a small fraction of
the parameters; and a pretrained language model helps most where task data is scarce.

**Model and pretraining.** A ``tinyfw.nn.LanguageModel`` on bytes (vocabulary 256, so every text
has the same tokens): softmax attention, 2 blocks of width 64, 4 heads, context 80 (the longest
lights command is 66 bytes). It is pretrained once (seed 0) with Adam on the built-in corpus
(``tinyfw.data.builtin_corpus``, Python's documentation; the last 10% held out).

**Part 1, adapting to Tiny Shakespeare** (``../shared/data/tinyshakespeare.txt`` or
``--shakespeare PATH``; the last 10% is the validation text). Without the file the part is
skipped with a message. Arms, each trained with Adam for the same steps on the same batches per
seed, validation loss (nats per byte, fixed validation batches) recorded every ``--eval-every``
steps:

* ``scratch``: the same architecture from a fresh random initialisation, every parameter trained;
* ``full``: the pretrained model, every parameter trained (full fine-tuning);
* ``lora r=R`` (``--ranks``, default 1, 4 and 16): the pretrained model frozen, with rank-R adapters
  (``tinyfw.nn.apply_lora``, alpha = R) on every Linear of the model (attention qkv and output,
  MLP in and out of every block, and the output layer); only the adapters train. After
  training the adapters are merged into the weights and the validation loss is measured again
  (it must not change: merge is exact up to rounding; the largest difference is reported).

**Part 2, the lights task** (``demos/lights.py``'s generated commands and its held-out phrasings,
imported from there): ON / OFF / NOTHING from the bytes of a command, with a
``tinyfw.nn.SequenceClassifier`` (mean pooling, a new Linear from width 64 to 3 classes)
over the language model, every parameter trained with Adam, against the same classifier over a
randomly initialised language model, for several numbers of training commands (nested per seed,
as in lights.py). Held-out accuracy on the fixed held-out commands. ``--lights-arms scratch
pretrained gradual`` adds ULMFiT's gradual unfreezing (``tinyfw.nn.GradualUnfreezing``: the
classifier and the final norm first, one more group down every ``steps / (2 groups)`` steps).

The spread over ``--seeds`` seeds is the spread of the fine-tuning runs (initialisation of the
new weights, batch order) around the one pretrained model; it does not include the variation of
pretraining itself.

Outputs (``--out``, default ``demos/results``): ``lora_finetune.json``, ``lora_finetune.md`` and
``lora_finetune.png`` (matplotlib, optional), each written atomically.
"""
import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw as fw  # noqa: E402
from tinyfw import nn  # noqa: E402
from tinyfw.data.corpora import builtin_corpus, read_text, shared_data_path  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.ops import nn as N  # noqa: E402
from tinyfw.optim import Adam  # noqa: E402

NAME = "lora_finetune"
LORA_LAYERS = ["blocks.*.mixer.qkv", "blocks.*.mixer.proj", "blocks.*.mlp.fc", "blocks.*.mlp.proj",
               "head"]
VOCAB = 256                  # bytes
LIGHTS_ARMS = ("scratch", "pretrained", "gradual")
# environment settings that change the speed (reported with the machine)
THREAD_SETTINGS = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TINYFW_BLAS_SPIN")
VAL_SEED = 12345             # the validation batches are the same for every arm and seed

FULL = dict(seeds=3, d_model=64, layers=2, heads=4, context=80, batch=16,
            pretrain_steps=1000, adapt_steps=200, eval_every=25, val_batches=8,
            lights_sizes=[25, 100, 400], lights_steps=250, lights_test=300, ranks=[1, 4, 16])
QUICK = dict(seeds=2, d_model=32, layers=1, heads=2, context=80, batch=8,
             pretrain_steps=30, adapt_steps=12, eval_every=6, val_batches=2,
             lights_sizes=[10, 40], lights_steps=8, lights_test=60, ranks=[4])


def load_lights():
    """demos/lights.py as a module (its command generator and held-out phrasings)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lights.py")
    spec = importlib.util.spec_from_file_location("lights_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def byte_ids(text):
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": len(a)}


# ----------------------------------------------------------------------------------- models
def make_lm(args, seed):
    fw.manual_seed(seed)
    return nn.LanguageModel(nn.ModelConfig(vocab_size=VOCAB, context_length=args.context,
                                           n_layers=args.layers, n_heads=args.heads,
                                           d_model=args.d_model))


def pretrained_lm(args, state):
    model = make_lm(args, 0)
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------- language modelling
def windows(data, starts, T):
    x = np.stack([data[s:s + T] for s in starts])
    y = np.stack([data[s + 1:s + T + 1] for s in starts])
    return fw.tensor(x), fw.tensor(y)


def validation_batches(data, args):
    rng = np.random.default_rng(VAL_SEED)
    return [windows(data, rng.integers(0, len(data) - args.context - 1, args.batch), args.context)
            for _ in range(args.val_batches)]


@fw.no_grad()
def validation_loss(model, batches):
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
    model.train()
    return float(np.mean(losses))


def train_lm(model, data, val, steps, lr, args, seed):
    """Adam on random windows of ``data``; returns the validation curve {step: loss} and the
    seconds of training (evaluations excluded)."""
    opt = Adam(nn.trainable_parameters(model), lr=lr)
    rng = np.random.default_rng(seed)
    curve, seconds = {0: validation_loss(model, val)}, 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = windows(data, rng.integers(0, len(data) - args.context - 1, args.batch),
                       args.context)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - start
        if step % args.eval_every == 0 or step == steps:
            curve[step] = validation_loss(model, val)
    return curve, seconds


def split(ids):
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:]


def pretrain(args, log):
    train, val = split(byte_ids(builtin_corpus()))
    model = make_lm(args, 0)
    curve, seconds = train_lm(model, train, validation_batches(val, args), args.pretrain_steps,
                              args.lr, args, seed=0)
    log(f"pretrained {args.pretrain_steps} steps in {seconds:.0f} s: built-in validation loss "
        f"{curve[0]:.3f} -> {curve[args.pretrain_steps]:.3f}")
    return model.state_dict(), {"curve": curve, "seconds": seconds,
                                "parameters": model.num_parameters()}


def adapt_arm(args, arm, state, data, val, seed):
    if arm == "scratch":
        model, lr = make_lm(args, 1000 + seed), args.lr
    else:
        model = pretrained_lm(args, state)
        lr = args.lr
        if arm.startswith("lora"):
            fw.manual_seed(1000 + seed)           # the adapters' A
            rank = int(arm.split("=")[1])
            nn.apply_lora(model, LORA_LAYERS, rank=rank, alpha=rank)
            lr = args.lora_lr
    counts = nn.count_parameters(model)
    curve, seconds = train_lm(model, data, val, args.adapt_steps, lr, args, seed=2000 + seed)
    record = {"arm": arm, "seed": seed, "lr": lr, "trainable": counts["trainable"],
              "total": counts["total"], "curve": curve, "final": curve[args.adapt_steps],
              "best": min(curve.values()), "seconds": seconds}
    if arm.startswith("lora"):
        nn.merge_lora(model)
        record["merged_final"] = validation_loss(model, val)
        record["merge_difference"] = abs(record["merged_final"] - record["final"])
    return record


def adaptation(args, state, log):
    path = args.shakespeare or shared_data_path("tinyshakespeare.txt")
    if path is None:
        log(f"{NAME}: tinyshakespeare.txt is not in ../shared/data/: the Tiny Shakespeare part "
            "is skipped (pass --shakespeare PATH to run it)")
        return None
    train, val_data = split(byte_ids(read_text(path)))
    if len(val_data) < args.context + 2:
        raise SystemExit(f"{NAME}: --shakespeare {path}: too short for a validation window of "
                         f"{args.context + 1} bytes")
    val = validation_batches(val_data, args)
    arms = ["scratch", "full"] + [f"lora r={r}" for r in args.ranks]
    runs = []
    for seed in range(args.seeds):
        for arm in arms:
            runs.append(adapt_arm(args, arm, state, train, val, seed))
            r = runs[-1]
            log(f"  {arm:>10} seed {seed}: {r['trainable']} trainable, validation "
                f"{r['curve'][0]:.3f} -> {r['final']:.3f} ({r['seconds']:.0f} s)")
    summary = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        steps = sorted(mine[0]["curve"])
        summary[arm] = {"trainable": mine[0]["trainable"], "total": mine[0]["total"],
                        "final": summarise([r["final"] for r in mine]),
                        "best": summarise([r["best"] for r in mine]),
                        "seconds_per_step": summarise([r["seconds"] / args.adapt_steps
                                                       for r in mine]),
                        "curve": {s: summarise([r["curve"][s] for r in mine]) for s in steps}}
    return {"corpus": os.path.basename(str(path)), "train_bytes": len(train),
            "val_bytes": len(val_data), "arms": arms, "runs": runs, "summary": summary}


# ---------------------------------------------------------------------------------- lights
def command_batch(texts, context):
    ids = [byte_ids(t) for t in texts]
    lengths = np.array([len(i) for i in ids])
    if lengths.max() > context:
        raise SystemExit(f"{NAME}: a command of {lengths.max()} bytes does not fit the context "
                         f"of {context} (raise --context)")
    out = np.zeros((len(ids), lengths.max()), dtype=np.int64)
    for row, seq in enumerate(ids):
        out[row, :len(seq)] = seq
    return out, lengths


@fw.no_grad()
def accuracy(clf, test, context):
    clf.eval()
    correct = 0
    for start in range(0, len(test), 100):
        part = test[start:start + 100]
        ids, lengths = command_batch([t for t, _ in part], context)
        correct += int((clf(ids, lengths).numpy().argmax(1) == [y for _, y in part]).sum())
    clf.train()
    return correct / len(test)


def lights_arm(args, arm, state, train, test, seed):
    lm = make_lm(args, 1000 + seed) if arm == "scratch" else pretrained_lm(args, state)
    fw.manual_seed(3000 + seed)                           # the classifier Linear
    clf = nn.SequenceClassifier(lm, n_classes=3, pooling=args.pooling)
    schedule = None
    if arm == "gradual":        # ULMFiT: the top group first, the next one down every `every`
        opt = Adam(clf.classifier.parameters(), lr=args.lights_lr)
        groups = clf.layer_groups()
        every = max(1, args.lights_steps // (2 * len(groups)))
        schedule = nn.GradualUnfreezing(clf, groups, every=every, optimizer=opt)
    else:
        opt = Adam(clf.parameters(), lr=args.lights_lr)
    rng = np.random.default_rng(4000 + seed)
    start = time.perf_counter()
    for _ in range(args.lights_steps):
        pick = rng.choice(len(train), size=min(args.lights_batch, len(train)), replace=False)
        ids, lengths = command_batch([train[i][0] for i in pick], args.context)
        labels = fw.tensor(np.array([train[i][1] for i in pick]))
        loss = N.cross_entropy(clf(ids, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
    seconds = time.perf_counter() - start
    return {"arm": arm, "seed": seed, "n_train": len(train),
            "accuracy": accuracy(clf, test, args.context), "seconds": seconds}


def lights_study(args, state, log):
    lights = load_lights()
    test = lights.generate(np.random.default_rng(lights.HELD_OUT_SEED), args.lights_test,
                           held_out=True)
    runs = []
    for seed in range(args.seeds):
        stream = lights.generate(np.random.default_rng(1000 + seed), max(args.lights_sizes),
                                 held_out=False)
        for n in args.lights_sizes:
            for arm in args.lights_arms:
                runs.append(lights_arm(args, arm, state, stream[:n], test, seed))
                log(f"  lights {arm:>10} n={n:<4} seed {seed}: accuracy "
                    f"{runs[-1]['accuracy']:.3f} ({runs[-1]['seconds']:.0f} s)")
    summary = {arm: {str(n): summarise([r["accuracy"] for r in runs
                                        if r["arm"] == arm and r["n_train"] == n])
                     for n in args.lights_sizes} for arm in args.lights_arms}
    acc = {(r["arm"], r["n_train"], r["seed"]): r["accuracy"] for r in runs}
    paired = {}                 # each pretrained arm minus scratch, seed by seed
    for arm in args.lights_arms[1:]:
        paired[arm] = {}
        for n in args.lights_sizes:
            diffs = [acc[arm, n, s] - acc["scratch", n, s] for s in range(args.seeds)]
            paired[arm][str(n)] = {"difference": summarise(diffs),
                                   "ahead": sum(d > 0 for d in diffs),
                                   "behind": sum(d < 0 for d in diffs)}
    majority = max(np.bincount([y for _, y in test], minlength=3)) / len(test)
    return {"test": len(test), "majority": float(majority), "runs": runs, "summary": summary,
            "paired": paired}


# ---------------------------------------------------------------------------------- reports
def fmt(stat, digits=3):
    if stat is None:
        return "–"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def verdicts(result):
    """Sentences comparing the measurements with the claims, whichever way they go."""
    out = []
    adapt = result["adaptation"]
    if adapt is not None:
        s = adapt["summary"]
        full, scratch = s["full"]["final"]["mean"], s["scratch"]["final"]["mean"]
        for arm in adapt["arms"]:
            if not arm.startswith("lora"):
                continue
            lora = s[arm]["final"]["mean"]
            ratio = s["full"]["trainable"] / s[arm]["trainable"]
            gap = lora - full
            where = ("within 0.05 nats of" if abs(gap) <= 0.05 else
                     "better than" if gap < 0 else "behind")
            out.append(f"**LoRA near full fine-tuning?** {arm} trains {ratio:.0f}x fewer "
                       f"parameters and ends at {lora:.3f} nats against full fine-tuning's "
                       f"{full:.3f} ({gap:+.3f}): {where} full fine-tuning"
                       + (", as claimed." if gap <= 0.05 else
                          f"; the claim does not hold at this size and budget "
                          f"({args_steps(result)} steps)."))
        start = s["full"]["curve"][0]["mean"]
        out.append(f"**Pretraining on Tiny Shakespeare?** Before any step the pretrained model "
                   f"scores {start:.3f} nats; after {args_steps(result)} steps full fine-tuning "
                   f"is at {full:.3f} and the same model from scratch at {scratch:.3f} "
                   f"({full - scratch:+.3f}): pretraining "
                   + ("helps." if full < scratch else "does not help here."))
    lights = result["lights"]
    sizes = result["settings"]["lights_sizes"]
    paired = lights["paired"]["pretrained"]
    diffs = [paired[str(n)]["difference"] for n in sizes]
    parts = [f"{n} commands: {d['mean']:+.3f} ({paired[str(n)]['ahead']} of "
             f"{d['n']} seeds ahead)" for n, d in zip(sizes, diffs)]
    helped = [n for n, d in zip(sizes, diffs) if d["mean"] > 0]
    where = ("at every size" if len(helped) == len(sizes) else
             "at no size" if not helped else f"only at {', '.join(map(str, helped))} commands")
    most = max(range(len(sizes)), key=lambda i: diffs[i]["mean"])
    shape = ("the gain is largest on the fewest examples, as claimed" if helped and most == 0
             else "the gain is not largest on the fewest examples, against the claim"
             if helped else "the claim does not hold here")
    noisy = [n for n, d in zip(sizes, diffs) if d["n"] > 1 and abs(d["mean"]) < d["std"]]
    out.append("**Pretraining on the lights task?** Held-out accuracy of the classifier over "
               "the pretrained model minus the one over a random model: " + "; ".join(parts)
               + f". Pretraining helps {where}; {shape}."
               + (f" At {', '.join(map(str, noisy))} commands the difference is smaller than "
                  "its spread over seeds." if noisy else ""))
    if "gradual" in lights["paired"]:
        gradual = [lights["paired"]["gradual"][str(n)]["difference"]["mean"] for n in sizes]
        better = [n for n, g, d in zip(sizes, gradual, diffs) if g > d["mean"]]
        out.append("**Gradual unfreezing (ULMFiT) against unfreezing everything at once?** "
                   f"Better at {', '.join(map(str, better)) or 'no'} of the sizes "
                   f"({', '.join(map(str, sizes))} commands).")
    return out


def args_steps(result):
    return result["settings"]["adapt_steps"]


def markdown(result):
    st = result["settings"]
    reduced = [f"--{key.replace('_', '-')} {value} (default {FULL[key]})"
               for key, value in result["reduced"].items()]
    L = [f"# LoRA and fine-tuning{' (--quick: a smoke run, not a result)' if st['quick'] else ''}",
         ""]
    if reduced and not st["quick"]:
        L += [f"**A reduced run** ({', '.join(reduced)}), to fit the time on a busy machine: "
              "not the defaults, which `python demos/lora_finetune.py` runs.", ""]
    L += [
         f"A byte-level LanguageModel ({result['pretraining']['parameters']} parameters: "
         f"{st['layers']} blocks, width {st['d_model']}, {st['heads']} heads, context "
         f"{st['context']}) pretrained for {st['pretrain_steps']} Adam steps on the built-in "
         f"corpus (validation loss {result['pretraining']['curve']['0']:.3f} -> "
         f"{result['pretraining']['curve'][str(st['pretrain_steps'])]:.3f} nats per byte), then "
         f"adapted. Mean ± sample standard deviation over {st['seeds']} fine-tuning seeds (one "
         "pretrained model). The claims: LoRA comes close to full fine-tuning with far fewer "
         "trainable parameters (Hu et al. 2021); pretraining helps most on little data "
         "(Howard & Ruder 2018).", ""]
    L += ["## Verdicts", ""] + [f"* {v}" for v in verdicts(result)] + [""]
    adapt = result["adaptation"]
    if adapt is None:
        L += ["## Tiny Shakespeare", "", "Skipped: tinyshakespeare.txt was not found in "
              "../shared/data/ (pass --shakespeare PATH).", ""]
    else:
        s = adapt["summary"]
        L += ["## Tiny Shakespeare: validation loss against trainable parameters", "",
              f"{st['adapt_steps']} Adam steps of {st['batch']} x {st['context']} bytes "
              f"(learning rate {st['lr']:g}; LoRA {st['lora_lr']:g}), validation on "
              f"{st['val_batches']} fixed batches of the last 10% ({adapt['val_bytes']} bytes).",
              "", "| arm | trainable parameters | share of the model | validation loss at "
              "step 0 | final validation loss | best | seconds per step |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for arm in adapt["arms"]:
            a = s[arm]
            L.append(f"| {arm} | {a['trainable']} | {a['trainable'] / a['total']:.1%} | "
                     f"{fmt(a['curve'][0])} | **{fmt(a['final'])}** | {fmt(a['best'])} | "
                     f"{fmt(a['seconds_per_step'], 3)} |")
        merged = [r["merge_difference"] for r in adapt["runs"] if "merge_difference" in r]
        if merged:
            L += ["", f"Merging the adapters into the weights changes the validation loss by at "
                      f"most {max(merged):.1e} nats (float32 rounding)."]
        steps = sorted(s["full"]["curve"])
        L += ["", "### Validation loss against steps", "",
              "| arm | " + " | ".join(f"step {k}" for k in steps) + " |",
              "|---|" + "---:|" * len(steps)]
        for arm in adapt["arms"]:
            L.append(f"| {arm} | " + " | ".join(f"{s[arm]['curve'][k]['mean']:.3f}"
                                                for k in steps) + " |")
        L.append("")
    lights = result["lights"]
    L += ["## The lights task: held-out accuracy against training commands", "",
          f"SequenceClassifier ({st['pooling']} pooling) over the language model, every "
          f"parameter trained, {st['lights_steps']} Adam steps (learning rate "
          f"{st['lights_lr']:g}, batches of {st['lights_batch']}); {lights['test']} held-out "
          f"commands with held-out phrasings (demos/lights.py); always answering the most "
          f"frequent class scores {lights['majority']:.3f}.", "",
          "Arms: `scratch`, the classifier over a randomly initialised model; `pretrained`, over "
          "the pretrained model, everything trained from the first step"
          + ("; `gradual`, over the pretrained model with ULMFiT's gradual unfreezing "
             "(tinyfw.nn.GradualUnfreezing: the classifier and final norm first, then one more "
             "block down, then the embeddings, all unfrozen by half of the steps)"
             if "gradual" in st["lights_arms"] else "") + ".", "",
          "| training commands | " + " | ".join(st["lights_arms"]) + " | "
          + " | ".join(f"{arm} - scratch (seeds ahead / behind)" for arm in lights["paired"])
          + " |", "|---:|" + "---:|" * (2 * len(st["lights_arms"]) - 1)]
    for n in st["lights_sizes"]:
        cells = [fmt(lights["summary"][arm][str(n)]) for arm in st["lights_arms"]]
        cells += [f"{p[str(n)]['difference']['mean']:+.3f} ({p[str(n)]['ahead']} / "
                  f"{p[str(n)]['behind']})" for p in lights["paired"].values()]
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += ["", f"Measured on {result['machine']} (shared with other jobs, so times are noisy); "
          f"the whole study took {result['seconds']:.0f} s. Reproduce: "
          f"`{result['command']}`."]
    return "\n".join(L) + "\n"


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    adapt, lights = result["adaptation"], result["lights"]
    panels = 3 if adapt is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4))
    axes = np.atleast_1d(axes)
    if adapt is not None:
        s = adapt["summary"]
        for arm in adapt["arms"]:
            steps = sorted(s[arm]["curve"])
            mean = np.array([s[arm]["curve"][k]["mean"] for k in steps])
            std = np.array([s[arm]["curve"][k]["std"] for k in steps])
            axes[0].plot(steps, mean, "o-", ms=3, label=f"{arm} ({s[arm]['trainable']})")
            axes[0].fill_between(steps, mean - std, mean + std, alpha=0.2)
            axes[1].errorbar([s[arm]["trainable"]], [s[arm]["final"]["mean"]],
                             yerr=[s[arm]["final"]["std"]], fmt="o", capsize=3, label=arm)
        axes[0].set_xlabel("steps on Tiny Shakespeare")
        axes[0].set_ylabel("validation loss (nats per byte)")
        axes[0].legend(title="arm (trainable parameters)", fontsize=8)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("trainable parameters")
        axes[1].set_ylabel(f"validation loss after {result['settings']['adapt_steps']} steps")
        axes[1].legend(fontsize=8)
        for ax in axes[:2]:
            ax.grid(alpha=0.3)
    ax = axes[-1]
    sizes = result["settings"]["lights_sizes"]
    for arm, style in zip(result["settings"]["lights_arms"], ("o-", "s-", "^-")):
        mean = np.array([lights["summary"][arm][str(n)]["mean"] for n in sizes])
        std = np.array([lights["summary"][arm][str(n)]["std"] for n in sizes])
        ax.plot(sizes, mean, style, label=arm)
        ax.fill_between(sizes, mean - std, mean + std, alpha=0.2)
    ax.axhline(lights["majority"], color="grey", ls=":", lw=1, label="most frequent class")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.set_xlabel("training commands")
    ax.set_ylabel(f"held-out accuracy (mean ± std, {result['settings']['seeds']} seeds)")
    ax.set_title("lights task")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("LoRA and fine-tuning from a pretrained byte-level LM"
                 + (" (--quick smoke run)" if result["settings"]["quick"] else ""))
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------ main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model and few steps (< 1 min)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"),
                   help=f"folder for {NAME}.json, .md and .png")
    p.add_argument("--shakespeare", default=None,
                   help="the adaptation text (default ../shared/data/tinyshakespeare.txt)")
    p.add_argument("--seeds", type=int, help="fine-tuning seeds (default 3; 2 quick)")
    p.add_argument("--d-model", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--context", type=int, help="context length (>= the longest command)")
    p.add_argument("--batch", type=int, help="language-model batch (sequences)")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--adapt-steps", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--val-batches", type=int)
    p.add_argument("--ranks", type=int, nargs="+", help="LoRA ranks (default 1 4 16; 4 quick)")
    p.add_argument("--lr", type=float, default=3e-3,
                   help="Adam learning rate of pretraining, scratch and full fine-tuning")
    p.add_argument("--lora-lr", type=float, default=1e-2, help="Adam learning rate of LoRA")
    p.add_argument("--lights-sizes", type=int, nargs="+")
    p.add_argument("--lights-steps", type=int)
    p.add_argument("--lights-test", type=int, help="held-out commands")
    p.add_argument("--lights-batch", type=int, default=16)
    p.add_argument("--lights-lr", type=float, default=1e-3)
    p.add_argument("--pooling", default="mean", choices=nn.POOLINGS)
    p.add_argument("--lights-arms", nargs="+", default=["scratch", "pretrained"],
                   choices=LIGHTS_ARMS, help="lights arms (add 'gradual' for ULMFiT's gradual "
                   "unfreezing)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("seeds", "d_model", "layers", "heads", "context", "batch", "pretrain_steps",
                "adapt_steps", "eval_every", "val_batches", "lights_steps", "lights_test",
                "lights_batch"):
        if getattr(args, key) < 1:
            raise SystemExit(f"{NAME}: --{key.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, key)}")
    for key in ("lights_sizes", "ranks"):
        if any(v < 1 for v in getattr(args, key)):
            raise SystemExit(f"{NAME}: --{key.replace('_', '-')} must all be >= 1, got "
                             f"{getattr(args, key)}")
    if args.d_model % args.heads:
        raise SystemExit(f"{NAME}: --d-model {args.d_model} is not divisible by --heads "
                         f"{args.heads}")
    too_big = [r for r in args.ranks if r > args.d_model]
    if too_big:
        raise SystemExit(f"{NAME}: --ranks {too_big} exceed the layers' smallest dimension "
                         f"(--d-model {args.d_model})")
    for key in ("lr", "lora_lr", "lights_lr"):
        if not getattr(args, key) > 0:
            raise SystemExit(f"{NAME}: --{key.replace('_', '-')} must be > 0, got "
                             f"{getattr(args, key)}")
    if args.shakespeare is not None and not os.path.isfile(args.shakespeare):
        raise SystemExit(f"{NAME}: --shakespeare {args.shakespeare!r} is not a file")
    args.lights_sizes = sorted(set(args.lights_sizes))
    args.lights_arms = [arm for arm in LIGHTS_ARMS if arm in args.lights_arms]
    if args.lights_arms[:2] != ["scratch", "pretrained"]:
        raise SystemExit(f"{NAME}: --lights-arms must include 'scratch' and 'pretrained' (the "
                         f"comparison), got {args.lights_arms}")
    args.ranks = sorted(set(args.ranks))
    return args


def without_out(argv):
    """The command-line arguments less ``--out FOLDER`` (a machine's own path)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            out.append(a)
    return out


def main(argv=None, log=print):
    args = parse(argv)
    start = time.perf_counter()
    state, pretraining = pretrain(args, log)
    adapt = adaptation(args, state, log)
    lights = lights_study(args, state, log)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "shakespeare")}
    reduced = {k: settings[k] for k in FULL if settings[k] != FULL[k]}
    command = " ".join([f"{k}={os.environ[k]}" for k in THREAD_SETTINGS if k in os.environ]
                       + ["python demos/lora_finetune.py"] + without_out(
        sys.argv[1:] if argv is None else argv))
    result = {"settings": settings, "command": command, "reduced": reduced,
              "pretraining": pretraining, "adaptation": adapt,
              "lights": lights, "seconds": time.perf_counter() - start,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"{numba.get_num_threads()} Numba threads"
                         + "".join(f", {k}={os.environ[k]}" for k in THREAD_SETTINGS
                                   if k in os.environ)}
    result = json.loads(json.dumps(result))        # integer step keys become strings, as saved
    if adapt is not None:                          # ... and back to integers for the report
        for arm in result["adaptation"]["summary"].values():
            arm["curve"] = {int(k): v for k, v in arm["curve"].items()}
    text = markdown(result)
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, f"{NAME}.json"),
                 lambda f: json.dump(result, f, indent=1), mode="w", encoding="utf-8")
    atomic_write(os.path.join(args.out, f"{NAME}.md"), lambda f: f.write(text), mode="w",
                 encoding="utf-8")
    plot(result, os.path.join(args.out, f"{NAME}.png"))
    log(text)
    return result


if __name__ == "__main__":
    main()
