"""ELU + 1 forward and backward (reference: backend/reference/core.py), the feature map of linear
transformers. Elementwise kernels that evaluate in float64 and round once to the input dtype (for
float32 the sum x + 1 and the product g y round exactly as float32 arithmetic would; exp is
the float64 exp, rounded once).
"""
import math

from numba import cuda

from ..reference.core import check_float, check_same_shape
from .runtime import as_float64, device_array, empty, flat, kernel_factory, launch_1d

__all__ = ["elu_plus_one_forward", "elu_plus_one_backward"]


@kernel_factory
def elu_plus_one_forward_kernel():
    def kernel(y, x, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            v = as_float64(x[i])
            # exp of min(v, 0) (NaN passes through), so the branch not taken cannot overflow
            e = math.exp(0.0 if v > 0.0 else v)
            y[i] = v + 1.0 if v > 0.0 else e
    return cuda.jit(kernel)


@kernel_factory
def elu_plus_one_backward_kernel():
    def kernel(dx, g, y, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            s = as_float64(y[i])
            slope = 1.0 if s > 1.0 else s          # the derivative, read off the output
            dx[i] = g[i] * slope
    return cuda.jit(kernel)


def elu_plus_one_forward(x):
    """y = x + 1 for x > 0, exp(x) otherwise; any shape."""
    x = device_array(x, "elu_plus_one_forward")
    check_float("elu_plus_one_forward", x=x)
    y = empty(x.shape, x.dtype)
    launch_1d(elu_plus_one_forward_kernel(), x.size, flat(y), flat(x), x.size)
    return y


def elu_plus_one_backward(g, y):
    """dx = g for y > 1, g * y otherwise (y the forward's output)."""
    g, y = device_array(g, "elu_plus_one_backward"), device_array(y, "elu_plus_one_backward")
    check_float("elu_plus_one_backward", g=g, y=y)
    check_same_shape("elu_plus_one_backward", g=g, y=y)
    dx = empty(g.shape, g.dtype)
    launch_1d(elu_plus_one_backward_kernel(), g.size, flat(dx), flat(g), flat(y), g.size)
    return dx
