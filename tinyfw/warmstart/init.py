"""Using the warm starts: initialise embeddings and output layers of tinyfw models.

Entry point for the training CLI::

    from tinyfw.warmstart import init_language_model
    report = init_language_model(model, train_ids, method="random" | "cipher" | "cooc" | "explicit")

``model`` is a ``LanguageModel`` (Transformer, any mixer) or a ``SAFULanguageModel``;
``train_ids`` the 1-D array of training token ids (integers in ``[0, vocab_size)``). It changes
the model in place and returns a dict describing what it did.

Methods
-------
``random``    nothing (the model's own random initialisation; the "cold start").
``cipher``    token embedding := bit-cipher vectors of the token ids ranked by training frequency.
``cooc``      token embedding := [cipher vectors, co-occurrence vectors] (the cipher half keeps
              every type distinguishable, the co-occurrence half adds similarity).
``explicit``  ``cipher`` (or ``embedding='cooc'``) embeddings, then the output layer from the
              explicit solution. For a ``SAFULanguageModel`` this is the full explicit training
              of ``explicit_training.py``. For a ``LanguageModel`` (**tinyfw design**): its output
              layer reads real-valued, normalised features where the closed form does not apply
              directly, so the explicit solution for one-hot inputs, the bigram log-conditionals
              ``log P(next | current)`` (exact for that layer), is projected onto the model's own
              features at initialisation by ridge least squares: ``W = argmin ||H W - Lc||^2 +
              lam ||W||^2`` with ``H`` the head's input features on the training tokens and ``Lc``
              the row-centred bigram solution of each position's current token (a per-row
              constant does not change a softmax).

Widths: cipher vectors have ``bits`` columns (default: the model width when that many bits hold
the vocabulary, so no projection is needed), co-occurrence vectors ``2 * window * bits`` more.
When a width differs from the model's, :func:`project_vectors` maps the vectors: onto
orthonormal directions (inner products and distances kept exactly) when widening, onto the top
principal directions when narrowing. The rows are then rescaled so their mean L2 norm matches the
embedding's current initialisation (``scale='match'``): the rest of the network was initialised
for that scale.

Unknown tokens: every id in ``[0, vocab_size)`` gets a vector, including ids that never occur in
``train_ids`` (they rank last, in id order, and so get the least distinguishable codes; their
co-occurrence half is the smoothed uniform row). Ids outside the range raise ``ValueError``; the
bit cipher's all-zero code for unknown token types only arises when encoding raw tokens with
``BitCipher.encode``. An empty ``train_ids`` raises ``ValueError``.
"""
import math
import time
import warnings

import numpy as np
import scipy.sparse as sp

from ..autograd import no_grad
from ..nn import init
from ..nn.layers import Embedding
from ..nn.module import Module
from ..nn.safu import SAFULanguageModel
from ..tensor import tensor
from .bit_cipher import BitCipher, bits_needed, capacity
from .cooccurrence import cooccurrence_vectors
from .explicit_training import explicit_train, stream_windows

__all__ = ["METHODS", "safu_input_width", "ranked_cipher", "cipher_embeddings",
           "cooccurrence_embeddings", "project_vectors", "init_embedding_", "bigram_explicit_logits",
           "init_output_layer_explicit_", "init_language_model"]

METHODS = ("random", "cipher", "cooc", "explicit")


def _check_ids(token_ids, vocab_size, where):
    ids = np.asarray(token_ids.numpy() if hasattr(token_ids, "numpy") else token_ids)
    if ids.size == 0:
        raise ValueError(f"{where}: the training token stream is empty (empty corpus)")
    ids = ids.reshape(-1)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: token ids must be integers, got {ids.dtype}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{where}: token ids must lie in [0, {vocab_size}), got range "
                         f"[{ids.min()}, {ids.max()}]")
    return ids.astype(np.int64)


def ranked_cipher(token_ids, vocab_size, bits=None, strict=False):
    """A :class:`BitCipher` over the ids ``0..vocab_size-1``, ranked by frequency in
    ``token_ids`` (ties and unseen ids in id order). ``bits`` too small for the vocabulary grow
    with a warning (``strict``: ValueError), as :meth:`BitCipher.from_vocab` does."""
    ids = _check_ids(token_ids, vocab_size, "ranked_cipher")
    counts = np.bincount(ids, minlength=vocab_size)
    order = np.argsort(-counts, kind="stable")
    return BitCipher.from_vocab(order.tolist(), bits=bits, strict=strict)


def _default_bits(vocab_size, width):
    """The model width if that many bits hold the vocabulary, else the fewest that do."""
    return width if capacity(width) >= vocab_size else bits_needed(vocab_size)


def _fitting_bits(bits, vocab_size, where, strict=False):
    """``bits``, or the fewest bits that hold the vocabulary when ``bits`` do not (with a
    warning; ``strict`` makes that a ValueError)."""
    if capacity(bits) >= vocab_size:
        return bits
    needed = bits_needed(vocab_size)
    message = (f"{where}: {bits} bits hold {capacity(bits)} token types < vocab_size="
               f"{vocab_size}")
    if strict:
        raise ValueError(message + f" (at least {needed} bits are needed)")
    warnings.warn(message + f"; using {needed} bits", stacklevel=3)
    return needed


def _vector_kind(method, embedding):
    return "cooc" if method == "cooc" or (method == "explicit" and embedding == "cooc") \
        else "cipher"


def safu_input_width(vocab_size, method="random", d_in=None, window=2, embedding="cipher",
                     strict=False):
    """The token-vector width ``d_in`` of a SAFU model warm-started by ``method``.

    Cipher vectors are ``bits`` wide, [cipher; co-occurrence] vectors ``(1 + window) * bits``.
    With ``d_in=None`` the width is 36 (or the multiple of ``1 + window`` nearest below it)
    unless the vocabulary needs more bits. A given ``d_in`` that cannot hold the vocabulary grows
    to the smallest width that does, with a warning (``strict``: a ValueError); one that is not a
    multiple of ``1 + window`` for co-occurrence vectors is a ValueError."""
    parts = 1 + window if _vector_kind(method, embedding) == "cooc" else 1
    if d_in is None:
        return parts * max(36 // parts, bits_needed(vocab_size))
    if d_in % parts:
        raise ValueError(f"safu_input_width: d_in={d_in} must be a multiple of 1 + window = "
                         f"{parts} for [cipher; co-occurrence] vectors")
    if method == "random":
        return d_in
    return parts * _fitting_bits(d_in // parts, vocab_size, "safu_input_width", strict)


def cipher_embeddings(token_ids, vocab_size, bits=None, strict=False):
    """Bit-cipher vectors (vocab_size, bits) in id order (row i = vector of id i)."""
    cipher = ranked_cipher(token_ids, vocab_size, bits, strict)
    out = np.zeros((vocab_size, cipher.bits))
    out[np.asarray(cipher.vocab)] = cipher.vectors
    return out


def cooccurrence_embeddings(token_ids, vocab_size, bits=None, window=2, mode="concat",
                            causal=True, include_cipher=True, normalize=True, strict=False):
    """Co-occurrence vectors in id order: ``[cipher; cooc]`` (or cooc alone).

    Defaults: causal (only preceding context, what a left-to-right model may use), offsets kept
    apart (``mode='concat'``), each half L1-normalised so neither dominates (``normalize``).
    Width ``bits * (1 + window)`` with the defaults.
    """
    ids = _check_ids(token_ids, vocab_size, "cooccurrence_embeddings")
    cipher = ranked_cipher(ids, vocab_size, bits, strict)
    cooc = cooccurrence_vectors(ids.tolist(), cipher, window=window, mode=mode, causal=causal,
                                normalize=normalize)
    parts = [cipher.vectors, cooc] if include_cipher else [cooc]
    rows = np.hstack(parts)
    out = np.zeros_like(rows)
    out[np.asarray(cipher.vocab)] = rows
    return out


def project_vectors(vectors, width, seed=0):
    """Map vectors (V, w) to (V, width): unchanged when w == width; onto ``w`` orthonormal
    directions of R^width (a seeded random rotation: inner products kept) when w < width; onto
    the top ``width`` principal directions (of the centred vectors) when w > width."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"project_vectors: expected (V, w), got {vectors.shape}")
    V, w = vectors.shape
    if width < 1:
        raise ValueError(f"project_vectors: width must be >= 1, got {width}")
    if w == width:
        return vectors.copy()
    if w < width:
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((width, w)))     # (width, w), orthonormal cols
        return vectors @ q.T
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:width].T


def init_embedding_(embedding, vectors, scale="match", center=False, seed=0):
    """Set ``embedding.weight`` (an ``nn.Embedding``) from vectors (V, w), projecting when the
    widths differ. ``scale``: 'match' (mean row L2 norm of the current weight), a float (that
    mean row norm), or None (as is). ``center`` subtracts the mean row first."""
    if not isinstance(embedding, Embedding):
        raise TypeError(f"init_embedding_: expected an nn.Embedding, got "
                        f"{type(embedding).__name__}")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != embedding.num_embeddings:
        raise ValueError(f"init_embedding_: vectors {vectors.shape} must have one row per "
                         f"embedding ({embedding.num_embeddings})")
    if center:
        vectors = vectors - vectors.mean(axis=0)
    vectors = project_vectors(vectors, embedding.embedding_dim, seed)
    if scale is not None:
        target = (float(np.linalg.norm(embedding.weight.numpy(), axis=1).mean())
                  if scale == "match" else float(scale))
        current = float(np.linalg.norm(vectors, axis=1).mean())
        if current > 0:
            vectors = vectors * (target / current)
    init.copy_(embedding.weight, vectors)
    return embedding


def bigram_explicit_logits(token_ids, vocab_size, eps=1e-3):
    """The explicit solution for one-hot (current-token) inputs, row-centred, as a sparse
    matrix plus row means: ``log((F + eps) / rowsum) - rowmean`` equals
    ``S - mean_row(S)`` with ``S = log1p(F / eps)`` (sparse where F is), because the rest is a
    per-row constant. Returns ``(S (V, V) csr, rowmean (V,))``; ``V`` may be large."""
    ids = _check_ids(token_ids, vocab_size, "bigram_explicit_logits")
    if len(ids) < 2:
        raise ValueError("bigram_explicit_logits: need at least 2 tokens")
    F = sp.coo_matrix((np.ones(len(ids) - 1), (ids[:-1], ids[1:])),
                      shape=(vocab_size, vocab_size)).tocsr()
    S = F.copy()
    S.data = np.log1p(S.data / eps)
    rowmean = np.asarray(S.sum(axis=1)).ravel() / vocab_size
    return S, rowmean


class _Capture(Module):
    def forward(self, x):
        return x


@no_grad()
def _head_features(model, windows, batch_size=32):
    """The head's input features (M, D) of a LanguageModel on windows (N, L)."""
    head = model.head
    model.head = _Capture()                 # the forward then returns norm_f(x), the features
    was_training = model.training
    model.eval()
    try:
        out = [model(tensor(windows[s:s + batch_size])).numpy()
               for s in range(0, len(windows), batch_size)]
    finally:
        model.head = head
        model.train(was_training)
    feats = np.concatenate(out, axis=0)
    return feats.reshape(-1, feats.shape[-1]).astype(np.float64)


def _mean_cross_entropy(logits, targets):
    s = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(s).sum(axis=1))
    return float((lse - s[np.arange(len(targets)), targets]).mean())


def _calibrate_temperature(logits, targets, high=4.0, tol=1e-2):
    """The scale tau in [0, high] minimising the mean cross-entropy of ``tau * logits``, and that
    loss. The loss is convex in tau (a log-sum-exp of functions linear in tau minus a linear
    term), so a golden-section search finds the minimum; tau = 0 (a uniform output) is compared
    too, so the result is never worse than uniform."""
    def loss(tau):
        return _mean_cross_entropy(tau * logits, targets)

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = 0.0, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    best = (fc, c) if fc <= fd else (fd, d)
    uniform = loss(0.0)
    if uniform <= best[0]:
        return 0.0, uniform
    return best[1], best[0]


def init_output_layer_explicit_(model, token_ids, eps=1.0, ridge=1e-3, max_tokens=200_000,
                                calibrate=True):
    """Set a LanguageModel's output layer from the projected explicit solution (module
    docstring). Uses at most ``max_tokens`` training tokens. ``eps`` is the additive smoothing
    of the bigram counts (1 = Laplace: least squares fits bounded log-probabilities better than
    the near -inf of unseen pairs). With ``calibrate``, the fitted logits are then scaled by the
    temperature that minimises the training cross-entropy on up to 4000 positions (the role the
    1/K scale plays in the closed form; ``tau = 0``, a uniform output, is among the candidates,
    so the calibrated head is never worse than uniform there). Returns a dict with the fit's R^2,
    the temperature and the calibrated training loss."""
    cfg = model.config
    if cfg.tie_weights:
        raise ValueError("init_output_layer_explicit_: the model ties its output layer to the "
                         "token embedding (tie_weights=True); an explicit output layer would "
                         "overwrite the embedding. Use method='cipher' or untied weights.")
    ids = _check_ids(token_ids, cfg.vocab_size, "init_output_layer_explicit_")[:max_tokens + 1]
    L = min(cfg.context_length, len(ids) - 1)
    windows, next_ids = stream_windows(ids, L)
    H = _head_features(model, windows)                      # (M, D)
    current, targets = windows.reshape(-1), next_ids.reshape(-1)
    S, rowmean = bigram_explicit_logits(ids, cfg.vocab_size, eps)
    V, D = cfg.vocab_size, H.shape[1]
    # H^T Lc = (H^T C) (S - rowmean 1^T), C the one-hot matrix of the current tokens
    HC = np.zeros((V, D))
    np.add.at(HC, current, H)                                # row v: sum of features with id v
    rhs = (S.T @ HC).T - np.outer(HC.T @ rowmean, np.ones(V))   # (D, V)
    gram = H.T @ H
    lam = ridge * np.trace(gram) / D
    W = np.linalg.solve(gram + lam * np.eye(D), rhs)        # (D, V)
    # R^2 of the fit on (at most) the first 4000 positions: how much of the explicit solution
    # the model's initial features can express
    n = min(len(current), 4000)
    fitted = H[:n] @ W
    target = np.asarray(S[current[:n]].todense()) - rowmean[current[:n]][:, None]
    total = ((target - target.mean(axis=0)) ** 2).sum()
    r2 = float(1.0 - ((fitted - target) ** 2).sum() / max(total, 1e-300))
    tau, loss = (_calibrate_temperature(fitted, targets[:n]) if calibrate else (1.0, None))
    init.copy_(model.head.weight, tau * W.T)
    if model.head.bias is not None:
        init.zeros_(model.head.bias)
    return {"fit_r2": r2, "temperature": tau, "train_loss": loss}


def init_language_model(model, token_ids, method="random", bits=None, window=2,
                        embedding="cipher", rounds=1, eps=0.1, seed=0, max_tokens=200_000,
                        emb_scale="match", window_length=64, strict=False, log=None):
    """Warm-start ``model`` (LanguageModel or SAFULanguageModel) in place; see the module
    docstring. Returns a dict describing what was done, with the seconds of each phase.

    ``eps`` is the additive smoothing of the explicit solution's counts for a SAFU model;
    ``rounds`` its attention rounds (1: a second round costs another pass over every position
    and lowers the training loss little); ``window_length`` the length of the training windows it is
    solved on; ``bits``/``window`` the cipher width and co-occurrence window (too few bits for
    the vocabulary grow with a warning, or raise with ``strict``); ``embedding`` the vectors used
    by ``method='explicit'``; ``emb_scale`` the row-norm rule of :func:`init_embedding_` for a
    LanguageModel; ``log(text)``, when given, receives a line per phase (what it does, then how
    long it took)."""
    if method not in METHODS:
        raise ValueError(f"init_language_model: method must be one of {METHODS}, got "
                         f"{method!r}")
    if embedding not in ("cipher", "cooc"):
        raise ValueError(f"init_language_model: embedding must be 'cipher' or 'cooc', got "
                         f"{embedding!r}")
    is_safu = isinstance(model, SAFULanguageModel)
    if not is_safu and not hasattr(model, "tok_emb"):
        raise TypeError(f"init_language_model: expected a LanguageModel or SAFULanguageModel, "
                        f"got {type(model).__name__}")
    log = log or (lambda text: None)
    V = model.vocab_size if is_safu else model.config.vocab_size
    ids = _check_ids(token_ids, V, "init_language_model")
    report = {"method": method, "seconds": {}}
    if method == "random":
        return report
    kind = _vector_kind(method, embedding)
    width = model.d_in if is_safu else model.config.d_model
    t0 = time.perf_counter()
    if is_safu:
        parts = 1 + window if kind == "cooc" else 1
        b = bits if bits is not None else width // parts
        if capacity(b) < V:
            raise ValueError(f"init_language_model: the codes of {V} token types do not fit in "
                             f"{b} bits, and a SAFU model's token vectors ({width} wide) cannot "
                             f"grow; build the model with d_in = {parts * bits_needed(V)} (see "
                             "safu_input_width)")
    if kind == "cipher":
        b = bits if bits is not None else _default_bits(V, width)
        log(f"warm start: counting {len(ids):,} tokens, bit-cipher codes of {V} types ...")
        # A SAFU model's width is fixed: vectors grown past it could not be used.
        vectors = cipher_embeddings(ids, V, b, strict or is_safu)
        report["embedding"] = f"bit cipher, {vectors.shape[1]} bits"
    else:
        if bits is not None:
            b = bits
        elif is_safu:
            if width % (1 + window):
                raise ValueError(f"init_language_model: a SAFU model of width {width} cannot "
                                 f"hold [cipher; cooc] vectors of (1 + window) * bits columns "
                                 f"(window={window}); pass bits")
            b = width // (1 + window)
        else:
            b = _default_bits(V, max(1, width // (1 + window)))
        log(f"warm start: counting co-occurrences of {len(ids):,} tokens ({V} types, window "
            f"{window}) ...")
        vectors = cooccurrence_embeddings(ids, V, b, window=window, strict=strict or is_safu)
        if is_safu:
            vectors = vectors / 2.0            # [cipher; cooc], each L1-normalised: unit L1
        report["embedding"] = (f"cipher + causal co-occurrence, {vectors.shape[1] // (1 + window)}"
                               f" bits, window {window}")
    if is_safu:
        if vectors.shape[1] != width:
            raise ValueError(f"init_language_model: vectors of width {vectors.shape[1]} do not "
                             f"fit a SAFU model of width {width} (SAFU needs non-negative "
                             "vectors, which a projection would not keep); pass bits")
        model.set_embedding(vectors)
    else:
        init_embedding_(model.tok_emb, vectors, scale=emb_scale, center=kind == "cooc", seed=seed)
    report["seconds"]["embedding"] = time.perf_counter() - t0
    log(f"warm start: token vectors set ({report['embedding']}) in "
        f"{report['seconds']['embedding']:.2f} s")
    if method == "explicit":
        t0 = time.perf_counter()
        used = ids[:max_tokens + 1]
        if is_safu:
            inputs, targets = stream_windows(used, min(window_length, len(used) - 1))
            log(f"warm start: solving the SAFU layers in closed form on {inputs.size:,} "
                f"positions ({rounds} attention round{'s' if rounds != 1 else ''}) ...")
            result = explicit_train(model, inputs, targets, rounds=rounds, eps=eps)
            report["output"] = "explicit SAFU solution"
            report["train_loss"] = float(result["loss"])
        else:
            log(f"warm start: counting bigrams of {len(used):,} tokens and projecting the "
                "explicit output layer on the model's features ...")
            fit = init_output_layer_explicit_(model, ids, max_tokens=max_tokens)
            report["output"] = "bigram explicit solution projected on the head's features"
            report.update(fit)
        report["seconds"]["solve"] = time.perf_counter() - t0
        loss = report.get("train_loss")
        log(f"warm start: {report['output']} in {report['seconds']['solve']:.2f} s"
            + (f" (training loss {loss:.4f})" if loss is not None else ""))
    return report
