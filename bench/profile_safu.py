"""Where the time of the W2 SAFU training step goes, against the softmax step (issue 14).

    python bench/profile_safu.py                   # 1 thread, CPU-time clock (robust on a busy box)
    python bench/profile_safu.py --threads 2 --clock wall

Two views:

1. **Side by side**: the W2 step (the W1 model, T = 64) with the softmax mixer, the SAFU mixer,
   and the SAFU mixer on the composed path (``safu_block_attention`` + ``radial_context`` +
   ``running_mean`` + ``cat``, what ``nn.safu.safu_contexts`` ran before the fused kernels),
   timed in alternation, round after round; medians and ratios.
2. **Parts** of each step (``bench/profile_w1.py``'s wrapped backend): matmuls by shape, fused
   kernels by name, other primitives, and the Python outside the backend.
"""
import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw  # noqa: E402,F401  before NumPy: it sets OpenBLAS's spin (backend/cpu/runtime)
import numpy as np  # noqa: E402

from bench import harness as H  # noqa: E402
from bench.inputs import GPT, GPT_BATCH, gpt_ids  # noqa: E402
from bench.profile_w1 import OUTSIDE, PRODUCTS, profile_parts  # noqa: E402


def composed_contexts(x, w_a, block, radial, use_document, state=None, scale=1.0,
                      return_state=True):
    """``nn.safu.safu_contexts`` as the pieces put together (fresh sequences only)."""
    from tinyfw.ops.linalg import matmul
    from tinyfw.ops.safu import radial_context, running_mean, safu_block_attention
    from tinyfw.ops.shape import cat
    if state is not None:
        raise ValueError("composed_contexts: fresh sequences only")
    parts, a = [], None
    if block:
        q = matmul(x, w_a)
        if scale != 1.0:
            q = q * scale
        h, a = safu_block_attention(x, q, block)
        parts.append(h)
    if radial:
        parts.append(radial_context(x, radial))
    if use_document:
        parts.append(running_mean(x))
    return (parts[0] if len(parts) == 1 else cat(parts, dim=-1)), a, None


def steps(batch):
    """name -> one W2 training step (softmax, SAFU, SAFU on the composed path)."""
    import tinyfw.nn.safu as safu_module
    from bench.workloads import tinyfw_gpt_step
    cfg = dict(GPT)
    ids = gpt_ids(cfg, batch)
    fused = safu_module.safu_contexts

    def on_composed(step):
        def run():
            safu_module.safu_contexts = composed_contexts
            try:
                step()
            finally:
                safu_module.safu_contexts = fused
        return run

    return {"softmax": tinyfw_gpt_step(cfg, ids, "softmax"),
            "safu": tinyfw_gpt_step(cfg, ids, "safu"),
            "safu, composed": on_composed(tinyfw_gpt_step(cfg, ids, "safu"))}


def side_by_side(impls, rounds, clock, out):
    for fn in impls.values():
        for _ in range(3):
            fn()
    names = list(impls)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(H.SETTLE_S)
            impls[name]()
            t0 = clock()
            impls[name]()
            times[name].append(clock() - t0)
    med = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    out.write("| step | median ms | / softmax |\n|---|---:|---:|\n")
    for name in names:
        out.write(f"| {name} | {med[name]:.1f} | {med[name] / med['softmax']:.2f} |\n")
    return med


def parts_table(results, out):
    """One column per step: the parts and the backend names worth listing."""
    names = list(results)
    per = {n: 1e3 / results[n]["steps"] for n in names}
    rows = [("whole step (instrumented)", {n: results[n]["total"] for n in names})]
    for part in ("matmul", "fused kernels", "other primitives", OUTSIDE):
        rows.append((part, {n: results[n]["parts"][part] for n in names}))
    keys = set()
    for n in names:
        keys |= {k for k, t in results[n]["by_name"].items()
                 if k not in PRODUCTS and t * per[n] >= 0.3}
    for key in sorted(keys, key=lambda k: -max(results[n]["by_name"].get(k, 0) for n in names)):
        rows.append((f"  {key}", {n: results[n]["by_name"].get(key, 0.0) for n in names}))
    shapes = set()
    for n in names:
        shapes |= set(results[n]["shapes"])
    for key in sorted(shapes, key=lambda k: -max(results[n]["shapes"].get(k, (0,))[0]
                                                 for n in names)):
        rows.append((f"  matmul {key}", {n: results[n]["shapes"].get(key, (0.0,))[0]
                                         for n in names}))
    out.write("| ms/step | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n")
    for label, values in rows:
        out.write(f"| {label} | " + " | ".join(f"{values[n] * per[n]:.2f}" for n in names)
                  + " |\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--rounds", type=int, default=21, help="alternating rounds (side by side)")
    p.add_argument("--steps", type=int, default=20, help="steps per profile")
    p.add_argument("--batch", type=int, default=GPT_BATCH)
    args = p.parse_args(argv)
    H.set_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    impls = steps(args.batch)
    out = sys.stdout
    out.write(f"{H.cpu_model()}, {args.threads} thread(s), clock={args.clock}, load "
              f"{os.getloadavg()[0]:.1f}; W2 shape (B={args.batch}, T={GPT['context_length']}, "
              f"D={GPT['d_model']}, {GPT['n_layers']} layers)\n\n")
    side_by_side(impls, args.rounds, clock, out)
    out.write("\n")
    results = {name: profile_parts(fn, args.steps, clock) for name, fn in impls.items()}
    parts_table(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
