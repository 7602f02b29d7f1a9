"""The standard workloads W1-W9 of ``docs/BENCH.md``, W10 (SAFU scaling, issue 14) and W11
(GPT-2 small against PyTorch, issue 16; in ``gpt2.py``).

Every workload is a function ``w(ctx)`` that measures its cases with ``ctx.compare`` and returns
result rows. A case has up to three implementations, timed side by side:

- ``tinyfw``: the engine as shipped (NumPy primitives + Numba kernels; the CUDA backend with
  ``--device cuda``);
- ``reference``: the same engine code with every fused kernel replaced by its NumPy reference
  (``bench/backends.py``), which shows what the Numba kernels buy;
- ``torch``: what a PyTorch user would write (``bench/torch_peers.py``), when torch imports.

An implementation whose piece of tinyfw does not exist yet is reported as "not available yet"
with the missing name, and the rest of the case still runs.
"""
import os
import sys
import time

import numpy as np

from . import harness as H
from .inputs import (GPT, GPT_BATCH, attention_inputs, fast_weight_inputs, gpt_ids,
                     gpt_train_flops)
from .backends import (cuda_usable, kernels_without_reference, on_reference, reference_backend,
                       reference_functions, under_reference, use_backend)
from .gpt2 import w11

IMPLS = ("tinyfw", "reference", "torch")

class NotAvailable(Exception):
    """A piece of tinyfw (or of the peer) this implementation needs does not exist (yet)."""


def _missing(e):
    """NotAvailable for an ImportError/AttributeError raised while building an implementation."""
    name = getattr(e, "name", None)
    if isinstance(e, ModuleNotFoundError) and name:
        return NotAvailable(f"not available yet: {name} is missing")
    return NotAvailable(f"not available yet: {e}")


# ------------------------------------------------------------------------------------- context
class Context:
    """Options of one run plus the measured yardsticks, handed to every workload."""

    def __init__(self, quick=False, device="cpu", torch_peers=None, peak_gflops=None,
                 repeats=7, budget_s=20.0, use_reference=True, threads=None, out=None,
                 settle_s=None):
        self.quick = quick
        # the pause (and untimed call) before each timed one: see bench.harness.SETTLE_S
        self.settle_s = (0.0 if quick else H.SETTLE_S) if settle_s is None else settle_s
        self.device = device
        self.tp = torch_peers            # the bench.torch_peers module, or None
        self.torch_reason = None         # why there is no torch peer
        self.peak_gflops = peak_gflops
        self.bandwidth_gbs = None
        self.repeats = min(repeats, 3) if quick else repeats
        self.budget_s = 2.0 if quick else budget_s
        self.min_repeats = 2 if quick else 3
        self.use_reference = use_reference and device == "cpu"
        self.threads = threads
        self.rows = {}                   # workload id -> rows measured so far in this run
        self.sync = None
        if device == "cuda":
            from numba import cuda
            self.sync = cuda.synchronize

    # ---------------------------------------------------------------------------- measuring
    def compare(self, wid, case, builders, metrics=None, notes=()):
        """Build and time the implementations of one case; return its result row.

        ``builders``: impl name -> zero-argument function returning the timed callable (or
        raising NotAvailable / ImportError). ``metrics(ms)`` (ms: impl -> median ms) adds derived
        figures (tokens/s, GB/s, % of peak) to the row.
        """
        row = new_row(wid, case, notes=notes)
        impls, permanent = {}, set()
        for name in IMPLS:
            build = builders.get(name)
            if build is None:
                continue
            if isinstance(build, str):           # a reason instead of a builder: no such peer
                row["missing"][name] = build
                permanent.add(name)
                continue
            try:
                impls[name] = build()
            except NotAvailable as e:
                row["missing"][name] = str(e)
            except (ImportError, AttributeError) as e:
                row["missing"][name] = str(_missing(e))
            except MemoryError:
                row["missing"][name] = "out of memory while building the inputs"
            except Exception as e:  # a bug in a piece being written: report it, go on
                row["missing"][name] = f"error: {type(e).__name__}: {e}"
        H.log(f"  {wid} {case}: timing {', '.join(impls) or 'nothing'}")
        if impls:
            try:
                timings = H.measure(impls, repeats=self.repeats, budget_s=self.budget_s,
                                    min_repeats=self.min_repeats, sync=self._sync_for(impls),
                                    settle_s=self.settle_s)
                for name, t in timings.items():
                    row["detail"][name] = t.as_dict()
                    row["value"][name] = 1e3 * t.median
            except Exception as e:
                row["notes"].append(f"error while timing: {type(e).__name__}: {e}")
                H.log(f"    error: {type(e).__name__}: {e}")
        ms = row["value"]
        if "tinyfw" in ms and "torch" in ms:
            row["ratio"]["tinyfw/torch"] = ms["tinyfw"] / ms["torch"]
        if "tinyfw" in ms and "reference" in ms:
            row["ratio"]["tinyfw/reference"] = ms["tinyfw"] / ms["reference"]
        if metrics is not None and ms:
            row["metrics"] = metrics(ms)
        row["status"] = ("ok" if "tinyfw" in ms and set(row["missing"]) <= permanent else
                         "partial" if "tinyfw" in ms else
                         row["missing"].get("tinyfw", "error"))
        self.rows.setdefault(wid, []).append(row)
        return row

    def _sync_for(self, impls):
        if self.device != "cuda":
            return None
        syncs = [self.sync]
        if "torch" in impls and self.tp is not None:
            syncs.append(self.tp.cuda_sync)
        return lambda: [s() for s in syncs]

    def torch_builder(self, make):
        """The torch entry of ``builders``: ``make`` if torch is there, else the reason."""
        if self.tp is None:
            return self.torch_reason or "torch is not importable"
        return make

    def reference_builder(self, make):
        """The reference entry: ``make`` (a builder), run under the reference backend."""
        if not self.use_reference:
            return "the NumPy reference runs on the CPU only" if self.device != "cpu" else None

        def build():
            step = under_reference(make)
            return on_reference(step)
        return build


def new_row(wid, case, unit="ms", notes=()):
    """An empty result row: per-implementation values, details and reasons for missing ones."""
    return {"id": wid, "case": case, "unit": unit, "value": {}, "detail": {}, "ratio": {},
            "missing": {}, "metrics": {}, "notes": list(notes)}


def row_note(row, text):
    row["notes"].append(text)


def note_growth(row, previous, L):
    """Record ``L`` and, against the row of the previous (shorter) length, each time's growth."""
    row["metrics"]["L"] = L
    if previous is not None:
        for name in row["value"]:
            if name in previous["value"]:
                row["metrics"][f"{name}_growth"] = row["value"][name] / previous["value"][name]
        row["metrics"]["length_factor"] = L / previous["metrics"]["L"]


# ----------------------------------------------------------------------------------- helpers
def _fw():
    import tinyfw
    return tinyfw


# Where each functional lives when ``tinyfw.nn.functional`` does not (yet) re-export it.
_OP_MODULES = {"scaled_dot_product_attention": "attention", "layer_norm": "norms",
               "rms_norm": "norms", "linear_attention": "fast_weights",
               "delta_rule": "fast_weights", "cross_entropy": "nn"}


def _functional(name):
    """``tinyfw.nn.functional.<name>`` (or the op in ``tinyfw.ops``), else NotAvailable."""
    import importlib
    import tinyfw.nn.functional as F
    fn = getattr(F, name, None)
    if fn is None and name in _OP_MODULES:
        try:
            module = importlib.import_module(f"tinyfw.ops.{_OP_MODULES[name]}")
            fn = getattr(module, name, None)
        except ImportError:
            fn = None
    if fn is None:
        raise NotAvailable(f"not available yet: tinyfw.nn.functional.{name} is missing")
    return fn


def _leaf(array, device="cpu"):
    fw = _fw()
    return fw.tensor(array, requires_grad=True, device=device)


def _const(array, device="cpu"):
    return _fw().tensor(array, device=device)


def tinyfw_gpt_step(cfg, ids, mixer="softmax", device="cpu"):
    """One AdamW step of tinyfw's LanguageModel (forward, cross-entropy, backward, update)."""
    fw = _fw()
    from tinyfw.nn.models import LanguageModel, ModelConfig
    fw.manual_seed(0)
    try:
        model = LanguageModel(ModelConfig(**cfg, mixer=mixer))
    except (ImportError, AttributeError) as e:
        raise _missing(e) from None
    if device != "cpu":
        model = model.to(device)
    opt = fw.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = _const(ids[:, :-1].copy(), device)
    y = _const(ids[:, 1:].copy(), device)

    def step():
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


# ------------------------------------------------------------------------------------------ W1
def w1(ctx):
    """Character-level GPT training step (nanoGPT small CPU configuration)."""
    cfg, batch = dict(GPT), GPT_BATCH
    if ctx.quick:
        batch = 2
    ids = gpt_ids(cfg, batch)
    metrics = gpt_step_metrics(ctx, cfg, batch)
    row = ctx.compare("W1", f"GPT train step (B={batch}, T={cfg['context_length']})", {
        "tinyfw": lambda: tinyfw_gpt_step(cfg, ids, device=ctx.device),
        "reference": ctx.reference_builder(lambda: tinyfw_gpt_step(cfg, ids)),
        "torch": ctx.torch_builder(lambda: ctx.tp.gpt_step_case(cfg, batch, ids, ctx.device)),
    }, metrics=metrics)
    return [row, w1_isolated(ctx, metrics)]


def gpt_step_metrics(ctx, cfg, batch):
    """``metrics(ms)`` for a GPT training step: tokens/s and the share of the matmul peak of each
    implementation, from ``gpt_train_flops`` (6 x tokens x Linear parameters + the attention
    products)."""
    flops = gpt_train_flops(cfg, batch)
    tokens = batch * cfg["context_length"]

    def metrics(ms):
        out = {}
        for name, t in ms.items():
            out[f"{name}_tokens_per_s"] = tokens / (t / 1e3)
            if ctx.peak_gflops:
                out[f"{name}_pct_peak"] = 100 * flops / (t / 1e3) / (ctx.peak_gflops * 1e9)
        out["gflop_per_step"] = flops / 1e9
        return out
    return metrics


def w1_isolated(ctx, metrics, rounds=3, steps=10, wid="W1", child_args=()):
    """W1 (or ``wid``: W1u, W1L) with each implementation alone in a fresh process
    (``bench/memory.py --time-steps``; ``child_args`` adds the child's size options), the
    processes alternating over ``rounds``; the figure is the median of all timed steps.

    In the one-process comparison above, the thread pools of NumPy's BLAS, Numba and PyTorch
    slow each other down: a pool that has just worked keeps spinning for a while on the cores
    the next implementation needs. Measured on 2 cores: the PyTorch W1 step took 62-75 ms alone
    and 130 ms alternating with tinyfw in one process, and tinyfw 73 ms alone against 115 ms.
    """
    row = new_row(wid, "GPT train step, each alone in its own process")
    peers = ["tinyfw"] + (["torch"] if ctx.tp is not None and ctx.device == "cpu" else [])
    if ctx.tp is None:
        row["missing"]["torch"] = ctx.torch_reason or "torch is not importable"
    if ctx.device != "cpu":
        row["missing"]["tinyfw"] = "CPU only"
        peers = []
    times = {impl: [] for impl in peers}
    for _ in range(rounds):
        for impl in peers:
            if impl in row["missing"]:
                continue
            H.log(f"  {wid} {impl}: own process, {steps} steps")
            result = run_child(ctx, wid, impl, "--repeats", "1", "--time-steps", str(steps),
                               *child_args)
            if "missing" in result:
                row["missing"][impl] = result["missing"]
            else:
                times[impl] += result["step_ms"]
    for impl, t in times.items():
        if t:
            row["value"][impl] = float(np.median(t))
            row["detail"][impl] = {"min_ms": min(t), "median_ms": float(np.median(t)),
                                   "max_ms": max(t), "runs": len(t)}
    ms = row["value"]
    if "tinyfw" in ms and "torch" in ms:
        row["ratio"]["tinyfw/torch"] = ms["tinyfw"] / ms["torch"]
    if ms:
        row["metrics"] = metrics(ms)
    row["status"] = "ok" if "tinyfw" in ms else row["missing"].get("tinyfw", "error")
    ctx.rows.setdefault(wid, []).append(row)
    return row


# ----------------------------------------------------------------------------------- W1u, W1L
# nanoGPT's Shakespeare character model (``config/train_shakespeare_char.py``): 10.8M parameters.
GPT_LARGE = dict(vocab_size=65, context_length=256, n_layers=6, n_heads=6, d_model=384)
GPT_LARGE_BATCH = 8


def tinyfw_user_gpt_step(cfg, ids):
    """One AdamW step of the GPT a user writes with tinyfw's public API (``bench/user_gpt.py``)."""
    from . import user_gpt
    return user_gpt.train_step(cfg, ids)


def user_gpt_case(ctx, wid, cfg, batch, isolated_rounds, isolated_steps):
    """The user-written GPT step against PyTorch's twin (``torch_peers.GPT``): one row timed in
    this process, and one with each implementation alone in its own process."""
    import json
    ids = gpt_ids(cfg, batch)
    metrics = gpt_step_metrics(ctx, cfg, batch)
    notes = ["tinyfw: bench/user_gpt.py (public API: Linear, split, reshape, transpose, "
             "F.scaled_dot_product_attention); PyTorch: torch_peers.GPT, written the same way"]
    if ctx.device != "cpu":
        tinyfw_build = "the user-written model runs on the CPU here"
        torch_build = "CPU only (the tinyfw side does)"
    else:
        tinyfw_build = lambda: tinyfw_user_gpt_step(cfg, ids)  # noqa: E731
        torch_build = ctx.torch_builder(lambda: ctx.tp.gpt_step_case(cfg, batch, ids))
    row = ctx.compare(wid, f"user-written GPT train step (D={cfg['d_model']}, "
                      f"{cfg['n_layers']} layers, B={batch}, T={cfg['context_length']})", {
                          "tinyfw": tinyfw_build,
                          "reference": ctx.reference_builder(
                              lambda: tinyfw_user_gpt_step(cfg, ids)),
                          "torch": torch_build,
                      }, metrics=metrics, notes=notes)
    child_args = ("--config", json.dumps(cfg), "--batch", str(batch))
    isolated = w1_isolated(ctx, metrics, rounds=isolated_rounds, steps=isolated_steps, wid=wid,
                           child_args=child_args)
    return [row, isolated]


def w1u(ctx):
    """W1's model and sizes written by a user with tinyfw's public API (``bench/user_gpt.py``)."""
    return user_gpt_case(ctx, "W1u", dict(GPT), 2 if ctx.quick else GPT_BATCH,
                         isolated_rounds=2 if ctx.quick else 3,
                         isolated_steps=2 if ctx.quick else 10)


def w1l(ctx):
    """The user-written GPT at nanoGPT's Shakespeare size: width 384, 6 layers, 6 heads,
    context 256, batch 8 (``--quick``: batch 1)."""
    return user_gpt_case(ctx, "W1L", dict(GPT_LARGE), 1 if ctx.quick else GPT_LARGE_BATCH,
                         isolated_rounds=1 if ctx.quick else 2,
                         isolated_steps=2 if ctx.quick else 4)


# ------------------------------------------------------------------------------------------ W2
W2_MIXERS = ("softmax", "linear", "delta", "safu")


def w2(ctx):
    """The W1 model with each token mixer."""
    cfg, batch = dict(GPT), (2 if ctx.quick else GPT_BATCH)
    ids = gpt_ids(cfg, batch)
    rows = []
    for mixer in W2_MIXERS:
        if mixer == "safu":
            torch_build = "no PyTorch peer (SAFU is tinyfw's own layer)"
        else:
            torch_build = ctx.torch_builder(
                lambda m=mixer: ctx.tp.gpt_step_case(cfg, batch, ids, ctx.device, mixer=m))
        rows.append(ctx.compare("W2", f"GPT train step, mixer={mixer}", {
            "tinyfw": lambda m=mixer: tinyfw_gpt_step(cfg, ids, m, ctx.device),
            "reference": ctx.reference_builder(lambda m=mixer: tinyfw_gpt_step(cfg, ids, m)),
            "torch": torch_build,
        }))
    return rows


# ------------------------------------------------------------------------------------------ W3
def kernel_fast_weight_step(functions, rule, form, a):
    """Forward + backward of one rule through the backend functions in ``functions``
    (a module or dict): what ``F.linear_attention`` / ``F.delta_rule`` run underneath."""
    get = functions.get if isinstance(functions, dict) else (
        lambda n: getattr(functions, n, None))
    prefix = "linear_attention" if rule == "sum" else "delta_rule"
    middle = "_chunked" if form == "chunked" else ""
    fwd, bwd = get(f"{prefix}{middle}_forward"), get(f"{prefix}{middle}_backward")
    if fwd is None or bwd is None:
        raise NotAvailable(f"not available yet: {prefix}{middle}_forward/_backward missing "
                           "from the backend")
    q, k, v, beta, do = a["q"], a["k"], a["v"], a["beta"], a["do"]
    if rule == "sum":
        def step():
            fwd(q, k, v)
            bwd(do, None, q, k, v)
    else:
        def step():
            _, _, r = fwd(q, k, v, beta)
            bwd(do, None, q, k, v, beta, None, r)
    return step


def op_fast_weight_step(rule, form, a, device="cpu"):
    """Forward + backward of ``F.linear_attention`` / ``F.delta_rule`` on Tensors."""
    fn = _functional("linear_attention" if rule == "sum" else "delta_rule")
    form_kw = _fast_weight_form_kwargs(fn, form)
    q, k, v, beta = (_leaf(a[n], device) for n in ("q", "k", "v", "beta"))
    do = _const(a["do"], device)
    if rule == "sum":
        def run():
            return fn(q, k, v, normalize=False, **form_kw)
    else:
        def run():
            return fn(q, k, v, beta, **form_kw)

    def step():
        for t in (q, k, v, beta):
            t.grad = None
        run().backward(do)
    return step


def _fast_weight_form_kwargs(fn, form):
    """The keyword that makes the op use the recurrent or the chunked form (the op's own
    choice of name), or NotAvailable when the op has no such switch."""
    import inspect
    params = inspect.signature(fn).parameters
    for name, values in (("method", {"recurrent": "recurrent", "chunked": "chunked"}),
                         ("form", {"recurrent": "recurrent", "chunked": "chunked"}),
                         ("mode", {"recurrent": "recurrent", "chunked": "chunked"}),
                         ("chunk_size", {"recurrent": None, "chunked": 64})):
        if name in params:
            return {name: values[form]}
    raise NotAvailable(f"not available yet: {fn.__name__} has no switch between the recurrent "
                       "and chunked forms")


TORCH_LOOP_MAX_L = 1024


def w3(ctx):
    """Fast-weight rules alone, forward + backward, L in {256, 1024, 4096}."""
    lengths = (64, 128, 256) if ctx.quick else (256, 1024, 4096)
    refs = reference_functions()
    rows = []
    for rule in ("sum", "delta"):
        for form in ("recurrent", "chunked"):
            previous = None
            for L in lengths:
                a = fast_weight_inputs(L)

                def tinyfw_build(rule=rule, form=form, a=a):
                    if ctx.device == "cpu":
                        try:
                            return op_fast_weight_step(rule, form, a)
                        except (NotAvailable, ImportError):
                            pass
                        from tinyfw.backend import backend_for
                        return kernel_fast_weight_step(backend_for("cpu"), rule, form, a)
                    return op_fast_weight_step(rule, form, a, ctx.device)

                def reference_build(rule=rule, form=form, a=a):
                    if ctx.device != "cpu":
                        raise NotAvailable("the NumPy reference runs on the CPU only")
                    try:
                        step = under_reference(lambda: op_fast_weight_step(rule, form, a))
                        return on_reference(step)
                    except (NotAvailable, ImportError):
                        return kernel_fast_weight_step(refs, rule, form, a)

                torch_build = ctx.torch_builder(
                    lambda rule=rule, form=form, a=a:
                    ctx.tp.fast_weight_case(rule, form, a, ctx.device))
                if form == "recurrent" and L > TORCH_LOOP_MAX_L and ctx.device == "cpu":
                    # autograd through a 4096-step Python loop: minutes per call and GBs of
                    # saved per-step states (W9 measures that); L=1024 shows its growth
                    torch_build = (f"skipped: PyTorch's token loop takes minutes at L={L} "
                                   f"(timed up to L={TORCH_LOOP_MAX_L})")
                row = ctx.compare("W3", f"{rule} rule, {form}, L={L}", {
                    "tinyfw": tinyfw_build,
                    "reference": reference_build if ctx.use_reference else None,
                    "torch": torch_build,
                })
                note_growth(row, previous, L)
                previous = row
                rows.append(row)
    # delta against sum at the longest length, per form (target: delta <= 3x sum)
    for form in ("recurrent", "chunked"):
        by = {r["case"]: r for r in rows}
        s = by.get(f"sum rule, {form}, L={lengths[-1]}")
        d = by.get(f"delta rule, {form}, L={lengths[-1]}")
        if s and d:
            for name in d["value"]:
                if name in s["value"]:
                    d["metrics"][f"{name}_delta_over_sum"] = d["value"][name] / s["value"][name]
    _note_kernel_path(rows)
    return rows


def _note_kernel_path(rows):
    try:
        _functional("linear_attention")
    except (NotAvailable, ImportError):
        for r in rows:
            if "tinyfw" in r["value"]:
                row_note(r, "timed through the backend kernels (F.linear_attention / "
                         "F.delta_rule not available yet)")


# ------------------------------------------------------------------------------------------ W4
def op_attention_step(a, device="cpu"):
    sdpa = _functional("scaled_dot_product_attention")
    q, k, v = (_leaf(a[n], device) for n in ("q", "k", "v"))
    do = _const(a["do"], device)

    def step():
        for t in (q, k, v):
            t.grad = None
        sdpa(q, k, v, is_causal=True).backward(do)
    return step


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def w4(ctx):
    """Softmax attention forward + backward (causal), same shapes as W3."""
    lengths = (64, 128, 256) if ctx.quick else (256, 1024, 4096)
    rows, previous = [], None
    for L in lengths:
        a = attention_inputs(L)
        reference = ctx.reference_builder(lambda a=a: op_attention_step(a))
        # The reference materialises the (L, L) scores per head several times over.
        need = 6 * 4 * 4 * L * L * 4
        avail = _available_memory()
        if ctx.use_reference and avail is not None and need > 0.4 * avail:
            reference = (f"skipped: needs about {need / 2**30:.1f} GiB, "
                         f"{avail / 2**30:.1f} GiB available")
        row = ctx.compare("W4", f"softmax attention, causal, L={L}", {
            "tinyfw": lambda a=a: op_attention_step(a, ctx.device),
            "reference": reference,
            "torch": ctx.torch_builder(lambda a=a: ctx.tp.attention_case(a, ctx.device)),
        })
        note_growth(row, previous, L)
        previous = row
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ W5
def op_norm_step(kind, x, dy, device="cpu"):
    fw = _fw()
    fn = _functional("layer_norm" if kind == "layer" else "rms_norm")
    d = x.shape[-1]
    xt = _leaf(x, device)
    w = fw.ones(d, requires_grad=True, device=device)
    b = fw.zeros(d, requires_grad=True, device=device)
    dyt = _const(dy, device)

    def step():
        for t in (xt, w, b):
            t.grad = None
        y = fn(xt, (d,), w, b, eps=1e-5) if kind == "layer" else fn(xt, (d,), w, eps=1e-6)
        y.backward(dyt)
    return step


def w5(ctx):
    """LayerNorm and RMSNorm forward + backward, (8192, 768) float32."""
    n, d = (512, 128) if ctx.quick else (8192, 768)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    dy = rng.standard_normal((n, d)).astype(np.float32)
    # forward reads x, writes y; backward reads dy and x, writes dx (w, b, statistics: tiny)
    moved = 5 * n * d * 4
    rows = []
    for kind in ("layer", "rms"):
        rows.append(ctx.compare("W5", f"{'LayerNorm' if kind == 'layer' else 'RMSNorm'} "
                                f"({n}, {d})", {
                                    "tinyfw": lambda k=kind: op_norm_step(k, x, dy, ctx.device),
                                    "reference": ctx.reference_builder(
                                        lambda k=kind: op_norm_step(k, x, dy)),
                                    "torch": ctx.torch_builder(
                                        lambda k=kind: ctx.tp.norm_case(k, x, dy, ctx.device)),
                                }, metrics=_bandwidth_metrics(ctx, moved)))
    return rows


def _bandwidth_metrics(ctx, moved):
    def metrics(ms):
        out = {"mb_moved": moved / 1e6}
        for name, t in ms.items():
            gbs = moved / (t / 1e3) / 1e9
            out[f"{name}_gbs"] = gbs
            if ctx.bandwidth_gbs:
                out[f"{name}_pct_bandwidth"] = 100 * gbs / ctx.bandwidth_gbs
        return out
    return metrics


# ------------------------------------------------------------------------------------------ W6
def op_cross_entropy_step(logits, target, device="cpu"):
    F = _functional("cross_entropy")
    lt = _leaf(logits, device)
    tt = _const(target, device)

    def step():
        lt.grad = None
        F(lt, tt).backward()
    return step


def w6(ctx):
    """Cross-entropy forward + backward on (8192, 8192) logits."""
    n, c = (256, 512) if ctx.quick else (8192, 8192)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, c), dtype=np.float32)
    target = rng.integers(0, c, size=n, dtype=np.int64)
    # forward reads the logits; backward reads them again and writes the gradient
    moved = 3 * n * c * 4
    row = ctx.compare("W6", f"cross-entropy ({n}, {c})", {
        "tinyfw": lambda: op_cross_entropy_step(logits, target, ctx.device),
        "reference": ctx.reference_builder(lambda: op_cross_entropy_step(logits, target)),
        "torch": ctx.torch_builder(lambda: ctx.tp.cross_entropy_case(logits, target, ctx.device)),
    }, metrics=_bandwidth_metrics(ctx, moved))
    return [row]


# ------------------------------------------------------------------------------------------ W7
def tinyfw_adam_step(n, decoupled, device="cpu"):
    fw = _fw()
    from tinyfw.nn import Parameter
    rng = np.random.default_rng(0)
    p = Parameter(fw.tensor(rng.standard_normal(n, dtype=np.float32), device=device))
    p.grad = fw.tensor((1e-3 * rng.standard_normal(n)).astype(np.float32), device=device)
    opt = (fw.optim.AdamW([p], lr=1e-3, weight_decay=0.01) if decoupled
           else fw.optim.Adam([p], lr=1e-3))
    return opt.step


def w7(ctx):
    """One Adam / AdamW step over 10M float32 parameters (one tensor)."""
    n = 100_000 if ctx.quick else 10_000_000
    # read param, grad, m, v; write param, m, v
    moved = 7 * 4 * n
    rows = []
    for decoupled in (False, True):
        name = "AdamW" if decoupled else "Adam"
        rows.append(ctx.compare("W7", f"{name} step, {n / 1e6:g}M params", {
            "tinyfw": lambda d=decoupled: tinyfw_adam_step(n, d, ctx.device),
            "reference": ctx.reference_builder(lambda d=decoupled: tinyfw_adam_step(n, d)),
            "torch": ctx.torch_builder(lambda d=decoupled: ctx.tp.adam_case(n, d, ctx.device)),
        }, metrics=_bandwidth_metrics(ctx, moved)))
    return rows


# ------------------------------------------------------------------------------------------ W8
def warm_start_tokens(n):
    """``n`` characters: Tiny Shakespeare when the shared copy is there, else the built-in corpus
    repeated (only the time matters here, not what is learned)."""
    from tinyfw.data import builtin_corpus, shared_data_path
    path = shared_data_path("tinyshakespeare.txt")
    if path is not None:
        text, source = path.read_text(encoding="utf-8"), "tinyshakespeare.txt"
    else:
        text, source = builtin_corpus(), "the built-in corpus"
    if len(text) < n:
        text = text * (n // len(text) + 1)
        source += " (repeated)"
    return list(text[:n]), source


def warm_start(tokens):
    """Bit-cipher codes, co-occurrence vectors, and the explicit next-token output layer."""
    from tinyfw.warmstart import BitCipher, cooccurrence_vectors, explicit_softmax_weights
    timings = {}
    t0 = time.perf_counter()
    cipher = BitCipher().fit(tokens)
    t1 = time.perf_counter()
    vectors = cooccurrence_vectors(tokens, cipher, window=5, mode="sum")
    t2 = time.perf_counter()
    ids = cipher.indices(tokens)
    X = vectors[ids[:-1]]                        # the co-occurrence vector of each input token
    W = explicit_softmax_weights(X, ids[1:], n_out=len(cipher.vocab))
    t3 = time.perf_counter()
    timings.update(bit_cipher_s=t1 - t0, cooccurrence_s=t2 - t1, explicit_s=t3 - t2)
    return W, timings


def w8(ctx):
    """Warm start on 1M tokens, against one training epoch of the W1 model on the same data."""
    n = 20_000 if ctx.quick else 1_000_000
    tokens, source = warm_start_tokens(n)
    row = new_row("W8", f"warm start, {n / 1e6:g}M char tokens", unit="s",
                  notes=[f"corpus: {source}"])
    if ctx.use_reference:
        row["missing"]["reference"] = "the warm start is NumPy/SciPy already (no kernels)"
    row["missing"]["torch"] = "no PyTorch peer; compared with a training epoch instead"
    try:
        runs = []
        for _ in range(1 if ctx.quick else 3):
            t0 = time.perf_counter()
            _, parts = warm_start(tokens)
            runs.append((time.perf_counter() - t0, parts))
        runs.sort(key=lambda r: r[0])
        total, parts = runs[len(runs) // 2]
    except (ImportError, AttributeError) as e:
        row["status"] = str(_missing(e))
        ctx.rows.setdefault("W8", []).append(row)
        return [row]
    row["value"]["tinyfw"] = total
    row["detail"]["tinyfw"] = {"median_ms": 1e3 * total, "runs": len(runs),
                               **{k: v * 1e3 for k, v in parts.items()}}
    row["metrics"].update({"seconds": total, **parts})
    # one epoch = n / (batch * T) steps of W1, at W1's time per step measured in this run
    cfg = GPT
    w1_rows = ctx.rows.get("W1")
    if not w1_rows:
        H.log("  W8: W1 not run yet; timing a few W1 steps for the epoch estimate")
        w1_rows = w1(ctx)
    step_ms = w1_rows[-1]["value"] or w1_rows[0]["value"]   # the isolated timing first
    batch = 2 if ctx.quick else GPT_BATCH
    steps = n / (batch * cfg["context_length"])
    for name in ("tinyfw", "torch"):
        if name in step_ms:
            epoch_s = steps * step_ms[name] / 1e3
            row["metrics"][f"epoch_s_{name}"] = epoch_s
            row["metrics"][f"warm_over_epoch_{name}"] = total / epoch_s
    row_note(row, f"epoch = {steps:.0f} W1 steps (batch {batch} x {cfg['context_length']} "
             "tokens) at the W1 time per step of this run")
    row["status"] = "ok"
    ctx.rows.setdefault("W8", []).append(row)
    return [row]


# ------------------------------------------------------------------------------------------ W9
W9_CASES = ("W1", "W3-delta-recurrent", "W3-delta-chunked", "W4")


def run_child(ctx, case, impl, *extra):
    """Run ``bench/memory.py case impl`` in a fresh process: its JSON result, or
    ``{"missing": why}``."""
    import json
    import subprocess
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memory.py")
    cmd = [sys.executable, script, case, impl, "--threads", str(ctx.threads or 1), *extra]
    if ctx.quick:
        cmd.append("--quick")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"missing": "timed out"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"missing": f"child failed: {tail}"}
    return json.loads(lines[-1])


def w9(ctx):
    """Peak resident memory of W1, of W3 (delta rule, L=4096) and of W4 (causal softmax
    attention forward + backward, B=4, H=4, D=64, L=4096), each in its own process."""
    rows = []
    peers = ["tinyfw"] + (["torch"] if ctx.tp is not None else [])
    for case in W9_CASES:
        L = 256 if ctx.quick else 4096
        label = {"W1": "W1", "W4": f"W4 at L={L} (causal softmax attention fwd+bwd, B=4, H=4, "
                 "D=64)"}.get(case, f"{case} L={L}")
        row = new_row("W9", f"peak RSS, {label}", unit="MB")
        if ctx.tp is None:
            row["missing"]["torch"] = ctx.torch_reason or "torch is not importable"
        for impl in peers:
            H.log(f"  W9 {case} {impl}: child process")
            result = run_child(ctx, case, impl)
            if "missing" in result:
                row["missing"][impl] = result["missing"]
                continue
            row["value"][impl] = result["peak_mb"]
            row["metrics"][f"{impl}_peak_mb"] = result["peak_mb"]
            row["metrics"][f"{impl}_import_mb"] = result["import_mb"]
            row["metrics"][f"{impl}_work_mb"] = result["peak_mb"] - result["import_mb"]
        if "tinyfw" in row["value"] and "torch" in row["value"]:
            row["ratio"]["tinyfw/torch"] = row["value"]["tinyfw"] / row["value"]["torch"]
        failed = [impl for impl in peers if impl not in row["value"]]
        row["status"] = ("ok" if "tinyfw" in row["value"] and not failed else
                         "partial" if "tinyfw" in row["value"] else
                         row["missing"].get("tinyfw", "error"))
        row_note(row, "peak resident set (VmHWM) of a child process; import_mb = after "
                 "imports and inputs, work_mb = peak - import_mb")
        ctx.rows.setdefault("W9", []).append(row)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- W10
# The two mixers of W2 alone at W3/W4's shapes (B=4, D=256, 4 heads), the SAFU mixer with the
# options the W2 model uses (its defaults: block 8, radial 2, the document context).
W10_BATCH, W10_WIDTH, W10_HEADS = 4, 256, 4
W10_MIXERS = ("safu", "softmax")
# The softmax reference (dense (L, L) scores in NumPy) is timed up to this length: at 4096 one
# call takes tens of seconds and the case at least seven calls.
W10_SOFTMAX_REFERENCE_MAX_L = 1024


def w10_inputs(L, B=W10_BATCH, D=W10_WIDTH, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal((B, L, D)).astype(np.float32) for n in ("x", "dy")}


def tinyfw_mixer_step(kind, arrays, device="cpu"):
    """Forward + backward of one mixer module (its parameters' and the input's gradients)."""
    fw = _fw()
    fw.manual_seed(0)
    if kind == "safu":
        from tinyfw.nn.safu import SAFUMixer
        module = SAFUMixer(W10_WIDTH)
    else:
        from tinyfw.nn.attention import CausalSelfAttention
        module = CausalSelfAttention(W10_WIDTH, W10_HEADS)
    if device != "cpu":
        module = module.to(device)
    x = _leaf(arrays["x"], device)
    dy = _const(arrays["dy"], device)
    params = list(module.parameters())

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        module(x).backward(dy)
    return step


def torch_mixer_step(tp, arrays, device="cpu"):
    """PyTorch's causal self-attention module (``torch_peers.CausalSelfAttention``, SDPA)."""
    import torch
    dev = tp._device(device)
    torch.manual_seed(0)
    module = tp.CausalSelfAttention(W10_WIDTH, W10_HEADS).to(dev)
    x = torch.from_numpy(arrays["x"]).to(dev).requires_grad_(True)
    dy = torch.from_numpy(arrays["dy"]).to(dev)

    def step():
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(dy)
    return step


def w10_w2_pair(ctx):
    """W2's SAFU and softmax training steps timed against each other in alternating rounds.

    W2 times each mixer as its own case, one after the other, so a burst of load from another
    process can land on one mixer only; here the two steps share every round. The row's tinyfw
    figure is the SAFU step, the softmax step and the ratio are in its metrics and notes."""
    cfg, batch = dict(GPT), (2 if ctx.quick else GPT_BATCH)
    ids = gpt_ids(cfg, batch)
    row = new_row("W10", f"W2 step (B={batch}, T={cfg['context_length']}), SAFU against "
                  "softmax in alternating rounds")
    row["missing"]["torch"] = "no PyTorch peer (SAFU is tinyfw's own layer)"
    try:
        impls = {m: tinyfw_gpt_step(cfg, ids, m, ctx.device) for m in ("softmax", "safu")}
    except NotAvailable as e:
        row["missing"]["tinyfw"] = str(e)
        row["status"] = str(e)
        ctx.rows.setdefault("W10", []).append(row)
        return row
    H.log(f"  W10 {row['case']}: timing softmax, safu")
    timings = H.measure(impls, repeats=ctx.repeats, budget_s=ctx.budget_s,
                        min_repeats=ctx.min_repeats, sync=ctx._sync_for(impls),
                        settle_s=ctx.settle_s)
    ms = {m: 1e3 * t.median for m, t in timings.items()}
    row["value"]["tinyfw"] = ms["safu"]
    row["detail"] = {m: t.as_dict() for m, t in timings.items()}
    row["metrics"] = {"softmax_ms": ms["softmax"], "safu_ms": ms["safu"],
                      "safu_over_softmax": ms["safu"] / ms["softmax"]}
    row_note(row, f"softmax step {H.fmt_ms(ms['softmax'])} ms in the same rounds; SAFU / "
             f"softmax {ms['safu'] / ms['softmax']:.2f}")
    row["status"] = "ok"
    ctx.rows.setdefault("W10", []).append(row)
    return row


def w10(ctx):
    """SAFU scaling: the SAFU mixer against causal softmax self-attention, forward + backward,
    L in {64, 256, 1024, 4096}: linear against quadratic in the sequence length; and W2's two
    training steps against each other in alternating rounds."""
    lengths = (64, 128, 256) if ctx.quick else (64, 256, 1024, 4096)
    rows, previous = [w10_w2_pair(ctx)], {}
    by_length = {}
    for L in lengths:
        a = w10_inputs(L)
        for kind in W10_MIXERS:
            reference = ctx.reference_builder(lambda kind=kind, a=a: tinyfw_mixer_step(kind, a))
            if kind == "softmax":
                # The reference materialises the (L, L) scores per head several times over.
                need = 6 * W10_BATCH * W10_HEADS * L * L * 4
                avail = _available_memory()
                if ctx.use_reference and avail is not None and need > 0.4 * avail:
                    reference = (f"skipped: needs about {need / 2**30:.1f} GiB, "
                                 f"{avail / 2**30:.1f} GiB available")
                elif ctx.use_reference and L > W10_SOFTMAX_REFERENCE_MAX_L:
                    reference = (f"skipped: the dense NumPy reference takes minutes at L={L} "
                                 f"(timed up to L={W10_SOFTMAX_REFERENCE_MAX_L}; W4 has it)")
                torch_build = ctx.torch_builder(
                    lambda a=a: torch_mixer_step(ctx.tp, a, ctx.device))
                name = "causal softmax attention (qkv, SDPA, proj)"
            else:
                torch_build = "no PyTorch peer (SAFU is tinyfw's own layer)"
                name = "SAFU mixer (block 8, radial 2, document)"
            row = ctx.compare("W10", f"{name}, B={W10_BATCH}, D={W10_WIDTH}, L={L}", {
                "tinyfw": lambda kind=kind, a=a: tinyfw_mixer_step(kind, a, ctx.device),
                "reference": reference,
                "torch": torch_build,
            })
            note_growth(row, previous.get(kind), L)
            growth = [f"{n} x{row['metrics'][f'{n}_growth']:.1f}"
                      for n in ("tinyfw", "reference", "torch")
                      if f"{n}_growth" in row["metrics"]]
            if growth:
                row_note(row, f"growth for x{row['metrics']['length_factor']:.0f} L: "
                         + ", ".join(growth))
            previous[kind] = row
            by_length.setdefault(L, {})[kind] = row
            rows.append(row)
        pair = by_length[L]
        for n in ("tinyfw", "reference"):
            if n in pair["safu"]["value"] and n in pair["softmax"]["value"]:
                r = pair["safu"]["value"][n] / pair["softmax"]["value"][n]
                pair["safu"]["metrics"][f"{n}_safu_over_softmax"] = r
        if "tinyfw_safu_over_softmax" in pair["safu"]["metrics"]:
            row_note(pair["safu"], "SAFU / softmax (tinyfw): "
                     f"{pair['safu']['metrics']['tinyfw_safu_over_softmax']:.2f}")
    return rows


WORKLOADS = {
    "W1": ("GPT training step (nanoGPT small CPU config)", w1),
    "W1u": ("the W1 GPT written by a user with the public API", w1u),
    "W1L": ("the user-written GPT at nanoGPT's Shakespeare size (10.8M)", w1l),
    "W2": ("the W1 model with each mixer", w2),
    "W3": ("fast-weight rules alone, fwd+bwd", w3),
    "W4": ("softmax attention fwd+bwd", w4),
    "W5": ("LayerNorm / RMSNorm fwd+bwd", w5),
    "W6": ("cross-entropy fwd+bwd", w6),
    "W7": ("Adam / AdamW step", w7),
    "W8": ("warm start vs one training epoch", w8),
    "W9": ("peak memory (RSS)", w9),
    "W10": ("SAFU scaling: SAFU mixer vs softmax attention, fwd+bwd", w10),
    "W11": ("GPT-2 small (124M): forward on 1 x 1024 and KV-cache generation", w11),
}

__all__ = ["WORKLOADS", "Context", "NotAvailable", "GPT", "GPT_BATCH", "gpt_train_flops",
           "tinyfw_gpt_step", "fast_weight_inputs", "kernel_fast_weight_step",
           "op_fast_weight_step", "attention_inputs", "op_attention_step", "op_norm_step",
           "op_cross_entropy_step", "tinyfw_adam_step", "warm_start", "warm_start_tokens",
           "cuda_usable", "kernels_without_reference", "reference_backend", "use_backend"]
