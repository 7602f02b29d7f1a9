"""Where the user-written GPT step (W1u, ``bench/user_gpt.py``) spends more time than the
built-in one (W1, ``nn.LanguageModel``) on the same sizes.

    python bench/profile_w1u.py                          # W1's sizes, 1 thread, CPU time
    python bench/profile_w1u.py --size W1L --steps 3     # nanoGPT's Shakespeare size
    python bench/profile_w1u.py --threads 2 --clock wall

Both steps are timed plainly in alternating rounds, then run under ``profile_w1.py``'s
instruments (every backend call timed by name, every ``Function.apply`` and backward counted),
and the two breakdowns are printed side by side with the difference, largest first; last, the
functions of the user step with the most own time under cProfile.
"""
import argparse
import cProfile
import io
import os
import pstats
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw  # noqa: E402,F401  before NumPy: it sets OpenBLAS's spin (backend/cpu/runtime)
import numpy as np  # noqa: E402

from bench import harness as H  # noqa: E402
from bench.inputs import GPT, GPT_BATCH, gpt_ids  # noqa: E402
from bench.profile_w1 import OUTSIDE, profile_parts  # noqa: E402
from bench.workloads import GPT_LARGE, GPT_LARGE_BATCH, tinyfw_gpt_step  # noqa: E402
from bench.user_gpt import train_step  # noqa: E402

SIZES = {"W1": (GPT, GPT_BATCH), "W1L": (GPT_LARGE, GPT_LARGE_BATCH)}


def alternating(steps_by, rounds, clock):
    """Median seconds per step of each callable, timed in alternating rounds."""
    times = {name: [] for name in steps_by}
    for r in range(rounds):
        for name, fn in steps_by.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def side_by_side(title, a, b, per, out, limit=25, fmt="{:.2f}"):
    """Rows name | built-in | user | user - built-in, the largest differences first."""
    out.write(f"\n{title}\n\n| name | W1 (built-in) | W1u (user) | user - built-in |\n"
              "|---|---:|---:|---:|\n")
    names = sorted(set(a) | set(b), key=lambda n: -abs(b.get(n, 0) - a.get(n, 0)))
    for n in names[:limit]:
        x, y = a.get(n, 0) * per, b.get(n, 0) * per
        out.write(f"| {n} | {fmt.format(x)} | {fmt.format(y)} | {fmt.format(y - x)} |\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=tuple(SIZES), default="W1")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    H.set_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cfg, batch = SIZES[args.size]
    cfg, batch = dict(cfg), args.batch or batch
    ids = gpt_ids(cfg, batch)
    steps = {"W1 (built-in)": tinyfw_gpt_step(cfg, ids), "W1u (user)": train_step(cfg, ids)}
    for fn in steps.values():
        for _ in range(2):
            fn()
    out = sys.stdout
    out.write(f"{H.cpu_model()}, {args.threads} thread(s), clock={args.clock}, load "
              f"{os.getloadavg()[0]:.1f}; sizes {args.size}: {cfg}, batch {batch}\n\n")
    plain = alternating(steps, args.steps, clock)
    out.write("Plain steps, alternating (median ms): " +
              ", ".join(f"{n} {1e3 * t:.1f}" for n, t in plain.items()) +
              f"; user / built-in {plain['W1u (user)'] / plain['W1 (built-in)']:.2f}\n")

    built, user = (profile_parts(fn, args.steps, clock) for fn in steps.values())
    per = 1e3 / args.steps
    out.write(f"\nInstrumented steps: built-in {built['total'] * per:.1f} ms, user "
              f"{user['total'] * per:.1f} ms\n")
    side_by_side("Parts (ms/step)", built["parts"], user["parts"], per, out)
    side_by_side("Backend functions (ms/step)", built["by_name"], user["by_name"], per, out)
    side_by_side("Backend calls per step", built["calls"], user["calls"], 1 / args.steps, out,
                 fmt="{:.0f}")
    side_by_side("Forward ops per step (Function.apply)", built["forward_ops"],
                 user["forward_ops"], 1 / args.steps, out, fmt="{:.0f}")
    side_by_side("Backward calls per step", built["backward_ops"], user["backward_ops"],
                 1 / args.steps, out, fmt="{:.0f}")
    side_by_side("Matmuls by shape (ms/step)", {k: v[0] for k, v in built["shapes"].items()},
                 {k: v[0] for k, v in user["shapes"].items()}, per, out, limit=15)
    n_ops = {name: sum(r["forward_ops"].values()) + sum(r["backward_ops"].values())
             for name, r in (("built-in", built), ("user", user))}
    out.write(f"\n{OUTSIDE}, per apply or backward call: built-in "
              f"{1e6 * built['parts'][OUTSIDE] / max(n_ops['built-in'], 1):.0f} us, user "
              f"{1e6 * user['parts'][OUTSIDE] / max(n_ops['user'], 1):.0f} us\n")

    prof = cProfile.Profile(clock)
    prof.enable()
    for _ in range(args.steps):
        steps["W1u (user)"]()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
    text = s.getvalue()
    out.write(f"\ncProfile of the user step, by own time ({args.steps} steps):\n\n```\n"
              + text[text.find("   ncalls"):].rstrip() + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
