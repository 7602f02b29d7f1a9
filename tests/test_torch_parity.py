"""Parity with PyTorch (float64): forwards, gradients, optimizers and schedules.

Each case builds the same computation in tinyfw and in torch from the same NumPy arrays, runs
backward with the same random upstream gradient, and compares outputs and every input gradient.
Skipped cleanly when torch is not installed.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import tinyfw as fw  # noqa: E402
import tinyfw.nn as nn  # noqa: E402
import tinyfw.nn.functional as F  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


# ----------------------------------------------------------------------------- helpers
def rng_for(*key):
    return np.random.default_rng(abs(hash(key)) % (2**32))


def to_np(t):
    if isinstance(t, fw.Tensor):
        return t.numpy()
    return t.detach().numpy()


def assert_same(ours, theirs, rtol=RTOL, atol=ATOL, what="output"):
    a, b = to_np(ours), to_np(theirs)
    assert a.shape == b.shape, f"{what}: tinyfw shape {a.shape} vs torch {b.shape}"
    if b.dtype == np.bool_ or np.issubdtype(b.dtype, np.integer):
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def check(fw_fn, torch_fn, arrays, grads=None, rtol=RTOL, atol=ATOL, seed=0):
    """Run fw_fn / torch_fn on float64 copies of ``arrays``; compare output and gradients of the
    inputs whose ``grads`` flag is true (all by default) under one random upstream gradient."""
    grads = [True] * len(arrays) if grads is None else grads
    ours = [fw.tensor(np.asarray(a, np.float64), dtype=fw.float64, requires_grad=g)
            for a, g in zip(arrays, grads)]
    theirs = [torch.tensor(np.asarray(a, np.float64), requires_grad=g)
              for a, g in zip(arrays, grads)]
    y, yt = fw_fn(*ours), torch_fn(*theirs)
    assert_same(y, yt, rtol, atol)
    assert y.dtype == np.float64
    if not any(grads):
        return y
    up = np.random.default_rng(seed).standard_normal(tuple(yt.shape))
    y.backward(up)
    yt.backward(torch.tensor(up))
    for i, (o, t) in enumerate(zip(ours, theirs)):
        if not grads[i]:
            continue
        if t.grad is None:
            assert o.grad is None or not np.any(o.numpy()), f"input {i}: torch has no grad"
            continue
        assert o.grad is not None, f"input {i}: tinyfw gave no gradient, torch did"
        assert_same(o.grad, t.grad, rtol, atol, what=f"grad of input {i}")
    return y


def randn(*shape, seed=0):
    return np.random.default_rng(seed + 17 * len(shape) + sum(shape)).standard_normal(shape)


# ----------------------------------------------------------------------------- elementwise
def _with_specials(*shape, seed=0):
    """Random values plus exact zeros and repeated values (kinks and ties)."""
    a = randn(*shape, seed=seed)
    flat = a.reshape(-1)
    flat[::5] = 0.0
    flat[1::7] = 0.5
    return a


UNARY = {
    # name: (tinyfw fn, torch fn, input maker)
    "neg": (lambda x: -x, lambda x: -x, randn),
    "exp": (fw.exp, torch.exp, randn),
    "log": (fw.log, torch.log, lambda *s: np.abs(randn(*s)) + 0.1),
    "sqrt": (fw.sqrt, torch.sqrt, lambda *s: np.abs(randn(*s)) + 0.1),
    "tanh": (fw.tanh, torch.tanh, randn),
    "sigmoid": (fw.sigmoid, torch.sigmoid, lambda *s: randn(*s) * 20),
    "abs": (fw.abs, torch.abs, _with_specials),
    "relu": (F.relu, TF.relu, _with_specials),
    "relu_method": (lambda x: x.relu(), torch.relu, _with_specials),
    "clip_both": (lambda x: fw.clip(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5),
                  _with_specials),
    "clip_min": (lambda x: x.clamp(min=0.0), lambda x: torch.clamp(x, min=0.0), _with_specials),
    "clip_max": (lambda x: x.clip(max=0.5), lambda x: torch.clamp(x, max=0.5), _with_specials),
    "gelu": (F.gelu, TF.gelu, lambda *s: randn(*s) * 3),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: TF.gelu(x, approximate="tanh"), lambda *s: randn(*s) * 3),
    "silu": (F.silu, TF.silu, lambda *s: randn(*s) * 3),
    "elu": (F.elu, TF.elu, _with_specials),
    "elu_alpha": (lambda x: F.elu(x, alpha=0.7), lambda x: TF.elu(x, alpha=0.7),
                  lambda *s: randn(*s) * 3),
    "tanh_module": (nn.Tanh(), torch.nn.Tanh(), randn),
    "gelu_module": (nn.GELU(), torch.nn.GELU(), randn),
    "relu_module": (nn.ReLU(), torch.nn.ReLU(), randn),
    "silu_module": (nn.SiLU(), torch.nn.SiLU(), randn),
    "square": (lambda x: x ** 2, lambda x: x ** 2, randn),
    "cube_int": (lambda x: x ** 3, lambda x: x ** 3, randn),
    "pow_half": (lambda x: x ** 0.5, lambda x: x ** 0.5, lambda *s: np.abs(randn(*s)) + 0.1),
    "pow_neg": (lambda x: x ** -1.5, lambda x: x ** -1.5, lambda *s: np.abs(randn(*s)) + 0.1),
    "rpow": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, randn),
    "radd": (lambda x: 1.5 + x, lambda x: 1.5 + x, randn),
    "rsub": (lambda x: 1.5 - x, lambda x: 1.5 - x, randn),
    "rmul": (lambda x: 1.5 * x, lambda x: 1.5 * x, randn),
    "rdiv": (lambda x: 1.5 / x, lambda x: 1.5 / x, lambda *s: np.abs(randn(*s)) + 0.1),
    "sub_scalar": (lambda x: x - 0.25, lambda x: x - 0.25, randn),
    "div_scalar": (lambda x: x / 3.0, lambda x: x / 3.0, randn),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    ours, theirs, make = UNARY[name]
    check(ours, theirs, [make(3, 7)])


BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, randn, randn),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, randn, randn),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, randn, randn),
    "div": (lambda a, b: a / b, lambda a, b: a / b, randn, lambda *s: np.abs(randn(*s)) + 0.3),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b,
            lambda *s: np.abs(randn(*s)) + 0.1, randn),
    "maximum": (fw.maximum, torch.maximum, _with_specials, lambda *s: _with_specials(*s, seed=1)),
    "minimum": (fw.minimum, torch.minimum, _with_specials, lambda *s: _with_specials(*s, seed=1)),
}
BROADCASTS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((2, 1, 4), (3, 1)),
              ((5,), (2, 3, 5))]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast(name, shapes):
    ours, theirs, make_a, make_b = BINARY[name]
    check(ours, theirs, [make_a(*shapes[0]), make_b(*shapes[1])])


def test_maximum_minimum_ties_split_like_torch():
    a = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    b = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 4.0]])  # three exact ties
    check(fw.maximum, torch.maximum, [a, b])
    check(fw.minimum, torch.minimum, [a, b])


def test_pow_with_zero_base():
    a = np.array([0.0, 0.0, 1.5, 2.0])
    b = np.array([2.0, 3.0, 0.5, 1.0])
    check(lambda a, b: a ** b, lambda a, b: a ** b, [a, b])


@pytest.mark.parametrize("exponent", ["scalar", "tensor"])
def test_pow_zero_exponent_at_zero_base(exponent):
    """d/dx x**0 is 0 everywhere in torch, also at x = 0; tinyfw computes 0 * 0**-1 = nan."""
    a = np.array([0.0, 0.0, 1.5, -2.0])
    if exponent == "scalar":
        check(lambda a: a ** 0.0, lambda a: a ** 0.0, [a])
    else:
        check(lambda a, b: a ** b, lambda a, b: a ** b, [a, np.array([0.0, 2.0, 0.0, 2.0])])


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparisons(op):
    a = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    b = np.array([1.0, 0.0, 5.0])
    fa, fb = fw.tensor(a), fw.tensor(b)
    ta, tb = torch.tensor(a), torch.tensor(b)
    sym = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__",
           "ge": "__ge__"}[op]
    ours = getattr(fa, sym)(fb)
    assert ours.dtype == np.bool_
    assert_same(ours, getattr(ta, sym)(tb))
    assert_same(getattr(fa, sym)(1.0), getattr(ta, sym)(1.0))


def test_where_broadcast_and_scalars():
    cond = np.array([[True, False, True, False]])
    a, b = randn(3, 4), randn(4)
    c = fw.tensor(cond)
    ct = torch.tensor(cond)
    check(lambda a, b: fw.where(c, a, b), lambda a, b: torch.where(ct, a, b), [a, b])
    check(lambda a: fw.where(c, a, 0.25), lambda a: torch.where(ct, a, 0.25), [a])
    check(lambda b: fw.where(c, -1.0, b), lambda b: torch.where(ct, -1.0, b), [randn(3, 4)])


def test_masked_fill_broadcast_mask_then_softmax():
    """The attention pattern: fill the upper triangle with -inf and softmax the rows."""
    scores = randn(2, 4, 4)
    mask = np.triu(np.ones((4, 4), dtype=bool), k=1)
    m, mt = fw.tensor(mask), torch.tensor(mask)
    check(lambda s: F.softmax(s.masked_fill(m, float("-inf")), dim=-1),
          lambda s: torch.softmax(s.masked_fill(mt, float("-inf")), dim=-1), [scores])
    check(lambda s: s.masked_fill(m, 0.5), lambda s: s.masked_fill(mt, 0.5), [scores])


# ----------------------------------------------------------------------------- reductions
DIMS = [None, 0, -1, 1, (0, 2), (-1, -3), (1,)]


def _torch_dim(dim, ndim, name):
    if dim is None and name in ("amax", "amin", "logsumexp"):
        return tuple(range(ndim))
    return dim


REDUCTIONS = {
    "sum": (lambda x, d, k: x.sum(dim=d, keepdim=k),
            lambda x, d, k: x.sum() if d is None and not k else torch.sum(
                x, dim=tuple(range(x.ndim)) if d is None else d, keepdim=k)),
    "mean": (lambda x, d, k: x.mean(dim=d, keepdim=k),
             lambda x, d, k: x.mean() if d is None and not k else torch.mean(
                 x, dim=tuple(range(x.ndim)) if d is None else d, keepdim=k)),
    "var": (lambda x, d, k: x.var(dim=d, keepdim=k),
            lambda x, d, k: torch.var(x, dim=d, keepdim=k)),
    "var_unbiased_false": (lambda x, d, k: fw.var(x, dim=d, keepdim=k, unbiased=False),
                           lambda x, d, k: torch.var(x, dim=d, keepdim=k, unbiased=False)),
    "var_correction0": (lambda x, d, k: fw.var(x, dim=d, keepdim=k, correction=0),
                        lambda x, d, k: torch.var(x, dim=d, keepdim=k, correction=0)),
    "std": (lambda x, d, k: x.std(dim=d, keepdim=k),
            lambda x, d, k: torch.std(x, dim=d, keepdim=k)),
    "amax": (lambda x, d, k: x.amax(dim=d, keepdim=k),
             lambda x, d, k: torch.amax(x, dim=_torch_dim(d, x.ndim, "amax"), keepdim=k)),
    "amin": (lambda x, d, k: fw.amin(x, dim=d, keepdim=k),
             lambda x, d, k: torch.amin(x, dim=_torch_dim(d, x.ndim, "amin"), keepdim=k)),
    "logsumexp": (lambda x, d, k: x.logsumexp(d, keepdim=k),
                  lambda x, d, k: torch.logsumexp(x, dim=_torch_dim(d, x.ndim, "logsumexp"),
                                                  keepdim=k)),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions(name, dim, keepdim):
    ours, theirs = REDUCTIONS[name]
    check(lambda x: ours(x, dim, keepdim), lambda x: theirs(x, dim, keepdim), [randn(2, 3, 4)])


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_values_indices_and_grad(name, dim, keepdim):
    a = randn(3, 4, 5)  # continuous values: no ties
    x, xt = fw.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    v, i = getattr(x, name)(dim=dim, keepdim=keepdim)
    vt, it = getattr(xt, name)(dim=dim, keepdim=keepdim)
    assert_same(v, vt)
    assert_same(i, it)
    up = randn(*vt.shape, seed=5)
    v.backward(up)
    vt.backward(torch.tensor(up))
    assert_same(x.grad, xt.grad)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_ties_gradient_goes_to_returned_index(name):
    """``max(x, dim)`` returns (values, indices); in torch the gradient of ``values`` flows to
    exactly the element named by ``indices``. tinyfw splits it among all tied elements (that is
    torch's rule for amax/amin and for the full reduction, tested below), so ``values`` and
    ``indices`` disagree about which element was picked."""
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0], [-1.0, -1.0, -1.0]])
    x, xt = fw.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    v, i = getattr(x, name)(dim=1)
    vt, it = getattr(xt, name)(dim=1)
    assert_same(i, it)
    v.sum().backward()
    vt.sum().backward()
    assert_same(x.grad, xt.grad, what="grad of max/min values")


@pytest.mark.parametrize("name", ["max", "min"])
def test_full_max_min_with_ties_split_like_torch(name):
    a = np.array([[1.0, 3.0, 3.0], [3.0, -2.0, -2.0]])
    check(lambda x: getattr(x, name)(), lambda x: getattr(x, name)(), [a])
    check(lambda x: getattr(fw, "a" + name)(x, dim=1), lambda x: getattr(torch, "a" + name)(x, 1),
          [a])


def test_logsumexp_with_minus_inf_entries():
    a = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]])
    check(lambda x: x.logsumexp(-1), lambda x: x.logsumexp(-1), [a])


# ----------------------------------------------------------------------------- matmul
MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                 ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)),
                 ((2, 3, 4), (4,)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((1, 3, 4), (2, 4, 1))]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=str)
def test_matmul(sa, sb):
    check(lambda a, b: a @ b, lambda a, b: a @ b, [randn(*sa, seed=1), randn(*sb, seed=2)])
    check(fw.matmul, torch.matmul, [randn(*sa, seed=1), randn(*sb, seed=2)], grads=[False, True])
    check(fw.matmul, torch.matmul, [randn(*sa, seed=1), randn(*sb, seed=2)], grads=[True, False])


def test_matmul_transposed_operands():
    check(lambda a, b: a.transpose(-1, -2) @ b.permute(0, 2, 1),
          lambda a, b: a.transpose(-1, -2) @ b.permute(0, 2, 1),
          [randn(2, 4, 3), randn(2, 5, 4)])


# ----------------------------------------------------------------------------- indexing / joins
INDEXES = {
    "repeated_rows": lambda: [0, 2, 0, 0],
    "repeated_cols": lambda: (slice(None), [1, 1, 3, -1]),
    "two_arrays": lambda: ([0, 0, 2, 2], [1, 1, 3, 1]),
    "array_2d": lambda: np.array([[0, 1], [1, 0], [0, 0]]),
    "slice_then_array": lambda: (slice(1, None), [0, 0, 2]),
    "ellipsis_array": lambda: (Ellipsis, [3, 3, 0]),
    "int_and_array": lambda: (1, [2, 2, 2]),
    "negative_step": lambda: (slice(None, None, -1), slice(0, 4, 2)),
    "none_and_int": lambda: (None, 2, slice(1, 3)),
}


@pytest.mark.parametrize("name", sorted(INDEXES))
@pytest.mark.parametrize("as_tensor", [False, True])
def test_indexing(name, as_tensor):
    idx = INDEXES[name]()
    items = idx if isinstance(idx, tuple) else (idx,)

    def conv(item, lib):
        if isinstance(item, (list, np.ndarray)):
            arr = np.asarray(item)
            if lib == "fw":
                return fw.tensor(arr) if as_tensor else item
            return torch.tensor(arr)
        return item

    fw_idx = tuple(conv(i, "fw") for i in items)
    th_idx = tuple(conv(i, "torch") for i in items)
    if name == "negative_step":  # torch has no negative steps: flip instead
        check(lambda x: x[fw_idx], lambda x: x.flip(0)[:, 0:4:2], [randn(3, 5)])
        return
    check(lambda x: x[fw_idx if len(fw_idx) > 1 else fw_idx[0]],
          lambda x: x[th_idx if len(th_idx) > 1 else th_idx[0]], [randn(3, 5)])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_and_stack(dim):
    shapes = [(2, 3), (2, 3), (2, 3)]
    if dim == 0:
        shapes = [(1, 3), (2, 3), (4, 3)]
    arrays = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    check(lambda *xs: fw.cat(xs, dim=dim), lambda *xs: torch.cat(xs, dim=dim), arrays)
    same = [randn(2, 3, seed=i) for i in range(3)]
    check(lambda *xs: fw.stack(xs, dim=dim), lambda *xs: torch.stack(xs, dim=dim), same)
    check(lambda *xs: fw.stack(xs, dim=2), lambda *xs: torch.stack(xs, dim=2), same)


def test_split_chunk_unsqueeze_squeeze_flatten_expand():
    a = randn(2, 7, 3)
    check(lambda x: fw.cat([p * float(i + 1) for i, p in enumerate(fw.split(x, 3, dim=1))], 1),
          lambda x: torch.cat([p * float(i + 1) for i, p in enumerate(torch.split(x, 3, dim=1))],
                              1), [a])
    check(lambda x: fw.cat([p * float(i + 1) for i, p in enumerate(fw.split(x, [2, 5], 1))], 1),
          lambda x: torch.cat([p * float(i + 1) for i, p in enumerate(torch.split(x, [2, 5], 1))],
                              1), [a])
    check(lambda x: fw.stack([p.sum() for p in fw.chunk(x, 3, dim=1)]),
          lambda x: torch.stack([p.sum() for p in torch.chunk(x, 3, dim=1)]), [a])
    check(lambda x: x.unsqueeze(1).unsqueeze(-1).flatten(2), lambda x:
          x.unsqueeze(1).unsqueeze(-1).flatten(2), [a])
    check(lambda x: x[:, :1].squeeze(1).squeeze(), lambda x: x[:, :1].squeeze(1).squeeze(), [a])
    check(lambda x: x[:, :1].expand(2, 4, 3) * 2.0, lambda x: x[:, :1].expand(2, 4, 3) * 2.0, [a])
    check(lambda x: x.expand(3, -1, -1, -1), lambda x: x.expand(3, -1, -1, -1), [a])
    check(lambda x: x.reshape(-1, 6).T, lambda x: x.reshape(-1, 6).T, [a])


# ----------------------------------------------------------------------------- nn functional
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_any_dim(fn, dim):
    check(lambda x: getattr(F, fn)(x, dim=dim), lambda x: getattr(TF, fn)(x, dim=dim),
          [randn(3, 4, 5) * 4])
    check(lambda x: getattr(x, fn)(dim), lambda x: getattr(x, fn)(dim), [randn(3, 4, 5)])


def test_softmax_extreme_logits():
    a = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3.0, 1e4, 1e4]])
    check(lambda x: F.softmax(x, dim=-1), lambda x: TF.softmax(x, dim=-1), [a])
    check(lambda x: F.log_softmax(x, dim=0), lambda x: TF.log_softmax(x, dim=0), [a])


CE_TARGETS_2D = np.array([0, 4, 2, -100, 1, 1, 3])
CE_TARGETS_3D = np.array([[0, 4, -100, 1], [2, 2, 3, -100]])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_2d(reduction, ignore_index):
    logits = randn(7, 5) * 3
    tgt = CE_TARGETS_2D.copy()
    if ignore_index != -100:
        tgt[tgt == -100] = 0  # only ignore_index may lie outside [0, C)
    t, tt = fw.tensor(tgt), torch.tensor(tgt)
    check(lambda z: F.cross_entropy(z, t, ignore_index=ignore_index, reduction=reduction),
          lambda z: TF.cross_entropy(z, tt, ignore_index=ignore_index, reduction=reduction),
          [logits])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_cross_entropy_3d_classes_last(reduction, ignore_index):
    logits = randn(2, 4, 5) * 3        # tinyfw: (B, T, C); torch wants (B, C, T)
    tgt = CE_TARGETS_3D.copy()
    if ignore_index != -100:
        tgt[tgt == -100] = 1
    t, tt = fw.tensor(tgt), torch.tensor(tgt)
    check(lambda z: F.cross_entropy(z, t, ignore_index=ignore_index, reduction=reduction),
          lambda z: TF.cross_entropy(z.transpose(1, 2), tt, ignore_index=ignore_index,
                                     reduction=reduction), [logits])


def test_cross_entropy_int32_targets_and_extreme_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]])
    tgt = np.array([1, 2, 0], dtype=np.int32)
    t, tt = fw.tensor(tgt), torch.tensor(tgt.astype(np.int64))
    check(lambda z: F.cross_entropy(z, t), lambda z: TF.cross_entropy(z, tt), [logits])


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    tgt = np.array([-100, -100])
    t, tt = fw.tensor(tgt), torch.tensor(tgt)
    logits = randn(2, 3)
    z, zt = fw.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    loss, loss_t = F.cross_entropy(z, t), TF.cross_entropy(zt, tt)
    assert math.isnan(loss.item()) and math.isnan(loss_t.item())
    loss.backward()
    loss_t.backward()
    assert_same(z.grad, zt.grad)


FLOAT32_CASES = {
    "softmax": (lambda x: F.softmax(x, dim=-1), lambda x: TF.softmax(x, dim=-1)),
    "softmax_dim0": (lambda x: F.softmax(x, dim=0), lambda x: TF.softmax(x, dim=0)),
    "log_softmax": (lambda x: F.log_softmax(x, dim=-1), lambda x: TF.log_softmax(x, dim=-1)),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "logsumexp": (lambda x: x.logsumexp(-1), lambda x: x.logsumexp(-1)),
    "var": (lambda x: (x + 100.0).var(dim=0), lambda x: (x + 100.0).var(dim=0)),
    "cross_entropy": (lambda x: F.cross_entropy(x, fw.tensor(CE_TARGETS_2D[:6] % 33)),
                      lambda x: TF.cross_entropy(x, torch.tensor(CE_TARGETS_2D[:6] % 33))),
    "cross_entropy_none": (
        lambda x: F.cross_entropy(x, fw.tensor(CE_TARGETS_2D[:6]), reduction="none"),
        lambda x: TF.cross_entropy(x, torch.tensor(CE_TARGETS_2D[:6]), reduction="none")),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_fused_kernels(name):
    """The Numba kernels compute in float32 for float32 inputs: results and gradients stay
    float32 and within a few float32 ulps of torch's float32."""
    ours, theirs = FLOAT32_CASES[name]
    a = (randn(6, 33) * 5).astype(np.float32)
    x, xt = fw.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, yt = ours(x), theirs(xt)
    assert y.dtype == np.float32
    scale = max(1.0, float(np.abs(to_np(yt)).max()))
    assert_same(y, yt, rtol=2e-6, atol=2e-6 * scale)
    up = randn(*yt.shape, seed=3).astype(np.float32)
    y.backward(up)
    yt.backward(torch.tensor(up))
    assert x.grad.dtype == np.float32
    gscale = float(np.abs(xt.grad.numpy()).max())
    assert_same(x.grad, xt.grad, rtol=1e-5, atol=2e-6 * gscale, what="grad")


def test_one_hot():
    ids = np.array([[0, 3], [3, 1]])
    ours, theirs = F.one_hot(fw.tensor(ids), 5), TF.one_hot(torch.tensor(ids), 5)
    assert ours.dtype == np.int64
    assert_same(ours, theirs)


def test_embedding_repeated_ids():
    weight = randn(6, 4)
    ids = np.array([[0, 5, 0], [0, 2, 5]])
    i, it = fw.tensor(ids), torch.tensor(ids)
    check(lambda w: F.embedding(i, w), lambda w: TF.embedding(it, w), [weight])
    check(lambda w: F.embedding(fw.tensor([3, 3, 3, 3]), w) * 2.0,
          lambda w: TF.embedding(torch.tensor([3, 3, 3, 3]), w) * 2.0, [weight])


def test_embedding_module():
    fw.manual_seed(0)
    m = nn.Embedding(7, 3)
    mt = torch.nn.Embedding(7, 3).double()
    with torch.no_grad():
        mt.weight.copy_(torch.tensor(m.weight.numpy()))
    m.to(dtype=np.float64)
    ids = np.array([[1, 1, 6], [0, 1, 1]])
    y, yt = m(fw.tensor(ids)), mt(torch.tensor(ids))
    assert_same(y, yt)
    up = randn(2, 3, 3)
    y.backward(up)
    yt.backward(torch.tensor(up))
    assert_same(m.weight.grad, mt.weight.grad)


@pytest.mark.parametrize("x_shape", [(5, 4), (2, 3, 4), (4,)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_functional(x_shape, bias):
    arrays = [randn(*x_shape), randn(3, 4, seed=1)] + ([randn(3, seed=2)] if bias else [])
    check(F.linear, TF.linear, arrays)


def test_linear_module_and_default_init_bounds():
    fw.manual_seed(1)
    m = nn.Linear(256, 128)
    bound = 1 / math.sqrt(256)  # torch's default: kaiming_uniform(a=sqrt(5)) -> 1/sqrt(fan_in)
    w, b = m.weight.numpy(), m.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-b, b) has variance b^2 / 3 (32768 samples: 5% is many standard errors)
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.05
    m.to(dtype=np.float64)
    mt = torch.nn.Linear(256, 128).double()
    with torch.no_grad():
        mt.weight.copy_(torch.tensor(m.weight.numpy()))
        mt.bias.copy_(torch.tensor(m.bias.numpy()))
    x = randn(3, 256)
    y, yt = m(fw.tensor(x)), mt(torch.tensor(x))
    assert_same(y, yt)
    y.sum().backward()
    yt.sum().backward()
    assert_same(m.weight.grad, mt.weight.grad)
    assert_same(m.bias.grad, mt.bias.grad)


def test_dropout_p0_and_eval_are_identity():
    a = randn(4, 5)
    check(lambda x: F.dropout(x, p=0.0) * 2.0, lambda x: TF.dropout(x, p=0.0) * 2.0, [a])
    check(lambda x: F.dropout(x, p=0.7, training=False) * 2.0,
          lambda x: TF.dropout(x, p=0.7, training=False) * 2.0, [a])
    d, dt = nn.Dropout(0.5).eval(), torch.nn.Dropout(0.5).eval()
    check(lambda x: d(x) * 2.0, lambda x: dt(x) * 2.0, [a])


def test_dropout_training_keeps_torch_scaling():
    """Training dropout: kept entries are x / (1 - p) (inverted dropout, as torch), the rest 0,
    and the gradient is the same mask."""
    fw.manual_seed(0)
    a = np.abs(randn(50, 40)) + 0.1
    x = fw.tensor(a, requires_grad=True)
    y = F.dropout(x, p=0.25)
    yn = y.numpy()
    kept = yn != 0
    np.testing.assert_allclose(yn[kept], a[kept] / 0.75, rtol=1e-15)
    assert abs(kept.mean() - 0.75) < 0.03  # 2000 Bernoulli(0.75): sd 0.0097
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.75, 0.0), rtol=1e-15)


# ----------------------------------------------------------------------------- autograd
def test_reused_tensor_and_accumulation_over_two_backwards():
    a = randn(3, 4)
    x, xt = fw.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)

    def f(lib, x):
        h = lib.tanh(x) * x
        return (h @ x.T).sum() + (x * x).mean() + h.sum()

    y, yt = f(fw, x), f(torch, xt)
    assert_same(y, yt)
    y.backward(retain_graph=True)
    yt.backward(retain_graph=True)
    assert_same(x.grad, xt.grad)
    y.backward()
    yt.backward()
    assert_same(x.grad, xt.grad)  # the second backward adds to .grad


def test_autograd_grad_matches_torch():
    a = randn(3, 3)
    x, xt = fw.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (g,) = fw.autograd.grad((x.exp() * x).sum(), [x])
    (gt,) = torch.autograd.grad((xt.exp() * xt).sum(), [xt])
    assert_same(g, gt)
    assert x.grad is None


# ----------------------------------------------------------------------------- optimizers
PARAM_SHAPES = [(3, 4), (5,), (2, 1, 3)]


def _run_optimizer(fw_cls, torch_cls, kwargs, steps=5, skip=None, lr_changes=None,
                   groups=None):
    """Same params, same gradient sequence, ``steps`` steps in both; returns both param lists.

    ``skip``: (step, param index) pairs whose grad is None at that step (the param is skipped).
    ``lr_changes``: step -> new lr set on every group before that step.
    ``groups``: per-group overrides (list of dicts) over params split one per group.
    """
    rng = np.random.default_rng(1234)
    inits = [rng.standard_normal(s) for s in PARAM_SHAPES]
    grads = [[rng.standard_normal(s) for s in PARAM_SHAPES] for _ in range(steps)]
    ours = [nn.Parameter(fw.tensor(a, dtype=fw.float64)) for a in inits]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in inits]
    if groups:
        opt = fw_cls([{"params": [p], **g} for p, g in zip(ours, groups)], **kwargs)
        opt_t = torch_cls([{"params": [p], **g} for p, g in zip(theirs, groups)], **kwargs)
    else:
        opt, opt_t = fw_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    skip = set(skip or ())
    for s in range(steps):
        if lr_changes and s in lr_changes:
            for g in opt.param_groups:
                g["lr"] = lr_changes[s]
            for g in opt_t.param_groups:
                g["lr"] = lr_changes[s]
        opt.zero_grad()
        opt_t.zero_grad()
        for i, (p, pt) in enumerate(zip(ours, theirs)):
            if (s, i) in skip:
                continue
            p.grad = fw.tensor(grads[s][i], dtype=fw.float64)
            pt.grad = torch.tensor(grads[s][i])
        opt.step()
        opt_t.step()
    return ours, theirs


def _assert_params(ours, theirs):
    for i, (p, pt) in enumerate(zip(ours, theirs)):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p.numpy(), pt.detach().numpy(), rtol=1e-6, atol=1e-10,
                                   err_msg=f"param {i}")


OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_momentum": ("SGD", dict(lr=0.1, momentum=0.9)),
    "sgd_dampening": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    "sgd_nesterov": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": ("SGD", dict(lr=0.1, weight_decay=0.05)),
    "sgd_all": ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)),
    "adam": ("Adam", dict(lr=1e-2)),
    "adam_betas_eps": ("Adam", dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-4)),
    "adam_weight_decay": ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    "adamw_default_decay": ("AdamW", dict(lr=1e-2)),
    "adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.3, betas=(0.85, 0.99))),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_five_steps(name):
    cls, kwargs = OPTIMIZERS[name]
    _assert_params(*_run_optimizer(getattr(fw.optim, cls), getattr(torch.optim, cls), kwargs))


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW"])
def test_optimizer_skipped_params_lr_changes_and_groups(cls):
    kwargs = dict(lr=0.05, momentum=0.9) if cls == "SGD" else dict(lr=0.05)
    fw_cls, torch_cls = getattr(fw.optim, cls), getattr(torch.optim, cls)
    _assert_params(*_run_optimizer(fw_cls, torch_cls, kwargs, skip=[(0, 1), (2, 0), (3, 2)],
                                   lr_changes={2: 0.01, 4: 0.2}))
    groups = [{"lr": 0.2}, {"weight_decay": 0.1}, {}]
    _assert_params(*_run_optimizer(fw_cls, torch_cls, kwargs, groups=groups))


def test_defaults_match_torch():
    p = [nn.Parameter(fw.zeros(2, dtype=fw.float64))]
    pt = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    for cls in ("Adam", "AdamW"):
        ours = getattr(fw.optim, cls)(p).param_groups[0]
        theirs = getattr(torch.optim, cls)(pt).param_groups[0]
        for key in ("lr", "betas", "eps", "weight_decay"):
            assert tuple(np.atleast_1d(ours[key])) == tuple(np.atleast_1d(theirs[key])), \
                f"{cls} default {key}: {ours[key]} vs torch {theirs[key]}"


@pytest.mark.parametrize("cls", ["Adam", "AdamW", "SGD"])
def test_optimizer_state_dict_resume_matches_uninterrupted_torch(cls):
    """3 steps, state_dict -> fresh optimizer on copied params -> 2 more steps == torch's 5."""
    kwargs = dict(lr=0.05, momentum=0.9) if cls == "SGD" else dict(lr=0.05, weight_decay=0.1)
    rng = np.random.default_rng(7)
    inits = [rng.standard_normal(s) for s in PARAM_SHAPES]
    grads = [[rng.standard_normal(s) for s in PARAM_SHAPES] for _ in range(5)]
    ours = [nn.Parameter(fw.tensor(a, dtype=fw.float64)) for a in inits]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in inits]
    opt, opt_t = getattr(fw.optim, cls)(ours, **kwargs), getattr(torch.optim, cls)(theirs,
                                                                                    **kwargs)
    for s in range(5):
        if s == 3:
            saved = opt.state_dict()
            ours = [nn.Parameter(fw.tensor(p.numpy(), dtype=fw.float64)) for p in ours]
            opt = getattr(fw.optim, cls)(ours, **kwargs)
            opt.load_state_dict(saved)
        for p, pt, g in zip(ours, theirs, grads[s]):
            p.grad = fw.tensor(g, dtype=fw.float64)
            pt.grad = torch.tensor(g)
        opt.step()
        opt_t.step()
    _assert_params(ours, theirs)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm(max_norm):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s) for s in PARAM_SHAPES]
    ours = [nn.Parameter(fw.zeros(*s, dtype=fw.float64)) for s in PARAM_SHAPES]
    theirs = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in PARAM_SHAPES]
    for p, pt, g in zip(ours[:2], theirs[:2], grads):  # the last param has no grad
        p.grad = fw.tensor(g, dtype=fw.float64)
        pt.grad = torch.tensor(g)
    total = fw.nn.utils.clip_grad_norm_(ours, max_norm)
    total_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert math.isclose(float(total), total_t.item(), rel_tol=1e-12)
    for p, pt in zip(ours[:2], theirs[:2]):
        assert_same(p.grad, pt.grad, rtol=1e-12)
    assert ours[2].grad is None
    assert fw.optim.clip_grad_norm_ is fw.nn.utils.clip_grad_norm_


def _warmup_cosine(step, base, warmup, total, min_lr):
    """The schedule written out independently: linear warm-up to base over ``warmup`` steps
    (step 0 already gets base / warmup), a half cosine from base to min_lr over the remaining
    steps, min_lr from ``total`` on."""
    if step < warmup:
        return base * (step + 1) / warmup
    if step >= total:
        return min_lr
    frac = (step - warmup) / (total - warmup)
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * frac)) / 2


@pytest.mark.parametrize("warmup,total,min_lr", [(10, 50, 0.0), (5, 20, 1e-4), (0, 12, 1e-5)])
def test_warmup_cosine_matches_hand_formula(warmup, total, min_lr):
    base = 3e-3
    for step in range(total + 5):
        got = fw.optim.warmup_cosine_lr(step, base, warmup, total, min_lr)
        assert math.isclose(got, _warmup_cosine(step, base, warmup, total, min_lr),
                            rel_tol=1e-12, abs_tol=1e-15), f"step {step}"
    # the scheduler drives the optimizer's lr the same way, and so does torch's LambdaLR
    p = nn.Parameter(fw.zeros(1, dtype=fw.float64))
    pt = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt, opt_t = fw.optim.SGD([p], lr=base), torch.optim.SGD([pt], lr=base)
    sched = fw.optim.WarmupCosine(opt, warmup, total, min_lr)
    sched_t = torch.optim.lr_scheduler.LambdaLR(
        opt_t, lambda s: _warmup_cosine(s, base, warmup, total, min_lr) / base)
    for step in range(total + 3):
        want = _warmup_cosine(step, base, warmup, total, min_lr)
        assert math.isclose(opt.param_groups[0]["lr"], want, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(sched.get_last_lr()[0], opt_t.param_groups[0]["lr"], rel_tol=1e-12,
                            abs_tol=1e-15)
        opt.step()
        opt_t.step()
        sched.step()
        sched_t.step()


def test_lambda_lr_matches_torch():
    lam = lambda s: 0.9 ** s  # noqa: E731
    p = nn.Parameter(fw.zeros(1, dtype=fw.float64))
    pt = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt, opt_t = fw.optim.Adam([p], lr=0.1), torch.optim.Adam([pt], lr=0.1)
    s, st = fw.optim.LambdaLR(opt, lam), torch.optim.lr_scheduler.LambdaLR(opt_t, lam)
    for _ in range(6):
        assert math.isclose(s.get_last_lr()[0], st.get_last_lr()[0], rel_tol=1e-12)
        opt.step()
        opt_t.step()
        s.step()
        st.step()


# ----------------------------------------------------------------------------- a small model
def _mlp_pair(d_in, hidden, classes, approximate):
    fw.manual_seed(0)
    ours = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(approximate), nn.Linear(hidden, classes))
    ours.to(dtype=np.float64)
    theirs = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.GELU(approximate),
                                 torch.nn.Linear(hidden, classes)).double()
    with torch.no_grad():
        for (name, p), (name_t, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert name == name_t
            pt.copy_(torch.tensor(p.numpy()))
    return ours, theirs


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("three_d", [False, True])
def test_two_layer_mlp_forward_backward(approximate, three_d):
    ours, theirs = _mlp_pair(6, 16, 5, approximate)
    rng = np.random.default_rng(11)
    if three_d:
        x = rng.standard_normal((2, 4, 6))
        y = np.array([[0, 4, -100, 1], [3, 3, 2, 0]])
    else:
        x = rng.standard_normal((8, 6))
        y = np.array([0, 4, -100, 1, 3, 3, 2, 0])
    xf, xt = fw.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    logits, logits_t = ours(xf), theirs(xt)
    assert_same(logits, logits_t)
    loss = F.cross_entropy(logits, fw.tensor(y))
    loss_t = TF.cross_entropy(logits_t.transpose(1, 2) if three_d else logits_t, torch.tensor(y))
    assert_same(loss, loss_t)
    loss.backward()
    loss_t.backward()
    assert_same(xf.grad, xt.grad, what="input grad")
    for (name, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_same(p.grad, pt.grad, what=f"grad of {name}")
    # one AdamW step from these gradients lands on the same parameters
    opt = fw.optim.AdamW(list(ours.parameters()), lr=1e-2)
    opt_t = torch.optim.AdamW(list(theirs.parameters()), lr=1e-2)
    opt.step()
    opt_t.step()
    for (name, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_same(p, pt, rtol=1e-10, what=f"{name} after AdamW")
