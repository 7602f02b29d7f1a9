"""A GPT written "the obvious way" with tinyfw's public API, for W1u and W1L.

This is the model a learner writes after reading nanoGPT: one ``Linear(d, 3d)`` for q, k and v,
``split`` + ``reshape`` + ``transpose`` into heads, ``F.scaled_dot_product_attention``, the heads
merged back with ``transpose`` + ``reshape``, an output ``Linear``; a GELU MLP; pre-norm blocks;
token + position embeddings; a final LayerNorm and a head; ``F.cross_entropy``; AdamW. It uses
none of tinyfw's own building blocks (``nn.LanguageModel``, ``nn.CausalSelfAttention`` and the
packed attention Function behind them), so W1u against W1 shows what the built-in model's
shortcuts are worth, and W1u against PyTorch what a user of either library gets.

Its PyTorch twin, line for line, is ``GPT`` in ``bench/torch_peers.py`` (with mixer 'softmax'):
the same layers, the same split/view/transpose, the same initialisation (N(0, 0.02) for every
matrix, zero biases, LayerNorm's ones and zeros).

    model = GPT(vocab_size=65, context_length=64, n_layers=4, n_heads=4, d_model=128)
    loss = model(x, y)                  # x, y (B, T) int64 -> mean cross-entropy
"""
import tinyfw as fw
import tinyfw.nn as nn
import tinyfw.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        H = self.n_heads
        q = q.reshape(B, T, H, C // H).transpose(1, 2)      # (B, H, T, Dh)
        k = k.reshape(B, T, H, C // H).transpose(1, 2)
        v = v.reshape(B, T, H, C // H).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)              # heads side by side again
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, context_length, n_layers, n_heads, d_model):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.tok_emb(ids) + self.pos_emb(fw.arange(T))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits, targets)


def train_step(cfg, ids, lr=1e-3, weight_decay=0.01):
    """One AdamW step of ``GPT(**cfg)`` on ``ids`` (B, T + 1) int64 (NumPy): the inputs are the
    first T tokens, the targets the last T. Returns the step as a zero-argument callable."""
    fw.manual_seed(0)
    model = GPT(cfg["vocab_size"], cfg["context_length"], cfg["n_layers"], cfg["n_heads"],
                cfg["d_model"])
    opt = fw.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    x = fw.tensor(ids[:, :-1].copy())
    y = fw.tensor(ids[:, 1:].copy())

    def step():
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return step
