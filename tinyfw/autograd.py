"""Reverse-mode automatic differentiation over a dynamic graph.

Every differentiable operation is a ``Function`` with a ``forward`` and a ``backward``:

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):             # x is a raw backend array, not a Tensor
            y = ctx.backend.exp(x)
            ctx.save_for_backward(y)
            return y
        @staticmethod
        def backward(ctx, dy):           # one gradient per output
            (y,) = ctx.saved_tensors
            return ctx.backend.mul(dy, y)  # one gradient per positional input

``Exp.apply(t)`` unwraps Tensor arguments, runs ``forward`` and wraps the result. When gradients
are needed, the ``Context`` it created becomes a node of the graph: it remembers the Function, the
input Tensors and what ``forward`` saved. ``backward`` walks these nodes from the output back to
the leaves in reverse topological order (an iterative sort: no recursion limit on deep graphs),
sums each gradient back to its input's shape (``unbroadcast``, the one place broadcasting is
undone) and accumulates it into ``.grad`` of the leaves with ``+=``. Saved arrays are freed
afterwards unless ``retain_graph=True``.
"""
import functools
from itertools import chain

import numpy as np

from .backend import backend_for
from .tensor import Tensor

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class _GradMode:
    """Context manager and decorator that sets whether operations record a graph."""

    def __init__(self, enabled):
        self.enabled = enabled
        self._previous = []

    def __enter__(self):
        global _grad_enabled
        self._previous.append(_grad_enabled)
        _grad_enabled = self.enabled
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _GradMode(self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def no_grad():
    """``with fw.no_grad(): ...`` or ``@fw.no_grad()``: build no graph (inference, updates)."""
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)


class Context:
    """What a Function's forward leaves for its backward; also the graph node of its outputs."""

    def __init__(self, backend, needs_input_grad):
        self.backend = backend
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self._freed = False
        # filled in by Function.apply when the graph is recorded
        self.function = None
        self.inputs = ()
        self.output_meta = ()

    def save_for_backward(self, *arrays):
        self._saved = arrays

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(
                f"{self.function.__name__}: trying to backward through the graph a second time; "
                "its saved arrays were freed after the first backward. Pass retain_graph=True "
                "to the first backward() if you need to backward twice.")
        return self._saved

    def _free(self):
        self._saved = ()
        self._freed = True
        # Forget everything forward stored as attributes too (masks, indices, ...).
        for name in list(vars(self)):
            if name not in ("backend", "needs_input_grad", "_saved", "_freed", "function",
                            "inputs", "output_meta"):
                delattr(self, name)


class Function:
    """Base class of every differentiable operation (see the module docstring)."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        device = None
        requires_grad = False
        raw = []
        for a in args:
            if isinstance(a, Tensor):
                if device is None:
                    device = a.device
                elif a.device != device:
                    raise ValueError(
                        f"{cls.__name__}: inputs are on different devices "
                        f"({_describe_devices(args)}); move them with .to(device) first")
                requires_grad = requires_grad or a.requires_grad
                raw.append(a.data)
            elif isinstance(a, np.generic):
                # NumPy scalars become Python numbers: "weak" scalars that never change a
                # tensor's dtype (float32 * np.float64(2) stays float32, as in PyTorch)
                raw.append(a.item())
            else:
                raw.append(a)
        record = requires_grad and _grad_enabled
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args) if record else ()
        ctx = Context(backend_for(device or "cpu"), needs)
        out = cls.forward(ctx, *raw, **kwargs)
        # a Function may put its result elsewhere (ToDevice does) by setting ctx.output_device
        device = ctx.__dict__.get("output_device") or device or "cpu"
        if isinstance(out, tuple):
            outputs = tuple(Tensor._wrap(o, device) for o in out)
        else:
            outputs = Tensor._wrap(out, device)
        if not record:
            return outputs
        ctx.function = cls
        ctx.inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
        outs = outputs if isinstance(outputs, tuple) else (outputs,)
        ctx.output_meta = tuple((o.shape, o.dtype) for o in outs)
        for i, o in enumerate(outs):
            if o.dtype.kind == "f":  # integer/bool outputs (argmax, masks) carry no gradient
                o.requires_grad = True
                o._ctx = ctx
                o._out_index = i
        return outputs


def _describe_devices(args):
    return ", ".join(f"{type(a).__name__}{tuple(a.shape)} on {a.device}"
                     for a in args if isinstance(a, Tensor))


def unbroadcast(backend, grad, shape):
    """Sum ``grad`` (shaped like a broadcast result) back to ``shape``, the input's shape."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise RuntimeError(f"unbroadcast: gradient of shape {tuple(grad.shape)} has fewer dims "
                           f"than its input {shape}")
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    if axes:
        grad = backend.sum(grad, axis=axes, keepdims=True)
    if extra:
        grad = backend.reshape(grad, grad.shape[extra:])
    if tuple(grad.shape) != shape:
        raise RuntimeError(f"unbroadcast: gradient of shape {tuple(grad.shape)} does not "
                           f"match its input's shape {shape}")
    return grad


def _topological_order(roots):
    """Graph nodes reachable from ``roots``, each after every node that consumes its outputs."""
    order, visited = [], set()
    stack = [(t._ctx, False) for t in roots if t._ctx is not None]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for t in node.inputs:
            if t is not None and t._ctx is not None and id(t._ctx) not in visited:
                stack.append((t._ctx, False))
    order.reverse()  # post-order reversed: consumers before producers
    return order


class _GradSlot:
    """A gradient being summed: the first array is borrowed (it may be shared with another
    branch), so the second contribution first copies it into a buffer this slot owns, unless
    the first one was fresh (see ``_fresh_gradients``) and so already the slot's own."""

    __slots__ = ("array", "owned")

    def __init__(self, array, owned=False):
        self.array = array
        self.owned = owned

    def add(self, backend, grad):
        if not self.owned:
            # a real array, never a NumPy scalar (ufuncs on 0-d arrays return scalars, which
            # cannot be updated in place)
            self.array = backend.copy(self.array)
            self.owned = True
        backend_iadd(backend, self.array, grad)


def backend_iadd(backend, target, value):
    """``target += value`` in place (NumPy's in-place add, or the backend's own)."""
    iadd = getattr(backend, "iadd", None)
    if iadd is not None:
        iadd(target, value)
    else:
        target += value


def _accumulate_grad(tensor, grad, adopt=False):
    """``tensor.grad += grad`` (the first gradient becomes ``.grad``)."""
    backend = backend_for(tensor.device)
    if tensor.grad is None:
        # A copy: grad may be shared with another branch of the graph that still reads it;
        # the walk says ``adopt`` when it knows that nothing else holds grad.
        tensor.grad = Tensor._wrap(grad if adopt else backend.copy(grad), tensor.device)
    else:
        backend_iadd(backend, tensor.grad.data, grad)


def _owner(a):
    """The NumPy array that owns the memory of ``a`` (``a`` itself unless it is a view)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _fresh_gradients(node, grads_out, grads_in):
    """For each gradient of ``grads_in`` (as delivered: after unbroadcast and cast), whether it
    is a fresh array that nothing else can see, so that a leaf or a sum may adopt it instead
    of copying it (PyTorch steals such a buffer too): a writable C-contiguous NumPy array whose
    memory is neither that of the incoming gradients (Add, Reshape and Expand hand those on),
    nor of anything the node saved or was given, nor of another gradient in the same list.
    Any other array (and every non-CPU array) is copied as before."""
    owners = [id(_owner(g)) if isinstance(g, np.ndarray) and g.flags.writeable
              and g.flags.c_contiguous else None for g in grads_in]
    if not any(owners):
        return [False] * len(grads_in)
    taken = set()   # the memory of everything else the node holds
    for a in chain(grads_out, node._saved, vars(node).values(),
                   (t.data for t in node.inputs if t is not None)):
        if isinstance(a, np.ndarray):
            while isinstance(a.base, np.ndarray):
                a = a.base
            taken.add(id(a))
    return [o is not None and o not in taken and owners.count(o) == 1 for o in owners]


def run_backward(roots, root_grads, retain_graph=False, capture=None):
    """Propagate ``root_grads`` from ``roots`` through the graph.

    Without ``capture``, gradients are accumulated into ``.grad`` of every leaf that requires
    grad (and of non-leaves that called ``retain_grad()``). With ``capture`` (a list of Tensors),
    nothing is written to ``.grad``: the gradients reaching those Tensors are returned instead.
    """
    slots = {}        # (id(node), output index) -> _GradSlot
    captured = {id(t): None for t in capture} if capture is not None else None
    keep_alive = []   # Tensors whose id is a key above must outlive the walk

    def deliver(tensor, grad, backend, fresh=False):
        if captured is not None and id(tensor) in captured:
            prev = captured[id(tensor)]
            captured[id(tensor)] = grad if prev is None else backend.add(prev, grad)
            fresh = False   # the captured list holds it too
        if tensor._ctx is None:
            if captured is None and tensor.requires_grad:
                _accumulate_grad(tensor, grad, adopt=fresh)
            return
        if captured is None and tensor._retains_grad:
            _accumulate_grad(tensor, grad)
            fresh = False   # .grad holds it too
        key = (id(tensor._ctx), tensor._out_index)
        slot = slots.get(key)
        if slot is None:
            slots[key] = _GradSlot(grad, owned=fresh)
        else:
            slot.add(backend, grad)

    for t, g in zip(roots, root_grads):
        keep_alive.append(t)
        deliver(t, g, backend_for(t.device))

    for node in _topological_order(roots):
        backend = node.backend
        grads_out = []
        for i, (shape, dtype) in enumerate(node.output_meta):
            slot = slots.pop((id(node), i), None)
            grads_out.append(slot.array if slot is not None else backend.zeros(shape, dtype))
        if node._freed:
            node.saved_tensors  # raises the "backward through the graph a second time" error
        grads_in = node.function.backward(node, *grads_out)
        if not isinstance(grads_in, tuple):
            grads_in = (grads_in,)
        if len(grads_in) != len(node.inputs):
            raise RuntimeError(f"{node.function.__name__}.backward returned {len(grads_in)} "
                               f"gradients for {len(node.inputs)} inputs")
        delivered = []
        for t, g in zip(node.inputs, grads_in):
            if t is None or g is None or not t.requires_grad:
                continue
            g = unbroadcast(backend, g, t.shape)
            if g.dtype != t.dtype:
                g = backend.astype(g, t.dtype)
            delivered.append((t, g))
        fresh = _fresh_gradients(node, grads_out, [g for _, g in delivered])
        for (t, g), is_fresh in zip(delivered, fresh):
            deliver(t, g, backend, is_fresh)
        if not retain_graph:
            node._free()

    if captured is None:
        return None
    return [captured[id(t)] for t in capture]


def grad(outputs, inputs, grad_outputs=None, retain_graph=False, allow_unused=True):
    """Gradients of ``outputs`` with respect to ``inputs`` as Tensors, without touching ``.grad``
    (``torch.autograd.grad``). Inputs that the outputs do not depend on get ``None``."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    roots, root_grads = [], []
    for out, g in zip(outputs, grad_outputs):
        if not out.requires_grad:
            continue
        roots.append(out)
        root_grads.append(_initial_grad(out, g, "grad"))
    if not roots:
        raise RuntimeError("grad: none of the outputs requires grad")
    result = run_backward(roots, root_grads, retain_graph=retain_graph, capture=inputs)
    return [None if g is None else Tensor._wrap(g, t.device) for g, t in zip(result, inputs)]


def _initial_grad(tensor, gradient, where):
    """The gradient a backward starts from: ``gradient`` checked, or 1 for a scalar."""
    backend = backend_for(tensor.device)
    if gradient is None:
        if tensor.numel() != 1:
            raise RuntimeError(
                f"{where}: grad can be implicitly created only for scalar outputs; this output "
                f"has shape {tuple(tensor.shape)}: pass a gradient of that shape")
        return backend.full(tensor.shape, 1.0, tensor.dtype)
    if isinstance(gradient, Tensor) and gradient.device != tensor.device:
        raise ValueError(f"{where}: gradient is on {gradient.device} but the output is on "
                         f"{tensor.device}; move it with .to({tensor.device!r}) first")
    g = gradient.data if isinstance(gradient, Tensor) else backend.from_numpy(gradient)
    if tuple(g.shape) != tuple(tensor.shape):
        raise ValueError(f"{where}: gradient has shape {tuple(g.shape)} but the output has "
                         f"shape {tuple(tensor.shape)}")
    if g.dtype != tensor.dtype:
        g = backend.astype(g, tensor.dtype)
    return g


def backward(tensor, gradient=None, retain_graph=False):
    """``tensor.backward(gradient)``: accumulate d(tensor)/d(leaf) into every leaf's ``.grad``."""
    if not tensor.requires_grad:
        raise RuntimeError(f"backward: this tensor (shape {tuple(tensor.shape)}) does not require "
                           "grad and has no graph; did you compute it under no_grad() or from "
                           "tensors without requires_grad=True?")
    run_backward([tensor], [_initial_grad(tensor, gradient, "backward")], retain_graph)
