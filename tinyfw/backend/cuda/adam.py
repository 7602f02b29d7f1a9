"""The Adam / AdamW step in place, one thread per parameter element (reference:
backend/reference/core.py, PyTorch's exact rule). The scalars that do not depend on the element
(bias corrections) are computed once on the host; every scalar is cast to the parameter dtype so
float32 parameters are updated in float32 arithmetic, as the reference does.
"""
import math

from numba import cuda

from ..reference.core import adam_bias_corrections, check_adam
from .runtime import device_array, flat, kernel_factory, launch_1d

__all__ = ["adam_step"]


@kernel_factory
def adam_kernel():
    def kernel(param, grad, exp_avg, exp_avg_sq, decay, weight_decay, beta1, one_minus_beta1,
               beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, coupled, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            p = param[i] * decay        # AdamW's decoupled decay (decay = 1 for Adam)
            g = grad[i]
            if coupled:                 # Adam's L2 term, added to the gradient
                g = g + weight_decay * p
            m = beta1 * exp_avg[i] + one_minus_beta1 * g
            v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = p - step_size * m / (math.sqrt(v) / bias_correction2_sqrt + eps)
    return cuda.jit(kernel)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
              decoupled):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step; updates ``param``,
    ``exp_avg`` and ``exp_avg_sq`` in place and returns None."""
    op = "adam_step"
    arrays = [device_array(a, op) for a in (param, grad, exp_avg, exp_avg_sq)]
    for original, checked in zip((param, exp_avg, exp_avg_sq), (arrays[0], arrays[2], arrays[3])):
        if original is not checked:
            raise ValueError(f"{op}: param, exp_avg and exp_avg_sq must be C-contiguous device "
                             f"arrays (they are updated in place)")
    check_adam(op, *arrays, step)
    step_size, bias_correction2_sqrt = adam_bias_corrections(lr, beta1, beta2, step)
    cast = arrays[0].dtype.type
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    coupled = (not decoupled) and weight_decay != 0
    n = arrays[0].size
    launch_1d(adam_kernel(), n, *(flat(a) for a in arrays), cast(decay), cast(weight_decay),
              cast(beta1), cast(1.0 - beta1), cast(beta2), cast(1.0 - beta2), cast(step_size),
              cast(bias_correction2_sqrt), cast(eps), coupled, n)
