"""SAFU's fused contexts ``z = [h; r; d]`` (``safu_contexts_forward/backward``): the NumPy
reference against the pieces it is made of, the Numba and CUDA (simulator) kernels against the
reference, the op's float64 gradchecks, and the op against the composed path
(``safu_block_attention`` + ``radial_context`` + ``running_mean`` + ``cat``) it replaces."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.backend import cpu, reference
from conftest import launch_path
from tinyfw.backend.cpu import safu as cpu_safu
from tinyfw.ops.linalg import matmul
from tinyfw.ops.safu import radial_context, running_mean, safu_block_attention, safu_contexts
from tinyfw.ops.shape import cat, index

# (start, block, radial, use_document): history rows, every context on and off, windows longer
# than the sequence
CASES = [(0, 3, 2, True), (2, 4, 3, True), (0, 0, 1, False), (3, 1, 0, True), (0, 12, 1, True),
         (1, 0, 4, True), (0, 2, 0, False), (0, 0, 0, True), (5, 3, 2, False)]


def arrays(start, block, radial, use_document, B=2, L=7, D=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, start + L, D)).astype(dtype)
    q = rng.standard_normal((B, L, D)).astype(dtype) if block else None
    prev = rng.standard_normal((B, D)).astype(dtype) if use_document else None
    return x, q, prev, rng


# ------------------------------------------------------------------------------ the reference
@pytest.mark.parametrize("start,block,radial,use_document", CASES)
def test_reference_forward_is_its_pieces(start, block, radial, use_document):
    x, q, prev, _ = arrays(start, block, radial, use_document)
    z, a = reference.safu_contexts_forward(x, q, start, block, radial, use_document, 0.5,
                                           prev, 3)
    D = x.shape[2]
    col = 0
    if block:
        q_all = np.zeros_like(x)
        q_all[:, start:] = 0.5 * q
        h, a_all = reference.safu_block_attention_forward(x, q_all, block)
        np.testing.assert_allclose(z[..., :D], h[:, start:], atol=1e-12)
        np.testing.assert_allclose(a, a_all[:, start:], atol=1e-12)
        col = D
    else:
        assert a is None
    for k in range(radial):
        for t in range(start, x.shape[1]):
            want = x[:, t - k] if t - k >= 0 else 0.0
            np.testing.assert_array_equal(z[:, t - start, col:col + D], want)
        col += D
    if use_document:
        sums = prev[:, None] + np.cumsum(x[:, start:], axis=1)
        np.testing.assert_allclose(z[..., col:], sums / (3 + np.arange(1, z.shape[1] + 1))[:,
                                   None], atol=1e-12)
        col += D
    assert z.shape[-1] == col


@pytest.mark.parametrize("start,block,radial,use_document", CASES)
def test_reference_backward_matches_finite_differences(start, block, radial, use_document):
    x, q, prev, rng = arrays(start, block, radial, use_document, L=4, D=3)
    z, a = reference.safu_contexts_forward(x, q, start, block, radial, use_document, 0.5, prev, 3)
    dz = rng.standard_normal(z.shape)
    da = rng.standard_normal(a.shape) if block else None

    def f(x_, q_):
        z_, a_ = reference.safu_contexts_forward(x_, q_, start, block, radial, use_document, 0.5,
                                                 prev, 3)
        return float((z_ * dz).sum() + ((a_ * da).sum() if block else 0.0))

    dx, dq = reference.safu_contexts_backward(dz, da, x, q, a, start, block, radial,
                                              use_document, 0.5, 3)
    checks = [(x, dx)] + ([(q, dq)] if block else [])
    if not block:
        assert dq is None
    eps = 1e-6
    for arr, grad in checks:
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = f(x, q)
            arr[idx] = old - eps
            down = f(x, q)
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num, atol=1e-7)


# ---------------------------------------------------------------------------- Numba kernels
@pytest.fixture(params=["serial", "split", "parallel"])
def cpu_path(request, monkeypatch):
    """Run the CPU kernels on the calling thread, split by rows, or in Numba's pool."""
    return launch_path(monkeypatch, "SAFU_CONTEXTS", request.param)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 3e-5)])
@pytest.mark.parametrize("start,block,radial,use_document", CASES)
def test_numba_kernels_equal_reference(start, block, radial, use_document, dtype, tol,
                                       cpu_path):
    x, q, prev, rng = arrays(start, block, radial, use_document, B=3, L=9, D=17, dtype=dtype)
    for prev_sum, prev_count in ((None, 0), (prev, 5)):
        want = reference.safu_contexts_forward(x, q, start, block, radial, use_document, 0.7,
                                               prev_sum, prev_count)
        got = cpu.safu_contexts_forward(x, q, start, block, radial, use_document, 0.7,
                                        prev_sum, prev_count)
        assert got[0].dtype == dtype
        np.testing.assert_allclose(got[0], want[0], atol=tol, rtol=tol)
        if block:
            np.testing.assert_allclose(got[1], want[1], atol=tol)
        else:
            assert got[1] is None
    z, a = want
    dz = rng.standard_normal(z.shape).astype(dtype)
    for da in [None] + ([rng.standard_normal(a.shape).astype(dtype)] if block else []):
        want = reference.safu_contexts_backward(dz, da, x, q, a, start, block, radial,
                                                use_document, 0.7, 5)
        got = cpu.safu_contexts_backward(dz, da, x, q, a, start, block, radial, use_document,
                                         0.7, 5)
        for g, w in zip(got, want):
            if w is None:
                assert g is None
                continue
            assert g.dtype == dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=10 * tol, rtol=tol)


def test_kernel_errors():
    x, q, _, _ = arrays(0, 2, 1, True)
    for be in (reference, cpu):
        with pytest.raises(ValueError, match="q must be"):
            be.safu_contexts_forward(x, q[:, 1:], 0, 2, 1, True)
        with pytest.raises(ValueError, match="needs the cached comparisons"):
            be.safu_contexts_forward(x, None, 0, 2, 1, True)
        with pytest.raises(ValueError, match="start"):
            be.safu_contexts_forward(x, q, 99, 2, 1, True)
        with pytest.raises(ValueError, match="radial"):
            be.safu_contexts_forward(x, q, 0, 2, -1, True)
        with pytest.raises(ValueError, match="no context"):
            be.safu_contexts_forward(x, None, 0, 0, 0, False)
        with pytest.raises(TypeError, match="dtype"):
            be.safu_contexts_forward(x, q.astype(np.float32), 0, 2, 1, True)
        z, a = reference.safu_contexts_forward(x, q, 0, 2, 1, True)
        with pytest.raises(ValueError, match="dz must be"):
            be.safu_contexts_backward(z[..., 1:], None, x, q, a, 0, 2, 1, True)


# ------------------------------------------------------------------------- CUDA (simulator)
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("start,block,radial,use_document", CASES)
def test_cuda_kernels_equal_reference(start, block, radial, use_document, dtype):
    ncuda = pytest.importorskip("numba.cuda")
    if not ncuda.is_available():
        pytest.skip("numba.cuda is unavailable (no GPU); NUMBA_ENABLE_CUDASIM=1 runs the simulator")
    from tinyfw.backend import cuda as G
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    x, q, prev, rng = arrays(start, block, radial, use_document, B=2, L=4, D=3, dtype=dtype)

    def dev(v):
        return None if v is None else G.from_numpy(v)

    def same(got, want):
        if want is None:
            assert got is None
            return
        got = G.to_numpy(got)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **tol)

    for prev_sum, prev_count in ((None, 0), (prev, 5)):
        want = reference.safu_contexts_forward(x, q, start, block, radial, use_document, 0.7,
                                               prev_sum, prev_count)
        got = G.safu_contexts_forward(dev(x), dev(q), start, block, radial, use_document, 0.7,
                                      dev(prev_sum), prev_count)
        for g, w in zip(got, want):
            same(g, w)
    z, a = want
    dz = rng.standard_normal(z.shape).astype(dtype)
    for da in [None] + ([rng.standard_normal(a.shape).astype(dtype)] if block else []):
        want = reference.safu_contexts_backward(dz, da, x, q, a, start, block, radial,
                                                use_document, 0.7, 5)
        got = G.safu_contexts_backward(dev(dz), dev(da), dev(x), dev(q), dev(a), start, block,
                                       radial, use_document, 0.7, 5)
        for g, w in zip(got, want):
            same(g, w)


# ------------------------------------------------------------------------------------- the op
def composed(x, w_a, block, radial, use_document, scale, past=None, prev_sum=None,
             prev_count=0):
    """The path the op replaces: the SAFU pieces put together with cat (no kernel shared)."""
    B, L, D = x.shape
    parts, a = [], None
    if block:
        xs = x
        if past is not None and block > 1 and past.shape[1]:
            keep = min(block - 1, past.shape[1])
            xs = cat([index(past, (slice(None), slice(past.shape[1] - keep, None))), x], dim=1)
        h, a = safu_block_attention(xs, matmul(xs, w_a) * scale, block)
        off = xs.shape[1] - L
        if off:
            h = index(h, (slice(None), slice(off, None)))
            a = index(a, (slice(None), slice(off, None)))
        parts.append(h)
    if radial:
        parts.append(radial_context(x, radial, past))
    if use_document:
        parts.append(running_mean(x, prev_sum, prev_count))
    return (parts[0] if len(parts) == 1 else cat(parts, dim=-1)), a


@pytest.mark.parametrize("block,radial,use_document", [(3, 2, True), (0, 3, True),
                                                       (4, 0, False), (1, 1, True)])
@pytest.mark.parametrize("with_state", [False, True])
def test_op_equals_composed_path_values_and_gradients(block, radial, use_document, with_state):
    rng = np.random.default_rng(4)
    B, L, D = 2, 6, 3
    x = fw.tensor(rng.standard_normal((B, L, D)), requires_grad=True)
    w = fw.tensor(rng.standard_normal((D, D)), requires_grad=True)
    x2 = fw.tensor(x.numpy(), requires_grad=True)
    w2 = fw.tensor(w.numpy(), requires_grad=True)
    kw = {}
    if with_state:
        kw = dict(past=fw.tensor(rng.standard_normal((B, 5, D))),
                  prev_sum=fw.tensor(rng.standard_normal((B, D))), prev_count=5)
    z, a = safu_contexts(x, w if block else None, block, radial, use_document, 0.6, **kw)
    z2, a2 = composed(x2, w2, block, radial, use_document, 0.6, **kw)
    np.testing.assert_allclose(z.numpy(), z2.numpy(), atol=1e-12)
    probe = fw.tensor(rng.standard_normal(z.shape))
    loss = (z * probe).sum()
    loss2 = (z2 * probe).sum()
    if block:
        np.testing.assert_allclose(a.numpy(), a2.numpy(), atol=1e-12)
        probe_a = fw.tensor(rng.standard_normal(a.shape))
        loss = loss + (a * probe_a).sum()
        loss2 = loss2 + (a2 * probe_a).sum()
    else:
        assert a is None
    loss.backward()
    loss2.backward()
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), atol=1e-11)
    if block:
        np.testing.assert_allclose(w.grad.numpy(), w2.grad.numpy(), atol=1e-11)


@pytest.mark.parametrize("block,radial,use_document", [(3, 2, True), (0, 2, True), (2, 0, False)])
def test_gradcheck_op(block, radial, use_document):
    rng = np.random.default_rng(5)
    x = fw.tensor(rng.standard_normal((2, 5, 3)), dtype=fw.float64, requires_grad=True)
    w = fw.tensor(rng.standard_normal((3, 3)), dtype=fw.float64, requires_grad=True)

    def fn(x_, w_):
        z, a = safu_contexts(x_, w_, block, radial, use_document, 0.8)
        return (z, a) if block else z

    assert fw.gradcheck(fn, (x, w))
    past = fw.tensor(rng.standard_normal((2, 4, 3)))
    prev = fw.tensor(rng.standard_normal((2, 3)))
    assert fw.gradcheck(lambda x_, w_: safu_contexts(x_, w_, block, radial, use_document, 0.8,
                                                     past, prev, 4)[0], (x, w))


def test_op_errors():
    x = fw.rand(1, 4, 3)
    w = fw.rand(3, 3)
    with pytest.raises(ValueError, match="safu_contexts: block"):
        safu_contexts(x, w, -1, 1, True)
    with pytest.raises(ValueError, match="safu_contexts: w_a must be"):
        safu_contexts(x, fw.rand(2, 3), 2, 1, True)
    with pytest.raises(ValueError, match="safu_contexts: past"):
        safu_contexts(x, w, 2, 1, True, past=fw.rand(2, 1, 3))
    with pytest.raises(ValueError, match="safu_contexts: prev_sum"):
        safu_contexts(x, w, 2, 1, True, prev_sum=fw.rand(1, 2))
    with pytest.raises(ValueError, match="safu_contexts: prev_count"):
        safu_contexts(x, w, 2, 1, True, prev_count=-1)
    with pytest.raises(ValueError, match="no context"):
        safu_contexts(x, None, 0, 0, False)
    with pytest.raises(TypeError, match="share a dtype"):
        safu_contexts(x, w.double(), 2, 1, True)


@pytest.mark.cuda
@pytest.mark.parametrize("with_state", [False, True])
def test_op_on_cuda_matches_cpu(with_state):
    """The op end to end on the CUDA backend (simulator): values and gradients as on the CPU."""
    ncuda = pytest.importorskip("numba.cuda")
    if not ncuda.is_available():
        pytest.skip("numba.cuda is unavailable (no GPU); NUMBA_ENABLE_CUDASIM=1 runs the simulator")
    rng = np.random.default_rng(6)
    B, L, D = 2, 4, 3
    arrays = [rng.standard_normal((B, L, D)), rng.standard_normal((D, D))]
    past, prev = rng.standard_normal((B, 3, D)), rng.standard_normal((B, D))
    probe = rng.standard_normal((B, L, 5 * D))
    results = {}
    for device in ("cpu", "cuda"):
        x, w = (fw.tensor(a, requires_grad=True, device=device) for a in arrays)
        kw = {}
        if with_state:
            kw = dict(past=fw.tensor(past, device=device), prev_sum=fw.tensor(prev, device=device),
                      prev_count=3)
        z, a = safu_contexts(x, w, 3, 3, True, 0.5, **kw)
        assert z.device == device
        (z * fw.tensor(probe, device=device)).sum().backward()
        results[device] = (z.numpy(), a.numpy(), x.grad.numpy(), w.grad.numpy())
    for got, want in zip(results["cuda"], results["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
