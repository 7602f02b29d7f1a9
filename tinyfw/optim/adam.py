"""Adam and AdamW with PyTorch's exact update rules and defaults.

One fused kernel per parameter (``backend.adam_step``) does the whole update in place; its NumPy
meaning is in ``backend/reference/core.py``.
"""
from ..autograd import no_grad
from ..backend import backend_for
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam; ``weight_decay`` is L2 added to the gradient (``g += wd p``), as ``torch.optim.Adam``."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: lr, eps and weight_decay must be >= 0, got "
                             f"lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    @no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                be = backend_for(p.device)
                state = self.state.get(id(p))
                if state is None:
                    state = self.state[id(p)] = {
                        "step": 0,
                        "exp_avg": be.zeros(p.shape, p.dtype),
                        "exp_avg_sq": be.zeros(p.shape, p.dtype),
                    }
                self._check_devices(p, state)
                state["step"] += 1
                p.data = be.contiguous(p.data)  # the kernel updates a flat view in place
                be.adam_step(p.data, be.contiguous(p.grad.data), state["exp_avg"],
                             state["exp_avg_sq"], group["lr"], beta1, beta2, group["eps"],
                             group["weight_decay"], state["step"], self.decoupled)


class AdamW(Adam):
    """AdamW: decoupled weight decay ``p *= 1 - lr wd`` before the Adam update (default 1e-2)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
