"""Every differentiable operation as a Function, written only against the backend interface."""
from . import activations, elementwise, linalg, nn, reduce, shape  # noqa: F401
