"""W9's child process: run one workload with one implementation, print its peak memory.

    python bench/memory.py W1 tinyfw --threads 2
    -> {"case": "W1", "impl": "tinyfw", "import_mb": ..., "peak_mb": ...}
    python bench/memory.py W1 torch --threads 2 --time-steps 10
    -> the same plus "step_ms": [...], ten timed steps after three warm-up steps
    python bench/memory.py W1L tinyfw --config '{"d_model": 384, ...}' --batch 8 --time-steps 4
    -> the user-written GPT (bench/user_gpt.py; PyTorch: torch_peers.GPT) at other sizes
    python bench/memory.py W4 torch
    -> causal softmax attention forward + backward, B=4, H=4, D=64, L=4096 (256 with --quick)

W1's isolated timing uses ``--time-steps``: in one process, the thread pools of NumPy's BLAS,
Numba and PyTorch slow each other down (an idle pool keeps spinning for a while after its last
call, on the cores the next implementation needs), so W1 is also timed with each
implementation alone in its own process.

Each measurement needs a fresh process: ``ru_maxrss`` is a high-water mark that never goes down,
and the tinyfw child must not have PyTorch loaded (nor the PyTorch child Numba). ``import_mb`` is
the mark after the imports and the inputs, ``peak_mb`` after the work (a few repetitions, so the
optimizer state and any caches are included).

On Linux the mark is ``VmHWM`` of ``/proc/self/status``, the peak resident set of this process's
own address space. ``getrusage(...).ru_maxrss`` would be the natural call, but Linux carries it
over ``fork`` + ``exec`` from the parent: a child of the benchmark process (which has both tinyfw
and PyTorch loaded) starts with the parent's peak and every case reads the same number.
"""
import argparse
import json
import os
import resource
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def maxrss_mb():
    """Peak resident set of this process so far, MB (see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024          # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024             # ru_maxrss: bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def build(case, impl, quick, config=None, batch=None):
    """The callable that does one repetition of ``case`` with ``impl``. The torch child never
    imports tinyfw (``bench.inputs`` is plain NumPy), the tinyfw child never imports torch.
    ``config`` / ``batch``: the GPT's sizes and batch for W1, W1u and W1L (default W1's)."""
    from bench.inputs import GPT, GPT_BATCH, attention_inputs, fast_weight_inputs, gpt_ids
    if case in ("W1", "W1u", "W1L"):
        cfg = dict(GPT) if config is None else dict(config)
        if batch is None:
            batch = 2 if quick else GPT_BATCH
        ids = gpt_ids(cfg, batch)
        if impl == "torch":
            from bench import torch_peers as tp
            return tp.gpt_step_case(cfg, batch, ids)
        if case == "W1":
            from bench.workloads import tinyfw_gpt_step
            return tinyfw_gpt_step(cfg, ids)
        from bench.user_gpt import train_step
        return train_step(cfg, ids)
    if case == "W4":
        a = attention_inputs(256 if quick else 4096)
        if impl == "torch":
            from bench import torch_peers as tp
            return tp.attention_case(a)
        from bench.workloads import op_attention_step
        return op_attention_step(a)
    rule, form = case.split("-")[1:]
    a = fast_weight_inputs(256 if quick else 4096)
    if impl == "torch":
        from bench import torch_peers as tp
        return tp.fast_weight_case(rule, form, a)
    from bench.workloads import NotAvailable, kernel_fast_weight_step, op_fast_weight_step
    try:
        return op_fast_weight_step(rule, form, a)
    except (NotAvailable, ImportError):
        from tinyfw.backend import backend_for
        return kernel_fast_weight_step(backend_for("cpu"), rule, form, a)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=("W1", "W1u", "W1L", "W3-delta-recurrent",
                                    "W3-delta-chunked", "W3-sum-recurrent", "W3-sum-chunked",
                                    "W4"))
    p.add_argument("impl", choices=("tinyfw", "torch"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--time-steps", type=int, default=0,
                   help="also time this many steps (after 3 warm-up steps), wall clock, ms")
    p.add_argument("--config", type=json.loads, default=None, metavar="JSON",
                   help="the GPT's sizes for W1/W1u/W1L, a JSON object (vocab_size, "
                   "context_length, n_layers, n_heads, d_model); default W1's")
    p.add_argument("--batch", type=int, default=None,
                   help="the GPT's batch for W1/W1u/W1L (default W1's; 2 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repetitions after the build (default 2; 1 for PyTorch's token loop, "
                   "which takes minutes at L=4096)")
    args = p.parse_args(argv)
    if args.impl == "torch":
        import torch
        torch.set_num_threads(args.threads)
    else:
        import tinyfw  # noqa: F401  before NumPy, as a user's script would: it sets OpenBLAS's spin
        from bench.harness import set_threads
        set_threads(args.threads)
    try:
        step = build(args.case, args.impl, args.quick, args.config, args.batch)
    except (ImportError, AttributeError) as e:
        print(json.dumps({"case": args.case, "impl": args.impl, "missing": f"not available "
                          f"yet: {getattr(e, 'name', None) or e}"}))
        return 0
    except Exception as e:
        if type(e).__name__ == "NotAvailable":
            print(json.dumps({"case": args.case, "impl": args.impl, "missing": str(e)}))
            return 0
        raise
    import_mb = maxrss_mb()
    repeats = args.repeats or (1 if args.impl == "torch" and "recurrent" in args.case else 2)
    for _ in range(repeats):
        step()
    result = {"case": args.case, "impl": args.impl, "import_mb": import_mb,
              "peak_mb": maxrss_mb()}
    if args.time_steps:
        import time
        for _ in range(3):
            step()
        times = []
        for _ in range(args.time_steps):
            t0 = time.perf_counter()
            step()
            times.append(1e3 * (time.perf_counter() - t0))
        result["step_ms"] = times
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
