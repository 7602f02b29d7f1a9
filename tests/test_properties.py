"""Property tests of the engine core: Hypothesis draws random small shapes (1-4 dims, sizes 1-5),
dims, indices and values; NumPy is the oracle for every forward, ``np.add.at`` for every
scatter-add backward, and float64 ``fw.gradcheck`` for every other gradient.

Values are drawn from a seeded NumPy generator (the seed is what Hypothesis draws), so a failure
prints a shape and a seed that reproduce it. Shapes fed to gradcheck are capped at a few dozen
elements: the numerical Jacobian costs two forwards per input element.
"""
import numpy as np
import pytest
from scipy import special

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import tinyfw as fw  # noqa: E402
import tinyfw.nn.functional as F  # noqa: E402

# No "explain" phase: on a failure it re-runs the test many times to annotate the source, which
# costs minutes here; the shrunk example and its seed are what one needs.
SETTINGS = settings(max_examples=25, deadline=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Gradchecks through the Numba kernels (softmax, GELU) call them ~100 times per example, and each
# call of a parallel kernel costs milliseconds on a busy 2-core machine: fewer examples there.
KERNEL_SETTINGS = settings(SETTINGS, max_examples=8)
SEEDS = st.integers(0, 2**32 - 1)

# Largest side per rank for shapes that go through gradcheck (at most 81 elements).
GRADCHECK_SIDE = {0: 1, 1: 5, 2: 5, 3: 4, 4: 3}


# ----------------------------------------------------------------------------- helpers
def cap(shape, side=None):
    """``shape`` with every side clipped to the gradcheck cap for its rank. Clipping keeps
    broadcast compatibility: equal sides stay equal and sides of 1 stay 1."""
    side = side or GRADCHECK_SIDE[len(shape)]
    return tuple(min(s, side) for s in shape)


def leaf(a, requires_grad=True):
    return fw.tensor(np.asarray(a, dtype=np.float64), dtype=fw.float64,
                     requires_grad=requires_grad)


def distinct(rng, shape):
    """Values with no ties and gaps of at least 0.1 (max/min stay differentiable under eps)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.1 - 0.05 * n).reshape(shape)


def assert_close(got, want, rtol=1e-12, atol=1e-12):
    got = got.numpy() if isinstance(got, fw.Tensor) else np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                    min_side=1, max_side=5)


@st.composite
def dims_for(draw, ndim, allow_none=True):
    """A reduction ``dim``: None, an int (maybe negative) or a tuple of distinct dims."""
    kinds = ["int", "tuple"] + (["none"] if allow_none else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def np_axes(dim):
    return dim  # NumPy accepts None, an int or a tuple of (negative) ints just like tinyfw


def reduced_count(shape, dim):
    if dim is None:
        return int(np.prod(shape))
    dims = dim if isinstance(dim, tuple) else (dim,)
    return int(np.prod([shape[d] for d in dims]))


# ----------------------------------------------------------------------------- broadcasting
def binary_operands(name, rng, sa, sb):
    if name == "div":
        a = rng.standard_normal(sa)
        b = np.where(rng.random(sb) < 0.5, -1.0, 1.0) * (0.5 + np.abs(rng.standard_normal(sb)))
    elif name == "pow":
        a = 0.5 + np.abs(rng.standard_normal(sa))        # positive base: d/db needs log(a)
        b = rng.uniform(-2.0, 2.0, size=sb)
    elif name in ("maximum", "minimum"):
        # two offset grids: a - b is never closer to 0 than 0.05, so no ties after broadcasting
        a = 0.1 * rng.integers(-20, 20, size=sa) + 0.025
        b = 0.1 * rng.integers(-20, 20, size=sb) - 0.025
    else:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a ** b, np.power),
    "maximum": (fw.maximum, np.maximum),
    "minimum": (fw.minimum, np.minimum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(bs=broadcast_pairs, seed=SEEDS)
def test_binary_broadcast_forward_matches_numpy(name, bs, seed):
    ours, ref = BINARY[name]
    sa, sb = bs.input_shapes
    a, b = binary_operands(name, np.random.default_rng(seed), sa, sb)
    out = ours(leaf(a, False), leaf(b, False))
    assert out.shape == bs.result_shape
    assert_close(out, ref(a, b), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(bs=broadcast_pairs, seed=SEEDS)
def test_binary_broadcast_gradcheck(name, bs, seed):
    ours, _ = BINARY[name]
    rank = len(bs.result_shape)
    sa, sb = (cap(s, GRADCHECK_SIDE[rank]) for s in bs.input_shapes)
    a, b = binary_operands(name, np.random.default_rng(seed), sa, sb)
    ta, tb = leaf(a), leaf(b)
    assert fw.gradcheck(ours, (ta, tb))


@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(bs=broadcast_pairs, seed=SEEDS)
def test_binary_broadcast_grads_have_input_shapes(name, bs, seed):
    """The engine sums broadcast gradients back: each grad has its input's shape and equals the
    NumPy formula summed over the broadcast axes (checked for add/mul, whose formulas are 1
    and the other operand)."""
    ours, _ = BINARY[name]
    sa, sb = bs.input_shapes
    rng = np.random.default_rng(seed)
    a, b = binary_operands(name, rng, sa, sb)
    ta, tb = leaf(a), leaf(b)
    g = rng.standard_normal(bs.result_shape)
    ours(ta, tb).backward(g)
    assert ta.grad.shape == tuple(sa) and tb.grad.shape == tuple(sb)

    def sum_to(x, shape):
        x = x.sum(axis=tuple(range(x.ndim - len(shape)))) if x.ndim > len(shape) else x
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
        return x.sum(axis=axes, keepdims=True) if axes else x

    if name == "add":
        assert_close(ta.grad, sum_to(g, sa), rtol=1e-12)
        assert_close(tb.grad, sum_to(g, sb), rtol=1e-12)
    elif name == "mul":
        assert_close(ta.grad, sum_to(g * b, sa), rtol=1e-12)
        assert_close(tb.grad, sum_to(g * a, sb), rtol=1e-12)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
@SETTINGS
@given(shape=shapes, seed=SEEDS, scalar=st.floats(0.25, 3.0), left=st.booleans())
def test_python_scalar_operand(op, shape, seed, scalar, left):
    """``x op c`` and ``c op x`` with a Python number: forward as NumPy, gradient by gradcheck."""
    rng = np.random.default_rng(seed)
    a = 0.5 + np.abs(rng.standard_normal(shape))  # positive: valid for div and both pows
    fns = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
           "div": lambda x, y: x / y, "pow": lambda x, y: x ** y}
    fn = fns[op]
    if left:
        ours, want = (lambda x: fn(scalar, x)), fn(scalar, a)
    else:
        ours, want = (lambda x: fn(x, scalar)), fn(a, scalar)
    out = ours(leaf(a, False))
    assert out.dtype == np.float64  # a Python float must not promote or demote the tensor
    assert_close(out, want, rtol=1e-14, atol=0)
    assert fw.gradcheck(ours, (leaf(a[tuple(slice(0, GRADCHECK_SIDE[len(shape)])
                                            for _ in shape)]),))


# ----------------------------------------------------------------------------- reductions
REDUCTIONS = {
    "sum": (lambda x, d, k: fw.sum(x, dim=d, keepdim=k),
            lambda a, d, k: np.sum(a, axis=d, keepdims=k)),
    "mean": (lambda x, d, k: fw.mean(x, dim=d, keepdim=k),
             lambda a, d, k: np.mean(a, axis=d, keepdims=k)),
    "var": (lambda x, d, k: fw.var(x, dim=d, keepdim=k),
            lambda a, d, k: np.var(a, axis=d, keepdims=k, ddof=1)),
    "var_biased": (lambda x, d, k: fw.var(x, dim=d, keepdim=k, correction=0),
                   lambda a, d, k: np.var(a, axis=d, keepdims=k, ddof=0)),
    "std": (lambda x, d, k: fw.std(x, dim=d, keepdim=k),
            lambda a, d, k: np.std(a, axis=d, keepdims=k, ddof=1)),
    "amax": (lambda x, d, k: fw.amax(x, dim=d, keepdim=k),
             lambda a, d, k: np.max(a, axis=d, keepdims=k)),
    "amin": (lambda x, d, k: fw.amin(x, dim=d, keepdim=k),
             lambda a, d, k: np.min(a, axis=d, keepdims=k)),
    "max": (lambda x, d, k: _values(x.max(dim=d, keepdim=k)),
            lambda a, d, k: np.max(a, axis=d, keepdims=k)),
    "min": (lambda x, d, k: _values(x.min(dim=d, keepdim=k)),
            lambda a, d, k: np.min(a, axis=d, keepdims=k)),
    "logsumexp": (lambda x, d, k: fw.logsumexp(x, d, keepdim=k),
                  lambda a, d, k: special.logsumexp(a, axis=d, keepdims=k)),
}


def _values(r):
    return r.values if hasattr(r, "values") else r


@st.composite
def reduction_case(draw, max_side=5):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=max_side))
    dim = draw(dims_for(len(shape)))
    return shape, dim, draw(st.booleans()), draw(SEEDS)


def _needs_dof(name, shape, dim):
    """var/std with Bessel's correction over one element has no degrees of freedom."""
    return name in ("var", "std") and reduced_count(shape, dim) <= 1


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@SETTINGS
@given(case=reduction_case())
def test_reduction_forward_matches_numpy(name, case):
    shape, dim, keepdim, seed = case
    ours, ref = REDUCTIONS[name]
    a = distinct(np.random.default_rng(seed), shape) / 7.0
    x = leaf(a, False)
    if _needs_dof(name, shape, dim):
        with pytest.raises(ValueError, match=name if name != "std" else "var"):
            ours(x, dim, keepdim)
        return
    assert_close(ours(x, dim, keepdim), ref(a, np_axes(dim), keepdim), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@SETTINGS
@given(case=reduction_case(max_side=4))
def test_reduction_gradcheck(name, case):
    shape, dim, keepdim, seed = case
    shape = cap(shape)
    if _needs_dof(name, shape, dim):
        return
    ours, _ = REDUCTIONS[name]
    # distinct values: max/min have a unique winner per reduced slice (their gradient is
    # defined), and var/std never see a zero spread
    x = leaf(distinct(np.random.default_rng(seed), shape) / 7.0)
    assert fw.gradcheck(lambda x: ours(x, dim, keepdim), (x,))


@pytest.mark.parametrize("name", ["amax", "amin"])
@SETTINGS
@given(case=reduction_case())
def test_max_min_ties_split_gradient_evenly(name, case):
    """With ties (values on a coarse grid) the gradient of amax/amin is split evenly among the
    tied extreme elements, as torch.amax: each gets upstream / count."""
    shape, dim, keepdim, seed = case
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=shape).astype(np.float64)
    x = leaf(a)
    ref = np.max if name == "amax" else np.min
    y = getattr(fw, name)(x, dim=dim, keepdim=keepdim)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ext = ref(a, axis=dim, keepdims=True)
    hit = (a == ext).astype(np.float64)
    count = hit.sum(axis=dim, keepdims=True)
    g_kept = np.reshape(g, ext.shape)
    assert_close(x.grad, hit * g_kept / count, rtol=1e-12)


@SETTINGS
@given(shape=shapes, seed=SEEDS, keepdim=st.booleans(), data=st.data())
def test_max_with_int_dim_returns_values_and_indices(shape, seed, keepdim, data):
    d = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = distinct(np.random.default_rng(seed), shape)
    for method, ref, arg in (("max", np.max, np.argmax), ("min", np.min, np.argmin)):
        values, indices = getattr(leaf(a, False), method)(dim=d, keepdim=keepdim)
        assert_close(values, ref(a, axis=d, keepdims=keepdim))
        want = arg(a, axis=d)
        if keepdim:
            want = np.expand_dims(want, d)
        np.testing.assert_array_equal(indices.numpy(), want)
        assert indices.dtype.kind == "i"


@SETTINGS
@given(shape=shapes, seed=SEEDS, data=st.data())
def test_logsumexp_extreme_values_are_finite(shape, seed, data):
    """logsumexp subtracts the max: entries of +-1e4 (or a -inf) give the exact finite answer."""
    rng = np.random.default_rng(seed)
    dim = data.draw(dims_for(len(shape), allow_none=False))
    a = rng.choice([-1e4, 1e4, 0.0, 3.0], size=shape)
    x = leaf(a)
    y = fw.logsumexp(x, dim)
    assert np.all(np.isfinite(y.numpy()))
    assert_close(y, special.logsumexp(a, axis=dim), rtol=1e-12)
    y.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))
    # the gradient is softmax over the reduced dims: it sums to 1 over each reduced slice
    assert_close(x.grad.numpy().sum(axis=dim), np.ones(y.shape), rtol=1e-12)


# ----------------------------------------------------------------------------- shapes
@SETTINGS
@given(shape=shapes, seed=SEEDS, data=st.data())
def test_permute_transpose_reshape_round_trips(shape, seed, data):
    a = np.random.default_rng(seed).standard_normal(shape)
    x = leaf(a, False)
    n = len(shape)
    perm = data.draw(st.permutations(range(n)))
    inverse = tuple(int(i) for i in np.argsort(perm))
    p = x.permute(*perm)
    assert_close(p, np.transpose(a, perm), rtol=0, atol=0)
    assert_close(p.permute(*inverse), a, rtol=0, atol=0)
    d0 = data.draw(st.integers(-n, n - 1))
    d1 = data.draw(st.integers(-n, n - 1))
    t = x.transpose(d0, d1)
    assert_close(t, np.swapaxes(a, d0, d1), rtol=0, atol=0)
    assert_close(t.transpose(d0, d1), a, rtol=0, atol=0)
    rev = tuple(reversed(shape))
    assert_close(x.reshape(rev), a.reshape(rev), rtol=0, atol=0)
    assert_close(x.reshape(rev).reshape(shape), a, rtol=0, atol=0)
    assert_close(x.reshape(-1), a.reshape(-1), rtol=0, atol=0)
    assert_close(x.reshape(shape[0], -1), a.reshape(shape[0], -1), rtol=0, atol=0)
    # reshape of a non-contiguous view is NumPy's reshape of the permuted array (a copy)
    assert_close(p.reshape(-1), np.transpose(a, perm).reshape(-1), rtol=0, atol=0)
    u = data.draw(st.integers(-n - 1, n))
    assert_close(x.unsqueeze(u), np.expand_dims(a, u), rtol=0, atol=0)
    assert_close(x.unsqueeze(u).squeeze(u), a, rtol=0, atol=0)
    assert_close(x.flatten(), a.reshape(-1), rtol=0, atol=0)


# Ops applied to a permuted (non-contiguous) view of the input, for gradcheck.
NON_CONTIGUOUS_OPS = {
    "reshape": lambda v: v.reshape(-1) * fw.arange(v.numel(), dtype=fw.float64),
    "sum_dim0": lambda v: v.sum(dim=0),
    "mean_last": lambda v: v.mean(dim=-1, keepdim=True),
    "exp": lambda v: v.exp(),
    "tanh_mul": lambda v: v.tanh() * v,
    "softmax_last": lambda v: F.softmax(v, dim=-1),
    "softmax_first": lambda v: F.softmax(v, dim=0),
    "log_softmax_last": lambda v: F.log_softmax(v, dim=-1),
    "gelu": lambda v: F.gelu(v),
    "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
    "index": lambda v: v[..., [0, 0, -1]],
    "cat": lambda v: fw.cat([v, v * 2.0], dim=0),
    "matmul": lambda v: v @ fw.ones(v.shape[-1], 2, dtype=fw.float64),
    "logsumexp": lambda v: fw.logsumexp(v, -1),
    "var": lambda v: v.var(dim=0, correction=0),
}


KERNEL_OPS = ("softmax_last", "softmax_first", "log_softmax_last", "gelu", "gelu_tanh")
NON_CONTIGUOUS_SHAPES = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5)


@pytest.mark.parametrize("name", sorted(set(NON_CONTIGUOUS_OPS) - set(KERNEL_OPS)))
@SETTINGS
@given(shape=NON_CONTIGUOUS_SHAPES, seed=SEEDS, data=st.data())
def test_gradcheck_through_non_contiguous_views(name, shape, seed, data):
    _check_non_contiguous(name, shape, seed, data)


@pytest.mark.parametrize("name", KERNEL_OPS)
@KERNEL_SETTINGS
@given(shape=NON_CONTIGUOUS_SHAPES, seed=SEEDS, data=st.data())
def test_gradcheck_kernels_through_non_contiguous_views(name, shape, seed, data):
    _check_non_contiguous(name, shape, seed, data)


def _check_non_contiguous(name, shape, seed, data):
    shape = cap(shape, side=3 if len(shape) > 2 else 4)  # at most 27 elements: kernels are slow
    n = len(shape)
    # a permutation that really moves something, so the view is non-contiguous (when no side
    # is 1); a transpose of the first and last dims is the fallback
    perm = data.draw(st.permutations(range(n)))
    if list(perm) == list(range(n)):
        perm = [n - 1] + list(range(1, n - 1)) + [0]
    x = leaf(distinct(np.random.default_rng(seed), shape) / 11.0)
    op = NON_CONTIGUOUS_OPS[name]
    # forward on the view == forward on a contiguous copy of the same values
    view = x.permute(*perm)
    copy = leaf(np.ascontiguousarray(np.transpose(x.numpy(), perm)), False)
    assert_close(op(view), op(copy), rtol=1e-12, atol=1e-14)
    assert fw.gradcheck(lambda x: op(x.permute(*perm)), (x,))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "gelu", "gelu_tanh", "exp_sum"])
@SETTINGS
@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=2, max_side=5), seed=SEEDS)
def test_non_contiguous_leaf_matches_contiguous_leaf(name, shape, seed):
    """A leaf whose data is a strided NumPy view (``as_tensor`` of a transposed array) gives the
    same outputs and gradients as a contiguous copy: kernels must not assume C order."""
    fns = {"softmax": lambda x: F.softmax(x, dim=-1), "log_softmax": lambda x: F.log_softmax(x),
           "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
           "exp_sum": lambda x: x.exp().sum(dim=0)}
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape)
    strided = np.swapaxes(base, 0, -1)           # a view, not C-contiguous
    assert not strided.flags.c_contiguous
    x_view = fw.as_tensor(strided).requires_grad_()
    x_copy = leaf(np.ascontiguousarray(strided))
    y_view, y_copy = fns[name](x_view), fns[name](x_copy)
    assert_close(y_view, y_copy, rtol=1e-13, atol=1e-15)
    g = rng.standard_normal(y_copy.shape)
    y_view.backward(g)
    y_copy.backward(g)
    assert_close(x_view.grad, x_copy.grad, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- indexing
@st.composite
def index_case(draw):
    """A shape and an index tuple of ints, slices and integer arrays (one shared length, so they
    broadcast together; values may repeat and may be negative)."""
    shape = draw(shapes)
    n_items = draw(st.integers(1, len(shape)))
    length = draw(st.integers(1, 6))
    container = draw(st.sampled_from(["ndarray", "list", "tensor"]))
    items, arrays = [], []
    for d in range(n_items):
        size = shape[d]
        kind = draw(st.sampled_from(["int", "slice", "array"]))
        if kind == "int":
            items.append(draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-size - 1, size + 1)
            items.append(slice(draw(bound), draw(bound),
                               draw(st.sampled_from([None, 1, 2, 3, -1, -2]))))
        else:
            values = draw(st.lists(st.integers(-size, size - 1), min_size=length,
                                   max_size=length))
            arrays.append(len(items))
            items.append(np.array(values, dtype=np.int64))
    return shape, tuple(items), arrays, container, draw(SEEDS)


def as_container(index, arrays, container):
    out = list(index)
    for i in arrays:
        if container == "list":
            out[i] = out[i].tolist()
        elif container == "tensor":
            out[i] = fw.tensor(out[i])
    return tuple(out)


@SETTINGS
@given(case=index_case())
def test_indexing_forward_and_scatter_add_backward(case):
    shape, index, arrays, container, seed = case
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    x = leaf(a)
    y = x[as_container(index, arrays, container)]
    want = a[index]
    assert_close(y, want, rtol=0, atol=0)
    g = rng.standard_normal(np.shape(want))
    y.backward(g)
    expected = np.zeros(shape)
    np.add.at(expected, index, g)  # repeated indices accumulate
    assert x.grad is not None
    assert_close(x.grad, expected, rtol=1e-12, atol=1e-14)


@SETTINGS
@given(shape=shapes, seed=SEEDS, extra=st.integers(1, 4), dim_pick=st.integers(0, 3))
def test_repeated_index_gradient_accumulates(shape, seed, extra, dim_pick):
    """More indices than rows (pigeonhole): some index repeats, and its gradient is the sum of
    every upstream slice that picked it. Also checked by gradcheck on a small case."""
    d = dim_pick % len(shape)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, shape[d], size=shape[d] + extra)
    a = rng.standard_normal(shape)
    x = leaf(a)
    index = (slice(None),) * d + (fw.tensor(idx),)
    y = x[index]
    g = rng.standard_normal(y.shape)
    y.backward(g)
    expected = np.zeros(shape)
    np.add.at(expected, (slice(None),) * d + (idx,), g)
    assert_close(x.grad, expected, rtol=1e-12, atol=1e-14)
    # the count of picks per row, seen through the gradient of a sum
    x2 = leaf(a)
    x2[index].sum().backward()
    counts = np.bincount(idx, minlength=shape[d]) * (np.prod(shape) // shape[d])
    assert_close(x2.grad.numpy().sum(axis=tuple(i for i in range(len(shape)) if i != d)),
                 counts.astype(np.float64), rtol=1e-12)
    small = leaf(a[tuple(slice(0, 2) for _ in shape)])
    small_idx = fw.tensor(np.minimum(idx, small.shape[d] - 1))
    assert fw.gradcheck(lambda s: s[(slice(None),) * d + (small_idx,)], (small,))


@SETTINGS
@given(shape=shapes, seed=SEEDS)
def test_bool_mask_index(shape, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    mask = a > 0.3
    x = leaf(a)
    y = x[fw.tensor(mask)]
    assert_close(y, a[mask], rtol=0, atol=0)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    expected = np.zeros(shape)
    expected[mask] = g
    assert_close(x.grad, expected, rtol=0, atol=0)


@SETTINGS
@given(shape=shapes, seed=SEEDS)
def test_full_integer_index_gives_scalar_usable_twice(shape, seed):
    """Indexing every dim with an int gives a 0-d result; using it twice accumulates."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    pos = tuple(int(rng.integers(0, s)) for s in shape)
    x = leaf(a)
    y = x[pos]
    assert y.shape == ()
    (y * y + y * 3.0).backward()
    expected = np.zeros(shape)
    expected[pos] = 2 * a[pos] + 3.0
    assert_close(x.grad, expected, rtol=1e-12)


# ----------------------------------------------------------------------------- joining
@st.composite
def cat_case(draw):
    base = list(draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)))
    n = len(base)
    d = draw(st.integers(-n, n - 1))
    k = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 3), min_size=k, max_size=k))
    shapes_ = []
    for s in sizes:
        sh = list(base)
        sh[d] = s
        shapes_.append(tuple(sh))
    return shapes_, d, draw(SEEDS)


@SETTINGS
@given(case=cat_case())
def test_cat_forward_backward(case):
    shapes_, d, seed = case
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes_]
    xs = [leaf(a) for a in arrays]
    y = fw.cat(xs, dim=d)
    assert_close(y, np.concatenate(arrays, axis=d), rtol=0, atol=0)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    pieces = np.split(g, np.cumsum([s[d] for s in shapes_])[:-1], axis=d)
    for x, piece in zip(xs, pieces):
        assert_close(x.grad, piece, rtol=0, atol=0)
    small = tuple(leaf(a[tuple(slice(0, 2) for _ in a.shape)]) for a in arrays[:3])
    assert fw.gradcheck(lambda *ts: fw.cat(ts, dim=d), small)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
       k=st.integers(1, 4), seed=SEEDS, data=st.data())
def test_stack_forward_backward(shape, k, seed, data):
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) for _ in range(k)]
    xs = [leaf(a) for a in arrays]
    y = fw.stack(xs, dim=d)
    assert_close(y, np.stack(arrays, axis=d), rtol=0, atol=0)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    for i, x in enumerate(xs):
        assert_close(x.grad, np.take(g, i, axis=d), rtol=0, atol=0)
    small = tuple(leaf(a[tuple(slice(0, 3) for _ in shape)]) for a in arrays[:2])
    assert fw.gradcheck(lambda *ts: fw.stack(ts, dim=d), small)


@SETTINGS
@given(shape=shapes, seed=SEEDS, data=st.data())
def test_split_pieces_and_round_trip(shape, seed, data):
    n = len(shape)
    d = data.draw(st.integers(-n, n - 1))
    size = shape[d]
    if data.draw(st.booleans()):
        split_size = data.draw(st.integers(1, size))
        bounds = list(range(split_size, size, split_size))
    else:
        cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=3)))
        bounds = cuts
        split_size = list(np.diff([0] + cuts + [size]).astype(int))
        split_size = [int(s) for s in split_size]
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    x = leaf(a)
    pieces = fw.split(x, split_size, dim=d)
    want = np.split(a, bounds, axis=d)
    assert len(pieces) == len(want)
    for p, w in zip(pieces, want):
        assert_close(p, w, rtol=0, atol=0)
    assert_close(fw.cat(pieces, dim=d), a, rtol=0, atol=0)
    # backward: piece i weighted by (i + 1) -> each slice of x gets its piece's weight
    total = None
    for i, p in enumerate(pieces):
        term = (p * float(i + 1)).sum()
        total = term if total is None else total + term
    total.backward()
    expected = np.concatenate([np.full(w.shape, i + 1.0) for i, w in enumerate(want)], axis=d)
    assert_close(x.grad, expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=SEEDS, scale=st.sampled_from([1.0, 30.0, 1e4]), data=st.data())
def test_softmax_invariants(dtype, shape, seed, scale, data):
    n = len(shape)
    d = data.draw(st.integers(-n, n - 1))
    rng = np.random.default_rng(seed)
    # logits on a 1/64 grid and integer shifts: x + c is exact in float32 too, so the shift
    # invariance below is a property of the kernel, not of rounding in the test
    a = (np.round(rng.standard_normal(shape) * scale * 64) / 64).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    x = fw.tensor(a, requires_grad=True)
    p = F.softmax(x, dim=d)
    lp = F.log_softmax(x, dim=d)
    assert p.dtype == dtype and lp.dtype == dtype
    pn, lpn = p.numpy(), lp.numpy()
    assert np.all(np.isfinite(pn)) and not np.any(np.isnan(lpn))
    assert np.all(pn >= 0) and np.all(pn <= 1 + tol)
    assert_close(pn.sum(axis=d), np.ones(np.delete(shape, d % n)), rtol=tol, atol=tol)
    assert np.all(lpn <= tol)
    assert_close(np.exp(lpn.astype(np.float64)).sum(axis=d),
                 np.ones(np.delete(shape, d % n)), rtol=tol * 10, atol=tol * 10)
    # the reference: shift by the max, in float64
    a64 = a.astype(np.float64)
    ref_lp = a64 - special.logsumexp(a64, axis=d, keepdims=True)
    ref_tol = 1e-10 if dtype == np.float64 else 1e-5 * max(1.0, scale / 100)
    assert_close(lpn.astype(np.float64), ref_lp, rtol=ref_tol, atol=ref_tol)
    assert_close(pn.astype(np.float64), np.exp(ref_lp), rtol=ref_tol, atol=ref_tol)
    # shift invariance: adding a per-slice constant changes nothing
    shift_shape = list(shape)
    shift_shape[d] = 1
    c = rng.integers(-50, 50, size=shift_shape).astype(dtype)
    x_shift = fw.tensor(a + c)
    assert_close(F.softmax(x_shift, dim=d), pn, rtol=tol, atol=tol)
    assert_close(F.log_softmax(x_shift, dim=d), lpn, rtol=tol, atol=tol)
    # the gradient of any weighted sum is orthogonal to the ones along dim (softmax sums to 1)
    w = rng.standard_normal(shape).astype(dtype)
    (p * fw.tensor(w)).sum().backward()
    gsum = x.grad.numpy().astype(np.float64).sum(axis=d)
    assert np.all(np.isfinite(x.grad.numpy()))
    assert_close(gsum, np.zeros_like(gsum), rtol=0, atol=tol * 10 * max(1, np.abs(w).max()))
    x.grad = None
    (lp * fw.tensor(w)).sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))
    gsum = x.grad.numpy().astype(np.float64).sum(axis=d)
    assert_close(gsum, np.zeros_like(gsum), rtol=0, atol=tol * 100 * max(1, np.abs(w).sum()))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@SETTINGS
@given(shape=shapes, seed=SEEDS, data=st.data())
def test_softmax_extreme_logits_no_nan(fn, shape, seed, data):
    """Entries of +-1e4 (exp overflows without the max shift) give finite, exact results."""
    n = len(shape)
    d = data.draw(st.integers(-n, n - 1))
    rng = np.random.default_rng(seed)
    a = rng.choice([-1e4, 1e4, 0.0], size=shape)
    for dtype in (np.float64, np.float32):
        x = fw.tensor(a.astype(dtype), requires_grad=True)
        y = getattr(F, fn)(x, dim=d)
        yn = y.numpy()
        assert not np.any(np.isnan(yn)) and np.all(np.isfinite(yn))
        ref_lp = a - special.logsumexp(a, axis=d, keepdims=True)
        ref = ref_lp if fn == "log_softmax" else np.exp(ref_lp)
        assert_close(yn.astype(np.float64), ref, rtol=1e-6, atol=1e-6)
        y.backward(np.ones(shape, dtype=dtype))
        assert np.all(np.isfinite(x.grad.numpy()))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@KERNEL_SETTINGS
@given(shape=shapes, seed=SEEDS, data=st.data())
def test_softmax_gradcheck_random_dim(fn, shape, seed, data):
    shape = cap(shape, side=3 if len(shape) > 2 else 4)
    n = len(shape)
    d = data.draw(st.integers(-n, n - 1))
    x = leaf(np.random.default_rng(seed).standard_normal(shape))
    assert fw.gradcheck(lambda x: getattr(F, fn)(x, dim=d), (x,))


# ----------------------------------------------------------------------------- matmul
@st.composite
def matmul_case(draw):
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                   min_side=1, max_side=3))
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    a_vec, b_vec = draw(st.booleans()), draw(st.booleans())
    sa = (k,) if a_vec else batch.input_shapes[0] + (n, k)
    sb = (k,) if b_vec else batch.input_shapes[1] + (k, m)
    return sa, sb, draw(SEEDS)


@SETTINGS
@given(case=matmul_case())
def test_matmul_batch_broadcast_matches_numpy(case):
    sa, sb, seed = case
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    y = fw.matmul(leaf(a, False), leaf(b, False))
    assert_close(y, np.matmul(a, b), rtol=1e-12, atol=1e-12)
    assert_close(leaf(a, False) @ leaf(b, False), np.matmul(a, b), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(case=matmul_case(), which=st.sampled_from(["both", "a", "b"]))
def test_matmul_batch_broadcast_gradcheck(case, which):
    sa, sb, seed = case
    rng = np.random.default_rng(seed)
    ta = leaf(rng.standard_normal(sa), which in ("both", "a"))
    tb = leaf(rng.standard_normal(sb), which in ("both", "b"))
    assert fw.gradcheck(lambda a, b: a @ b, (ta, tb))
    # and the batched gradient equals the NumPy formula summed over broadcast batch dims
    y = ta @ tb
    g = rng.standard_normal(y.shape)
    y.backward(g)
    a2 = ta.numpy()[None] if len(sa) == 1 else ta.numpy()
    b2 = tb.numpy()[..., None] if len(sb) == 1 else tb.numpy()
    g2 = g
    if len(sa) == 1:
        g2 = np.expand_dims(g2, -2 if len(sb) > 1 else 0)
    if len(sb) == 1:
        g2 = np.expand_dims(g2, -1)
    da = np.matmul(g2, np.swapaxes(b2, -1, -2))
    db = np.matmul(np.swapaxes(a2, -1, -2), g2)

    def sum_to(x, shape):
        x = x.sum(axis=tuple(range(x.ndim - len(shape)))) if x.ndim > len(shape) else x
        axes = tuple(i for i, s in enumerate(shape) if s == 1 and x.shape[i] != 1)
        return x.sum(axis=axes, keepdims=True) if axes else x

    if ta.requires_grad:
        want = sum_to(da, a2.shape).reshape(sa)
        assert_close(ta.grad, want, rtol=1e-10, atol=1e-12)
    if tb.requires_grad:
        want = sum_to(db, b2.shape).reshape(sb)
        assert_close(tb.grad, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape_pair", [((2, 3), (3, 4, 5))], ids=str)
def test_matmul_mismatched_inner_dims_raise(shape_pair):
    a, b = (leaf(np.ones(s), False) for s in shape_pair)
    with pytest.raises(ValueError, match="matmul"):
        a @ b


# ----------------------------------------------------------------------------- dtypes
SCALAR_OPS = {
    "add": lambda x, c: x + c, "radd": lambda x, c: c + x,
    "sub": lambda x, c: x - c, "rsub": lambda x, c: c - x,
    "mul": lambda x, c: x * c, "rmul": lambda x, c: c * x,
    "div": lambda x, c: x / c, "rdiv": lambda x, c: c / x,
    "pow": lambda x, c: x ** c, "rpow": lambda x, c: c ** x,
    "maximum": lambda x, c: fw.maximum(x, c), "minimum": lambda x, c: fw.minimum(x, c),
    "rmaximum": lambda x, c: fw.maximum(c, x), "rminimum": lambda x, c: fw.minimum(c, x),
    "where": lambda x, c: fw.where(x > 1.0, x, c), "masked_fill": lambda x, c:
        x.masked_fill(x > 1.0, c),
    "clip": lambda x, c: fw.clip(x, None, c),
}


SCALAR_CASES = [pytest.param(name, kind, id=f"{kind}-{name}")
                for kind in ("python", "numpy64") for name in sorted(SCALAR_OPS)]


@pytest.mark.parametrize("name,kind", SCALAR_CASES)
def test_scalar_operand_keeps_float32(name, kind):
    """A scalar operand never changes a float32 tensor's dtype (PyTorch's rule: a Python or NumPy
    scalar is 'weak'), so a float32 model stays float32 however its constants are written, e.g.
    ``x * np.sqrt(d)``. The values equal the float64 computation rounded to float32.
    (Plain parametrize, not Hypothesis: the property does not depend on the shape.)"""
    a = (0.5 + np.abs(np.random.default_rng(0).standard_normal((3, 4)))).astype(np.float32)
    c = 1.75
    scalar = c if kind == "python" else np.float64(c)
    x = fw.tensor(a, requires_grad=True)
    y = SCALAR_OPS[name](x, scalar)
    assert y.dtype == np.float32, f"{name} with a {type(scalar).__name__} scalar gave {y.dtype}"
    want = SCALAR_OPS[name](leaf(a.astype(np.float64), False), c).numpy()
    assert_close(y.numpy().astype(np.float64), want, rtol=1e-6, atol=1e-6)
    y.sum().backward()
    assert x.grad.dtype == np.float32
