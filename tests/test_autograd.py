"""The autograd engine: accumulation, graph freeing, no_grad, detach, deep graphs, gradcheck itself."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.autograd import Function


def test_gradient_accumulates_across_backward_calls():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])


def test_shared_subexpression_gets_summed_gradient():
    x = fw.tensor(2.0, requires_grad=True)
    y = x * x
    z = y + y * y  # dz/dx = 2x + 4x^3 = 4 + 32
    z.backward()
    assert x.grad.item() == pytest.approx(36.0)


def test_leaf_grad_is_not_aliased_to_an_upstream_buffer():
    a = fw.tensor([1.0, 1.0], requires_grad=True)
    b = fw.tensor([1.0, 1.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 10  # must not change b.grad
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])


def test_second_backward_through_freed_graph_raises():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp()).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_backward_on_non_scalar_needs_gradient():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"scalar outputs.*shape \(2,\)"):
        y.backward()
    y.backward(fw.tensor([1.0, -1.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -2.0])


def test_backward_gradient_shape_checked():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="shape"):
        (x * 2.0).backward(fw.tensor([1.0, 2.0, 3.0]))


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        fw.tensor([1.0]).sum().backward()


def test_no_grad_builds_no_graph_and_works_as_decorator():
    x = fw.tensor([1.0], requires_grad=True)
    with fw.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._ctx is None

    @fw.no_grad()
    def f(t):
        return t * 3.0
    assert not f(x).requires_grad
    assert fw.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = fw.tensor([3.0], requires_grad=True)
    y = x.detach() * x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0])


def test_deep_graph_has_no_recursion_limit():
    x = fw.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(20000):
        y = y + 1e-4
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0])


def test_graph_saved_arrays_freed_after_backward():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    node = y._ctx
    y.sum().backward()
    assert node._saved == ()


def test_retain_grad_on_intermediate():
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 2.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [4.0, 8.0])


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating point"):
        fw.tensor([1, 2], requires_grad=True)


def test_autograd_grad_does_not_touch_dot_grad():
    x = fw.tensor([1.0, 2.0], dtype=fw.float64, requires_grad=True)
    (g,) = fw.autograd.grad((x * x).sum(), [x])
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])
    assert x.grad is None


def test_default_dtypes():
    assert fw.tensor([1.0, 2.0]).dtype == fw.float32
    assert fw.tensor([1, 2]).dtype == fw.int64
    assert fw.tensor(np.zeros(2)).dtype == fw.float64
    assert fw.zeros(2, 3).dtype == fw.float32
    assert (fw.ones(2) * 2).dtype == fw.float32


def test_manual_seed_reproduces():
    fw.manual_seed(5)
    a = fw.randn(3, 3).numpy()
    fw.manual_seed(5)
    b = fw.randn(3, 3).numpy()
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ gradcheck catches bugs
class WrongSquare(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x  # should be 2 g x


class ConstantBackward(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, g):
        return np.full_like(g, 2.0)  # ignores the upstream gradient


def test_gradcheck_reports_wrong_backward():
    x = fw.tensor(np.array([0.5, -1.5, 2.0]), requires_grad=True)
    with pytest.raises(fw.GradcheckError, match=r"output 0 with respect to input 0.*worst"):
        fw.gradcheck(WrongSquare.apply, (x,))
    assert fw.gradcheck(WrongSquare.apply, (x,), raise_exception=False) is False


def test_gradcheck_catches_ignored_upstream_gradient():
    x = fw.tensor(np.array([0.5, -1.5]), requires_grad=True)
    with pytest.raises(fw.GradcheckError, match=r"Jacobian mismatch for output 0 with respect to "
                                                r"input 0 .*analytical 2, numerical 0"):
        fw.gradcheck(ConstantBackward.apply, (x,))


def test_gradcheck_requires_float64():
    x = fw.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        fw.gradcheck(fw.exp, (x,))


# ----------------------------------------------------------------------------------------------
# Adopting fresh gradient arrays instead of copying them (run_backward's _fresh_gradients)
# ----------------------------------------------------------------------------------------------

class SameArrayTwice(Function):
    """y = a + b whose backward hands one new array to both inputs."""
    made = []

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        both = g * 1.0
        SameArrayTwice.made.append(both)
        return both, both


class ReturnsSavedInput(Function):
    """A (wrong on purpose) backward that returns an array the forward saved: the input itself."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2.0

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return x


def test_a_fresh_gradient_is_adopted_by_its_leaf_not_copied():
    x = fw.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = fw.tensor(np.ones((3, 4)), requires_grad=True)
    (x @ w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.repeat(x.numpy().sum(0)[:, None], 4, 1))
    SameArrayTwice.made.clear()
    a = fw.tensor(np.ones(3), requires_grad=True)
    c = fw.tensor(np.ones(3), requires_grad=True)
    out = SameArrayTwice.apply(a, c) * fw.tensor(np.array([1.0, 2.0, 3.0]))
    out.sum().backward()
    # one array for two leaves: neither may adopt it, or one .grad += would change the other
    assert a.grad.data is not SameArrayTwice.made[0] and c.grad.data is not SameArrayTwice.made[0]
    assert not np.shares_memory(a.grad.data, c.grad.data)
    a.grad.data += 100.0
    np.testing.assert_allclose(c.grad.numpy(), [1.0, 2.0, 3.0])


def test_a_gradient_that_is_saved_or_passed_on_is_copied():
    x = fw.tensor(np.array([1.0, 2.0]), requires_grad=True)
    ReturnsSavedInput.apply(x).sum().backward()
    assert not np.shares_memory(x.grad.data, x.data)
    x.grad.data[:] = 0.0
    np.testing.assert_allclose(x.numpy(), [1.0, 2.0])
    # Add hands its incoming gradient to both inputs: the two leaves must not share it
    p = fw.tensor(np.ones(2), requires_grad=True)
    q = fw.tensor(np.ones(2), requires_grad=True)
    ((p + q) * 3.0).sum().backward()
    assert not np.shares_memory(p.grad.data, q.grad.data)
    np.testing.assert_allclose(p.grad.numpy(), [3.0, 3.0])


def test_sums_into_an_adopted_gradient_stay_correct():
    """A fresh first contribution becomes the sum's own buffer: later contributions add into it
    in place, and nothing that was handed on earlier may change."""
    x = fw.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * 2.0                        # non-leaf reached by three branches
    z = (y * y).sum() + (y * 3.0).sum() + y.sum()
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0 * (2.0 * 2.0 * x.numpy() + 3.0 + 1.0))
    g1 = x.grad.numpy().copy()
    z2 = (x * x).sum()
    z2.backward()                      # accumulates into the adopted .grad
    np.testing.assert_allclose(x.grad.numpy(), g1 + 2.0 * x.numpy())
