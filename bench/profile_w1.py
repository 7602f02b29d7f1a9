"""Where the time of a W1 training step goes (issue 7, second half).

    python bench/profile_w1.py                 # 1 thread, CPU-time clock (robust on a busy box)
    python bench/profile_w1.py --threads 2 --clock wall --steps 20

Three views of the same steps:

1. **Parts**: every backend call is timed (the backend module is wrapped, as the reference path
   swaps it): matmuls, fused kernels (each by name), other NumPy primitives, and what is left,
   the Python of the engine, ops and modules. The Python share divided by the number of
   ``Function.apply`` calls and backward nodes is the per-op overhead.
2. **Matmuls by shape**: time and GFLOP/s of each matmul shape, against the machine's peak: small
   products run far below it, which bounds W1's share of the peak.
3. **cProfile**: the functions with the most time of their own.

With ``--clock cpu`` (the default) every figure is process CPU time, which another engineer's
test run on the same machine barely disturbs; with one thread it equals the work done.
"""
import argparse
import collections
import cProfile
import io
import os
import pstats
import resource
import sys
import time
import types

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw  # noqa: E402,F401  before NumPy: it sets OpenBLAS's spin (backend/cpu/runtime)
import numpy as np  # noqa: E402

from bench import harness as H  # noqa: E402
from bench.inputs import GPT, GPT_BATCH, gpt_ids, gpt_train_flops  # noqa: E402


def _fused_names():
    from tinyfw.backend.interface import FUSED
    from bench.backends import reference_functions
    return set(FUSED) | set(reference_functions())


# The rest of the step: Python of the engine, ops, modules and optimizer, and freeing arrays
# (a freed large array is handed back to the kernel where its last reference drops).
OUTSIDE = "outside the backend (Python, frees)"
# The backend's matrix products, counted together as "matmul": name -> index of the left operand
# (``addmm(c, a, b)`` is the bias plus the product, through BLAS's gemm).
PRODUCTS = {"matmul": 0, "addmm": 1}


class BackendTimer:
    """A backend module whose every function accumulates its time and call count by name."""

    def __init__(self, backend, clock):
        self.clock = clock
        self.time = collections.Counter()
        self.calls = collections.Counter()
        self.shapes = collections.defaultdict(lambda: [0.0, 0, 0])  # matmul shape -> t, n, flop
        self.module = types.ModuleType("timed_backend")
        for name, value in vars(backend).items():
            if name.startswith("__"):
                continue
            if callable(value) and not isinstance(value, type):
                value = self._wrap(name, value)
            setattr(self.module, name, value)
        self.depth = 0

    def _wrap(self, name, fn):
        clock = self.clock
        record_shape = name in PRODUCTS

        def timed(*args, **kwargs):
            # nested backend calls (a kernel wrapper calling a primitive) count once, outermost
            self.depth += 1
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = clock() - t0
                self.depth -= 1
                if self.depth == 0:
                    self.time[name] += dt
                    self.calls[name] += 1
                    if record_shape:
                        a, b = args[PRODUCTS[name]:PRODUCTS[name] + 2]
                        key = f"{tuple(a.shape)} @ {tuple(b.shape)}"
                        m, k = a.shape[-2], a.shape[-1]
                        n = b.shape[-1]
                        batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
                        entry = self.shapes[key]
                        entry[0] += dt
                        entry[1] += 1
                        entry[2] += 2 * batch * m * k * n
        timed.__name__ = name
        return timed


class ApplyCounter:
    """Counts ``Function.apply`` calls (forward ops) and backward calls, by Function."""

    def __init__(self):
        from tinyfw.autograd import Function
        self.Function = Function
        self.forward = collections.Counter()
        self.backward = collections.Counter()
        self._original = Function.__dict__["apply"]

    def __enter__(self):
        original = self._original.__func__
        counter = self
        patched = self._patched = {}

        def apply(cls, *args, **kwargs):
            counter.forward[cls.__name__] += 1
            if cls not in patched and "backward" in cls.__dict__:
                bw = cls.__dict__["backward"]
                patched[cls] = bw

                def counted_backward(ctx, *g, _bw=bw.__func__, _name=cls.__name__):
                    counter.backward[_name] += 1
                    return _bw(ctx, *g)
                cls.backward = staticmethod(counted_backward)
            return original(cls, *args, **kwargs)
        self.Function.apply = classmethod(apply)
        return self

    def __exit__(self, *exc):
        self.Function.apply = self._original
        for cls, bw in self._patched.items():
            cls.backward = bw


def profile_parts(step, steps, clock):
    """Run ``steps`` steps with the timed backend; returns the breakdown dictionary."""
    from bench.backends import use_backend
    from tinyfw.backend import backend_for
    timer = BackendTimer(backend_for("cpu"), clock)
    fused = _fused_names()
    with use_backend(timer.module), ApplyCounter() as counts:
        t0 = clock()
        for _ in range(steps):
            step()
        total = clock() - t0
    parts = {"matmul": sum(timer.time[n] for n in PRODUCTS)}
    parts["fused kernels"] = sum(t for n, t in timer.time.items() if n in fused)
    parts["other primitives"] = sum(t for n, t in timer.time.items()
                                    if n not in fused and n not in PRODUCTS)
    parts[OUTSIDE] = total - sum(timer.time.values())
    return {"total": total, "steps": steps, "parts": parts, "by_name": dict(timer.time),
            "calls": dict(timer.calls), "shapes": {k: tuple(v) for k, v in timer.shapes.items()},
            "forward_ops": dict(counts.forward), "backward_ops": dict(counts.backward)}


def report(result, peak_gflops, flops_per_step, out):
    steps, total = result["steps"], result["total"]
    per = 1e3 / steps
    w = out.write
    w(f"W1 step: {total * per:.1f} ms ({steps} steps); model FLOPs {flops_per_step / 1e9:.2f} "
      f"GFLOP/step = {flops_per_step / (total / steps) / 1e9:.1f} GFLOP/s = "
      f"{100 * flops_per_step / (total / steps) / 1e9 / peak_gflops:.0f}% of the "
      f"{peak_gflops:.0f} GFLOP/s peak\n\n")
    w("| part | ms/step | share |\n|---|---:|---:|\n")
    for name, t in result["parts"].items():
        w(f"| {name} | {t * per:.1f} | {100 * t / total:.0f}% |\n")
    n_fwd = sum(result["forward_ops"].values())
    n_bwd = sum(result["backward_ops"].values())
    py = result["parts"][OUTSIDE]
    w(f"\nOps per step: {n_fwd / steps:.0f} Function.apply calls, {n_bwd / steps:.0f} backward "
      f"calls, {sum(result['calls'].values()) / steps:.0f} backend calls; time outside the "
      f"backend per apply or backward call: {1e6 * py / max(n_fwd + n_bwd, 1):.0f} us.\n\n")
    w("Backend time by name (ms/step, calls/step):\n\n| name | ms/step | calls/step |\n"
      "|---|---:|---:|\n")
    for name, t in sorted(result["by_name"].items(), key=lambda kv: -kv[1])[:20]:
        w(f"| {name} | {t * per:.2f} | {result['calls'][name] / steps:.0f} |\n")
    w("\nMatmuls by shape:\n\n| shapes | ms/step | calls/step | GFLOP/s | % of peak |\n"
      "|---|---:|---:|---:|---:|\n")
    for key, (t, n, flop) in sorted(result["shapes"].items(), key=lambda kv: -kv[1][0])[:15]:
        g = flop / t / 1e9 if t else 0.0
        w(f"| {key} | {t * per:.2f} | {n / steps:.0f} | {g:.0f} | {100 * g / peak_gflops:.0f}% |\n")
    w("\nForward ops per step, by Function:\n\n")
    w(", ".join(f"{k} {v // steps}" for k, v in sorted(result["forward_ops"].items(),
                                                          key=lambda kv: -kv[1])) + "\n")


def overhead_floor(clock, with_torch, steps=50):
    """Median time of a training step of the W1 architecture shrunk to nothing (width 8,
    context 4, batch 1): what every step pays whatever its size."""
    from bench.workloads import tinyfw_gpt_step
    cfg = dict(GPT, context_length=4, d_model=8)
    ids = gpt_ids(cfg, 1)
    steps_by = {"tinyfw": tinyfw_gpt_step(cfg, ids)}
    if with_torch:
        from bench import torch_peers as tp
        steps_by["torch"] = tp.gpt_step_case(cfg, 1, ids)
    times = {name: [] for name in steps_by}
    for _ in range(5):
        for fn in steps_by.values():
            fn()
    for _ in range(steps):
        for name, fn in steps_by.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def cprofile_top(step, steps, clock, limit, out):
    prof = cProfile.Profile(clock)
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(limit)
    text = s.getvalue()
    # keep the table, drop pstats' preamble
    start = text.find("   ncalls")
    out.write("\ncProfile, by own time (" + f"{steps} steps):\n\n```\n" +
              text[start:].rstrip() + "\n```\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--batch", type=int, default=GPT_BATCH)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--torch", action="store_true", help="also time the PyTorch step")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="leave glibc's malloc as it is (TINYFW_MALLOC_TUNING=0) to show what "
                   "the page faults cost without the malloc settings of "
                   "tinyfw/backend/cpu/runtime/environment.py")
    args = p.parse_args(argv)
    if args.no_malloc_tuning:
        if "tinyfw.backend.cpu" in sys.modules:
            raise SystemExit("--no-malloc-tuning: the CPU backend is already loaded")
        os.environ["TINYFW_MALLOC_TUNING"] = "0"
    H.set_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    from bench.workloads import tinyfw_gpt_step
    cfg = dict(GPT)
    ids = gpt_ids(cfg, args.batch)
    step = tinyfw_gpt_step(cfg, ids)
    for _ in range(3):
        step()
    peak = H.matmul_peak_in_child(2048, repeats=5, threads=args.threads,
                                  clock=args.clock)["gflops"]
    flops = gpt_train_flops(cfg, args.batch)
    out = sys.stdout
    out.write(f"{H.cpu_model()}, {args.threads} thread(s), clock={args.clock}, load "
              f"{os.getloadavg()[0]:.1f}; matmul peak {peak:.0f} GFLOP/s\n\n")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = clock()
    for _ in range(args.steps):
        step()
    plain = (clock() - t0) / args.steps
    from tinyfw.backend.cpu import runtime
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out.write(f"Plain step (no instrumentation): {plain * 1e3:.1f} ms; per step "
              f"{(r1.ru_minflt - r0.ru_minflt) / args.steps:.0f} minor page faults and "
              f"{(r1.ru_stime - r0.ru_stime) / args.steps * 1e3:.1f} ms of system (kernel) "
              f"time [malloc {'tuned' if runtime.configure().malloc_tuned else 'untouched'}]\n")
    if args.torch:
        import torch
        from bench import torch_peers as tp
        torch.set_num_threads(args.threads)
        tstep = tp.gpt_step_case(cfg, args.batch, ids)
        for _ in range(3):
            tstep()
        t0 = clock()
        for _ in range(args.steps):
            tstep()
        out.write(f"PyTorch step: {(clock() - t0) / args.steps * 1e3:.1f} ms\n")
    floor = overhead_floor(clock, args.torch)
    out.write(f"Fixed per-step cost (the same model at width 8, context 4, batch 1: no compute to "
              f"speak of, so this is the engine, ops, modules and optimizer loop): tinyfw "
              f"{floor['tinyfw'] * 1e3:.1f} ms" + (f", PyTorch {floor['torch'] * 1e3:.1f} ms"
                                                   if "torch" in floor else "") + "\n\n")
    report(profile_parts(step, args.steps, clock), peak, flops, out)
    cprofile_top(step, args.steps, clock, args.top, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
