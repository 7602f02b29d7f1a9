"""GPT-2 on the command line: ``tinyfw sample --pretrained FOLDER`` and ``tinyfw train
--init-from FOLDER|CKPT``, on a tiny GPT-2 folder written here (a random ``LanguageModel`` with
GPT-2's tanh GELU saved by ``save_pretrained``, and a hand-made GPT-2 vocabulary), and every
bad input of both, each a one-line error that leaves OUT as it was."""
import json
import os
import shutil

import numpy as np
import pytest

import tinyfw as fw
from tinyfw.checkpoint import load_checkpoint
from tinyfw.cli import main
from tinyfw.data import GPT2Tokenizer
from tinyfw.data.gpt2_tokenizer import ENDOFTEXT, bytes_to_unicode
from tinyfw.nn.models import LanguageModel, ModelConfig
from tinyfw.sample import load_model, load_pretrained
from tinyfw.train import TrainConfig, train

B2U = bytes_to_unicode()
SP = B2U[ord(" ")]
# A GPT-2-style vocabulary: the 256 byte tokens, a few merges, then <|endoftext|> (266 ids).
MERGES = [(SP, "a"), ("a", "t"), (SP, "c"), (SP + "c", "at"), ("i", "s"), (SP, "is"),
          ("d", "o"), ("g", "."), (SP, "do")]
CONTEXT = 16
TEXT = "".join(f"a {w} is a {w}.\n" for w in ("cat", "dog", "bird", "fish")) * 60
SHORT = ["--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "0", "--quiet"]


def tiny_tokenizer():
    tokens = [B2U[b] for b in range(256)] + [a + b for a, b in MERGES] + [ENDOFTEXT]
    return GPT2Tokenizer({t: i for i, t in enumerate(tokens)}, MERGES)


def write_gpt2_folder(folder, vocab_size=None):
    """A tiny GPT-2 folder: config.json, model.safetensors, vocab.json, merges.txt."""
    tok = tiny_tokenizer()
    fw.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=vocab_size or tok.vocab_size,
                                      context_length=CONTEXT, n_layers=2, n_heads=2, d_model=16,
                                      tie_weights=True, activation="gelu_new"))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return write_gpt2_folder(tmp_path_factory.mktemp("gpt2") / "tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def greedy_text(model, tokenizer, ids, n):
    out = model.generate(fw.tensor(np.asarray([ids], dtype=np.int64)), n, temperature=0)
    return tokenizer.decode(out.numpy()[0].tolist())


def one_line_error(capsys, *fragments):
    """The command's stderr is one line holding every fragment, and no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ------------------------------------------------------------------------ sample --pretrained
def test_sample_pretrained_prints_the_models_greedy_text(gpt2_folder, capsys):
    assert main(["sample", "--pretrained", gpt2_folder, "--prompt", "a cat is",
                 "--max-new-tokens", "12", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    model = LanguageModel.from_pretrained(gpt2_folder)
    tok = GPT2Tokenizer.from_pretrained(gpt2_folder)
    expected = greedy_text(model, tok, tok.encode("a cat is"), 12)
    assert out == expected + ("" if expected.endswith("\n") else "\n")
    assert out.startswith("a cat is")


def test_sample_pretrained_empty_prompt_starts_from_endoftext(gpt2_folder, capsys):
    assert main(["sample", "--pretrained", gpt2_folder, "--max-new-tokens", "6",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    model, tok = load_pretrained(gpt2_folder)
    assert tok.eot_id == 265
    seq = model.generate(fw.tensor(np.asarray([[tok.eot_id]])), 6, temperature=0).numpy()[0]
    expected = tok.decode(seq[1:].tolist())             # the start token is not printed
    assert out == expected + ("" if expected.endswith("\n") else "\n")


def test_sample_pretrained_is_seeded_and_crops_a_long_prompt(gpt2_folder, capsys):
    prompt = TEXT[:60]                                  # more tokens than the 16 positions
    args = ["sample", "--pretrained", gpt2_folder, "--prompt", prompt, "--max-new-tokens", "5",
            "--seed", "3", "--top-p", "0.9"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "the model sees only the last 16" in first.err and first.out.startswith(prompt)
    assert main(args) == 0
    assert capsys.readouterr().out == first.out


def test_sample_pretrained_and_ckpt_exclude_each_other(gpt2_folder, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--pretrained", gpt2_folder, "--ckpt", "out/ckpt.npz"])
    assert e.value.code == 2
    assert "--ckpt: not allowed with argument --pretrained" in capsys.readouterr().err


def _broken(tmp_path, gpt2_folder, name, damage):
    folder = tmp_path / name
    shutil.copytree(gpt2_folder, folder)
    damage(folder)
    return str(folder)


def _set_config(folder, **values):
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    (folder / "config.json").write_text(json.dumps(config))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


BAD_FOLDERS = [
    ("no_config", lambda f: (f / "config.json").unlink(), ["config.json", "missing"]),
    ("no_weights", lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"]),
    ("llama", lambda f: _set_config(f, model_type="llama"), ["config.json", "model_type",
                                                              "'llama'"]),
    ("truncated", lambda f: _truncate(f / "model.safetensors"), ["model.safetensors",
                                                                 "truncated"]),
    ("no_vocab", lambda f: (f / "vocab.json").unlink(), ["vocab.json"]),
    ("no_merges", lambda f: (f / "merges.txt").unlink(), ["merges.txt"]),
    ("bad_vocab", lambda f: (f / "vocab.json").write_text("[1, 2]"), ["vocab.json"]),
]


@pytest.mark.parametrize("name, damage, fragments", BAD_FOLDERS, ids=[b[0] for b in BAD_FOLDERS])
def test_sample_pretrained_bad_folders(tmp_path, gpt2_folder, capsys, name, damage, fragments):
    folder = _broken(tmp_path, gpt2_folder, name, damage)
    assert main(["sample", "--pretrained", folder, "--prompt", "a"]) == 1
    one_line_error(capsys, "tinyfw sample: error:", *fragments)


def test_sample_pretrained_vocabulary_must_fit_the_model(tmp_path, capsys):
    folder = write_gpt2_folder(tmp_path / "v", vocab_size=300)   # 300 rows, 266 tokens
    assert main(["sample", "--pretrained", folder]) == 1
    one_line_error(capsys, folder, "the tokenizer has 266 ids but the model's vocab_size is 300")


def test_sample_pretrained_missing_folder(tmp_path, capsys):
    assert main(["sample", "--pretrained", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "--pretrained: no such folder", "nowhere")


# ------------------------------------------------------------------------- train --init-from
def _files(folder):
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, gpt2_folder, corpus):
    """Two steps of fine-tuning the tiny GPT-2 folder on the corpus, then two more resumed."""
    base = tmp_path_factory.mktemp("ft")
    out = str(base / "run")
    assert main(["train", "--init-from", gpt2_folder, "--data", corpus, "--out", out,
                 "--steps", "4", "--stop-after", "2", "--context", "8", "--dropout", "0.1",
                 *SHORT]) == 0
    after_two = load_checkpoint(os.path.join(out, "ckpt.npz"))
    assert main(["train", "--out", out, "--resume", "--quiet"]) == 0
    return out, after_two


def test_init_from_folder_records_the_model_and_the_tokenizer(finetuned, gpt2_folder):
    out, after_two = finetuned
    assert after_two["step"] == 2
    settings = after_two["model_config"]
    pretrained = LanguageModel.from_pretrained(gpt2_folder).config.to_dict()
    assert settings == {**pretrained, "dropout": 0.1}
    assert settings["activation"] == "gelu_new" and settings["norm_eps"] == 1e-5
    assert settings["context_length"] == CONTEXT           # the model keeps its positions
    tok = json.loads(after_two["tokenizer"])
    assert tok["kind"] == "gpt2" and tok == tiny_tokenizer().to_dict()
    cfg = after_two["train_config"]
    assert cfg["init_from"] == gpt2_folder and cfg["window"] == 8 and cfg["tokenizer"] == "gpt2"
    # the first evaluation (step 0) is the pretrained model's own loss
    assert after_two["history"]["eval_step"][0] == 0
    assert load_checkpoint(os.path.join(out, "ckpt.npz"))["step"] == 4


def test_init_from_starts_from_the_folders_weights(gpt2_folder, corpus, tmp_path):
    cfg = TrainConfig(init_from=gpt2_folder, data=corpus, out=str(tmp_path / "r"), steps=1,
                      batch_size=2, eval_iters=1, sample_tokens=0, window=8, lr=1e-12,
                      min_lr=0.0, weight_decay=0.0)
    result = train(cfg, quiet=True)
    pretrained = LanguageModel.from_pretrained(gpt2_folder).state_dict()
    for name, value in result["model"].state_dict().items():
        np.testing.assert_allclose(value.numpy(), pretrained[name].numpy(), atol=1e-6,
                                   err_msg=name)


def test_resumed_init_from_run_equals_a_straight_run(finetuned, gpt2_folder, corpus, tmp_path):
    out, _ = finetuned
    straight = str(tmp_path / "straight")
    assert main(["train", "--init-from", gpt2_folder, "--data", corpus, "--out", straight,
                 "--steps", "4", "--context", "8", "--dropout", "0.1", *SHORT]) == 0
    a = load_checkpoint(os.path.join(out, "ckpt.npz"))
    b = load_checkpoint(os.path.join(straight, "ckpt.npz"))
    assert a["step"] == b["step"] == 4
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name].numpy(), b["model"][name].numpy(),
                                      err_msg=name)


def test_sample_ckpt_rebuilds_the_finetuned_model(finetuned, capsys):
    out, _ = finetuned
    ckpt = os.path.join(out, "ckpt.npz")
    model, tok = load_model(ckpt)
    assert isinstance(tok, GPT2Tokenizer) and model.config.activation == "gelu_new"
    saved = load_checkpoint(ckpt)["model"]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), saved[name].numpy(), err_msg=name)
    assert main(["sample", "--ckpt", ckpt, "--prompt", "a dog", "--max-new-tokens", "8",
                 "--temperature", "0"]) == 0
    expected = greedy_text(model, tok, tok.encode("a dog"), 8)
    assert capsys.readouterr().out.rstrip("\n") == expected.rstrip("\n")


def test_init_from_a_checkpoint_keeps_weights_not_the_optimizer(corpus, tmp_path):
    first = str(tmp_path / "first")
    assert main(["train", "--data", corpus, "--out", first, "--steps", "3", "--n-layers", "1",
                 "--n-heads", "2", "--d-model", "16", "--context", "8", *SHORT]) == 0
    source = load_checkpoint(os.path.join(first, "ckpt.npz"))
    cfg = TrainConfig(init_from=os.path.join(first, "ckpt.npz"), data=corpus,
                      out=str(tmp_path / "second"), steps=1, batch_size=2, eval_iters=1,
                      sample_tokens=0)
    assert train(cfg, quiet=True, stop_after=0)["step"] == 0
    start = load_checkpoint(os.path.join(cfg.out, "ckpt.npz"))     # written before any step
    result = train(cfg, quiet=True)
    assert result["init_report"] == {"init_from": os.path.abspath(cfg.init_from)}
    second = load_checkpoint(os.path.join(cfg.out, "ckpt.npz"))
    assert start["step"] == 0 and second["step"] == 1              # a new run ...
    for name in source["model"]:                                   # ... from the weights
        np.testing.assert_array_equal(start["model"][name].numpy(),
                                      source["model"][name].numpy(), err_msg=name)
    # a fresh optimiser and schedule: one step taken, not the source's three plus one
    assert source["scheduler"]["last_step"] == 3 and second["scheduler"]["last_step"] == 1
    steps = {s["step"] for s in second["optimizer"]["state"].values() if "step" in s}
    assert steps <= {1}
    assert second["train_config"]["tokenizer"] == "char"
    assert second["train_config"]["window"] == 8                  # default: the model's context
    assert second["tokenizer"] == source["tokenizer"]
    assert second["model_config"] == source["model_config"]


# ------------------------------------------------------------------------- bad input of train
@pytest.fixture
def kept_out(tmp_path, corpus):
    """An OUT holding a finished earlier run; the test checks it is left byte for byte."""
    out = str(tmp_path / "kept")
    assert main(["train", "--data", corpus, "--out", out, "--steps", "2", "--n-layers", "1",
                 "--n-heads", "2", "--d-model", "16", "--context", "8", *SHORT]) == 0
    before = _files(out)
    yield out
    assert _files(out) == before


@pytest.mark.parametrize("flags, fragment", [
    (["--d-model", "32"], "--d-model sets the shape of a new model"),
    (["--n-layers", "3"], "--n-layers sets the shape"),
    (["--mixer", "linear"], "--mixer sets the shape"),
    (["--postnorm"], "--prenorm/--postnorm sets the shape"),
    (["--tie-weights"], "--tie-weights sets the shape"),
    (["--init", "cipher"], "--init cipher warm-starts a new model"),
    (["--tokenizer", "bpe"], "--tokenizer cannot be combined with --init-from"),
    (["--vocab-size", "300"], "--vocab-size cannot be combined with --init-from"),
    (["--model", "safu"], "--model cannot be combined with --init-from"),
    (["--resume"], "--resume continues OUT's own checkpoint"),
])
def test_init_from_rejects_flags_that_shape_a_new_model(gpt2_folder, corpus, kept_out, capsys,
                                                        flags, fragment):
    code = main(["train", "--init-from", gpt2_folder, "--data", corpus, "--out", kept_out,
                 "--steps", "2", *flags, *SHORT])
    assert code == 2
    one_line_error(capsys, "tinyfw train: error:", fragment)


def test_init_from_rejects_model_settings_in_a_config_file(gpt2_folder, corpus, kept_out,
                                                           tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"d_model": 32}}))
    assert main(["train", "--config", str(config), "--init-from", gpt2_folder, "--data", corpus,
                 "--out", kept_out, *SHORT]) == 2
    one_line_error(capsys, "['d_model'] shape a new model")


def test_init_from_context_longer_than_the_models(gpt2_folder, corpus, kept_out, capsys):
    assert main(["train", "--init-from", gpt2_folder, "--data", corpus, "--out", kept_out,
                 "--context", "17", *SHORT]) == 1
    one_line_error(capsys, "training window (--context / window) of 17 tokens",
                   "context_length of 16 tokens", gpt2_folder)


@pytest.mark.parametrize("name, damage, fragments", BAD_FOLDERS, ids=[b[0] for b in BAD_FOLDERS])
def test_init_from_bad_folders(tmp_path, gpt2_folder, corpus, kept_out, capsys, name, damage,
                               fragments):
    folder = _broken(tmp_path, gpt2_folder, name, damage)
    assert main(["train", "--init-from", folder, "--data", corpus, "--out", kept_out,
                 *SHORT]) == 1
    one_line_error(capsys, "tinyfw train: error:", *fragments)


def test_init_from_missing_path_and_bad_checkpoint(tmp_path, corpus, kept_out, capsys):
    assert main(["train", "--init-from", str(tmp_path / "nowhere"), "--data", corpus,
                 "--out", kept_out, *SHORT]) == 2
    one_line_error(capsys, "--init-from: no such file or folder", "nowhere")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint")
    assert main(["train", "--init-from", str(junk), "--data", corpus, "--out", kept_out,
                 *SHORT]) == 1
    one_line_error(capsys, str(junk), "not a tinyfw checkpoint")


def test_init_from_corpus_the_tokenizer_cannot_fill(gpt2_folder, tmp_path, kept_out, capsys):
    short = tmp_path / "short.txt"
    short.write_text("a cat", encoding="utf-8")
    assert main(["train", "--init-from", gpt2_folder, "--data", str(short), "--out", kept_out,
                 *SHORT]) == 1
    one_line_error(capsys, "context + 1 = 17")


def test_train_config_checks_of_init_from(gpt2_folder, corpus, tmp_path):
    with pytest.raises(ValueError, match="window=8 applies only with init_from"):
        TrainConfig(window=8)
    with pytest.raises(ValueError, match="init='cooc' .* init_from="):
        TrainConfig(init_from=gpt2_folder, init="cooc")
    with pytest.raises(ValueError, match="tokenizer='gpt2' must be one of"):
        TrainConfig(tokenizer="gpt2")
    cfg = TrainConfig(init_from=gpt2_folder, data=corpus, out=str(tmp_path / "x"),
                      model={"d_model": 32, "dropout": 0.2})
    with pytest.raises(ValueError, match="only the dropout may change.*d_model: the model has "
                       "16, the run asks for 32"):
        train(cfg, quiet=True)
    assert not (tmp_path / "x").exists()


def test_resume_of_a_finetuning_run_keeps_its_window(finetuned, capsys):
    out, _ = finetuned
    before = _files(out)
    assert main(["train", "--out", out, "--resume", "--steps", "6", "--context", "4",
                 "--quiet"]) == 1
    one_line_error(capsys, "trains on windows of 8 tokens (--context)", "change it to 4")
    assert _files(out) == before


def test_init_from_a_safu_checkpoint(corpus, tmp_path):
    first = str(tmp_path / "safu")
    assert main(["train", "--model", "safu", "--data", corpus, "--out", first, "--steps", "2",
                 "--context", "8", *SHORT]) == 0
    cfg = TrainConfig(init_from=os.path.join(first, "ckpt.npz"), data=corpus, window=12,
                      out=str(tmp_path / "tuned"), steps=1, batch_size=2, eval_iters=1,
                      sample_tokens=0)
    result = train(cfg, quiet=True)
    ckpt = load_checkpoint(os.path.join(cfg.out, "ckpt.npz"))
    source = load_checkpoint(os.path.join(first, "ckpt.npz"))
    assert ckpt["model_kind"] == "safu" and ckpt["train_config"]["model_kind"] == "safu"
    # a SAFU model reads any length: its context_length is the window it trains on
    assert ckpt["model_config"] == {**source["model_config"], "context_length": 12}
    assert result["step"] == 1 and load_model(os.path.join(cfg.out, "ckpt.npz"))[0] is not None


def test_sample_pretrained_equals_transformers_greedy_generation(tmp_path, capsys):
    """A folder written by transformers (random GPT2LMHeadModel, tiny vocabulary): the command's
    greedy text is the text of transformers' own greedy generation."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=CONTEXT, n_embd=16,
                                     n_layer=2, n_head=2, initializer_range=0.3,
                                     bos_token_id=tok.eot_id, eos_token_id=tok.eot_id)
    hf = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path / "hf"
    hf.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    prompt = "a cat is"
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eot_id,
                          attention_mask=torch.ones_like(ids))
    expected = tok.decode(out[0].tolist())
    assert main(["sample", "--pretrained", str(folder), "--prompt", prompt, "--max-new-tokens",
                 "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == expected.rstrip("\n")
