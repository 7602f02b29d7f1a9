"""Float64 gradcheck of every differentiable op of the engine core, including broadcasting and
non-contiguous inputs (views made by transpose / permute)."""
import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn.functional as F


def t64(*shape, low=None, seed=0, positive=False):
    rng = np.random.default_rng(seed + sum(shape))
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return fw.tensor(a, dtype=fw.float64, requires_grad=True)


UNARY = {
    "neg": lambda x: -x,
    "exp": fw.exp,
    "log": lambda x: fw.log(x.abs() + 0.5),
    "sqrt": lambda x: fw.sqrt(x * x + 0.3),
    "tanh": fw.tanh,
    "sigmoid": fw.sigmoid,
    "abs": lambda x: fw.abs(x + 0.05),  # keep away from the kink at 0
    "relu": lambda x: F.relu(x + 0.05),
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "elu": lambda x: F.elu(x + 0.05, alpha=0.7),
    "clip": lambda x: fw.clip(x, -0.51, 0.49),
    "softmax": lambda x: F.softmax(x, dim=-1),
    "softmax_dim0": lambda x: F.softmax(x, dim=0),
    "log_softmax": lambda x: F.log_softmax(x, dim=1),
    "pow_scalar": lambda x: (x.abs() + 0.5) ** 2.5,
    "rpow": lambda x: 2.0 ** x,
    "rsub": lambda x: 1.0 - x,
    "rdiv": lambda x: 1.0 / (x * x + 1.0),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    assert fw.gradcheck(UNARY[name], (t64(3, 4),))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_non_contiguous(name):
    x = t64(4, 3)
    assert fw.gradcheck(lambda x: UNARY[name](x.transpose(0, 1)), (x,))


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 0.5),
    "pow": lambda a, b: (a.abs() + 0.5) ** b,
    "maximum": fw.maximum,
    "minimum": fw.minimum,
}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3))]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary_broadcast(name, shapes):
    a, b = t64(*shapes[0], seed=1), t64(*shapes[1], seed=2)
    assert fw.gradcheck(BINARY[name], (a, b))


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False),
                                         (-1, True)])
@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "var", "logsumexp", "std"])
def test_reductions(name, dim, keepdim):
    x = t64(2, 3, 4)
    if name == "logsumexp" and dim is None:
        dim = (0, 1, 2)
    fn = getattr(fw, name)
    assert fw.gradcheck(lambda x: fn(x, dim=dim, keepdim=keepdim), (x,))


def test_max_with_dim_returns_values_and_indices():
    x = t64(3, 5)
    assert fw.gradcheck(lambda x: x.max(dim=1).values, (x,))
    assert fw.gradcheck(lambda x: x.min(dim=0, keepdim=True)[0], (x,))
    np.testing.assert_array_equal(x.max(dim=1).indices.numpy(), x.numpy().argmax(axis=1))


def test_max_ties_split_gradient():
    x = fw.tensor([[1.0, 3.0, 3.0]], dtype=fw.float64, requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.5, 0.5]])


SHAPE_OPS = {
    "reshape": lambda x: x.reshape(4, 6),
    "reshape_infer": lambda x: x.reshape(-1, 3),
    "view_after_permute": lambda x: x.permute(2, 0, 1).reshape(4, -1),
    "transpose": lambda x: x.transpose(0, 2),
    "permute": lambda x: x.permute(1, 2, 0),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "squeeze": lambda x: x[:, :1].squeeze(1),
    "flatten": lambda x: x.flatten(1),
    "expand": lambda x: x[:, :1].expand(2, 5, 4),
    "index_int": lambda x: x[1],
    "index_slice": lambda x: x[:, 1:3, ::2],
    "index_neg_step": lambda x: x[:, ::-1],
    "index_array_repeated": lambda x: x[fw.tensor([0, 1, 0, 0])],
    "index_two_arrays": lambda x: x[fw.tensor([0, 1, 1]), fw.tensor([2, 2, 0])],
    "index_bool": lambda x: x[x.detach() > 0],
    "index_none_ellipsis": lambda x: x[None, ..., 1],
    "cat": lambda x: fw.cat([x, x * 2.0, x[:, :1]], dim=1),
    "stack": lambda x: fw.stack([x, x.exp()], dim=-1),
    "split": lambda x: fw.split(x, 2, dim=1)[1] * fw.split(x, [1, 2], dim=1)[0],
    "where": lambda x: fw.where(x.detach() > 0, x, x * x),
    "masked_fill": lambda x: x.masked_fill(x.detach() < 0, 0.5),
    "contiguous": lambda x: x.transpose(0, 1).contiguous(),
    "clone": lambda x: x.clone(),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_ops(name):
    assert fw.gradcheck(SHAPE_OPS[name], (t64(2, 3, 4),))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 2)),
                                   ((3, 4), (4,)), ((4,), (4,)), ((2, 1, 3, 4), (5, 4, 2)),
                                   ((3, 4), (2, 4, 2))])
def test_matmul(sa, sb):
    assert fw.gradcheck(lambda a, b: a @ b, (t64(*sa, seed=3), t64(*sb, seed=4)))


def test_matmul_non_contiguous():
    a, b = t64(4, 3), t64(2, 5, 4)
    assert fw.gradcheck(lambda a, b: a.T @ b.permute(0, 2, 1), (a, b))


def test_linear():
    x, w, b = t64(2, 3, 4), t64(5, 4, seed=7), t64(5, seed=8)
    assert fw.gradcheck(F.linear, (x, w, b))
    assert fw.gradcheck(lambda x, w: F.linear(x, w), (x.transpose(0, 1), w))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction):
    logits = t64(6, 5)
    target = fw.tensor([0, 4, 2, -100, 1, 1])
    assert fw.gradcheck(lambda z: F.cross_entropy(z, target, reduction=reduction), (logits,))


def test_cross_entropy_3d_and_custom_ignore():
    logits = t64(2, 3, 4)
    target = fw.tensor([[0, 3, 7], [7, 2, 1]])
    assert fw.gradcheck(lambda z: F.cross_entropy(z, target, ignore_index=7), (logits,))


def test_embedding_repeated_ids():
    w = t64(5, 3)
    ids = fw.tensor([[0, 4, 0], [0, 2, 4]])
    assert fw.gradcheck(lambda w: F.embedding(ids, w), (w,))


def test_dropout_gradient_uses_same_mask():
    fw.manual_seed(3)
    x = t64(4, 5)
    y = F.dropout(x, p=0.4)
    y.sum().backward()
    # the gradient is exactly the mask: 0 where dropped, 1/(1-p) where kept
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.6, 0.0))


def test_multi_input_chain_and_reuse():
    a, b = t64(3, 3, seed=1), t64(3, 3, seed=2)
    assert fw.gradcheck(lambda a, b: ((a @ b).tanh() * a + b.sum(0)).softmax(-1), (a, b))


def test_function_with_two_outputs_gets_zero_for_unused_output():
    x = t64(2, 5)
    assert fw.gradcheck(lambda x: fw.split(x, 2, dim=1)[0], (x,))
