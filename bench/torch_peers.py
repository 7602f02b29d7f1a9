"""The PyTorch side of every workload: what a PyTorch user would write for the same computation,
with the same shapes, dtypes and initialisation scales. Imported only when torch is importable.

Each ``*_case`` function builds its inputs once and returns a zero-argument callable that runs one
timed repetition (forward + backward, or one optimizer step).
"""
import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as TF


def set_threads(n):
    torch.set_num_threads(n)


def _device(device):
    return torch.device("cuda" if device == "cuda" else "cpu")


def cuda_sync():
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ model
class CausalSelfAttention(tnn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = tnn.Linear(d_model, 3 * d_model)
        self.proj = tnn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        shape = (B, T, self.n_heads, D // self.n_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class FastWeightMixer(tnn.Module):
    """Fast-weight attention (linear attention with ELU+1, or the delta rule with DPFP-1 and
    sum-normalised keys/queries), in the chunked form a PyTorch user would write: with one chunk
    per context of 64 tokens it is the masked quadratic form, all matmuls."""

    def __init__(self, d_model, n_heads, update):
        super().__init__()
        self.n_heads, self.update = n_heads, update
        self.qkv = tnn.Linear(d_model, 3 * d_model)
        self.beta = tnn.Linear(d_model, n_heads) if update == "delta" else None
        self.proj = tnn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        shape = (B, T, self.n_heads, D // self.n_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if self.update == "sum":
            q, k = TF.elu(q) + 1, TF.elu(k) + 1
            o = linear_attention_chunked(q, k, v, normalize=True)
        else:
            q, k = sum_normalize(dpfp(q)), sum_normalize(dpfp(k))
            beta = torch.sigmoid(self.beta(x)).transpose(1, 2)
            o = delta_rule_chunked(q, k, v, beta)
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class Block(tnn.Module):
    def __init__(self, d_model, n_heads, mixer):
        super().__init__()
        self.ln1 = tnn.LayerNorm(d_model)
        if mixer == "softmax":
            self.mixer = CausalSelfAttention(d_model, n_heads)
        else:
            self.mixer = FastWeightMixer(d_model, n_heads, "sum" if mixer == "linear" else "delta")
        self.ln2 = tnn.LayerNorm(d_model)
        self.fc = tnn.Linear(d_model, 4 * d_model)
        self.proj = tnn.Linear(4 * d_model, d_model)

    def forward(self, x):
        x = x + self.mixer(self.ln1(x))
        return x + self.proj(TF.gelu(self.fc(self.ln2(x))))


class GPT(tnn.Module):
    """nanoGPT's model: token + position embeddings, pre-norm blocks, final LayerNorm, head.

    With mixer 'softmax' this is the PyTorch twin of ``bench/user_gpt.py`` (W1u, W1L): the same
    layers, the same split / view / transpose around ``scaled_dot_product_attention`` and the
    same initialisation, written as a PyTorch user writes it; with the same weights the two give
    the same loss and gradients (to float32 rounding)."""

    def __init__(self, vocab_size, context_length, n_layers, n_heads, d_model, mixer="softmax"):
        super().__init__()
        self.tok_emb = tnn.Embedding(vocab_size, d_model)
        self.pos_emb = tnn.Embedding(context_length, d_model)
        self.blocks = tnn.ModuleList([Block(d_model, n_heads, mixer) for _ in range(n_layers)])
        self.ln_f = tnn.LayerNorm(d_model)
        self.head = tnn.Linear(d_model, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                tnn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                tnn.init.zeros_(p)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(T, device=ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return TF.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def gpt_step_case(cfg, batch, ids, device="cpu", mixer="softmax"):
    """One AdamW training step of the GPT; ``ids`` (batch, T + 1) int64 NumPy array."""
    torch.manual_seed(0)
    dev = _device(device)
    model = GPT(cfg["vocab_size"], cfg["context_length"], cfg["n_layers"], cfg["n_heads"],
                cfg["d_model"], mixer).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.from_numpy(ids[:, :-1].copy()).to(dev)
    y = torch.from_numpy(ids[:, 1:].copy()).to(dev)

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


# ------------------------------------------------------------------------------------ fast weights
def dpfp(x, nu=1):
    r = torch.cat([TF.relu(x), TF.relu(-x)], dim=-1)
    return torch.cat([r * torch.roll(r, shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)


def sum_normalize(x, eps=1e-6):
    return x / (x.sum(dim=-1, keepdim=True) + eps)


def linear_attention_recurrent(q, k, v):
    """Sum rule one token at a time (no normaliser): S_t = S_{t-1} + k_t v_t^T, o_t = S_t^T q_t."""
    B, H, L, Dk = q.shape
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for t in range(L):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    return torch.stack(outs, dim=2)


def linear_attention_chunked(q, k, v, chunk=64, normalize=False, eps=1e-6):
    """Sum rule by chunks: O_c = Q_c S + tril(Q_c K_c^T) V_c, S += K_c^T V_c."""
    B, H, L, Dk = q.shape
    if normalize:
        v = torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], dim=-1)
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for start in range(0, L, chunk):
        Q, K, V = (t[:, :, start:start + chunk] for t in (q, k, v))
        scores = torch.tril(Q @ K.transpose(-1, -2))
        outs.append(Q @ S + scores @ V)
        S = S + K.transpose(-1, -2) @ V
    o = torch.cat(outs, dim=2)
    if normalize:
        o = o[..., :-1] / (o[..., -1:] + eps)
    return o


def delta_rule_recurrent(q, k, v, beta):
    """Delta rule one token at a time: S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T."""
    B, H, L, Dk = q.shape
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for t in range(L):
        kt = k[:, :, t]
        vbar = torch.einsum("bhkv,bhk->bhv", S, kt)
        u = beta[:, :, t, None] * (v[:, :, t] - vbar)
        S = S + kt[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    return torch.stack(outs, dim=2)


def delta_rule_chunked(q, k, v, beta, chunk=64):
    """Delta rule by chunks (WY/UT transform, Yang et al. 2024):
    T = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta), W = T K, U = T V,
    U' = U - W S, O = Q S + tril(Q K^T) U', S += K^T U'."""
    B, H, L, Dk = q.shape
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for start in range(0, L, chunk):
        Q, K, V = (t[:, :, start:start + chunk] for t in (q, k, v))
        b = beta[:, :, start:start + chunk]
        C = Q.shape[2]
        eye = torch.eye(C, dtype=q.dtype, device=q.device)
        A = eye + torch.tril(b[..., :, None] * (K @ K.transpose(-1, -2)), diagonal=-1)
        W = torch.linalg.solve_triangular(A, b[..., None] * K, upper=False, unitriangular=True)
        U = torch.linalg.solve_triangular(A, b[..., None] * V, upper=False, unitriangular=True)
        U = U - W @ S
        outs.append(Q @ S + torch.tril(Q @ K.transpose(-1, -2)) @ U)
        S = S + K.transpose(-1, -2) @ U
    return torch.cat(outs, dim=2)


def _leaf(a, dev):
    return torch.from_numpy(np.ascontiguousarray(a)).to(dev).requires_grad_(True)


def fast_weight_case(rule, form, arrays, device="cpu"):
    """Forward + backward of one fast-weight rule; ``arrays`` = NumPy q, k, v, beta, do."""
    dev = _device(device)
    q, k, v, beta = (_leaf(arrays[n], dev) for n in ("q", "k", "v", "beta"))
    do = torch.from_numpy(arrays["do"]).to(dev)
    fn = {("sum", "recurrent"): lambda: linear_attention_recurrent(q, k, v),
          ("sum", "chunked"): lambda: linear_attention_chunked(q, k, v),
          ("delta", "recurrent"): lambda: delta_rule_recurrent(q, k, v, beta),
          ("delta", "chunked"): lambda: delta_rule_chunked(q, k, v, beta)}[(rule, form)]

    def step():
        for t in (q, k, v, beta):
            t.grad = None
        fn().backward(do)
    return step


# -------------------------------------------------------------------------------------- kernels
def attention_case(arrays, device="cpu"):
    dev = _device(device)
    q, k, v = (_leaf(arrays[n], dev) for n in ("q", "k", "v"))
    do = torch.from_numpy(arrays["do"]).to(dev)

    def step():
        for t in (q, k, v):
            t.grad = None
        TF.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)
    return step


def norm_case(kind, x, dy, device="cpu"):
    dev = _device(device)
    xt = _leaf(x, dev)
    d = x.shape[-1]
    w = torch.ones(d, device=dev, requires_grad=True)
    b = torch.zeros(d, device=dev, requires_grad=True)
    dyt = torch.from_numpy(dy).to(dev)

    def step():
        for t in (xt, w, b):
            t.grad = None
        if kind == "layer":
            y = TF.layer_norm(xt, (d,), w, b, eps=1e-5)
        else:
            y = TF.rms_norm(xt, (d,), w, eps=1e-6)
        y.backward(dyt)
    return step


def cross_entropy_case(logits, target, device="cpu"):
    dev = _device(device)
    lt = _leaf(logits, dev)
    tt = torch.from_numpy(target).to(dev)

    def step():
        lt.grad = None
        TF.cross_entropy(lt, tt).backward()
    return step


def adam_case(n, decoupled, device="cpu"):
    dev = _device(device)
    g = torch.Generator().manual_seed(0)
    p = torch.randn(n, generator=g).to(dev).requires_grad_(True)
    p.grad = torch.randn(n, generator=g).to(dev) * 1e-3
    opt = (torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01) if decoupled
           else torch.optim.Adam([p], lr=1e-3))
    return opt.step


__all__ = ["set_threads", "cuda_sync", "GPT", "gpt_step_case", "fast_weight_case",
           "attention_case", "norm_case", "cross_entropy_case", "adam_case",
           "linear_attention_recurrent", "linear_attention_chunked", "delta_rule_recurrent",
           "delta_rule_chunked", "dpfp", "sum_normalize"]
