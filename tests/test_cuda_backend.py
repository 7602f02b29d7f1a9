"""The CUDA backend's primitives against the CPU backend (NumPy) on the same inputs.

Without a GPU these run in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which executes
every CUDA thread as a Python thread: shapes are tiny, but large enough that the launch helpers
use several blocks, reductions take several passes and matmul tiles have ragged edges.
"""
import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("numba.cuda is unavailable (no GPU); run with NUMBA_ENABLE_CUDASIM=1 to use the "
                "simulator", allow_module_level=True)

from tinyfw.backend import cpu as C  # noqa: E402  the oracle
from tinyfw.backend import cuda as G  # noqa: E402
import importlib  # noqa: E402
matmul_module = importlib.import_module("tinyfw.backend.cuda.matmul")  # (G.matmul is the function)
reduction_module = importlib.import_module("tinyfw.backend.cuda.reduction")
from tinyfw.backend.cuda import runtime  # noqa: E402
from tinyfw.backend.interface import BINARY, COMPARISON, PRIMITIVES, UNARY  # noqa: E402

pytestmark = pytest.mark.cuda

FLOATS = [np.float32, np.float64]
TOL = {np.dtype(np.float32): dict(rtol=3e-6, atol=1e-6),
       np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12)}


def rng(seed=0):
    return np.random.default_rng(seed)


def dev(a):
    return G.from_numpy(np.asarray(a))


def same(got, want, **tol):
    """Device result ``got`` equals the NumPy result ``want``: shape, dtype, values."""
    assert runtime.is_device_array(got), type(got)
    got, want = G.to_numpy(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, **(tol or TOL[want.dtype]))
    else:
        np.testing.assert_array_equal(got, want)


def test_every_primitive_is_defined():
    assert [name for name in PRIMITIVES if not hasattr(G, name)] == []


def test_simulator_launch_sizes_exercise_several_blocks():
    # The tests below rely on these being small under the simulator (multi-block, multi-pass).
    if runtime.SIMULATOR:
        assert runtime.THREADS <= 8 and reduction_module.CHUNK <= 16 and runtime.TILE <= 4


# ----------------------------------------------------------------------------------------------
# Creation and transfer
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float32, np.float64])
def test_round_trip_keeps_values_and_dtype(dtype):
    a = (rng().standard_normal((3, 4)) * 5).astype(dtype)
    d = G.from_numpy(a)
    same(d, a)
    back = G.to_numpy(d)
    back[...] = 0  # a host copy: the device array is unchanged
    same(d, a)
    same(G.from_numpy(a[:, ::2]), a[:, ::2])  # strided host arrays are made contiguous
    same(G.from_numpy(np.asarray(a[0, 0])), np.asarray(a[0, 0]))  # 0-d


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
def test_zeros_full_arange(dtype):
    same(G.zeros((2, 3), dtype), C.zeros((2, 3), dtype))
    same(G.zeros((0, 3), dtype), C.zeros((0, 3), dtype))
    same(G.full((5,), 3, dtype), C.full((5,), 3, dtype))
    same(G.full((200,), 7, dtype), C.full((200,), 7, dtype))  # several blocks
    same(G.arange(2, 11, 3, dtype), C.arange(2, 11, 3, dtype))
    same(G.arange(5, 0, -1, dtype), C.arange(5, 0, -1, dtype))
    same(G.arange(0, 0, 1, dtype), C.arange(0, 0, 1, dtype))


def test_arange_and_full_infer_dtype_like_numpy():
    same(G.arange(0, 5, 1, None), C.arange(0, 5, 1, None))
    same(G.arange(0.0, 1.0, 0.25, None), C.arange(0.0, 1.0, 0.25, None))
    same(G.full((2,), 1.5, None), C.full((2,), 1.5, None))


def test_unsupported_dtypes_and_host_arrays_are_rejected():
    with pytest.raises(TypeError, match="from_numpy: unsupported dtype float16"):
        G.from_numpy(np.zeros(3, np.float16))
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        G.zeros((2,), np.complex128)
    with pytest.raises(TypeError, match="add: expected a cuda device array, got a NumPy array"):
        G.add(np.ones(3), dev(np.ones(3)))
    with pytest.raises(TypeError, match="matmul: unsupported dtype int64"):
        G.matmul(dev(np.ones((2, 2), np.int64)), dev(np.ones((2, 2), np.int64)))
    with pytest.raises(TypeError, match="exp: unsupported dtype bool"):
        G.exp(dev(np.ones(2, bool)))
    with pytest.raises(TypeError, match="sub: unsupported dtype bool"):
        G.sub(dev(np.ones(2, bool)), dev(np.ones(2, bool)))


def test_unavailable_cuda_message_names_the_simulator():
    import inspect
    source = inspect.getsource(G)
    assert "NUMBA_ENABLE_CUDASIM=1" in source and "RuntimeError" in source


# ----------------------------------------------------------------------------------------------
# Elementwise
# ----------------------------------------------------------------------------------------------

def _unary_input(name, dtype, shape=(3, 7)):
    x = rng(1).standard_normal(shape) * 2
    if name in ("log", "sqrt"):
        x = np.abs(x) + 0.1
    if name == "sign":
        x[0, :3] = 0.0
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", UNARY)
def test_unary_matches_numpy(name, dtype):
    x = _unary_input(name, dtype)
    same(getattr(G, name)(dev(x)), getattr(C, name)(x))


@pytest.mark.parametrize("name", ["neg", "abs", "sign", "exp"])
def test_unary_on_integers_follows_numpy_dtypes(name):
    x = np.array([[-3, 0, 2], [5, -1, 1]], dtype=np.int64)
    same(getattr(G, name)(dev(x)), getattr(C, name)(x))


def test_sigmoid_is_stable_at_both_tails():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    same(G.sigmoid(dev(x)), C.sigmoid(x))


BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)),
                    ((5, 1), (1, 6)), ((0, 3), (3,))]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", BINARY + COMPARISON)
def test_binary_broadcasts_like_numpy(name, dtype):
    g = rng(2)
    for sa, sb in BROADCAST_SHAPES:
        if name in COMPARISON + ("maximum", "minimum"):  # small integers: many ties
            a = g.integers(-2, 3, sa).astype(dtype)
            b = g.integers(-2, 3, sb).astype(dtype)
        else:
            a = g.standard_normal(sa).astype(dtype)
            b = g.standard_normal(sb).astype(dtype)
        if name == "pow":
            a, b = np.abs(a) + 0.5, np.abs(b) + 0.5
        same(getattr(G, name)(dev(a), dev(b)), getattr(C, name)(a, b))
        same(getattr(G, name)(dev(b), dev(a)), getattr(C, name)(b, a))


@pytest.mark.parametrize("name", ["add", "mul", "sub", "div", "maximum", "lt", "eq"])
def test_binary_with_scalars_and_mixed_dtypes_promotes_like_numpy(name):
    x32 = rng(3).standard_normal((2, 3)).astype(np.float32)
    i64 = np.arange(1, 7, dtype=np.int64).reshape(2, 3)  # no zero divisors
    for a, b in [(x32, 2.5), (2.5, x32), (x32, 3), (i64, 2), (i64, 2.5), (x32, i64),
                 (i64, i64), (x32, np.float64(1.5)), (x32, x32.astype(np.float64))]:
        ga = dev(a) if isinstance(a, np.ndarray) else a
        gb = dev(b) if isinstance(b, np.ndarray) else b
        same(getattr(G, name)(ga, gb), getattr(C, name)(a, b))


def test_maximum_minimum_propagate_nan_and_compare_with_nan_is_false():
    a = np.array([1.0, np.nan, 3.0, np.nan])
    b = np.array([np.nan, 2.0, 1.0, np.nan])
    for name in ("maximum", "minimum", "lt", "eq", "ne"):
        same(getattr(G, name)(dev(a), dev(b)), getattr(C, name)(a, b))


def test_shape_mismatch_is_a_value_error_naming_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        G.mul(dev(np.ones((2, 3))), dev(np.ones(4)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_where_broadcasts_and_promotes(dtype):
    g = rng(4)
    cond = g.random((3, 1, 4)) < 0.5
    a = g.standard_normal((2, 4)).astype(dtype)
    b = g.standard_normal((4,)).astype(dtype)
    same(G.where(dev(cond), dev(a), dev(b)), C.where(cond, a, b))
    same(G.where(dev(cond), dev(a), 0.0), C.where(cond, a, 0.0))
    same(G.where(dev(cond), -1, dev(b)), C.where(cond, -1, b))
    ints = np.arange(4) % 3  # a non-bool condition is tested for truth
    same(G.where(dev(ints), dev(a), dev(b)), C.where(ints, a, b))


@pytest.mark.parametrize("dtype", FLOATS)
def test_clip(dtype):
    x = rng(5).standard_normal((4, 5)).astype(dtype)
    for lo, hi in [(-0.5, 0.5), (None, 0.2), (-0.1, None), (1.0, -1.0), (None, None)]:
        same(G.clip(dev(x), lo, hi), C.clip(x, lo, hi))
    lo = rng(6).standard_normal(5).astype(dtype)
    same(G.clip(dev(x), dev(lo), 0.5), C.clip(x, lo, 0.5))


# ----------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------

AXES = [None, 0, 1, -1, (0, 2), (2, 0), (1,), (0, 1, 2), ()]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["sum", "max", "min"])
def test_reductions_over_axes_with_keepdims(name, dtype):
    x = rng(7).standard_normal((3, 4, 5)).astype(dtype)
    for axis in AXES:
        for keepdims in (False, True):
            same(getattr(G, name)(dev(x), axis, keepdims), getattr(C, name)(x, axis, keepdims),
                 **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", FLOATS)
def test_long_rows_reduce_in_several_passes(dtype, monkeypatch):
    x = rng(8).standard_normal((2, 3000)).astype(dtype)
    x[1, 2345] = 9.0
    launches = []
    real_launch = reduction_module.launch
    monkeypatch.setattr(reduction_module, "launch",
                        lambda kernel, *args: launches.append(kernel) or real_launch(kernel, *args))
    tol = dict(rtol=2e-5, atol=1e-4) if dtype == np.float32 else {}
    same(G.sum(dev(x), 1), C.sum(x, 1), **tol)
    assert len(launches) >= 2  # partial sums per chunk, then the sum of the partials
    same(G.sum(dev(x)), C.sum(x), **tol)
    same(G.max(dev(x), -1), C.max(x, -1))
    same(G.min(dev(x), 1, True), C.min(x, 1, True))
    launches.clear()
    same(G.argmax(dev(x), 1), C.argmax(x, 1))
    assert len(launches) >= 2
    same(G.argmax(dev(x)), C.argmax(x))
    same(G.argmin(dev(x[:, :150]), 1), C.argmin(x[:, :150], 1))


def test_reductions_of_integers_and_bools():
    i = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    b = i > 0
    same(G.sum(dev(i), 0), C.sum(i, 0))
    same(G.sum(dev(b)), C.sum(b))
    same(G.max(dev(i), 1), C.max(i, 1))
    same(G.min(dev(i)), C.min(i))


def test_reductions_of_empty_axes():
    x = np.zeros((0, 3))
    same(G.sum(dev(x), 0), C.sum(x, 0))
    same(G.sum(dev(x), 1), C.sum(x, 1))
    with pytest.raises(ValueError, match="max: zero-size reduction"):
        G.max(dev(x), 0)
    with pytest.raises(ValueError, match="argmin"):
        G.argmin(dev(x), 0)


def test_max_propagates_nan():
    x = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]])
    same(G.max(dev(x), 1), C.max(x, 1))
    same(G.min(dev(x), 1), C.min(x, 1))


@pytest.mark.parametrize("dtype", FLOATS + [np.int64])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin_first_occurrence(name, dtype):
    x = rng(9).integers(-3, 4, size=(4, 6, 5)).astype(dtype)  # many ties
    for axis in (None, 0, 1, 2, -1):
        same(getattr(G, name)(dev(x), axis), getattr(C, name)(x, axis))


def test_argmax_prefers_the_first_nan_like_numpy():
    x = np.array([[1.0, np.nan, 5.0, np.nan], [2.0, 7.0, 7.0, 1.0]])
    same(G.argmax(dev(x), 1), C.argmax(x, 1))
    same(G.argmin(dev(x), 1), C.argmin(x, 1))


def test_bad_axes_are_value_errors():
    x = dev(np.ones((2, 3)))
    with pytest.raises(ValueError, match="sum: axis 2 is out of bounds for shape"):
        G.sum(x, 2)
    with pytest.raises(ValueError, match="repeated axis"):
        G.max(x, (0, -2))


def test_more_rows_than_grid_rows_are_covered_by_the_row_loop(monkeypatch):
    # A launch may not exceed CUDA's gridDim.y limit; rows beyond it are looped over.
    monkeypatch.setattr(reduction_module, "MAX_GRID_YZ", 2)
    x = rng(10).standard_normal((7, 100))
    same(G.sum(dev(x), 1), C.sum(x, 1))
    same(G.argmin(dev(x), 1), C.argmin(x, 1))


# ----------------------------------------------------------------------------------------------
# Shape and memory
# ----------------------------------------------------------------------------------------------

def test_reshape_is_a_view_and_checks_sizes():
    x = np.arange(24.0).reshape(2, 3, 4)
    for shape in [(6, 4), (-1,), (4, -1, 2), (24, 1), 24]:
        same(G.reshape(dev(x), shape), C.reshape(x, shape))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape array of size 24 into shape"):
        G.reshape(dev(x), (5, -1))


@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.bool_])
def test_transpose(dtype):
    x = (rng(11).standard_normal((2, 3, 4)) > 0 if dtype == np.bool_ else
         rng(11).standard_normal((2, 3, 4)) * 10).astype(dtype)
    for axes in [(0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1), (-1, 0, 1), None]:
        same(G.transpose(dev(x), axes), C.transpose(x, axes))
    with pytest.raises(ValueError, match="transpose: axes"):
        G.transpose(dev(x), (0, 0, 1))


def test_broadcast_to():
    x = rng(12).standard_normal((3, 1))
    for shape in [(3, 1), (3, 4), (2, 3, 5)]:
        same(G.broadcast_to(dev(x), shape), C.broadcast_to(x, shape))
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(3, 1\)"):
        G.broadcast_to(dev(x), (4, 2))


def test_contiguous_copies_foreign_strided_views():
    x = rng(13).standard_normal((4, 6))
    view = dev(x)[1:, ::2]  # a numba device view, not C-contiguous
    same(G.contiguous(view), x[1:, ::2])
    same(G.add(view, 1.0), x[1:, ::2] + 1.0)
    d = dev(x)
    assert G.contiguous(d) is d


@pytest.mark.parametrize("src,dst", [(np.float64, np.float32), (np.float32, np.float64),
                                     (np.float64, np.int64), (np.int64, np.float32),
                                     (np.float32, np.bool_), (np.bool_, np.float64),
                                     (np.int32, np.int64)])
def test_astype(src, dst):
    x = np.array([[-2.7, 0.0, 1.5], [3.2, -0.4, 7.0]]).astype(src)
    same(G.astype(dev(x), dst), C.astype(x, dst))
    d = dev(x)
    assert G.astype(d, src) is d


def test_copy_is_independent():
    x = rng(14).standard_normal(5).astype(np.float32)
    d = dev(x)
    c = G.copy(d)
    same(c, x)
    G.adam_step(c, G.full((5,), 1.0, np.float32), G.zeros((5,), np.float32),
                G.zeros((5,), np.float32), 0.1, 0.9, 0.999, 1e-8, 0.0, 1, False)
    same(d, x)  # the in-place update of the copy left the original alone
    assert not np.allclose(G.to_numpy(c), x)


@pytest.mark.parametrize("dtype", FLOATS)
def test_concatenate(dtype):
    g = rng(15)
    a = g.standard_normal((2, 3, 4)).astype(dtype)
    b = g.standard_normal((2, 1, 4)).astype(dtype)
    c = g.standard_normal((2, 5, 4)).astype(dtype)
    same(G.concatenate([dev(a), dev(b), dev(c)], 1), C.concatenate([a, b, c], 1))
    same(G.concatenate([dev(a), dev(a)], 0), C.concatenate([a, a], 0))
    same(G.concatenate([dev(a), dev(a)], -1), C.concatenate([a, a], -1))
    i = np.ones((2, 1, 4), np.int64)
    same(G.concatenate([dev(a), dev(i)], 1), C.concatenate([a, i], 1))
    with pytest.raises(ValueError, match="concatenate: shapes"):
        G.concatenate([dev(a), dev(c)], 0)


GETITEM_INDICES = [
    1, -1, (0, 2), (slice(None), 1), (slice(1, None), slice(None, None, 2)),
    (Ellipsis, -1), (None, 0), (1, None, slice(None)), (slice(None, None, -1),),
    np.array([2, 0, 2]), [1, 1], (slice(None), np.array([3, 0])),
    (np.array([0, 2]), np.array([1, 3])), (np.array([[0], [2]]), np.array([1, 3])),
    np.array([True, False, True]), (np.arange(3), slice(None), 0),
]


@pytest.mark.parametrize("dtype", FLOATS + [np.int64])
def test_getitem(dtype):
    x = (rng(16).standard_normal((3, 4, 2)) * 10).astype(dtype)
    for index in GETITEM_INDICES:
        same(G.getitem(dev(x), index), C.getitem(x, index))


def test_getitem_with_device_ids_and_bounds_errors():
    x = rng(17).standard_normal((5, 3))
    ids = np.array([[4, 0], [-1, 4]])
    same(G.getitem(dev(x), dev(ids)), C.getitem(x, ids))
    same(G.getitem(dev(x), (dev(ids), slice(None))), C.getitem(x, (ids, slice(None))))
    with pytest.raises(IndexError, match="getitem: an index is out of bounds for axis 0 with "
                                         "size 5"):
        G.getitem(dev(x), dev(np.array([0, 5])))
    with pytest.raises(IndexError, match=r"getitem: index for shape \(5, 3\): index 3 is out of "
                                         "bounds for axis 1 with size 3"):
        G.getitem(dev(x), (slice(None), np.array([3])))
    with pytest.raises(IndexError, match=r"getitem: index 7 for shape \(5, 3\): index 7 is out "
                                         "of bounds for axis 0 with size 5"):
        G.getitem(dev(x), 7)


@pytest.mark.parametrize("dtype", FLOATS + [np.int64])
def test_index_add_scatters_and_accumulates(dtype):
    shape = (3, 4, 2)
    g = rng(18)
    for index in GETITEM_INDICES:
        target = np.zeros(shape)[index].shape
        values = (g.standard_normal(target) * 10).astype(dtype)
        same(G.index_add(shape, index, dev(values)), C.index_add(shape, index, values))
    repeated = np.array([0, 2, 0, 0])
    values = g.standard_normal((4, 4, 2)).astype(dtype)
    same(G.index_add(shape, repeated, dev(values)), C.index_add(shape, repeated, values))
    same(G.index_add(shape, dev(repeated), dev(values)), C.index_add(shape, repeated, values))
    same(G.index_add(shape, (repeated, 1), dev(values[:, 0])),
         C.index_add(shape, (repeated, 1), values[:, 0]))
    # values broadcast to the indexed shape
    same(G.index_add(shape, (slice(None), 0), dev(values[0, 0])),
         C.index_add(shape, (slice(None), 0), values[0, 0]))


def test_index_add_dtype_argument_and_bounds():
    values = np.ones((2, 3), np.float32)
    same(G.index_add((4, 3), np.array([1, 1]), dev(values), np.float64),
         C.index_add((4, 3), np.array([1, 1]), values, np.float64))
    with pytest.raises(IndexError, match="index_add: an index is out of bounds"):
        G.index_add((4, 3), dev(np.array([1, 4])), dev(values))


# ----------------------------------------------------------------------------------------------
# matmul
# ----------------------------------------------------------------------------------------------

MATMUL_SHAPES = [((5, 7), (7, 3)), ((1, 1), (1, 1)), ((9, 4), (4, 6)), ((7,), (7, 3)),
                 ((5, 7), (7,)), ((7,), (7,)), ((2, 5, 7), (7, 3)), ((5, 7), (3, 7, 2)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((4, 0), (0, 3)), ((0, 3), (3, 2))]


@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_batched_and_broadcast(dtype):
    g = rng(19)
    for sa, sb in MATMUL_SHAPES:
        a = g.standard_normal(sa).astype(dtype)
        b = g.standard_normal(sb).astype(dtype)
        same(G.matmul(dev(a), dev(b)), C.matmul(a, b))


def test_matmul_mixed_dtypes_and_errors():
    a = rng(20).standard_normal((3, 4)).astype(np.float32)
    b = rng(21).standard_normal((4, 2))
    same(G.matmul(dev(a), dev(b)), C.matmul(a, b))
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(3, 4\) are not aligned"):
        G.matmul(dev(a), dev(a))
    with pytest.raises(ValueError, match="matmul: batch shapes"):
        G.matmul(dev(np.ones((2, 3, 4))), dev(np.ones((3, 4, 1))))


def test_matmul_covers_more_batches_and_row_tiles_than_the_grid(monkeypatch):
    monkeypatch.setattr(matmul_module, "MAX_GRID_YZ", 1)
    a = rng(22).standard_normal((3, 9, 5))
    b = rng(23).standard_normal((3, 5, 6))
    same(G.matmul(dev(a), dev(b)), C.matmul(a, b))


@pytest.mark.parametrize("dtype", FLOATS)
def test_addmm_equals_the_cpu_backend(dtype):
    g = rng(24)
    a, w = g.standard_normal((9, 5)).astype(dtype), g.standard_normal((6, 5)).astype(dtype)
    for c in (g.standard_normal(6).astype(dtype), g.standard_normal(6), g.standard_normal((9, 6))):
        # a float64 bias makes a float64 sum of the float32 product: float32's tolerance
        same(G.addmm(dev(c), dev(a), G.transpose(dev(w), (1, 0))), C.addmm(c, a, w.T),
             **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", FLOATS + [np.int64])
def test_iadd_updates_the_target_in_place(dtype):
    # autograd accumulates gradients with backend.iadd(target, value) when a backend has it
    g = rng(24)
    target = (g.standard_normal((3, 4)) * 5).astype(dtype)
    d = dev(target)
    for value in [(g.standard_normal((3, 4)) * 5).astype(dtype), g.standard_normal(4) * 5, 2]:
        assert G.iadd(d, dev(value) if isinstance(value, np.ndarray) else value) is None
        target += np.asarray(value).astype(dtype)
        same(d, target)
    with pytest.raises(ValueError, match=r"iadd: shapes \(3, 4\) and \(2, 4\) cannot be"):
        G.iadd(d, dev(np.ones((2, 4), dtype)))
    with pytest.raises(ValueError, match=r"iadd: value of shape \(2, 3, 4\) does not broadcast"):
        G.iadd(d, dev(np.ones((2, 3, 4), dtype)))
