"""Figures: the loss curve of a training run and the attention map of a sentence.

matplotlib is optional (``pip install matplotlib``, or the ``tinyfw[plot]`` extra); without it the
functions raise an ImportError that says so. They draw off-screen (the Agg backend) and write
PNG files, so they work on machines without a display.

    from tinyfw.plots import plot_loss_curve, plot_attention_map
    plot_loss_curve(result["history"], "out/loss.png")          # or a checkpoint's history
    plot_attention_map(model, tokenizer, "To be, or not to be", "out/attn.png", layer=0)
"""
import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("matplotlib is not installed; install it with `pip install "
                          "matplotlib` (or `pip install tinyfw[plot]`) to draw figures") from None
    matplotlib.use("Agg", force=False)  # off-screen; keeps an interactive backend if one is set
    import matplotlib.pyplot as plt
    return plt


def plot_loss_curve(history, path, title="training loss"):
    """Write the loss curve of a run to ``path`` (PNG).

    history: the dict ``train`` returns and checkpoints store: ``step``/``loss`` (every training
    step) and ``eval_step``/``eval_train_loss``/``val_loss`` (each evaluation). The per-step loss
    is drawn faintly with a moving average over it.
    """
    plt = _pyplot()
    steps = np.asarray(history.get("step", []), dtype=float)
    loss = np.asarray(history.get("loss", []), dtype=float)
    if len(steps) != len(loss):
        raise ValueError(f"plot_loss_curve: history has {len(steps)} steps but {len(loss)} losses")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    try:
        if len(loss):
            ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8,
                    label="training loss (per step)")
            window = max(1, len(loss) // 50)
            if window > 1:
                kernel = np.ones(window) / window
                smooth = np.convolve(loss, kernel, mode="valid")
                ax.plot(steps[window - 1:], smooth, color="tab:blue", linewidth=1.5,
                        label=f"training loss ({window}-step mean)")
        if history.get("eval_step"):
            ax.plot(history["eval_step"], history["eval_train_loss"], "o-", color="tab:green",
                    markersize=3, label="train (eval)")
            ax.plot(history["eval_step"], history["val_loss"], "o-", color="tab:red",
                    markersize=3, label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats / token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def attention_probabilities(model, ids, layer=0):
    """The softmax attention probabilities of block ``layer`` for the sequence ``ids``.

    ids: ``(1, T)`` int64 Tensor. Returns a NumPy array ``(H, T, T)`` (row t: how much position
    t attends to each earlier position). Uses the attention layer's own
    ``attention_probabilities`` function (``tinyfw/nn/attention.py``), fed with the block's
    normalised input.
    """
    from .autograd import no_grad
    from .nn import attention as attn_module
    get = getattr(attn_module, "attention_probabilities", None)
    if get is None:
        raise NotImplementedError("plot_attention_map: tinyfw.nn.attention provides no "
                                  "attention_probabilities function")
    if model.config.mixer != "softmax":
        raise ValueError(f"plot_attention_map: the model's mixer is {model.config.mixer!r}; "
                         "attention maps exist for softmax attention only")
    n = len(model.blocks)
    if not -n <= layer < n:
        raise ValueError(f"plot_attention_map: layer {layer} out of range for {n} blocks")
    with no_grad():
        was_training = model.training
        model.eval()
        try:
            x = _block_input(model, ids, layer)
            block = model.blocks[layer]
            h = block.norm1(x) if block.prenorm else x
            probs = get(block.mixer, h)
        finally:
            model.train(was_training)
    probs = probs.numpy() if hasattr(probs, "numpy") else np.asarray(probs)
    return probs[0] if probs.ndim == 4 else probs


def _block_input(model, ids, layer):
    """The residual stream entering block ``layer`` (the model's forward, stopped early)."""
    from .tensor import arange
    x = model.tok_emb(ids)
    if model.config.positional == "learned":
        x = x + model.pos_emb(arange(0, ids.shape[1], device=ids.device))
    for block in list(model.blocks)[:layer]:
        x = block(x)
    return x


def plot_attention_map(model, tokenizer, text, path, layer=0, heads=None):
    """Draw the attention probabilities of block ``layer`` on ``text`` (one panel per head).

    The text is encoded with ``tokenizer`` and cropped to the model's context (from the left).
    heads: a list of head indices (default all).
    """
    from .sample import encode_prompt
    from .tensor import tensor
    ids = encode_prompt(tokenizer, text)[-model.config.context_length:]
    probs = attention_probabilities(model, tensor(np.asarray([ids], dtype=np.int64)), layer)
    labels = [tokenizer.decode([i]).replace("\n", "\\n") or "?" for i in ids]
    heads = list(range(probs.shape[0])) if heads is None else list(heads)
    plt = _pyplot()
    cols = min(4, len(heads))
    rows = -(-len(heads) // cols)
    size = max(3.0, 0.22 * len(ids))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    try:
        for ax in axes.ravel()[len(heads):]:
            ax.axis("off")
        for ax, h in zip(axes.ravel(), heads):
            ax.imshow(probs[h], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {h}")
            ax.set_xticks(range(len(labels)))
            ax.set_yticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=90, fontsize=7)
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xlabel("attended position")
            ax.set_ylabel("query position")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


__all__ = ["plot_loss_curve", "attention_probabilities", "plot_attention_map"]
