"""Whole ops on the 'cuda' device: forward values and gradients equal the CPU's, float64
gradchecks run on the device, devices never mix silently, and a module trains there.

Without a GPU this runs in Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``): shapes are tiny.
"""
import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("numba.cuda is unavailable (no GPU); run with NUMBA_ENABLE_CUDASIM=1 to use the "
                "simulator", allow_module_level=True)

import tinyfw as fw  # noqa: E402
import tinyfw.nn as nn  # noqa: E402
import tinyfw.nn.functional as F  # noqa: E402
from tinyfw.backend.cuda import runtime  # noqa: E402
from tinyfw.ops.attention import packed_causal_self_attention  # noqa: E402
from tinyfw.ops.fast_weights import delta_rule, linear_attention  # noqa: E402
from tinyfw.ops.safu import running_mean, safu_block_attention  # noqa: E402

pytestmark = pytest.mark.cuda

TOL = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
       np.dtype(np.float64): dict(rtol=1e-9, atol=1e-10)}


def leaf(array, device, dtype=np.float64):
    return fw.tensor(np.asarray(array, dtype=dtype), requires_grad=True, device=device)


def run(fn, arrays, device, dtype):
    """fn on leaves made from ``arrays`` on ``device``: (output as NumPy, grads as NumPy)."""
    leaves = [leaf(a, device, dtype) for a in arrays]
    out = fn(*leaves)
    out.backward(fw.tensor(np.linspace(-1.0, 1.0, out.numel()).reshape(out.shape).astype(dtype),
                           device=device))
    if device == "cuda":
        assert out.device == "cuda" and runtime.is_device_array(out.data)
        assert all(t.grad.device == "cuda" for t in leaves)
    return out.numpy(), [t.grad.numpy() for t in leaves]


def same_on_both_devices(fn, arrays, dtype=np.float64):
    out_cpu, grads_cpu = run(fn, arrays, "cpu", dtype)
    out_gpu, grads_gpu = run(fn, arrays, "cuda", dtype)
    tol = TOL[np.dtype(dtype)]
    assert out_gpu.dtype == out_cpu.dtype and out_gpu.shape == out_cpu.shape
    np.testing.assert_allclose(out_gpu, out_cpu, **tol)
    for g_gpu, g_cpu in zip(grads_gpu, grads_cpu):
        assert g_gpu.dtype == g_cpu.dtype and g_gpu.shape == g_cpu.shape
        np.testing.assert_allclose(g_gpu, g_cpu, **tol)


def rng(seed):
    return np.random.default_rng(seed)


TARGET = np.array([2, 0, -100, 4])
IDS = np.array([[1, 3, 1], [0, 4, 4]])


CASES = {
    "elementwise_broadcast": (
        lambda a, b: ((a * b + a.exp()).sigmoid() - (b / 3).tanh() ** 2).abs().sqrt(),
        [(3, 4), (4,)]),
    "reductions": (
        lambda a: fw.stack([a.mean(), a.var(), a.max(), fw.logsumexp(a, 1).sum(),
                            a.sum(0).min()]),
        [(3, 5)]),
    "matmul_linear_activations": (
        lambda x, w, b: F.gelu(F.linear(F.relu(x), w, b), approximate="tanh") @ w,
        [(2, 3, 4), (4, 4), (4,)]),
    "softmax_cross_entropy": (
        lambda z: F.cross_entropy(F.log_softmax(z, -1) * 2 + F.softmax(z, 0), fw.tensor(
            TARGET, device=z.device)),
        [(4, 5)]),
    "norms": (
        lambda x, w, b: F.layer_norm(x, (6,), w, b) + F.rms_norm(x, (6,), w),
        [(2, 3, 6), (6,), (6,)]),
    "embedding_and_indexing": (
        lambda w, y: fw.cat([F.embedding(fw.tensor(IDS, device=w.device), w)[:, 1:],
                             y[None, ::-1].reshape(1, 2, 4).transpose(0, 1)
                             .expand(2, 2, 4)], dim=1),
        [(5, 4), (2, 4)]),
    "causal_attention": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [(1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 2)]),
    "packed_self_attention": (
        lambda qkv: packed_causal_self_attention(qkv, 2),
        [(2, 3, 12)]),
    "fast_weights": (
        lambda q, k, v, b: linear_attention(q.sigmoid(), k.sigmoid(), v)
        + delta_rule(q, k, v, b.sigmoid()),
        [(1, 2, 3, 2), (1, 2, 3, 2), (1, 2, 3, 2), (1, 2, 3)]),
    "safu": (
        lambda x, q: safu_block_attention(x, q, 2)[0] + running_mean(x),
        [(2, 3, 2), (2, 3, 2)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_ops_match_the_cpu_forward_and_backward(name):
    fn, shapes = CASES[name]
    g = rng(sum(map(ord, name)))
    same_on_both_devices(fn, [g.standard_normal(s) for s in shapes])


@pytest.mark.parametrize("name", ["elementwise_broadcast", "softmax_cross_entropy"])
def test_float32_ops_match_the_cpu(name):
    fn, shapes = CASES[name]
    g = rng(1)
    same_on_both_devices(fn, [g.standard_normal(s) for s in shapes], np.float32)


# Each gradcheck runs two forwards per input element: the smallest shapes that still broadcast,
# mask and ignore.
GRADCHECK_CASES = {
    "elementwise_broadcast": (CASES["elementwise_broadcast"][0], [(2, 2), (2,)]),
    "matmul_linear_activations": (CASES["matmul_linear_activations"][0],
                                  [(1, 2, 2), (2, 2), (2,)]),
    "softmax_cross_entropy": (
        lambda z: F.cross_entropy(F.log_softmax(z, -1) + F.softmax(z, 0),
                                  fw.tensor(np.array([1, -100, 0]), device=z.device)),
        [(3, 2)]),
    "norms": (lambda x, w, b: F.layer_norm(x, (3,), w, b) + F.rms_norm(x, (3,), w),
              [(2, 3), (3,), (3,)]),
    "causal_attention": (CASES["causal_attention"][0], [(1, 1, 2, 2)] * 3),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_gradcheck_on_the_cuda_device(name):
    fn, shapes = GRADCHECK_CASES[name]
    g = rng(2)
    inputs = [leaf(g.standard_normal(s), "cuda") for s in shapes]
    assert fw.gradcheck(fn, inputs)


def test_gradcheck_catches_a_wrong_cuda_backward():
    class WrongExp(fw.Function):
        @staticmethod
        def forward(ctx, x):
            y = ctx.backend.exp(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, dy):
            (y,) = ctx.saved_tensors
            return ctx.backend.mul(dy, ctx.backend.mul(y, 1.01))  # 1% off

    x = leaf(rng(3).standard_normal(3), "cuda")
    assert not fw.gradcheck(lambda t: WrongExp.apply(t), [x], raise_exception=False)


def test_mixing_devices_is_an_error():
    a = leaf(np.ones((2, 2)), "cpu")
    b = leaf(np.ones((2, 2)), "cuda")
    with pytest.raises(ValueError, match="different devices"):
        a + b
    with pytest.raises(ValueError, match="different devices"):
        fw.matmul(b, a)


def test_to_moves_data_and_gradients_between_devices():
    x = leaf(rng(4).standard_normal((2, 3)), "cpu")
    y = x.to("cuda")
    assert y.device == "cuda" and runtime.is_device_array(y.data)
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy())
    back = y.to("cpu")
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), x.numpy())


def test_a_module_trains_on_cuda_like_on_cpu():
    def train(device):
        fw.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.LayerNorm(4), nn.Linear(4, 2))
        model = model.to(device)
        opt = fw.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
        x = fw.tensor(rng(5).standard_normal((4, 3)), dtype=fw.float32, device=device)
        y = fw.tensor(np.array([0, 1, 1, 0]), device=device)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.numpy()))
        return losses, [p.numpy() for p in model.parameters()]

    losses_cpu, params_cpu = train("cpu")
    losses_gpu, params_gpu = train("cuda")
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=1e-4)
    assert losses_gpu[-1] < losses_gpu[0]
    for p_gpu, p_cpu in zip(params_gpu, params_cpu):
        np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-4, atol=1e-5)


def test_optimizer_state_of_a_cuda_model_saves_and_loads():
    p = nn.Parameter(fw.tensor(np.ones((2, 3), dtype=np.float32), device="cuda"))
    opt = fw.optim.AdamW([p], lr=0.1)
    (p * p).sum().backward()
    opt.step()
    state = opt.state_dict()
    assert isinstance(state["state"][0]["exp_avg"], np.ndarray)
    again = fw.optim.AdamW([p], lr=0.1)
    again.load_state_dict(state)
    restored = again.state[id(p)]["exp_avg"]
    assert runtime.is_device_array(restored)
    np.testing.assert_allclose(restored.copy_to_host(), state["state"][0]["exp_avg"])


def test_tinyfw_train_runs_end_to_end_on_cuda(tmp_path, capsys):
    """`python -m tinyfw train --device cuda`: train, evaluate, checkpoint, sample (tiny model)."""
    from tinyfw.cli import main
    data = tmp_path / "text.txt"
    data.write_text("hello world, hello tiny cuda. " * 32)
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--data", str(data), "--out", str(out),
                 "--n-layers", "1", "--n-heads", "1", "--d-model", "8", "--context", "4",
                 "--batch-size", "2", "--steps", "2", "--eval-every", "2", "--eval-iters", "1",
                 "--sample-tokens", "4"]) == 0
    text = capsys.readouterr().out
    assert "on cuda" in text and "sample:" in text
    assert (out / "ckpt.npz").exists() and (out / "best.npz").exists()
