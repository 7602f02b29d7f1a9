"""Double descent: test error against model size for random ReLU features fitted by minimum-norm
least squares, through the interpolation threshold (features = training samples).

    python demos/double_descent.py            # the full sweep (well under a minute)
    python demos/double_descent.py --quick    # a few seconds' version (what the test runs)

Belkin, Hsu, Ma & Mandal (2019, "Reconciling modern machine-learning practice and the classical
bias-variance trade-off") show that the test error of a model family fitted by minimum-norm
interpolation first follows the classical U curve while the model has fewer parameters than there
are training samples, peaks at the interpolation threshold (parameters = samples), and then
descends a second time as the model grows further. This demo measures that curve with the
smallest model family that shows it, in plain NumPy (no autograd, no training loop):

* **Data** (a fresh draw per seed): ``n`` training inputs ``x ~ N(0, I_d)`` in ``d`` dimensions and
  a target ``f(x) = sin(a.x) + 0.5 cos(b.x)`` with fixed random directions ``a`` and ``b`` of
  length 1.5 (the same function for every seed); the training labels are ``f(x) + noise``,
  Gaussian label noise of standard deviation ``--noise`` (one sweep per noise level, 0 = clean
  labels). The test error is measured on ``--test`` fresh inputs against the noiseless ``f``.
* **Model**: ``p`` random ReLU features ``phi_j(x) = max(0, w_j.x / sqrt(d) + c_j)`` with
  ``w_j ~ N(0, I_d)``, ``c_j ~ N(0, s^2)``, ``s = --offset-std`` (drawn per seed, nested: the
  model with ``p`` features uses the first ``p`` of the seed's features), and a linear read-out
  ``y = phi(x) . beta``. The offsets are small (s = 0.3) on purpose: a feature whose offset is
  large against ``w.x`` is affine (or zero) on every training input, and affine features add no
  rank beyond ``d + 1``, so with large offsets the feature matrix reaches rank ``n`` only after
  ``p = n`` and the peak moves to the right of it.
* **Fit**: ``beta = pinv(Phi) y`` via ``numpy.linalg.lstsq``: the least-squares solution for
  ``p < n`` and the minimum-norm interpolating solution for ``p >= n``. No regularisation:
  any ridge penalty flattens the peak, which is the point of the classical recommendation.

Reported per (noise, p): the training and test mean squared errors, each divided by the variance
of ``f`` over the test inputs (so 1.0 is the error of predicting the mean), as the median over
seeds (robust: near the threshold one bad draw is orders of magnitude off) and the mean ± spread
(sample standard deviation) over seeds, and the norm of ``beta``. The checks (``checks`` in the
JSON) locate the peak of the median test error, compare it with the best under-parameterised
model (``p <= n/2``) and with the largest model, and report whether the models with ``p >= n``
interpolate (training error below ``1e-6`` of the target's variance).

Outputs (``--out``, default ``demos/results/double_descent``): ``OUT.json``, ``OUT.md`` and
``OUT.png`` (matplotlib; skipped when it is not installed), each written atomically.
"""
import argparse
import json
import os
import platform
import sys
import time

# The matrices are small (at most a few thousand columns): one BLAS thread is as fast as two,
# and a multi-threaded BLAS spins on a busy machine. Set before NumPy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyfw.fileio import atomic_write  # noqa: E402

INTERPOLATION_TOL = 1e-6   # training MSE / var(f) below this counts as interpolating
TARGET_SEED = 12345        # the target function's directions (the same for every seed)


# -------------------------------------------------------------------------------------- data
def target_directions(d):
    """The two fixed directions ``(a, b)`` of the target, each of length 1.5, shape ``(d,)``."""
    rng = np.random.default_rng(TARGET_SEED)
    a, b = rng.standard_normal((2, d))
    return 1.5 * a / np.linalg.norm(a), 1.5 * b / np.linalg.norm(b)


def target(x, directions):
    """``f(x) = sin(a.x) + 0.5 cos(b.x)`` for inputs ``x`` of shape ``(m, d)`` -> ``(m,)``."""
    a, b = directions
    return np.sin(x @ a) + 0.5 * np.cos(x @ b)


def relu_features(x, weights, offsets):
    """``max(0, x W^T / sqrt(d) + c)``: ``x (m, d)``, ``weights (p, d)``, ``offsets (p,)`` ->
    ``(m, p)``."""
    h = x @ weights.T
    h *= 1.0 / np.sqrt(x.shape[1])      # in place: the test features are large (m x p_max)
    h += offsets
    return np.maximum(h, 0.0, out=h)


# ---------------------------------------------------------------------------------- the sweep
def run_seed(seed, args, noise):
    """One seed at one noise level: fit every size in ``args.sizes``; returns lists of the
    normalised training and test errors and the coefficient norms, in the order of the sizes."""
    rng = np.random.default_rng(seed)
    d, n = args.dim, args.samples
    directions = target_directions(d)
    x_train = rng.standard_normal((n, d))
    x_test = rng.standard_normal((args.test, d))
    f_test = target(x_test, directions)
    y_train = target(x_train, directions) + noise * rng.standard_normal(n)
    scale = float(np.var(f_test))
    p_max = max(args.sizes)
    weights = rng.standard_normal((p_max, d))
    offsets = args.offset_std * rng.standard_normal(p_max)
    phi_train = relu_features(x_train, weights, offsets)
    phi_test = relu_features(x_test, weights, offsets)
    train_err, test_err, norms = [], [], []
    for p in args.sizes:
        beta = np.linalg.lstsq(phi_train[:, :p], y_train, rcond=None)[0]
        train_err.append(float(np.mean((phi_train[:, :p] @ beta - y_train) ** 2) / scale))
        test_err.append(float(np.mean((phi_test[:, :p] @ beta - f_test) ** 2) / scale))
        norms.append(float(np.linalg.norm(beta)))
    return train_err, test_err, norms


def stats(values):
    """Median, mean and sample standard deviation over seeds of each column: ``values`` is
    ``(seeds, sizes)``."""
    values = np.asarray(values)
    spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    return {"median": np.median(values, axis=0).tolist(), "mean": values.mean(axis=0).tolist(),
            "spread": spread.tolist()}


def checks(sizes, n, train, test):
    """Where the median test error peaks, and how it compares with the best model with at most
    ``n/2`` features and with the largest model; whether every model with ``p >= n`` interpolates.
    ``train`` and ``test`` are the ``stats`` of one noise level."""
    sizes = np.asarray(sizes)
    median = np.asarray(test["median"])
    peak = int(np.argmax(median))
    at_n = int(np.argmin(np.abs(sizes - n)))
    under = sizes <= n // 2
    over = sizes >= n
    best_under = int(np.flatnonzero(under)[np.argmin(median[under])]) if under.any() else None
    best_over = int(np.flatnonzero(over)[np.argmin(median[over])]) if over.any() else None
    worst_over_train = float(np.max(np.asarray(train["median"])[over])) if over.any() else None
    return {
        "peak_p": int(sizes[peak]), "peak_test": float(median[peak]),
        "test_at_n": float(median[at_n]),
        "best_under_p": None if best_under is None else int(sizes[best_under]),
        "best_under_test": None if best_under is None else float(median[best_under]),
        "best_over_p": None if best_over is None else int(sizes[best_over]),
        "best_over_test": None if best_over is None else float(median[best_over]),
        "largest_p": int(sizes[-1]), "largest_test": float(median[-1]),
        "max_train_error_over_threshold": worst_over_train,
        "interpolates_over_threshold": bool(worst_over_train is not None
                                            and worst_over_train < INTERPOLATION_TOL),
        "second_descent_beats_classical_best": bool(
            best_under is not None and best_over is not None
            and median[best_over] < median[best_under]),
    }


def sweep(args):
    """Every noise level: per-seed errors, their statistics, and the checks."""
    out = []
    for noise in args.noise:
        per_seed = [run_seed(seed, args, noise) for seed in range(args.seeds)]
        train = stats([s[0] for s in per_seed])
        test = stats([s[1] for s in per_seed])
        norms = stats([s[2] for s in per_seed])
        out.append({"noise": noise, "train": train, "test": test, "beta_norm": norms,
                    "per_seed_test": [s[1] for s in per_seed],
                    "checks": checks(args.sizes, args.samples, train, test)})
    return out


# ------------------------------------------------------------------------------------ reports
def markdown(saved):
    a = saved["args"]
    n = a["samples"]
    lines = [f"# Double descent: random ReLU features, minimum-norm least squares\n",
             f"`python demos/double_descent.py {saved['command']}`: n = {n} training samples in "
             f"d = {a['dim']} dimensions, {a['test']} test inputs, {a['seeds']} seeds (a fresh "
             "training set, label noise and features per seed). Errors are mean squared errors "
             "divided by the variance of the target f over the test inputs (1.0 = predicting "
             "the mean); the test error is against the noiseless f. Median over seeds, and mean "
             f"± spread (sample std). {saved['seconds']:.1f} s on {saved['machine']}.\n"]
    for level in saved["results"]:
        c = level["checks"]
        lines.append(f"\n## Label noise σ = {level['noise']:g}\n")
        lines.append("| features p | p / n | train error (median) | test error (median) | "
                     "test error (mean ± spread) | ‖β‖ (median) |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for i, p in enumerate(a["sizes"]):
            mark = " **(= n)**" if p == n else ""
            lines.append(f"| {p}{mark} | {p / n:.2f} | {level['train']['median'][i]:.2e} | "
                         f"{level['test']['median'][i]:.3g} | {level['test']['mean'][i]:.3g} ± "
                         f"{level['test']['spread'][i]:.2g} | "
                         f"{level['beta_norm']['median'][i]:.3g} |")
        lines.append(
            f"\nPeak of the median test error at p = {c['peak_p']} ({c['peak_test']:.3g}); best "
            f"with p ≤ n/2: {c['best_under_test']:.3g} at p = {c['best_under_p']}; best with "
            f"p ≥ n: {c['best_over_test']:.3g} at p = {c['best_over_p']}; largest model "
            f"(p = {c['largest_p']}): {c['largest_test']:.3g}. Models with p ≥ n "
            f"{'interpolate' if c['interpolates_over_threshold'] else 'do NOT all interpolate'}"
            f" (largest median training error {c['max_train_error_over_threshold']:.1e}). The "
            f"second descent {'goes below' if c['second_descent_beats_classical_best'] else 'stays above'}"
            " the best under-parameterised model.\n")
    return "\n".join(lines)


def plot(saved, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return False
    a = saved["args"]
    sizes, n = np.asarray(a["sizes"]), a["samples"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for level, color in zip(saved["results"], colors):
        label = f"label noise σ = {level['noise']:g}"
        runs = np.asarray(level["per_seed_test"])
        axes[0].plot(sizes, level["test"]["median"], marker="o", ms=3, color=color, label=label)
        axes[0].fill_between(sizes, np.percentile(runs, 25, axis=0),
                             np.percentile(runs, 75, axis=0), color=color, alpha=0.15)
        axes[1].plot(sizes, np.maximum(level["train"]["median"], 1e-16), marker="o", ms=3,
                     color=color, label=label)
    for ax, title in zip(axes, ("test error (median over seeds, band: quartiles)",
                                "training error (median over seeds, floored at 1e-16)")):
        ax.axvline(n, color="black", ls="--", lw=1, label=f"interpolation threshold p = n = {n}")
        ax.set(xscale="log", yscale="log", xlabel="number of random ReLU features p",
               ylabel="MSE / var(f)", title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Double descent: random ReLU features, minimum-norm least squares")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------- main
def default_sizes(n, p_max):
    """Log-spaced sizes from 2 to ``p_max`` plus a dense grid around ``n`` (n itself included)."""
    sizes = set(np.unique(np.round(np.geomspace(2, p_max, 24)).astype(int)).tolist())
    sizes |= {max(1, int(round(n * r))) for r in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25,
                                                   1.5, 2.0)}
    return sorted(sizes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="n = 40, 3 seeds, 500 test inputs (a few seconds)")
    p.add_argument("--out", default=None,
                   help="path without extension (default demos/results/double_descent)")
    p.add_argument("--samples", type=int, default=None, help="training samples n (default 100)")
    p.add_argument("--dim", type=int, default=5, help="input dimension d")
    p.add_argument("--test", type=int, default=None, help="test inputs (default 2000)")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 20)")
    p.add_argument("--offset-std", type=float, default=0.3,
                   help="standard deviation of the features' offsets c_j")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.5],
                   help="label-noise standard deviations, one sweep each")
    p.add_argument("--max-features", type=int, default=None,
                   help="largest p (default 20 n)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="the feature counts p (default: log-spaced plus a dense grid around n)")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("samples", 100, 40), ("test", 2000, 500), ("seeds", 20, 3)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    for name in ("samples", "dim", "test", "seeds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_features is None:
        args.max_features = 20 * args.samples
    if args.max_features < 1:
        p.error(f"--max-features must be >= 1, got {args.max_features}")
    if args.offset_std < 0:
        p.error(f"--offset-std must be >= 0, got {args.offset_std}")
    if any(s < 0 for s in args.noise):
        p.error(f"--noise must be >= 0, got {args.noise}")
    if args.sizes is None:
        args.sizes = default_sizes(args.samples, args.max_features)
    elif any(s < 1 for s in args.sizes):
        p.error(f"--sizes must all be >= 1, got {args.sizes}")
    args.sizes = sorted(set(args.sizes))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   "double_descent")

    start = time.perf_counter()
    results = sweep(args)
    seconds = time.perf_counter() - start
    saved = {"args": {k: v for k, v in vars(args).items() if k != "out"},
             "command": " ".join(argv if argv is not None else sys.argv[1:]),
             "seconds": seconds,
             "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                        f"(NumPy {np.__version__}; load average {os.getloadavg()[0]:.1f} at the "
                        "end: a shared machine)",
             "interpolation_tolerance": INTERPOLATION_TOL, "results": results}
    text = markdown(saved)
    atomic_write(out + ".json", lambda f: json.dump(saved, f, indent=1), mode="w",
                 encoding="utf-8")
    atomic_write(out + ".md", lambda f: f.write(text), mode="w", encoding="utf-8")
    if plot(saved, out + ".png"):
        print(f"wrote {out}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
