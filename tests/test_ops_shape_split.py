"""``split`` / ``chunk``: one ``Split`` node for all the pieces, whose backward concatenates the
pieces' gradients into one new array (no zeroed scatter per piece, no sum by the engine).
Values and gradients equal those of indexing each piece, float64 gradchecks with unused
pieces, uneven sizes and negative dims, the pieces as views, and the errors unchanged.
"""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.backend import cpu
from tinyfw.gradcheck import gradcheck
from tinyfw.ops.shape import Split, chunk, index, split


def _x(shape, seed=0, grad=True):
    rng = np.random.default_rng(seed)
    return fw.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=grad)


def _pieces_by_indexing(x, sizes, dim):
    """What split did before: one Index node per piece."""
    d = dim % x.ndim
    out, start = [], 0
    for s in sizes:
        out.append(index(x, (slice(None),) * d + (slice(start, start + s),)))
        start += s
    return out


# (shape, split_size or sizes, dim, which pieces the loss uses)
SPLITS = [
    ((2, 3, 12), 4, 2, [0, 1, 2]),
    ((2, 3, 12), 4, -1, [0, 2]),              # one piece unused
    ((5, 4), 2, 0, [2]),                      # uneven: 2, 2, 1; only the last used
    ((3, 7, 2), [1, 4, 2], -2, [1, 2]),       # explicit uneven sizes, negative dim
    ((3, 7, 2), [0, 7], 1, [1]),              # an empty piece
    ((4, 6), 6, 1, [0]),                      # one piece: all of x
    ((4, 6), (3, 3), -1, []),                 # no piece used: x gets no gradient
]


def _loss(pieces, used, seed=1):
    rng = np.random.default_rng(seed)
    total = None
    for i in used:
        w = fw.tensor(rng.standard_normal(pieces[i].shape), dtype=np.float64)
        term = (pieces[i] * w).sum()
        total = term if total is None else total + term
    return total


@pytest.mark.parametrize("shape, size, dim, used", SPLITS)
def test_split_equals_indexing_each_piece_values_and_gradients(shape, size, dim, used):
    sizes = list(size) if isinstance(size, (list, tuple)) else \
        [min(size, shape[dim] - s) for s in range(0, shape[dim], size)]
    x_new, x_old = _x(shape), _x(shape)
    new, old = split(x_new, size, dim), _pieces_by_indexing(x_old, sizes, dim)
    assert [p.shape for p in new] == [p.shape for p in old]
    for a, b in zip(new, old):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if not used:
        assert all(p.requires_grad for p in new)
        return
    _loss(new, used).backward()
    _loss(old, used).backward()
    np.testing.assert_array_equal(x_new.grad.numpy(), x_old.grad.numpy())


@pytest.mark.parametrize("shape, size, dim, used", [c for c in SPLITS if c[3]])
def test_split_gradcheck(shape, size, dim, used):
    x = _x(shape)
    assert gradcheck(lambda t: _loss(split(t, size, dim), used), (x,))


@pytest.mark.parametrize("shape, chunks, dim, used", [
    ((2, 9), 3, 1, [0, 2]),
    ((7, 3), 3, 0, [1, 2]),       # 3, 3, 1
    ((2, 5, 3), 2, -2, [1]),      # 3, 2; the first unused
    ((6,), 4, -1, [0, 1]),        # 2, 2, 2: fewer chunks than asked, as torch.chunk
])
def test_chunk_gradcheck(shape, chunks, dim, used):
    x = _x(shape)
    pieces = chunk(x, chunks, dim)
    assert sum(p.shape[dim] for p in pieces) == shape[dim]
    assert gradcheck(lambda t: _loss(chunk(t, chunks, dim), used), (x,))


def test_split_pieces_make_one_node_and_are_views():
    x = _x((2, 3, 12))
    pieces = x.split(4, dim=2)
    assert len(pieces) == 3
    assert len({id(p._ctx) for p in pieces}) == 1 and pieces[0]._ctx.function is Split
    assert [p._out_index for p in pieces] == [0, 1, 2]
    for p in pieces:
        assert np.shares_memory(p.data, x.data)


def test_split_backward_allocates_one_array_that_becomes_the_gradient(monkeypatch):
    """The backward makes one array (a concatenate: no zeros, no scatter, no sum by the engine)
    and x.grad adopts it."""
    calls = {"concatenate": [], "zeros": 0, "index_add": 0}
    concatenate, zeros, index_add = cpu.concatenate, cpu.zeros, cpu.index_add

    def counting_concatenate(xs, axis):
        out = concatenate(xs, axis)
        calls["concatenate"].append(out)
        return out

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(cpu, "concatenate", counting_concatenate)
    monkeypatch.setattr(cpu, "zeros", counting("zeros", zeros))
    monkeypatch.setattr(cpu, "index_add", counting("index_add", index_add))
    x = _x((2, 3, 12))
    q, k, v = x.split(4, dim=2)
    weights = [np.full(q.shape, c) for c in (1.0, 2.0, 3.0)]
    loss = (q * fw.tensor(weights[0])).sum() + (k * fw.tensor(weights[1])).sum() \
        + (v * fw.tensor(weights[2])).sum()
    calls["zeros"] = 0
    loss.backward()
    assert len(calls["concatenate"]) == 1
    assert calls["zeros"] == 0 and calls["index_add"] == 0
    assert x.grad.data is calls["concatenate"][0]
    np.testing.assert_array_equal(x.grad.numpy(), np.concatenate(weights, axis=2))


def test_split_unused_pieces_get_zeros_in_the_one_array():
    x = _x((3, 6))
    a, b, c = x.split(2, dim=1)
    (b * 5.0).sum().backward()
    expected = np.zeros((3, 6))
    expected[:, 2:4] = 5.0
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_split_of_an_integer_tensor_has_no_gradient_and_the_right_values():
    x = fw.tensor(np.arange(10).reshape(2, 5))
    a, b = x.split([3, 2], dim=1)
    assert not a.requires_grad and not b.requires_grad
    np.testing.assert_array_equal(b.numpy(), [[3, 4], [8, 9]])


def test_split_of_a_non_contiguous_tensor():
    x = _x((6, 4))
    xt = x.transpose(0, 1)                    # (4, 6), a view
    assert gradcheck(lambda t: _loss(split(t.transpose(0, 1), [1, 3, 2], -1), [0, 2]), (x,))
    pieces = split(xt, 3, 1)
    np.testing.assert_array_equal(pieces[1].numpy(), x.numpy().T[:, 3:])


def test_split_errors_are_unchanged():
    x = _x((2, 5))
    with pytest.raises(ValueError, match=r"^split: sizes \[2, 2\] do not add up to 5 "
                                         r"\(dim 1 of \(2, 5\)\)$"):
        split(x, [2, 2], dim=1)
    with pytest.raises(ValueError, match=r"^split: dim 2 is out of range for a tensor with 2 "
                                         r"dims$"):
        split(x, 2, dim=2)
    with pytest.raises(ValueError, match=r"^chunk: dim -3 is out of range"):
        chunk(x, 2, dim=-3)


def test_split_of_an_empty_dim_gives_no_pieces():
    assert split(_x((2, 0)), 3, dim=1) == []
