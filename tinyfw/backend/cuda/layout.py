"""Shape and memory primitives: reshape, transpose, broadcast_to, contiguous, astype, copy,
concatenate.

Arrays of this backend are always C-contiguous, so ``reshape`` is a free view while ``transpose``
and ``broadcast_to`` materialise their result with one strided gather (the unary map kernel with
the identity function, reading the input through permuted or zero strides).
"""
import numpy as np
from numba import cuda

from .elementwise import cast_to, map1_kernel
from .runtime import (c_strides, check_dtype, coalesce, device_array, empty, flat,
                      kernel_factory, launch_1d, prod, strided_offset)

__all__ = ["reshape", "transpose", "broadcast_to", "contiguous", "astype", "copy",
           "concatenate", "strided_gather", "strided_scatter"]


@kernel_factory
def scatter_kernel():
    """``dst[dst_offset + strided(i)] = src[strided(i)]``: write into a strided region."""
    def kernel(dst, dst_offset, src, shape, dst_strides, src_strides, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            dst[dst_offset + strided_offset(i, shape, dst_strides)] = \
                src[strided_offset(i, shape, src_strides)]
    return cuda.jit(kernel)


def strided_gather(x, offset, shape, strides):
    """A new C-contiguous array of ``shape`` whose element ``idx`` is
    ``flat(x)[offset + sum(idx * strides)]`` (strides in elements, 0 = broadcast)."""
    out = empty(shape, x.dtype)
    n = prod(shape)
    if n:
        kshape, kstrides = coalesce(shape, strides)
        launch_1d(map1_kernel("identity"), n, flat(out), flat(x), int(offset), kshape, kstrides, n)
    return out


def strided_scatter(dst, offset, dst_strides, src, src_strides, shape):
    """``flat(dst)[offset + idx . dst_strides] = flat(src)[idx . src_strides]`` for every index
    ``idx`` of ``shape`` (in place; the destination positions must be distinct)."""
    n = prod(shape)
    if n:
        kshape, kd, ks = coalesce(shape, dst_strides, src_strides)
        launch_1d(scatter_kernel(), n, flat(dst), int(offset), flat(src), kshape, kd, ks, n)
    return dst


def _resolve_shape(op, size, shape):
    """``shape`` with one ``-1`` filled in, checked to hold ``size`` elements."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    unknown = [d for d, s in enumerate(shape) if s == -1]
    known = prod(s for s in shape if s != -1)
    if len(unknown) > 1 or any(s < -1 for s in shape):
        raise ValueError(f"{op}: invalid shape {shape}")
    if unknown:
        if known == 0 or size % known:
            raise ValueError(f"{op}: cannot reshape array of size {size} into shape {shape}")
        shape = shape[:unknown[0]] + (size // known,) + shape[unknown[0] + 1:]
    if prod(shape) != size:
        raise ValueError(f"{op}: cannot reshape array of size {size} into shape {shape}")
    return shape


def reshape(x, shape):
    """``np.reshape(x, shape)``: a view (the array is C-contiguous); one ``-1`` is allowed."""
    x = device_array(x, "reshape")
    shape = _resolve_shape("reshape", x.size, shape)
    return x if tuple(x.shape) == shape else x.reshape(shape)


def transpose(x, axes=None):
    """``np.transpose(x, axes)`` as a new C-contiguous array (``axes=None`` reverses them)."""
    x = device_array(x, "transpose")
    ndim = x.ndim
    axes = tuple(reversed(range(ndim))) if axes is None else tuple(int(a) for a in axes)
    normalized = tuple(a + ndim if a < 0 else a for a in axes)
    if sorted(normalized) != list(range(ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {ndim} axes "
                         f"of shape {tuple(x.shape)}")
    if normalized == tuple(range(ndim)):
        return x
    strides = c_strides(x.shape)
    return strided_gather(x, 0, tuple(x.shape[a] for a in normalized),
                          tuple(strides[a] for a in normalized))


def broadcast_to(x, shape):
    """``np.broadcast_to(x, shape)`` as a new C-contiguous array (the broadcast is copied)."""
    x = device_array(x, "broadcast_to")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if tuple(x.shape) == shape:
        return x
    lead = len(shape) - x.ndim
    if lead < 0 or any(s != t and s != 1 for s, t in zip(x.shape, shape[lead:])):
        raise ValueError(f"broadcast_to: cannot broadcast shape {tuple(x.shape)} to {shape}")
    strides = (0,) * lead + tuple(0 if s == 1 else st
                                  for s, st in zip(x.shape, c_strides(x.shape)))
    return strided_gather(x, 0, shape, strides)


def contiguous(x):
    """``x`` itself when C-contiguous (always so for this backend's arrays), else a C copy."""
    return device_array(x, "contiguous")


def astype(x, dtype):
    """``x.astype(dtype, copy=False)``: ``x`` itself if it already has ``dtype``."""
    x = device_array(x, "astype")
    dtype = check_dtype("astype", dtype)
    return x if x.dtype == dtype else cast_to(x, dtype)


def copy(x):
    """A new device array equal to ``x`` (a device-to-device copy)."""
    x = device_array(x, "copy")
    out = empty(x.shape, x.dtype)
    if x.size:
        out.copy_to_device(x)
    return out


def concatenate(xs, axis=0):
    """``np.concatenate(xs, axis)``: each input is copied into its slab of the output."""
    xs = [device_array(x, "concatenate") for x in xs]
    if not xs:
        raise ValueError("concatenate: need at least one array")
    ndim = xs[0].ndim
    shapes = [tuple(x.shape) for x in xs]
    if ndim == 0:
        raise ValueError("concatenate: zero-dimensional arrays cannot be concatenated")
    if not -ndim <= axis < ndim:
        raise ValueError(f"concatenate: axis {axis} is out of bounds for {ndim} dimensions")
    axis %= ndim
    if any(len(s) != ndim or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
           for s in shapes):
        raise ValueError(f"concatenate: shapes {shapes} differ outside axis {axis}")
    dtype = check_dtype("concatenate", np.result_type(*[x.dtype for x in xs]))
    total = sum(s[axis] for s in shapes)
    out_shape = shapes[0][:axis] + (total,) + shapes[0][axis + 1:]
    out = empty(out_shape, dtype)
    # View the output as (outer, total, inner): input k fills columns [start, start + len_k).
    outer, inner = prod(out_shape[:axis]), prod(out_shape[axis + 1:])
    start = 0
    for x in xs:
        length = x.shape[axis]
        src = x if x.dtype == dtype else cast_to(x, dtype)
        strided_scatter(out, start * inner, (total * inner, inner, 1),
                        src, (length * inner, inner, 1), (outer, length, inner))
        start += length
    return out
