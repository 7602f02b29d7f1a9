"""GPT-2 in Hugging Face's layout: LanguageModel.from_pretrained / save_pretrained.

Without torch: a GPT-2 folder written here (Hugging Face's names, Conv1D layout, mask buffers)
against a NumPy GPT-2 written from the paper's equations, round trips, and every bad folder.
With transformers (``pip install tinyfw[hf]``): logits against ``GPT2LMHeadModel`` built from a
small random ``GPT2Config`` (nothing downloaded), in both directions.
"""
import json
import math
import os

import numpy as np
import pytest

import tinyfw as fw
from tinyfw import safetensors as st
from tinyfw.nn.models import LanguageModel, ModelConfig

V, P, D, H, LAYERS = 37, 16, 24, 3, 2


# ------------------------------------------------------------------- a GPT-2 folder, by hand
def hf_weights(rng, n_layers=LAYERS, inner=4 * D, vocab=V, dtype=np.float64):
    """Random weights under Hugging Face's GPT-2 names (no prefix), Conv1D matrices (in, out)."""
    def r(*shape, scale=0.3):
        return (scale * rng.standard_normal(shape)).astype(dtype)
    w = {"wte.weight": r(vocab, D), "wpe.weight": r(P, D), "ln_f.weight": 1 + r(D),
         "ln_f.bias": r(D)}
    for i in range(n_layers):
        w.update({f"h.{i}.ln_1.weight": 1 + r(D), f"h.{i}.ln_1.bias": r(D),
                  f"h.{i}.attn.c_attn.weight": r(D, 3 * D), f"h.{i}.attn.c_attn.bias": r(3 * D),
                  f"h.{i}.attn.c_proj.weight": r(D, D), f"h.{i}.attn.c_proj.bias": r(D),
                  f"h.{i}.ln_2.weight": 1 + r(D), f"h.{i}.ln_2.bias": r(D),
                  f"h.{i}.mlp.c_fc.weight": r(D, inner), f"h.{i}.mlp.c_fc.bias": r(inner),
                  f"h.{i}.mlp.c_proj.weight": r(inner, D), f"h.{i}.mlp.c_proj.bias": r(D)})
    return w


def hf_config(**overrides):
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V,
              "n_positions": P, "n_embd": D, "n_layer": LAYERS, "n_head": H, "n_inner": None,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "tie_word_embeddings": True, "resid_pdrop": 0.1}
    config.update(overrides)
    return config


def write_folder(folder, weights, config):
    os.makedirs(folder, exist_ok=True)
    st.save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return folder


def numpy_gpt2(w, ids, n_layers=LAYERS, eps=1e-5, gelu="tanh"):
    """GPT-2's forward pass on Hugging Face's weights (Radford et al., 2019), in float64."""
    def layer_norm(x, g, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b

    def act(x):
        if gelu == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        from scipy.special import erf
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    B, T = ids.shape
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = np.tril(np.ones((T, T), bool))
    for i in range(n_layers):
        g = lambda n: w[f"h.{i}.{n}"]  # noqa: E731
        h = layer_norm(x, g("ln_1.weight"), g("ln_1.bias"))
        qkv = h @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = (a.reshape(B, T, H, D // H).transpose(0, 2, 1, 3)
                   for a in np.split(qkv, 3, axis=-1))
        s = np.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // H), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        y = (p / p.sum(-1, keepdims=True)) @ v
        x = x + y.transpose(0, 2, 1, 3).reshape(B, T, D) @ g("attn.c_proj.weight") \
            + g("attn.c_proj.bias")
        h = layer_norm(x, g("ln_2.weight"), g("ln_2.bias"))
        x = x + act(h @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias")) @ g("mlp.c_proj.weight") \
            + g("mlp.c_proj.bias")
    return layer_norm(x, w["ln_f.weight"], w["ln_f.bias"]) @ w.get("lm_head.weight",
                                                                    w["wte.weight"]).T


IDS = np.random.default_rng(1).integers(0, V, size=(2, 11))


def test_hand_written_folder_matches_numpy_gpt2(tmp_path):
    rng = np.random.default_rng(0)
    w = hf_weights(rng)
    stored = {("transformer." + k if i % 2 else k): v for i, (k, v) in enumerate(w.items())}
    for i in range(LAYERS):             # the causal-mask buffers of older files are skipped
        stored[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, P, P), np.uint8)).astype(bool)
        stored[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    stored["lm_head.weight"] = w["wte.weight"]          # tied and stored anyway
    folder = write_folder(tmp_path / "gpt2", stored, hf_config())
    model = LanguageModel.from_pretrained(folder, dtype=fw.float64)
    assert not model.training and model.head.weight is model.tok_emb.weight
    assert model.config.activation == "gelu_new" and model.config.dropout == 0.0
    np.testing.assert_allclose(model(fw.tensor(IDS)).numpy(), numpy_gpt2(w, IDS), rtol=0,
                               atol=1e-9)
    model32 = LanguageModel.from_pretrained(folder)
    assert all(p.dtype == fw.float32 for p in model32.parameters())
    np.testing.assert_allclose(model32(fw.tensor(IDS)).numpy(), numpy_gpt2(w, IDS), rtol=0,
                               atol=1e-4)


def test_untied_head_erf_gelu_wider_mlp_and_eps(tmp_path):
    rng = np.random.default_rng(2)
    w = hf_weights(rng, inner=2 * D)
    w["lm_head.weight"] = 0.3 * rng.standard_normal((V, D))
    folder = write_folder(tmp_path / "g", w, hf_config(
        tie_word_embeddings=False, activation_function="gelu", n_inner=2 * D,
        layer_norm_epsilon=1e-3))
    model = LanguageModel.from_pretrained(folder, dtype=np.float64, dropout=0.1)
    cfg = model.config
    assert (cfg.mlp_ratio, cfg.activation, cfg.norm_eps, cfg.tie_weights, cfg.dropout) == (
        2, "gelu", 1e-3, False, 0.1)
    assert model.head.weight is not model.tok_emb.weight
    np.testing.assert_allclose(model(fw.tensor(IDS)).numpy(),
                               numpy_gpt2(w, IDS, eps=1e-3, gelu="erf"), rtol=0, atol=1e-9)


def test_half_precision_files_load(tmp_path):
    w = hf_weights(np.random.default_rng(3), dtype=np.float32)
    folder = tmp_path / "h"
    write_folder(folder, w, hf_config())
    st.save_file(w, folder / "model.safetensors", dtypes={k: "BF16" for k in w})
    model = LanguageModel.from_pretrained(folder)
    bf16 = st.load_file(folder / "model.safetensors")
    np.testing.assert_array_equal(model.tok_emb.weight.numpy(), bf16["wte.weight"])
    np.testing.assert_array_equal(model.blocks[1].mlp.fc.weight.numpy(),
                                  bf16["h.1.mlp.c_fc.weight"].T)


@pytest.mark.parametrize("tie, activation, ratio, eps", [(True, "gelu_new", 4, None),
                                                         (False, "gelu", 3, 1e-6)])
def test_save_pretrained_round_trip(tmp_path, tie, activation, ratio, eps):
    fw.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=V, context_length=P, n_layers=LAYERS,
                                      n_heads=H, d_model=D, mlp_ratio=ratio, tie_weights=tie,
                                      activation=activation, norm_eps=eps, dropout=0.2))
    model.save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"] is tie
    assert config["n_inner"] == (None if ratio == 4 else ratio * D)
    assert config["resid_pdrop"] == 0.2 and config["bos_token_id"] is None
    keys = st.SafetensorsFile(tmp_path / "out" / "model.safetensors").keys()
    assert ("lm_head.weight" in keys) is not tie
    assert "transformer.h.1.attn.c_attn.weight" in keys
    back = LanguageModel.from_pretrained(tmp_path / "out", dropout=0.2)
    assert back.config == model.config if eps else back.config.norm_eps == 1e-5
    model.eval()
    np.testing.assert_array_equal(back(fw.tensor(IDS)).numpy(), model(fw.tensor(IDS)).numpy())
    assert list(back.state_dict()) == list(model.state_dict())   # same parameter order


def test_generate_with_kv_cache_on_a_loaded_model(tmp_path):
    folder = write_folder(tmp_path / "g", hf_weights(np.random.default_rng(4)), hf_config())
    model = LanguageModel.from_pretrained(folder, dtype=np.float64)
    prompt = fw.tensor(IDS[:1, :4])
    cached = model.generate(prompt, 8, temperature=0).numpy()
    rerun = model.generate(prompt, 8, temperature=0, use_state=False).numpy()
    np.testing.assert_array_equal(cached, rerun)
    assert cached.shape == (1, 12)


# ------------------------------------------------------------------------------- bad folders
def _folder(tmp_path, weights=None, **config):
    w = hf_weights(np.random.default_rng(5)) if weights is None else weights
    return write_folder(tmp_path / "bad", w, hf_config(**config))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        LanguageModel.from_pretrained(tmp_path / "nowhere")
    folder = _folder(tmp_path)
    os.remove(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing .*bad/model\.safetensors"):
        LanguageModel.from_pretrained(folder)
    os.remove(folder / "config.json")
    with pytest.raises(FileNotFoundError, match=r"missing .*bad/config\.json"):
        LanguageModel.from_pretrained(folder)


@pytest.mark.parametrize("config, message", [
    ({"model_type": "bert"}, r"config\.json: model_type: 'bert' is not 'gpt2'"),
    ({"architectures": ["GPT2ForSequenceClassification"]}, "config.json: architectures:"),
    ({"n_embd": None}, "config.json: n_embd: must be a positive integer, got None"),
    ({"n_head": 5}, "config.json: n_embd: 24 is not divisible by n_head=5"),
    ({"activation_function": "relu"}, "config.json: activation_function: 'relu' is not "
     "supported"),
    ({"n_inner": 50}, "config.json: n_inner: 50 is not a positive multiple of n_embd=24"),
    ({"layer_norm_epsilon": -1}, "config.json: layer_norm_epsilon: must be a positive"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx: True is not "
     "supported"),
    ({"add_cross_attention": True}, "add_cross_attention"),
])
def test_config_of_another_architecture(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        LanguageModel.from_pretrained(_folder(tmp_path, **config))


def test_config_missing_key_and_bad_json(tmp_path):
    folder = _folder(tmp_path)
    config = hf_config()
    del config["n_layer"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: n_layer: missing"):
        LanguageModel.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        LanguageModel.from_pretrained(folder)


def test_weights_that_disagree_with_the_config(tmp_path):
    w = hf_weights(np.random.default_rng(6))
    shape = dict(w, **{"h.1.attn.c_attn.weight": w["h.1.attn.c_attn.weight"][:, :D]})
    with pytest.raises(ValueError, match=r"model\.safetensors: h\.1\.attn\.c_attn\.weight: shape "
                       r"\[24, 24\] disagrees with the config .* calls for \[24, 72\]"):
        LanguageModel.from_pretrained(_folder(tmp_path, shape))
    missing = {k: v for k, v in w.items() if k != "h.0.ln_2.bias"}
    with pytest.raises(ValueError, match=r"h\.0\.ln_2\.bias: missing"):
        LanguageModel.from_pretrained(_folder(tmp_path, missing))
    with pytest.raises(ValueError, match=r"h\.2\.ln_1\.weight: not a GPT-2 weight of this "
                       "config"):
        LanguageModel.from_pretrained(_folder(tmp_path, dict(w, **{"h.2.ln_1.weight": w[
            "ln_f.weight"]})))
    with pytest.raises(ValueError, match=r"wpe\.weight: stored twice \(also as "
                       r".transformer\.wpe\.weight.\)"):
        LanguageModel.from_pretrained(_folder(tmp_path, dict(w, **{
            "transformer.wpe.weight": w["wpe.weight"]})))
    with pytest.raises(ValueError, match=r"wte\.weight: dtype I64 is not a float type"):
        LanguageModel.from_pretrained(_folder(tmp_path, dict(w, **{
            "wte.weight": w["wte.weight"].astype(np.int64)})))
    with pytest.raises(ValueError, match=r"lm_head\.weight: differs from wte\.weight while the "
                       "config ties them"):
        LanguageModel.from_pretrained(_folder(tmp_path, dict(w, **{
            "lm_head.weight": w["wte.weight"] + 1})))
    with pytest.raises(ValueError, match=r"lm_head\.weight: missing"):
        LanguageModel.from_pretrained(_folder(tmp_path, w, tie_word_embeddings=False))


def test_truncated_weights_name_the_file(tmp_path):
    folder = _folder(tmp_path)
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[:len(raw) - 100])
    with pytest.raises(st.SafetensorsError, match=r"bad/model\.safetensors: tensor 'wte\.weight'"
                       ": .*run past the end"):
        LanguageModel.from_pretrained(folder)


def test_dtype_must_be_float32_or_float64(tmp_path):
    with pytest.raises(ValueError, match="from_pretrained: dtype must be float32 or float64, got "
                       "float16"):
        LanguageModel.from_pretrained(_folder(tmp_path), dtype=np.float16)


@pytest.mark.parametrize("setting, value", [("norm", "rms"), ("mixer", "linear"),
                                            ("positional", "none"), ("prenorm", False),
                                            ("bias", False)])
def test_save_pretrained_rejects_what_gpt2_cannot_express(tmp_path, setting, value):
    model = LanguageModel(ModelConfig(vocab_size=V, context_length=P, n_layers=1, n_heads=H,
                                      d_model=D, **{setting: value}))
    with pytest.raises(ValueError, match=f"save_pretrained: the Hugging Face GPT-2 layout has no "
                       f"{setting}={value!r}"):
        model.save_pretrained(tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_model_config_checks_activation_and_eps():
    with pytest.raises(ValueError, match=r"activation='relu' must be one of \('gelu', "
                       r"'gelu_new'\)"):
        ModelConfig(vocab_size=5, activation="relu")
    with pytest.raises(ValueError, match="norm_eps=0 must be a positive number or None"):
        ModelConfig(vocab_size=5, norm_eps=0)


# ------------------------------------------------------------------------- against transformers
def _hf_pair(tmp_path, tie=True, activation="gelu_new"):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=D, n_layer=LAYERS, n_head=H, n_positions=P,
                                     vocab_size=V, activation_function=activation,
                                     tie_word_embeddings=tie, bos_token_id=None,
                                     eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():                # move LayerNorm and biases off their 1s and 0s
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return torch, transformers, model


def _hf_logits(torch, model, ids):
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


@pytest.mark.parametrize("tie", [True, False])
def test_transformers_folder_to_tinyfw(tmp_path, tie):
    torch, transformers, hf = _hf_pair(tmp_path, tie=tie)
    hf.save_pretrained(tmp_path / "hf")
    for dtype, torch_dtype, atol in ((np.float64, torch.float64, 1e-9),
                                     (np.float32, torch.float32, 1e-4)):
        want = _hf_logits(torch, transformers.GPT2LMHeadModel.from_pretrained(
            tmp_path / "hf", dtype=torch_dtype).eval(), IDS)
        got = LanguageModel.from_pretrained(tmp_path / "hf", dtype=dtype)(fw.tensor(IDS))
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=atol)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
def test_tinyfw_save_pretrained_to_transformers(tmp_path, activation):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    fw.manual_seed(0)
    for dtype, torch_dtype, atol in ((np.float64, torch.float64, 1e-9),
                                     (np.float32, torch.float32, 1e-4)):
        model = LanguageModel(ModelConfig(vocab_size=V, context_length=P, n_layers=LAYERS,
                                          n_heads=H, d_model=D, tie_weights=True,
                                          activation=activation)).to(dtype=dtype).eval()
        for p in model.parameters():    # LayerNorm and biases away from 1 and 0
            p.data = p.data + 0.2 * np.random.default_rng(0).standard_normal(p.shape)
        model.save_pretrained(tmp_path / "tf")
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "tf", dtype=torch_dtype)
        np.testing.assert_allclose(_hf_logits(torch, hf.eval(), IDS),
                                   model(fw.tensor(IDS)).numpy(), rtol=0, atol=atol)


def test_old_style_file_without_prefix_and_with_mask_buffers(tmp_path):
    torch, _, hf = _hf_pair(tmp_path)
    state = {k[len("transformer."):] if k.startswith("transformer.") else k: v.numpy()
             for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(LAYERS):
        state[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, P, P), np.float32))
    folder = write_folder(tmp_path / "old", state, hf_config())
    got = LanguageModel.from_pretrained(folder, dtype=np.float64)(fw.tensor(IDS)).numpy()
    np.testing.assert_allclose(got, _hf_logits(torch, hf, IDS), rtol=0, atol=1e-9)


# ------------------------------------------------------------------- loading without an init
@pytest.mark.parametrize("dtype, tie", [(np.float32, True), (np.float64, False)])
def test_from_pretrained_draws_no_random_numbers_and_equals_the_saved_model(tmp_path, dtype,
                                                                            tie):
    fw.manual_seed(7)
    model = LanguageModel(ModelConfig(vocab_size=V, context_length=P, n_layers=LAYERS,
                                      n_heads=H, d_model=D, tie_weights=tie,
                                      activation="gelu_new"))
    model.save_pretrained(tmp_path / "m")
    fw.manual_seed(8)
    state = fw.random.get_rng_state()
    back = LanguageModel.from_pretrained(tmp_path / "m", dtype=dtype)
    assert fw.random.get_rng_state() == state          # skip_init: nothing drawn
    saved, loaded = model.state_dict(), back.state_dict()
    assert list(loaded) == list(saved)
    for name in saved:
        assert loaded[name].numpy().dtype == dtype, name
        np.testing.assert_array_equal(loaded[name].numpy(), saved[name].numpy().astype(dtype),
                                      err_msg=name)
    assert back.config.to_dict() == {**model.config.to_dict(), "norm_eps": 1e-5}
    assert (back.head.weight is back.tok_emb.weight) is tie
    assert back.tok_emb.num_embeddings == V and back.pos_emb.num_embeddings == P
