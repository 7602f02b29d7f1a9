"""W11: GPT-2 small (124M parameters, random weights, nothing downloaded) in tinyfw and PyTorch.

    python bench/gpt2.py                   # = python bench/run.py --only W11
    python bench/gpt2.py --quick --no-reference

One ``transformers.GPT2LMHeadModel`` is built from GPT-2 small's config with random weights and
saved to a temporary folder; tinyfw loads that folder with ``LanguageModel.from_pretrained``, so
both sides run the same weights. Two cases, timed in alternating rounds:

- the forward pass on 1 x 1024 tokens (inference, no gradients);
- greedy generation of ``GENERATED`` tokens after an 8-token prompt with the KV cache: tinyfw's
  ``generate`` (one step per token from the carried state) against the same loop in PyTorch
  (``past_key_values``, the argmax of the last logits each step).

The forward row also records the load (seconds, and the resident-memory peak it adds in a fresh
process against the weights' size) and the largest difference between the two sides' logits.
"""
import os
import sys
import tempfile

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness as H  # noqa: E402

GPT2_SMALL = dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)
GPT2_QUICK = dict(GPT2_SMALL, n_layer=2, n_positions=128)
PROMPT = 8
GENERATED = 32


def _shapes(ctx):
    return GPT2_QUICK if ctx.quick else GPT2_SMALL


# Run in a fresh process: the resident-memory peak that loading the folder adds to an
# interpreter that has imported tinyfw, against the size of the weights loaded.
# The mark is VmHWM (bench/memory.py's maxrss_mb): ru_maxrss carries the parent's peak over fork +
# exec, and the parent holds PyTorch's copy of the model, so ru_maxrss would hide the load.
_LOAD_IN_CHILD = """
import json, sys, time
import tinyfw
from tinyfw.nn.models import LanguageModel
from bench.memory import maxrss_mb as peak
before = peak()
t0 = time.perf_counter()
model = LanguageModel.from_pretrained(sys.argv[1])
seconds = time.perf_counter() - t0
weights = sum(p.data.nbytes for p in model.parameters()) / 2 ** 20
print(json.dumps({"load_s": seconds, "load_peak_mb": peak() - before, "weights_mb": weights}))
"""


def load_in_child(folder):
    """{'load_s', 'load_peak_mb', 'weights_mb'} of ``from_pretrained(folder)`` in a new process
    (the peak is a high-water mark: in this process the models built before would hide it)."""
    import json
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _LOAD_IN_CHILD, folder], capture_output=True,
                         text=True, cwd=root, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class GPT2Pair:
    """The Hugging Face model and tinyfw's, holding the same random weights."""

    def __init__(self, shapes, folder):
        import torch
        import transformers
        torch.manual_seed(0)
        config = transformers.GPT2Config(**shapes, bos_token_id=50256, eos_token_id=50256)
        self.torch_model = transformers.GPT2LMHeadModel(config).eval()
        self.torch_model.save_pretrained(folder)
        from tinyfw.nn.models import LanguageModel
        self.model = LanguageModel.from_pretrained(folder)
        self.load = load_in_child(folder)


def tinyfw_forward(model, ids):
    import tinyfw as fw
    x = fw.tensor(ids)

    def step():
        with fw.no_grad():
            return model(x)
    return step


def torch_forward(torch_model, ids):
    import torch
    x = torch.from_numpy(ids)

    def step():
        with torch.no_grad():
            return torch_model(x).logits
    return step


def tinyfw_generate(model, prompt, n):
    import tinyfw as fw
    x = fw.tensor(prompt)
    return lambda: model.generate(x, n, temperature=0).numpy()


def torch_generate(torch_model, prompt, n):
    """Greedy decoding with the KV cache, one token per forward call (what ``generate`` does)."""
    import inspect
    import torch
    x = torch.from_numpy(prompt)
    # transformers 5 names the cache 'cache'; earlier versions 'past_key_values'
    key = "cache" if "cache" in inspect.signature(torch_model.forward).parameters else \
        "past_key_values"

    def step():
        with torch.no_grad():
            out = torch_model(x, use_cache=True)
            seq = [x]
            for _ in range(n):
                nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
                seq.append(nxt)
                out = torch_model(nxt, use_cache=True, **{key: getattr(out, key)})
            return torch.cat(seq, dim=1).numpy()
    return step


def w11(ctx):
    """GPT-2 small: forward on 1 x 1024 tokens and KV-cache generation, tinyfw against PyTorch
    (``transformers.GPT2LMHeadModel``) on the same random weights."""
    shapes = _shapes(ctx)
    T = shapes["n_positions"]
    n_new = 8 if ctx.quick else GENERATED
    rng = np.random.default_rng(0)
    ids = rng.integers(0, shapes["vocab_size"], size=(1, T))
    prompt = ids[:, :PROMPT].copy()
    size = f"{shapes['n_layer']} layers, D={shapes['n_embd']}, V={shapes['vocab_size']}"
    if ctx.device != "cpu":
        why = "W11 runs on the CPU only (the loader builds a CPU model)"
        return [ctx.compare("W11", f"GPT-2 small ({size}) forward", {"tinyfw": why})]
    if ctx.tp is None:
        why = ctx.torch_reason or "torch is not importable"
        return [ctx.compare("W11", f"GPT-2 small ({size}) forward, 1 x {T} tokens",
                            {"tinyfw": f"needs transformers for the shared weights ({why})"})]
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        return [ctx.compare("W11", f"GPT-2 small ({size}) forward, 1 x {T} tokens",
                            {"tinyfw": f"needs transformers for the shared weights ({e})"})]
    with tempfile.TemporaryDirectory(prefix="w11-gpt2-") as folder:
        pair = GPT2Pair(shapes, folder)          # the child process loads it while it exists
    load = pair.load
    H.log(f"  W11 loaded {load['weights_mb']:.0f} MiB of weights in {load['load_s']:.1f} s "
          f"(+{load['load_peak_mb']:.0f} MiB peak resident memory, in a fresh process)")
    got = tinyfw_forward(pair.model, ids)().numpy()
    want = torch_forward(pair.torch_model, ids)().numpy()
    diff = float(np.abs(got - want).max())
    forward = ctx.compare("W11", f"GPT-2 small ({size}) forward, 1 x {T} tokens, no grad", {
        "tinyfw": lambda: tinyfw_forward(pair.model, ids),
        "torch": lambda: torch_forward(pair.torch_model, ids),
    })
    forward["metrics"].update(load, max_abs_logit_diff=diff,
                              load_peak_over_weights=load["load_peak_mb"] / load["weights_mb"])
    forward["notes"].append(f"same weights: max |logits diff| {diff:.1e}; load "
                            f"{load['load_s']:.1f} s, +{load['load_peak_mb']:.0f} MiB peak RSS "
                            f"for {load['weights_mb']:.0f} MiB of weights "
                            f"({load['load_peak_mb'] / load['weights_mb']:.2f}x)")
    same_tokens = np.array_equal(tinyfw_generate(pair.model, prompt, n_new)(),
                                 torch_generate(pair.torch_model, prompt, n_new)())
    generate = ctx.compare(
        "W11", f"GPT-2 small greedy generation, {n_new} tokens after {PROMPT}, KV cache", {
            "tinyfw": lambda: tinyfw_generate(pair.model, prompt, n_new),
            "torch": lambda: torch_generate(pair.torch_model, prompt, n_new),
        })
    rates = {name: 1e3 * n_new / ms for name, ms in generate["value"].items()}
    generate["metrics"].update({f"{name}_tokens_per_s": r for name, r in rates.items()})
    generate["notes"].append("tokens/s: " + ", ".join(f"{n} {r:.1f}" for n, r in rates.items())
                             + ("; same tokens" if same_tokens else
                                "; the greedy tokens differ (float32 near-ties)"))
    return [forward, generate]


def main(argv=None):
    from bench import run
    return run.main(["--only", "W11"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
