"""GELU forward and backward, exact (erf) or tanh-approximated (reference:
backend/reference/core.py). Elementwise kernels that, like the reference, evaluate the formula
in float64 and round once to the input dtype (the float32 backward otherwise loses digits to
cancellation for negative x).
"""
import math

from numba import cuda

from ..reference.core import (GELU_KAPPA, INV_SQRT_2PI, SQRT_2_OVER_PI, SQRT_HALF,
                              check_approximate, check_float, check_same_shape)
from .runtime import as_float64, device_array, empty, flat, kernel_factory, launch_1d

__all__ = ["gelu_forward", "gelu_backward"]


@kernel_factory
def gelu_forward_kernel(approximate):
    tanh_form = approximate == "tanh"

    def kernel(y, x, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            v = as_float64(x[i])
            if tanh_form:
                inner = SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v)
                y[i] = 0.5 * v * (1.0 + math.tanh(inner))
            else:
                y[i] = 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))
    return cuda.jit(kernel)


@kernel_factory
def gelu_backward_kernel(approximate):
    tanh_form = approximate == "tanh"

    def kernel(dx, x, dy, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            v = as_float64(x[i])
            if tanh_form:
                t = math.tanh(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v))
                du_dv = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * v * v)
                dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du_dv)
            else:
                cdf = 0.5 * (1.0 + math.erf(v * SQRT_HALF))
                pdf = INV_SQRT_2PI * math.exp(-0.5 * v * v)
                dx[i] = dy[i] * (cdf + v * pdf)
    return cuda.jit(kernel)


def gelu_forward(x, approximate):
    """y = x * Phi(x), 'none' (erf) or 'tanh'; any shape."""
    x = device_array(x, "gelu_forward")
    check_float("gelu_forward", x=x)
    check_approximate("gelu_forward", approximate)
    y = empty(x.shape, x.dtype)
    launch_1d(gelu_forward_kernel(approximate), x.size, flat(y), flat(x), x.size)
    return y


def gelu_backward(x, dy, approximate):
    """dx = dy * GELU'(x)."""
    x, dy = device_array(x, "gelu_backward"), device_array(dy, "gelu_backward")
    check_float("gelu_backward", x=x, dy=dy)
    check_same_shape("gelu_backward", x=x, dy=dy)
    check_approximate("gelu_backward", approximate)
    dx = empty(x.shape, x.dtype)
    launch_1d(gelu_backward_kernel(approximate), x.size, flat(dx), flat(x), flat(dy), x.size)
    return dx
