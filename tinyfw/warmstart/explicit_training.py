"""Explicit (closed-form) training of SAFU layers, then optional fine-tuning with Adam.

The procedure (spec step 6, ``docs/WARM_START_AND_SAFU.md``; **tinyfw design** where the
papers were not available):

1. **Uniform attention.** ``W_A = 0``: every position of the block gets the same weight. Compute
   the features ``z = [h; r; d]`` of every training position and solve the output layer with the
   explicit softmax solution ``W_O = log(F / rowsum F) / K``, ``F = Z^T Y`` (``explicit.py``).
2. **Attention by the differential criterion.** Attention has no observed targets. For each
   position t, ``g_t = dL/dh_t`` (the loss gradient at the block-context part of z, through the
   current output layer); up-weighting block position j moves ``h_t`` towards ``x_j`` and changes
   the loss by about ``(x_j - h_t) . g_t``, so ``j* = argmin_j x_j . g_t`` is the position whose
   up-weighting lowers the loss most. Treating ``x_{j*}`` as the (soft) target of input ``x_t``
   makes attention a softmax layer too, and ``W_A`` is its explicit solution from
   ``F = sum_t x_t x_{j*(t)}^T``. Positions whose window holds only themselves make no choice
   and are left out.
3. **Re-solve** the output layer with the new attention. Steps 2-3 are one round; ``rounds``
   (1 or 2) of them follow step 1.
4. **Hidden layer** (``hidden=H``; tinyfw's reading of "a hidden layer gets targets the same
   way"): the first hidden targets put the target token of rank ``r`` (by frequency) into unit
   ``r mod H``, so the ``H`` most frequent tokens get units of their own; ``W_1`` is solved from
   ``(z, hidden target)``, ``W_2`` from ``(u = softmax(z W_1), token target)``. Each round then
   re-targets every position to the unit ``argmin_k dL/du_k`` (the differential criterion again)
   and re-solves ``W_1`` and ``W_2``.

``keep_best`` (default) keeps the stage with the lowest training loss, since a closed-form step
is not guaranteed to lower the loss; the report lists every stage's loss and the one kept.

A stacked :class:`~tinyfw.nn.safu.SAFULanguageModel` is solved layer by layer, each layer on the
inputs produced by the already-solved layers below it. Inputs must be non-negative (cipher or
co-occurrence vectors); negative inputs raise ``ValueError``.

How it is computed: the features come from the layer itself (so they are the numbers the
trained model sees); the counts, the softmax passes over the positions and the criterion's
choices run on the CPU kernels of ``backend/cpu/warmstart_counts.py``, whose NumPy definitions
are ``explicit_steps.py``. One pass over the positions gives a stage's loss and, from the same
softmax, the gradients the next stage needs (``dL/dh`` only where the criterion reads it); the
logits take BLAS for the feature columns that are mostly non-zero and add the mostly-zero ones
(the radial context of cipher vectors) row by row.

Precision: the features and the counts are float64; the passes over the positions (logits,
softmax, ``dL/dh``) run in the layer's own dtype. A float64 layer is solved exactly as the plain
NumPy solve, up to float64 rounding; a float32 layer (the default) is evaluated in float32, as
it will be trained, which halves the cost of the passes against float64: its losses and weights
agree with the float64 solve to float32 rounding, except where a near-tie in the criterion's
argmin falls the other way (``tests/test_warmstart_counts.py``). The time against Adam steps is
in ``bench/README.md`` ("Explicit SAFU solve").

``fine_tune`` is a small Adam loop for models called as ``logits, loss = model(ids, targets)``.
"""
import math

import numpy as np

from ..autograd import no_grad
from ..nn import init
from ..nn.safu import SAFU, SAFULanguageModel
from ..backend.cpu import warmstart_counts as counts
from ..optim import Adam
from ..tensor import Tensor, tensor
from .explicit import weights_from_counts

__all__ = ["explicit_train", "explicit_train_safu", "stream_windows", "fine_tune",
           "evaluate_loss", "hidden_targets_by_rank"]

_NAME = "explicit_train"


# ------------------------------------------------------------------------------------ data
def stream_windows(token_ids, length, stride=None):
    """Cut a 1-D token stream into windows: ``inputs (N, length)``, ``targets (N, length)``
    with ``targets[n, t] = stream[start_n + t + 1]``. ``stride`` defaults to ``length``
    (non-overlapping); the tail that does not fill a window is dropped."""
    ids = np.asarray(token_ids)
    if ids.ndim != 1:
        raise ValueError(f"stream_windows: token_ids must be 1-D, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"stream_windows: token_ids must be integers, got {ids.dtype}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"stream_windows: length must be an int >= 1, got {length!r}")
    stride = length if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stream_windows: stride must be >= 1, got {stride}")
    if len(ids) < length + 1:
        raise ValueError(f"stream_windows: a stream of {len(ids)} tokens is too short for one "
                         f"window of {length} inputs plus its target (need {length + 1})")
    starts = np.arange(0, len(ids) - length, stride)
    grid = starts[:, None] + np.arange(length)[None, :]
    return ids[grid].astype(np.int64), ids[grid + 1].astype(np.int64)


def _as_array(a):
    return a.numpy() if isinstance(a, Tensor) else np.asarray(a)


def _check_targets(targets, shape, n_out, where):
    T = _as_array(targets)
    if T.dtype.kind not in "iu":
        raise TypeError(f"{where}: targets must be integers, got {T.dtype}")
    if T.shape != shape:
        raise ValueError(f"{where}: targets of shape {T.shape} do not match inputs {shape}")
    if T.size and (T.min() < 0 or T.max() >= n_out):
        raise ValueError(f"{where}: targets must lie in [0, {n_out}), got range "
                         f"[{T.min()}, {T.max()}]")
    return T.astype(np.int64)


def _check_vectors(X, d_in, where):
    X = _as_array(X)
    if X.dtype.kind != "f":
        raise TypeError(f"{where}: input vectors must be floating point, got {X.dtype}")
    if X.ndim != 3 or X.shape[-1] != d_in or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{where}: inputs must be non-empty (N, L, {d_in}), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{where}: inputs have non-finite entries")
    low = float(X.min())
    if low < 0:
        raise ValueError(f"{where}: the explicit solution needs non-negative inputs (cipher or "
                         f"co-occurrence vectors), got minimum value {low}")
    return X


# ------------------------------------------------------------------------------ softmax math
def _softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def hidden_targets_by_rank(targets, hidden, n_out):
    """Initial hidden targets: the token of frequency rank r goes to unit ``r mod hidden``."""
    counts = np.bincount(targets.ravel(), minlength=n_out)
    rank = np.empty(n_out, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(n_out)
    return rank[targets] % hidden


# Rows of logits per block of the passes over the positions: 2^21 logits (16 MB of float64),
# large enough for the row kernels to use every thread and for BLAS to run at full speed.
_PASS_LOGITS = 1 << 21


class _Solver:
    """Closed-form solutions for one SAFU layer on fixed inputs X (N, L, d) and targets T.

    The counts and the passes over the positions run on the kernels of
    ``backend/cpu/warmstart_counts.py`` (their NumPy definitions: ``explicit_steps.py``)."""

    def __init__(self, layer, X, T, eps, chunk):
        self.layer, self.X, self.T, self.eps, self.chunk = layer, X, T, eps, chunk
        self.flat_T = np.ascontiguousarray(T.reshape(-1))
        self.dtype = next(layer.parameters()).dtype
        # the precision of the passes over the positions: the layer's own (float32 or float64)
        self.pass_dtype = np.float32 if self.dtype == np.float32 else np.float64
        self._support = None            # window_support(), computed once (X does not change)
        self._logits = None             # the logits block, kept from one pass to the next

    # parameters as float64 NumPy arrays, and back
    def get(self, name):
        return getattr(self.layer, name).numpy().astype(np.float64)

    def set(self, name, value):
        init.copy_(getattr(self.layer, name), value)

    def snapshot(self):
        return {n: p.numpy().copy() for n, p in self.layer.named_parameters()}

    def restore(self, snap):
        for n, p in self.layer.named_parameters():
            init.copy_(p, snap[n])

    @no_grad()
    def features(self, out=None):
        """Z (N * L, d_z) in float64, computed by the layer itself (chunks of sequences);
        written into ``out`` when given (the previous Z, no longer needed: a fresh 100 MB array
        costs more in page faults than the layer takes to compute it)."""
        N, L, _ = self.X.shape
        Z = counts.large_empty((N * L, self.layer.d_z)) if out is None else out
        for start in range(0, N, self.chunk):
            x = tensor(self.X[start:start + self.chunk], dtype=self.dtype)
            z = self.layer.features(x).numpy()
            Z[start * L:(start + z.shape[0]) * L] = z.reshape(-1, z.shape[-1])
        return Z

    def _solve(self, inputs, targets, n_out):
        """The explicit solution for inputs (M, n_in) >= 0 and integer targets (M,)."""
        F = counts.target_counts(inputs, targets, n_out)
        return weights_from_counts(F, inputs.sum() / inputs.shape[0], self.eps)

    def solve_output(self, Z, hidden_targets=None):
        V = self.layer.vocab_size
        if self.layer.hidden is None:
            self.set("w_o", self._solve(Z, self.flat_T, V))
            return None
        H = self.layer.hidden
        if hidden_targets is None:
            hidden_targets = hidden_targets_by_rank(self.flat_T, H, V)
        w1 = self._solve(Z, hidden_targets, H)
        self.set("w_1", w1)
        U = np.concatenate([_softmax(Z[s:s + 65536] @ w1) for s in range(0, len(Z), 65536)])
        self.set("w_2", self._solve(U, self.flat_T, V))
        return hidden_targets

    def evaluate(self, Z, gradients=False):
        """One pass over the positions with the current output layer, a block of rows at a
        time: the logits (BLAS for the dense columns of z, the mostly-zero ones added row by
        row inside the softmax kernel), then one kernel call for the softmax, the loss and
        ``p - y``.

        Returns ``(loss, G, new_hidden)``: the mean cross-entropy over all positions; with
        ``gradients``, ``G = dL/dh`` (M, d_in), the gradient at the block-context columns of z
        (None unless the block context has more than one position: nothing else reads it), and
        with a hidden layer the re-targeted hidden units ``argmin_k dL/du_k`` (M,)."""
        layer = self.layer
        M, V = Z.shape[0], layer.vocab_size
        dtype = self.pass_dtype
        hidden = layer.hidden is not None
        w_in = self.get("w_1" if hidden else "w_o")             # the weights that read z
        block = layer.segments()["block"] if gradients and layer.block > 1 else None
        G = np.empty((M, layer.d_in)) if block is not None else None
        new_hidden = np.empty(M, dtype=np.int64) if gradients and hidden else None
        if hidden:
            w_out, dense, sparse = self.get("w_2").astype(dtype), None, None
            w_block_t = w_in[block].T.astype(dtype) if block is not None else None
        else:
            if block is not None:       # dL/dh only where the criterion reads it (see below)
                w_block = np.ascontiguousarray(w_in[block], dtype=dtype)
                support_ptr, support_cols = self.window_support()
            # z's columns split: the dense ones go through BLAS, the sparse ones as CSR rows
            w_out = w_in
            dense_cols, Zd, sparse_cols, csr = counts.split_columns(Z, dtype)
            dense = (Zd, np.ascontiguousarray(w_in[dense_cols], dtype=dtype))
            sparse = csr + (np.ascontiguousarray(w_in[sparse_cols], dtype=dtype),)
        rows = max(1, _PASS_LOGITS // V)
        shape = (min(rows, M), V)
        if self._logits is None or self._logits.shape != shape or self._logits.dtype != dtype:
            self._logits = np.empty(shape, dtype=dtype)
        logits = self._logits
        total = 0.0
        for start in range(0, M, rows):
            n = min(rows, M - start)
            S = logits[:n]
            if hidden:
                u = _softmax(Z[start:start + n] @ w_in).astype(dtype)
                np.matmul(u, w_out, out=S)
                part = None
            else:
                np.matmul(dense[0][start:start + n], dense[1], out=S)
                part = (sparse[0][start:start + n + 1],) + sparse[1:]
            total += counts.softmax_cross_entropy_rows(S, self.flat_T[start:start + n],
                                                       gradient=gradients, sparse=part).sum()
            if not gradients:
                continue
            if hidden:                                            # S is dL/dlogits = p - y
                gu = S @ w_out.T                                  # dL/du
                new_hidden[start:start + n] = np.argmin(gu, axis=1)   # differential criterion
                ds = u * (gu - (u * gu).sum(axis=1, keepdims=True))
                if G is not None:
                    G[start:start + n] = ds @ w_block_t
            elif G is not None:
                ptr = support_ptr[start:start + n + 1]
                G[start:start + n] = counts.listed_products(
                    S, w_block, ptr - ptr[0], support_cols[ptr[0]:ptr[-1]])
        return total / M, G, new_hidden

    def window_support(self):
        """Per position (rows of z), the columns non-zero in some input of its block window, as
        CSR (indptr (M + 1,), cols). The criterion reads ``g_t`` only through ``x_{t-k} . g_t``
        over the window, so ``g_t`` is needed nowhere else; cipher vectors have ~1.5 non-zero
        entries, a window of 8 ~9 of 36."""
        if self._support is None:
            X = self.X
            N, L, d = X.shape
            nonzero = X != 0
            support = nonzero.copy()
            for k in range(1, min(self.layer.block, L)):
                support[:, k:] |= nonzero[:, :L - k]
            support = support.reshape(N * L, d)
            indptr = np.zeros(N * L + 1, dtype=np.int64)
            np.cumsum(support.sum(axis=1), out=indptr[1:])
            self._support = (indptr, np.nonzero(support)[1].astype(np.int64))
        return self._support

    def solve_attention(self, G):
        """W_A from the differential criterion (module docstring, step 2); G = dL/dh (M, d)."""
        X = self.X
        choice, keep = counts.offset_choices(X, G.reshape(X.shape), self.layer.block)
        n_keep = int(keep.sum())
        if n_keep == 0:
            return False
        F = counts.choice_counts(X, choice, keep)
        self.set("w_a", weights_from_counts(F, X[keep].sum() / n_keep, self.eps))
        return True


def explicit_train_safu(layer, inputs, targets, rounds=2, eps=1e-3, keep_best=True,
                        chunk=256):
    """Solve one :class:`~tinyfw.nn.safu.SAFU` layer in closed form (module docstring).

    inputs: non-negative vectors (N, L, d_in) (array or Tensor); targets: ints (N, L) in
    ``[0, vocab_size)``. Changes the layer's parameters in place and returns a report:
    ``{'stages': [(name, training loss), ...], 'kept': name, 'loss': kept loss}``; the losses
    are mean cross-entropies in nats over all N * L positions.
    """
    where = "explicit_train_safu"
    if not isinstance(layer, SAFU):
        raise TypeError(f"{where}: expected an nn.SAFU layer, got {type(layer).__name__}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"{where}: rounds must be an int >= 0, got {rounds!r}")
    X = _check_vectors(inputs, layer.d_in, where).astype(np.float64)
    T = _check_targets(targets, X.shape[:2], layer.vocab_size, where)
    solver = _Solver(layer, X, T, eps, chunk)

    stages = []
    best = (math.inf, None, None)

    def record(name, value):
        # the layer's parameters are those of stage `name`: snapshot them with its loss
        nonlocal best
        stages.append((name, value))
        if value < best[0]:
            best = (value, name, solver.snapshot())

    if layer.block:
        solver.set("w_a", np.zeros((layer.d_in, layer.d_in)))    # uniform attention
    Z = solver.features()
    hidden_targets = solver.solve_output(Z)
    stage = "uniform attention"          # solved, its loss not yet measured
    for r in range(1, rounds + 1):
        # one pass gives the current stage's loss and the gradients the next stage needs
        loss, G, new_hidden = solver.evaluate(Z, gradients=True)
        record(stage, loss)
        stage = None
        changed = G is not None and solver.solve_attention(G)
        if changed:
            Z = solver.features(out=Z)
        if new_hidden is not None:
            hidden_targets = new_hidden
        if not (changed or new_hidden is not None):
            break                        # nothing moved: every further round is the same
        solver.solve_output(Z, hidden_targets)
        stage = f"round {r}"
    if stage is not None:
        record(stage, solver.evaluate(Z)[0])
    kept = stages[-1][0]
    if keep_best and best[1] != stages[-1][0]:
        solver.restore(best[2])
        kept = best[1]
    return {"stages": stages, "kept": kept, "loss": dict(stages)[kept]}


def explicit_train(model, inputs, targets=None, rounds=2, eps=1e-3, keep_best=True, chunk=256):
    """Closed-form training of an ``nn.SAFU`` or a ``SAFULanguageModel``.

    * ``SAFU``: ``inputs`` non-negative vectors (N, L, d_in), ``targets`` (N, L).
    * ``SAFULanguageModel``: ``inputs`` token ids (N, L) and ``targets`` (N, L), or a 1-D token
      stream (``targets=None``; it is cut with :func:`stream_windows` into windows of 64). The
      layers are solved bottom-up; the embedding (the token vectors) must be non-negative.

    Returns the report of :func:`explicit_train_safu` (for a stack: ``{'layers': [report per
    layer], 'loss': last layer's loss}``).
    """
    if isinstance(model, SAFU):
        if targets is None:
            raise ValueError(f"{_NAME}: an nn.SAFU needs explicit targets (N, L)")
        return explicit_train_safu(model, inputs, targets, rounds, eps, keep_best, chunk)
    if not isinstance(model, SAFULanguageModel):
        raise TypeError(f"{_NAME}: expected nn.SAFU or SAFULanguageModel, got "
                        f"{type(model).__name__}; for a LanguageModel use "
                        "tinyfw.warmstart.init_language_model(model, ids, method='explicit')")
    ids = _as_array(inputs)
    if ids.size == 0:
        raise ValueError(f"{_NAME}: no tokens to solve from (empty corpus)")
    if targets is None:
        ids, T = stream_windows(ids, 64) if ids.ndim == 1 else (ids[:, :-1], ids[:, 1:])
    else:
        T = _as_array(targets)
    if ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise ValueError(f"{_NAME}: token ids must be an integer (N, L) array, got "
                         f"{ids.dtype} {ids.shape}")
    if ids.min() < 0 or ids.max() >= model.vocab_size:
        raise ValueError(f"{_NAME}: token ids must lie in [0, {model.vocab_size}), got range "
                         f"[{ids.min()}, {ids.max()}]")
    E = model.emb.weight.numpy()
    if E.min() < 0:
        raise ValueError(f"{_NAME}: the model's token vectors have negative entries (min "
                         f"{E.min()}); the explicit solution needs non-negative inputs such as "
                         "bit-cipher or co-occurrence vectors")
    reports = []
    with no_grad():
        for i, layer in enumerate(model.layers):
            parts = [model.layer_inputs(tensor(ids[s:s + chunk]), i).numpy()
                     for s in range(0, len(ids), chunk)]
            reports.append(explicit_train_safu(layer, np.concatenate(parts), T, rounds, eps,
                                               keep_best, chunk))
    return {"layers": reports, "loss": reports[-1]["loss"]}


# ------------------------------------------------------------------------------ fine-tuning
@no_grad()
def evaluate_loss(model, inputs, targets, batch_size=64):
    """Mean cross-entropy (nats) of ``model(ids, targets)`` over windows (N, L), in batches."""
    inputs, targets = _as_array(inputs), _as_array(targets)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for s in range(0, len(inputs), batch_size):
            x, y = inputs[s:s + batch_size], targets[s:s + batch_size]
            _, loss = model(tensor(x), tensor(y))
            total += loss.item() * y.size
            count += y.size
    finally:
        model.train(was_training)
    return total / max(count, 1)


def fine_tune(model, inputs, targets, steps, batch_size=16, lr=1e-3, eval_every=None,
              eval_fn=None, seed=0, parameters=None):
    """Adam on random batches of windows ``inputs``/``targets`` (N, L).

    ``eval_fn(model) -> float`` is called before the first step and every ``eval_every`` steps
    (and after the last); returns ``{'steps': [...], 'eval': [...], 'train_loss': [...]}``.
    """
    inputs, targets = _as_array(inputs), _as_array(targets)
    if len(inputs) == 0:
        raise ValueError("fine_tune: no training windows (empty corpus)")
    params = [p for p in (parameters or model.parameters()) if p.requires_grad]
    opt = Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    history = {"steps": [], "eval": [], "train_loss": []}

    def evaluate(step):
        if eval_fn is not None:
            history["steps"].append(step)
            history["eval"].append(float(eval_fn(model)))

    evaluate(0)
    model.train()
    for step in range(1, steps + 1):
        rows = rng.integers(0, len(inputs), size=min(batch_size, len(inputs)))
        _, loss = model(tensor(inputs[rows]), tensor(targets[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history["train_loss"].append(loss.item())
        if eval_every and (step % eval_every == 0) and step != steps:
            evaluate(step)
    if steps:
        evaluate(steps)
    return history
