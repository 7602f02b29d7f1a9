"""Gradient utilities."""
import math

from ..backend import backend_for


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the total norm before clipping (a float), as ``torch.nn.utils.clip_grad_norm_``.
    """
    if norm_type != 2.0:
        raise ValueError("clip_grad_norm_: only the L2 norm (norm_type=2.0) is supported")
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    total_sq = 0.0
    for p in params:
        be = backend_for(p.device)
        g = p.grad.data
        total_sq += float(be.to_numpy(be.sum(be.mul(g, g))))
    total = math.sqrt(total_sq)
    if not math.isfinite(total) and error_if_nonfinite:
        raise FloatingPointError(f"clip_grad_norm_: the total gradient norm is {total}: a "
                                 "gradient holds NaN or Inf")
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for p in params:
            be = backend_for(p.device)
            p.grad.data = be.mul(p.grad.data, p.grad.dtype.type(scale))
    return total
