"""Shape and indexing operations: reshape, transpose, permute, (un)squeeze, expand, indexing,
cat, stack, split, chunk, plus the device/dtype moves. Their backwards move the gradient back
into place; the backward of indexing is a scatter-add (``index_add``), so repeated indices
accumulate, and that of split concatenates the pieces' gradients.
"""
import numbers

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ..backend import backend_for


def _axis(name, dim, ndim):
    if not isinstance(dim, numbers.Integral) or not -ndim <= dim < ndim:
        raise ValueError(f"{name}: dim {dim!r} is out of range for a tensor with {ndim} dims")
    return int(dim) % ndim


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return ctx.backend.reshape(x, shape)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.reshape(g, ctx.in_shape), None


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    n = x.numel()
    if shape.count(-1) > 1 or (-1 in shape and (known == 0 or n % known)) or \
            (-1 not in shape and known != n) or any(s < -1 for s in shape):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({n} elements) "
                         f"into shape {shape}")
    if -1 in shape:
        shape = tuple(n // known if s == -1 else s for s in shape)
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape)


view = reshape


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    s = _axis("flatten", start_dim, x.ndim)
    e = _axis("flatten", end_dim, x.ndim)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    size = 1
    for n in x.shape[s:e + 1]:
        size *= n
    return reshape(x, x.shape[:s] + (size,) + x.shape[e + 1:])


def unsqueeze(x, dim):
    d = _axis("unsqueeze", dim, x.ndim + 1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    d = _axis("squeeze", dim, x.ndim)
    if x.shape[d] != 1:
        return x
    return reshape(x, x.shape[:d] + x.shape[d + 1:])


class Permute(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.inverse = tuple(np.argsort(axes))
        return ctx.backend.transpose(x, axes)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.transpose(g, ctx.inverse), None


def permute(x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    axes = tuple(_axis("permute", d, x.ndim) for d in dims)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: dims {dims} are not a permutation of the {x.ndim} dims of a "
                         f"tensor of shape {x.shape}")
    return Permute.apply(x, axes)


def transpose(x, dim0, dim1):
    a = _axis("transpose", dim0, x.ndim)
    b = _axis("transpose", dim1, x.ndim)
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(x, tuple(axes))


class Expand(Function):
    @staticmethod
    def forward(ctx, x, shape):
        return ctx.backend.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return g, None  # the engine sums the broadcast dims back


def expand(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(x.shape[i - (len(shape) - x.ndim)] if s == -1 else s
                  for i, s in enumerate(shape))
    try:
        np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ValueError(f"expand: a tensor of shape {x.shape} cannot be expanded to {shape}") \
            from None
    return Expand.apply(x, shape)


class Contiguous(Function):
    @staticmethod
    def forward(ctx, x):
        return ctx.backend.contiguous(x)

    @staticmethod
    def backward(ctx, g):
        return g


def contiguous(x):
    return Contiguous.apply(x)


class Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return ctx.backend.copy(x)

    @staticmethod
    def backward(ctx, g):
        return g


def clone(x):
    return Clone.apply(x)


# --------------------------------------------------------------------------- indexing
class Index(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.in_shape = x.shape
        ctx.index = index
        return ctx.backend.getitem(x, index)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.index_add(ctx.in_shape, ctx.index, g), None


def _convert_index(x, index):
    """Tensors inside an index become backend arrays on x's device; other parts stay."""
    be = backend_for(x.device)
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if isinstance(item, Tensor):
            if item.dtype.kind not in "iub":
                raise TypeError(f"index: tensors used as indices must be integer or bool, got "
                                f"{item.dtype}")
            if item.device != x.device:
                raise ValueError(f"index: index on {item.device} for a tensor on {x.device}")
            out.append(item.data)
        elif isinstance(item, (list, np.ndarray)):
            arr = np.asarray(item)
            if arr.dtype.kind not in "iub":
                raise TypeError(f"index: arrays used as indices must be integer or bool, got "
                                f"{arr.dtype}")
            out.append(be.from_numpy(arr))
        elif isinstance(item, float):
            raise TypeError(f"index: float {item!r} cannot be used as an index")
        else:
            out.append(item)
    return tuple(out) if isinstance(index, tuple) or len(out) != 1 else out[0]


def index(x, idx):
    """``x[idx]`` with ints, slices, None, Ellipsis and integer/bool arrays or tensors."""
    converted = _convert_index(x, idx)
    try:
        return Index.apply(x, converted)
    except IndexError as e:
        raise IndexError(f"index: {e} (tensor of shape {x.shape})") from None


# --------------------------------------------------------------------------- joining
class Cat(Function):
    @staticmethod
    def forward(ctx, *xs, dim):
        ctx.sizes = [x.shape[dim] for x in xs]
        ctx.dim = dim
        return ctx.backend.concatenate(xs, dim)

    @staticmethod
    def backward(ctx, g):
        grads, start = [], 0
        prefix = (slice(None),) * ctx.dim
        for size, needed in zip(ctx.sizes, ctx.needs_input_grad):
            grads.append(ctx.backend.getitem(g, prefix + (slice(start, start + size),))
                         if needed else None)
            start += size
        return tuple(grads)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    ref = tensors[0]
    if ref.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated")
    d = _axis("cat", dim, ref.ndim)
    for t in tensors[1:]:
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if i != d):
            raise ValueError(f"cat: shapes {[x.shape for x in tensors]} differ outside dim {d}")
        if t.dtype != ref.dtype:
            raise TypeError(f"cat: dtypes differ: {[str(x.dtype) for x in tensors]}")
    return Cat.apply(*tensors, dim=d)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors must have the same shape, got "
                         f"{[t.shape for t in tensors]}")
    d = _axis("stack", dim, tensors[0].ndim + 1)
    return cat([unsqueeze(t, d) for t in tensors], d)


class Split(Function):
    """x -> the pieces ``x[..., start:start + size, ...]`` along ``dim``, one output each.

    One node for all the pieces: the backward concatenates their gradients into one new array
    (a piece that got no gradient contributes the zeros the engine gives it), where an indexing
    node per piece would scatter each gradient into a zeroed array of x's shape and leave the
    engine to sum them.
    """

    @staticmethod
    def forward(ctx, x, *, dim, sizes):
        ctx.dim = dim
        prefix, pieces, start = (slice(None),) * dim, [], 0
        for size in sizes:
            pieces.append(ctx.backend.getitem(x, prefix + (slice(start, start + size),)))
            start += size
        return tuple(pieces)

    @staticmethod
    def backward(ctx, *grads):
        return ctx.backend.concatenate(grads, ctx.dim)


def split(x, split_size, dim=0):
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), as ``torch.split``."""
    d = _axis("split", dim, x.ndim)
    n = x.shape[d]
    sizes = list(split_size) if isinstance(split_size, (list, tuple)) else \
        [min(split_size, n - s) for s in range(0, n, split_size)]
    if sum(sizes) != n:
        raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {d} of {x.shape})")
    if not sizes:
        return []
    return list(Split.apply(x, dim=d, sizes=tuple(sizes)))


def chunk(x, chunks, dim=0):
    n = x.shape[_axis("chunk", dim, x.ndim)]
    return split(x, -(-n // chunks), dim)


# --------------------------------------------------------------------------- dtype / device
class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return ctx.backend.astype(x, dtype)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.astype(g, ctx.in_dtype), None


def cast(x, dtype):
    dtype = np.dtype(dtype)
    if x.requires_grad and dtype.kind != "f":
        return Tensor._wrap(backend_for(x.device).astype(x.data, dtype), x.device)
    return Cast.apply(x, dtype)


class ToDevice(Function):
    @staticmethod
    def forward(ctx, x, device):
        ctx.output_device = device
        return backend_for(device).from_numpy(ctx.backend.to_numpy(x))

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.from_numpy(backend_for(ctx.output_device).to_numpy(g)), None


def to_device(x, device):
    return ToDevice.apply(x, device)
