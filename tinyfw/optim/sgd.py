"""Stochastic gradient descent with momentum and L2 weight decay (PyTorch's update rule)."""
from ..autograd import no_grad
from .optimizer import Optimizer


class SGD(Optimizer):
    """``g += wd p``; ``buf = momentum buf + (1 - dampening) g`` (``buf = g`` at the first step);
    ``g = g + momentum buf`` if nesterov else ``buf``; ``p -= lr g``."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, dampening=0.0,
                 nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      dampening=dampening, nesterov=nesterov))

    @no_grad()
    def step(self):
        from ..backend import backend_for
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._check_devices(p, self.state.get(id(p), {}))
                be = backend_for(p.device)
                g = p.grad.data
                if wd:
                    g = be.add(g, be.mul(p.data, wd))
                if mom:
                    state = self.state.setdefault(id(p), {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = be.copy(g)
                    else:
                        buf = be.add(be.mul(buf, mom), be.mul(g, 1 - group["dampening"]))
                    state["momentum_buffer"] = buf
                    g = be.add(g, be.mul(buf, mom)) if group["nesterov"] else buf
                p.data = be.sub(p.data, be.mul(g, lr))
