"""Character-level Shakespeare: nanoGPT's small CPU configuration, trained with tinyfw.

    python demos/shakespeare_char.py                 # ~ the nanoGPT CPU run
    python demos/shakespeare_char.py --plot --out runs/shakespeare

The settings are those nanoGPT suggests for a CPU (its README, "I only have a macbook"):
4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps, learning rate 1e-3 decaying to
1e-4 after 100 warm-up steps, dropout 0, AdamW (beta2 0.99, weight decay 0.1), gradient clipping
at 1. On tiny Shakespeare (1.1 M characters, the first 90% for training, the last 10% for
validation) nanoGPT reports a validation loss of about 1.88 for this run. The demo reports its
own validation loss, estimated on ``--final-eval-iters`` batches at the end, and the time.

Measured with tinyfw (seed 1337, one thread: OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1):
validation loss 1.889 (200 batches), 287 s of CPU time for the 2000 steps and evaluations.

The text is read from ``../shared/data/tinyshakespeare.txt`` (next to the repository) or from
``--data``; it is not downloaded.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyfw.data import shared_data_path  # noqa: E402
from tinyfw.fileio import atomic_write  # noqa: E402
from tinyfw.train import TrainConfig, estimate_loss, split_tokens, train  # noqa: E402

NANOGPT_VAL_LOSS = 1.88
TARGET_VAL_LOSS = 1.95

MODEL = dict(n_layers=4, n_heads=4, d_model=128, context_length=64, dropout=0.0, mlp_ratio=4,
             norm="layer", prenorm=True, mixer="softmax", bias=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="tinyshakespeare.txt (default: ../shared/data/)")
    p.add_argument("--out", default=os.path.join("runs", "shakespeare_char"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-iters", type=int, default=20, help="batches per periodic estimate")
    p.add_argument("--final-eval-iters", type=int, default=200,
                   help="batches for the reported validation loss")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--plot", action="store_true", help="write OUT/loss.png (needs matplotlib)")
    args = p.parse_args(argv)

    data = args.data or shared_data_path("tinyshakespeare.txt")
    if data is None:
        print("shakespeare_char: tinyshakespeare.txt not found in ../shared/data/; pass --data "
              "PATH", file=sys.stderr)
        return 2
    cfg = TrainConfig(data=str(data), tokenizer="char", model=dict(MODEL), steps=args.steps,
                      batch_size=12, lr=1e-3, min_lr=1e-4, warmup=min(100, args.steps),
                      weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
                      eval_every=args.eval_every, eval_iters=args.eval_iters, seed=args.seed,
                      out=args.out, device=args.device, sample_tokens=500, temperature=0.8,
                      plot=args.plot, log_every=50)
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(cfg, resume=args.resume)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    # The reported number: a larger, fixed sample of validation windows than the periodic ones.
    model, tokenizer = result["model"], result["tokenizer"]
    from tinyfw.data import encode_corpus, load_corpus
    ids = encode_corpus(load_corpus(cfg.data), tokenizer)
    _, val_ids = split_tokens(ids, cfg, MODEL["context_length"])
    val_loss = estimate_loss(model, val_ids, cfg.batch_size, MODEL["context_length"],
                             args.final_eval_iters, seed=12345, device=cfg.device)
    report = {
        "val_loss": round(val_loss, 4),
        "val_loss_periodic_estimate": result["val_loss"],
        "best_val_loss": result["best_val_loss"],
        "final_train_step_loss": result["train_loss"],
        "steps": result["step"],
        "training_seconds": round(result["elapsed"], 1),
        "wall_seconds_this_run": round(wall, 1),
        "cpu_seconds_this_run": round(cpu, 1),  # all threads; wall > cpu on a shared machine
        "tokens_per_second": round(result["tokens_per_s"]),
        "parameters": result["n_params"],
        "nanogpt_val_loss": NANOGPT_VAL_LOSS,
        "target_val_loss": TARGET_VAL_LOSS,
        "cpu_count": os.cpu_count(),
    }
    atomic_write(os.path.join(cfg.out, "result.json"),
                 lambda f: json.dump(report, f, indent=1), mode="w", encoding="utf-8")
    print(f"\nvalidation loss {val_loss:.4f} ({args.final_eval_iters} batches of "
          f"{cfg.batch_size}x{MODEL['context_length']}); nanoGPT reports ~{NANOGPT_VAL_LOSS}, "
          f"target <= {TARGET_VAL_LOSS}: {'met' if val_loss <= TARGET_VAL_LOSS else 'NOT met'}")
    print(f"training time {result['elapsed']:.0f} s wall, {cpu:.0f} s CPU "
          f"({result['tokens_per_s']:,.0f} tokens/s); "
          f"report in {os.path.join(cfg.out, 'result.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
