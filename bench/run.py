"""Run the standard workloads (``docs/BENCH.md``) and write the results table.

    python bench/run.py                       # everything, CPU, with PyTorch if importable
    python -m tinyfw bench --only W1,W5       # the same through the tinyfw command line
    python bench/run.py --quick --out /tmp/b  # small shapes, few repeats: a smoke run
    python bench/run.py --device cuda         # tinyfw's CUDA backend (a real GPU only)

Prints a table of median times and ratios (tinyfw/torch and tinyfw/reference, below 1.0 means
tinyfw is faster) and writes ``results.json`` and ``results.md`` (README-ready) under ``--out``.
"""
import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyfw  # noqa: E402,F401  before NumPy: it sets OpenBLAS's spin (backend/cpu/runtime)
from bench import harness as H  # noqa: E402

DEFAULT_OUT = os.path.join("runs", "bench")


def build_parser():
    p = argparse.ArgumentParser(
        prog="tinyfw bench", description="Time the standard workloads W1-W11 for tinyfw, the "
        "NumPy reference path and PyTorch (when importable), side by side.")
    p.add_argument("--only", metavar="W1,W5", default=None,
                   help="comma-separated workload ids to run (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="small shapes and few repeats: checks that everything runs; the "
                   "numbers are not comparable with a full run")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default) or cuda (tinyfw's CUDA backend; needs a real GPU)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"directory for results.json and results.md (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for tinyfw (Numba and BLAS) and PyTorch alike (default: "
                   "Numba's default, normally the number of cores)")
    p.add_argument("--repeats", type=int, default=15,
                   help="timed rounds per case, at most (default 15)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds per case: fewer rounds for slow cases (never fewer than 3)")
    p.add_argument("--settle", type=float, default=None, metavar="S",
                   help="pause before each timed call, followed by one untimed call (default "
                   "0.05 s, 0 with --quick; 0 times strictly back-to-back alternating calls)")
    p.add_argument("--no-torch", action="store_true", help="do not run the PyTorch peer")
    p.add_argument("--no-reference", action="store_true",
                   help="do not run the NumPy reference path")
    p.add_argument("--allow-simulator", action="store_true",
                   help="with --device cuda under NUMBA_ENABLE_CUDASIM=1: run the code paths "
                   "(checks only: the simulator's timings are withheld)")
    return p


def select(only):
    from bench.workloads import WORKLOADS
    if not only:
        return list(WORKLOADS)
    by_name = {w.upper(): w for w in WORKLOADS}          # W1u, W1L: any case on the command line
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w.upper() not in by_name]
    if unknown:
        raise SystemExit(f"tinyfw bench: unknown workload(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(WORKLOADS)}")
    chosen = {by_name[w.upper()] for w in wanted}
    return [w for w in WORKLOADS if w in chosen]


def load_torch_peers(disabled, threads):
    """(the bench.torch_peers module or None, why not)."""
    if disabled:
        return None, "disabled with --no-torch"
    try:
        from bench import torch_peers
    except ImportError as e:
        return None, f"torch is not importable ({e})"
    torch_peers.set_threads(threads)
    return torch_peers, None


def run(argv=None):
    """Run the selected workloads; return the results dictionary (also written to --out)."""
    args = build_parser().parse_args(argv)
    ids = select(args.only)
    from bench.backends import cuda_usable, kernels_without_reference, reference_replaced
    from bench.workloads import WORKLOADS, Context, new_row

    simulated = False
    if args.device == "cuda":
        ok, why = cuda_usable()
        if not ok:
            if not (args.allow_simulator and "SIMULATOR" in why.upper()):
                raise SystemExit(f"tinyfw bench --device cuda: {why}. GPU figures are only "
                                 "quoted from a real GPU.")
            simulated = True

    import numba
    threads = args.threads or numba.get_num_threads()
    H.set_threads(threads)
    tp, torch_reason = load_torch_peers(args.no_torch or simulated, threads)
    if args.device == "cuda" and tp is not None:
        import torch
        if not torch.cuda.is_available():
            tp, torch_reason = None, "this PyTorch build has no CUDA"
    torch_module = None
    if tp is not None:
        import torch as torch_module

    info = H.machine_info(torch_module)
    info["threads"] = threads
    if info["blas_threads"] not in (None, threads):
        H.log(f"warning: BLAS uses {info['blas_threads']} threads, Numba {threads}")
    H.log(f"tinyfw bench: {', '.join(ids)} on {info['cpu']} ({info['cores']} cores), "
          f"{threads} threads" + (", quick" if args.quick else ""))
    load = info["load_average_start"]
    if load and threads > 1 and load[0] > 0.75 * (info["cores"] or 1):
        # OpenMP/BLAS pools spin and wait on each other when the cores are taken: multi-threaded
        # figures then swing by 10x and more (seen here: a 130 ms step taking seconds)
        H.log(f"warning: the machine is busy (load {load[0]:.1f} on {info['cores']} cores); "
              "multi-threaded timings will be unreliable. Wait for a quiet machine or use "
              "--threads 1.")

    H.log("matmul peak (2048 x 2048 float32 numpy.matmul) ...")
    peak = H.matmul_peak_in_child(2048, repeats=3 if args.quick else 7, threads=threads)
    H.log(f"  {peak['gflops']:.1f} GFLOP/s (median {peak['gflops_median']:.1f})")

    ctx = Context(quick=args.quick, device=args.device, torch_peers=tp,
                  peak_gflops=peak["gflops"], repeats=args.repeats, budget_s=args.budget,
                  use_reference=not args.no_reference, threads=threads, settle_s=args.settle)
    ctx.torch_reason = torch_reason
    info["settle_s"] = ctx.settle_s
    bandwidth = None
    if {"W5", "W6", "W7"} & set(ids):
        bandwidth = H.memory_bandwidth(64 * 2 ** 20 if args.quick else 512 * 2 ** 20)
        ctx.bandwidth_gbs = bandwidth["gbs"]
        H.log(f"copy bandwidth: {bandwidth['gbs']:.1f} GB/s")

    started = time.time()
    rows = []
    for wid in ids:
        title, fn = WORKLOADS[wid]
        H.log(f"{wid}: {title}")
        try:
            rows.extend(fn(ctx))
        except Exception as e:  # one broken workload must not lose the others' results
            H.log(f"  {wid} failed: {type(e).__name__}: {e}")
            rows.append({**new_row(wid, title), "status": f"error: {type(e).__name__}: {e}"})
    if simulated:
        for row in rows:
            row["value"], row["ratio"], row["detail"] = {}, {}, {}
            row["notes"].append("CUDA simulator: timings withheld (code path checked only)")

    info["load_average_end"] = H.load_average()
    results = {
        "format": "tinyfw-bench", "version": 1,
        "machine": info,
        "options": {"only": ids, "quick": args.quick, "device": args.device,
                    "repeats": args.repeats, "budget_s": args.budget, "simulated": simulated},
        "matmul_peak": peak,
        "memory_bandwidth": bandwidth,
        "reference_path": {"replaced": reference_replaced(),
                           "kernels_without_reference": kernels_without_reference()},
        "torch": None if tp is None else {"threads": torch_module.get_num_threads()},
        "torch_missing": torch_reason,
        "seconds": time.time() - started,
        "rows": rows,
    }
    print(render_text(results))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=float)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(render_markdown(results))
        H.log(f"wrote {os.path.join(args.out, 'results.json')} and results.md")
    return results


# ------------------------------------------------------------------------------------ rendering
def fmt_value(v, unit):
    if v is None:
        return "-"
    if unit == "MB":
        return f"{v:.0f} MB"
    if unit == "s":
        return f"{v:.2f} s"
    return f"{H.fmt_ms(v)} ms"


def summary(row):
    """The derived figures of a row, as a short text."""
    m, parts = row.get("metrics", {}), []
    wid = row["id"]
    if wid in ("W1", "W1u", "W1L"):
        for name in ("tinyfw", "torch", "reference"):
            if f"{name}_pct_peak" in m:
                parts.append(f"{name} {m[f'{name}_pct_peak']:.0f}% of peak, "
                             f"{m[f'{name}_tokens_per_s'] / 1e3:.1f}k tok/s")
    elif wid in ("W3", "W4"):
        growth = [f"{name} x{m[f'{name}_growth']:.1f}" for name in ("tinyfw", "reference",
                                                                      "torch")
                  if f"{name}_growth" in m]
        if growth:
            parts.append(f"growth for x{m['length_factor']:.0f} L: " + ", ".join(growth))
        if "tinyfw_delta_over_sum" in m:
            parts.append(f"delta/sum: tinyfw {m['tinyfw_delta_over_sum']:.2f}"
                         + (f", torch {m['torch_delta_over_sum']:.2f}"
                            if "torch_delta_over_sum" in m else ""))
    elif wid in ("W5", "W6", "W7"):
        bw = [f"{name} {m[f'{name}_gbs']:.1f}" for name in ("tinyfw", "reference", "torch")
              if f"{name}_gbs" in m]
        if bw:
            parts.append("GB/s: " + ", ".join(bw))
        if "tinyfw_pct_bandwidth" in m:
            parts.append(f"tinyfw {m['tinyfw_pct_bandwidth']:.0f}% of copy bandwidth")
    elif wid == "W8":
        for name in ("tinyfw", "torch"):
            if f"epoch_s_{name}" in m:
                parts.append(f"{m[f'warm_over_epoch_{name}']:.3f} of a {name} epoch "
                             f"({m[f'epoch_s_{name}']:.0f} s)")
    elif wid == "W9":
        for name in ("tinyfw", "torch"):
            if f"{name}_work_mb" in m:
                parts.append(f"{name}: {m[f'{name}_import_mb']:.0f} MB after import + "
                             f"{m[f'{name}_work_mb']:.0f} MB work")
    if row.get("status", "ok") not in ("ok",):
        if row.get("status") != "partial":
            parts.append(row["status"])
    for name, why in row.get("missing", {}).items():
        if row.get("status") == why:
            continue
        parts.append(f"{name}: {why}")
    parts.extend(row.get("notes", []))
    return "; ".join(parts)


COLUMNS = ("id", "case", "tinyfw", "NumPy ref", "PyTorch", "tinyfw/torch", "tinyfw/ref")


def _cells(row):
    v, r, unit = row.get("value", {}), row.get("ratio", {}), row.get("unit", "ms")
    return [row["id"], row["case"], fmt_value(v.get("tinyfw"), unit),
            fmt_value(v.get("reference"), unit), fmt_value(v.get("torch"), unit),
            H.fmt_ratio(r.get("tinyfw/torch")), H.fmt_ratio(r.get("tinyfw/reference"))]


def machine_line(results):
    i = results["machine"]
    peak = results["matmul_peak"]
    line = (f"{i['cpu']}, {i['cores']} cores ({i['simd']}), {i['threads']} threads for tinyfw "
            f"(Numba + BLAS")
    if i.get("helper_threads"):
        line += (f"; mid-size kernels split with helper threads, OPENBLAS_THREAD_TIMEOUT="
                 f"{i.get('openblas_thread_timeout')}")
    line += ")"
    if i.get("torch"):
        line += f" and PyTorch {i['torch']} ({i['torch_threads']} threads)"
    line += (f"; numpy {i['numpy']}, numba {i['numba']}. float32 matmul peak "
             f"{peak['gflops']:.0f} GFLOP/s (2048x2048 numpy.matmul, best of {peak['repeats']})")
    if results.get("memory_bandwidth"):
        line += f"; copy bandwidth {results['memory_bandwidth']['gbs']:.1f} GB/s"
    if i.get("settle_s"):
        line += (f"; each timed call after a {1e3 * i['settle_s']:.0f} ms pause and one untimed "
                 "call")
    la0, la1 = i.get("load_average_start"), i.get("load_average_end")
    if la0 and la1:
        line += f". Load average {la0[0]:.1f} at the start, {la1[0]:.1f} at the end"
    return line + "."


def render_text(results):
    rows = [list(COLUMNS)] + [_cells(r) for r in results["rows"]]
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(COLUMNS))]
    lines = [machine_line(results), ""]
    for k, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) if j < 2 else str(c).rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for r in results["rows"]:
        s = summary(r)
        if s:
            lines.append(f"{r['id']} {r['case']}: {s}")
    return "\n".join(lines)


def render_markdown(results):
    o = results["options"]
    head = ("Benchmarks (`python -m tinyfw bench`" + (" --quick" if o["quick"] else "") +
            (f" --device {o['device']}" if o["device"] != "cpu" else "") + "), "
            + time.strftime("%Y-%m-%d", time.localtime()) + ".\n\n")
    lines = [head + machine_line(results) + " Median of alternating runs; ratios below 1.0 "
             "mean tinyfw is faster. The NumPy reference is the same engine with every fused "
             "kernel replaced by its NumPy version.", ""]
    if o["quick"]:
        lines += ["**Quick run: reduced shapes, not comparable with the full workloads.**", ""]
    lines.append("| " + " | ".join(COLUMNS + ("notes",)) + " |")
    lines.append("|" + "|".join("---" if j < 2 else "---:" for j in range(len(COLUMNS)))
                 + "|---|")
    for r in results["rows"]:
        cells = _cells(r) + [summary(r).replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Command-line entry (``python bench/run.py``, ``python -m tinyfw bench``): exit status."""
    try:
        run(argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        return e.code or 0
    except KeyboardInterrupt:
        print("tinyfw bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
