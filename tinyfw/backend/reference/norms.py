"""NumPy reference for layer normalisation and RMS normalisation over the last axis.

Both normalise each row of ``x`` (all leading axes are rows) independently:

    layer norm:  y = (x - mean(x)) / sqrt(var(x) + eps) * w + b        (Ba et al., 2016)
    RMS norm:    y = x / sqrt(mean(x^2) + eps) * w                      (Zhang & Sennrich, 2019)

``var`` is the biased variance (divide by D), as in PyTorch. The forward returns the per-row
statistics the backward needs (``mean`` and ``rstd = 1 / sqrt(var + eps)``), so the backward never
recomputes a reduction over the forward input.

Shapes: ``x, y, dy, dx: (..., D)``; ``w, b, dw, db: (D,)``; ``mean, rstd: (...)``, i.e.
``x.shape[:-1]``.
"""
import numpy as np

__all__ = [
    "layer_norm_forward", "layer_norm_backward",
    "rms_norm_forward", "rms_norm_backward",
]


def layer_norm_forward(x, w, b, eps):
    """x: (..., D), w, b: (D,) or None -> (y (..., D), mean (...), rstd (...))."""
    mean = x.mean(axis=-1)
    centred = x - mean[..., None]
    var = (centred * centred).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = centred * rstd[..., None]
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.astype(x.dtype, copy=False), mean, rstd.astype(x.dtype, copy=False)


def layer_norm_backward(dy, x, w, mean, rstd):
    """Gradients of ``layer_norm_forward`` -> (dx (..., D), dw (D,) or None, db (D,)).

    With xhat = (x - mean) * rstd and g = dy * w, the chain rule through mean and variance gives
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    (the two subtracted terms are the gradients that flow through ``mean`` and through ``rstd``).
    The backward is not told whether there was a bias (it does not change dx), so ``db = sum(dy)``
    is always returned and the op layer drops it when there was none; ``dw`` is None when ``w`` is.
    """
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy * w if w is not None else dy
    dx = rstd[..., None] * (g - g.mean(axis=-1, keepdims=True)
                            - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    dw = (dy * xhat).sum(axis=rows) if w is not None else None
    db = dy.sum(axis=rows)
    return dx.astype(x.dtype, copy=False), dw, db


def rms_norm_forward(x, w, eps):
    """x: (..., D), w: (D,) or None -> (y (..., D), rstd (...)); rstd = 1/sqrt(mean(x^2) + eps)."""
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1) + eps)
    y = x * rstd[..., None]
    if w is not None:
        y = y * w
    return y.astype(x.dtype, copy=False), rstd.astype(x.dtype, copy=False)


def rms_norm_backward(dy, x, w, rstd):
    """Gradients of ``rms_norm_forward`` -> (dx (..., D), dw (D,) or None).

    With xhat = x * rstd and g = dy * w: dx = rstd * (g - xhat * mean(g * xhat)); there is no
    mean-subtraction term because RMS norm does not centre.
    """
    xhat = x * rstd[..., None]
    g = dy * w if w is not None else dy
    dx = rstd[..., None] * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    dw = (dy * xhat).sum(axis=rows) if w is not None else None
    return dx.astype(x.dtype, copy=False), dw
