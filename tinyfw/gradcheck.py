"""Numerical gradient checks with ``torch.autograd.gradcheck`` semantics.

For a function ``fn`` of Tensors, the analytical Jacobian (one backward per output element,
through the graph ``fn`` builds) is compared with the numerical Jacobian from central
differences ``(f(x + eps) - f(x - eps)) / 2 eps``, element by element:

    |analytical - numerical| <= atol + rtol * |numerical|

Then three properties every correct backward has: running backward twice with the same random
upstream gradient gives the same gradients; a zero upstream gradient gives zero gradients; and
gradients have the input's shape and dtype. Inputs must be float64: in float32 the central
difference is too noisy to tell a bug from rounding.
"""
import numpy as np

from . import autograd
from .backend import backend_for
from .tensor import Tensor


class GradcheckError(RuntimeError):
    pass


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(fn, inputs):
    out = _as_tuple(fn(*inputs))
    for o in out:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors, got {type(o).__name__}")
    return out


def _set_data(t, array):
    t.data = backend_for(t.device).from_numpy(array)


def numerical_jacobian(fn, inputs, checked, eps):
    """``J[o][i]`` of shape (outputs[o].numel, inputs[i].numel) by central differences."""
    with autograd.no_grad():
        base = _outputs(fn, inputs)
    jac = [[np.zeros((o.numel(), inputs[i].numel())) for i in checked] for o in base]
    for col, i in enumerate(checked):
        t = inputs[i]
        original = t.numpy()
        flat = original.reshape(-1).copy()
        for k in range(flat.size):
            values = []
            for delta in (eps, -eps):
                perturbed = flat.copy()
                perturbed[k] += delta
                _set_data(t, perturbed.reshape(original.shape))
                with autograd.no_grad():
                    values.append([o.numpy().astype(np.float64).reshape(-1)
                                   for o in _outputs(fn, inputs)])
            for o in range(len(base)):
                jac[o][col][:, k] = (values[0][o] - values[1][o]) / (2 * eps)
        _set_data(t, original)
    return jac


def analytical_jacobian(fn, inputs, checked):
    outs = _outputs(fn, inputs)
    targets = [inputs[i] for i in checked]
    jac = [[np.zeros((o.numel(), t.numel())) for t in targets] for o in outs]
    for o, out in enumerate(outs):
        if not out.requires_grad:
            continue  # output does not depend on the inputs: its rows stay zero
        for row in range(out.numel()):
            seed = np.zeros(out.numel(), dtype=out.dtype)
            seed[row] = 1.0
            grads = autograd.grad([out], targets, [seed.reshape(out.shape)], retain_graph=True)
            for col, g in enumerate(grads):
                if g is not None:
                    jac[o][col][row] = g.numpy().reshape(-1)
    return jac


def _fail(message, raise_exception):
    if raise_exception:
        raise GradcheckError(message)
    return False


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Check ``fn``'s gradients with respect to every input that has ``requires_grad=True``.

    Returns True, or raises ``GradcheckError`` (returns False with ``raise_exception=False``)
    naming the output, the input and the worst element of the first mismatch.
    """
    inputs = _as_tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; gradcheck needs "
                            "float64 inputs (float32 differences are too noisy to check)")

    numerical = numerical_jacobian(fn, inputs, checked, eps)
    analytical = analytical_jacobian(fn, inputs, checked)
    for o in range(len(numerical)):
        for col, i in enumerate(checked):
            a, n = analytical[o][col], numerical[o][col]
            err = np.abs(a - n) - (atol + rtol * np.abs(n))
            if err.size and err.max() > 0:
                r, k = np.unravel_index(np.argmax(err), err.shape)
                msg = (f"gradcheck: Jacobian mismatch for output {o} with respect to input {i} "
                       f"(shape {inputs[i].shape}): worst at output element {r}, input element "
                       f"{k}: analytical {a[r, k]:.10g}, numerical {n[r, k]:.10g} "
                       f"(atol {atol}, rtol {rtol}); {int((err > 0).sum())} of {err.size} "
                       "entries differ")
                return _fail(msg, raise_exception)

    # Random upstream gradients: backward twice must agree, and match the Jacobian.
    rng = np.random.default_rng(seed)
    outs = _outputs(fn, inputs)
    live = [o for o in outs if o.requires_grad]
    if live:
        targets = [inputs[i] for i in checked]
        ups = [rng.standard_normal(o.shape).astype(o.dtype) for o in live]
        first = autograd.grad(live, targets, ups, retain_graph=True)
        second = autograd.grad(live, targets, ups, retain_graph=True)
        for col, (g1, g2) in enumerate(zip(first, second)):
            i = checked[col]
            if (g1 is None) != (g2 is None) or (g1 is not None and
                                                 not np.array_equal(g1.numpy(), g2.numpy())):
                return _fail(f"gradcheck: backward is not reentrant: two backward passes with "
                             f"the same upstream gradient gave different gradients for input "
                             f"{i}", raise_exception)
            if g1 is not None and (g1.shape != inputs[i].shape or g1.dtype != inputs[i].dtype):
                return _fail(f"gradcheck: gradient for input {i} has shape {g1.shape} / dtype "
                             f"{g1.dtype}, expected {inputs[i].shape} / {inputs[i].dtype}",
                             raise_exception)
        zeros = [np.zeros(o.shape, dtype=o.dtype) for o in live]
        for col, g in enumerate(autograd.grad(live, targets, zeros)):
            if g is not None and np.any(g.numpy() != 0):
                return _fail(f"gradcheck: a zero upstream gradient gave a non-zero gradient for "
                             f"input {checked[col]}", raise_exception)
    return True
