"""LoRA adapters (tinyfw.nn.lora), freezing and gradual unfreezing (tinyfw.nn.freezing), the
classification head (tinyfw.nn.classifier) and Optimizer.add_param_group."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw import nn
from tinyfw.optim import SGD, Adam, AdamW


def small_lm(seed=0, **kw):
    fw.manual_seed(seed)
    cfg = dict(vocab_size=11, context_length=12, n_layers=2, n_heads=2, d_model=8)
    cfg.update(kw)
    return nn.LanguageModel(nn.ModelConfig(**cfg))


def ids(batch=2, steps=6, vocab=11, seed=0):
    return fw.tensor(np.random.default_rng(seed).integers(0, vocab, (batch, steps)))


def randomize_b(layer, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    nn.init.copy_(layer.lora_b, scale * rng.standard_normal(layer.lora_b.shape))


# ------------------------------------------------------------------------------ LoRALinear
def test_lora_linear_gradcheck_input_a_and_b():
    fw.manual_seed(0)
    layer = nn.LoRALinear(nn.Linear(5, 4), rank=2, alpha=3.0).double()
    randomize_b(layer)                      # B = 0 would make the gradient of A trivially 0
    x = fw.tensor(np.random.default_rng(2).standard_normal((3, 5)), requires_grad=True)
    a, b = layer.lora_a, layer.lora_b
    assert a.dtype == np.float64 and a.shape == (2, 5) and b.shape == (4, 2)
    assert fw.gradcheck(lambda x, a, b: layer(x), (x, a, b))


def test_lora_linear_matches_its_formula_and_scales_by_alpha_over_rank():
    fw.manual_seed(0)
    base = nn.Linear(6, 5).double()
    layer = nn.LoRALinear(base, rank=3, alpha=6.0)
    randomize_b(layer)
    x = np.random.default_rng(3).standard_normal((4, 6))
    W, bias = base.weight.numpy(), base.bias.numpy()
    A, B = layer.lora_a.numpy(), layer.lora_b.numpy()
    expected = x @ W.T + bias + 2.0 * (x @ A.T) @ B.T
    np.testing.assert_allclose(layer(fw.tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-12)
    assert layer.scaling == 2.0
    assert nn.LoRALinear(nn.Linear(6, 5), rank=4).scaling == 1.0       # alpha defaults to rank


def test_lora_linear_starts_as_its_base_and_freezes_it():
    fw.manual_seed(0)
    base = nn.Linear(7, 3)
    x = fw.tensor(np.random.default_rng(0).standard_normal((2, 4, 7)).astype(np.float32))
    before = base(x).numpy()
    layer = nn.LoRALinear(base, rank=2)
    assert not layer.lora_b.numpy().any() and layer.lora_a.numpy().any()
    np.testing.assert_array_equal(layer(x).numpy(), before)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.weight is base.weight and layer.bias is base.bias
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_a", "lora_b"]


def test_merge_unmerge_round_trip_and_merged_output():
    fw.manual_seed(0)
    layer = nn.LoRALinear(nn.Linear(6, 4).double(), rank=2, alpha=4.0)
    randomize_b(layer)
    x = fw.tensor(np.random.default_rng(1).standard_normal((3, 6)))
    w0 = layer.base.weight.numpy().copy()
    y = layer(x).numpy()
    layer.merge()
    assert layer.merged
    np.testing.assert_allclose(layer.base.weight.numpy(),
                               w0 + 2.0 * layer.lora_b.numpy() @ layer.lora_a.numpy(), rtol=1e-14)
    assert not np.allclose(layer.base.weight.numpy(), w0)
    np.testing.assert_allclose(layer(x).numpy(), y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.base(x).numpy(), y, rtol=1e-12, atol=1e-13)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    layer.unmerge()
    np.testing.assert_allclose(layer.base.weight.numpy(), w0, rtol=0, atol=4e-16)
    np.testing.assert_allclose(layer(x).numpy(), y, rtol=1e-12, atol=1e-13)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


def test_merged_float32_round_trip_is_within_rounding():
    fw.manual_seed(0)
    layer = nn.LoRALinear(nn.Linear(16, 16), rank=4)
    randomize_b(layer)
    w0 = layer.base.weight.numpy().copy()
    layer.merge().unmerge()
    assert layer.base.weight.dtype == np.float32
    np.testing.assert_allclose(layer.base.weight.numpy(), w0, rtol=0, atol=2e-7)


@pytest.mark.parametrize("rank, message", [(0, "rank=0"), (-1, "rank=-1"), (2.0, "rank=2.0"),
                                           (5, "rank=5 exceeds min\\(in_features=6, "
                                               "out_features=4\\) = 4")])
def test_lora_linear_rejects_bad_ranks(rank, message):
    with pytest.raises(ValueError, match=message):
        nn.LoRALinear(nn.Linear(6, 4), rank=rank)


def test_lora_linear_rejects_non_linear_and_bad_alpha():
    with pytest.raises(TypeError, match="LoRALinear: base must be a tinyfw.nn.Linear, got GELU"):
        nn.LoRALinear(nn.GELU(), rank=1)
    with pytest.raises(ValueError, match="alpha=0"):
        nn.LoRALinear(nn.Linear(4, 4), rank=2, alpha=0)


# ------------------------------------------------------------------------------ apply_lora
def test_wrapped_model_equals_base_at_init_and_only_adapters_train():
    model = small_lm()
    x = ids()
    before = model(x).numpy()
    wrapped = nn.apply_lora(model, ["blocks.*.mixer.qkv", "blocks.*.mlp.*"], rank=2)
    assert wrapped == ["blocks.0.mixer.qkv", "blocks.0.mlp.fc", "blocks.0.mlp.proj",
                       "blocks.1.mixer.qkv", "blocks.1.mlp.fc", "blocks.1.mlp.proj"]
    np.testing.assert_array_equal(model(x).numpy(), before)
    assert [type(b).__name__ for b in model.blocks] == ["Block", "Block"]   # order kept
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"{w}.{ab}" for w in wrapped for ab in ("lora_a", "lora_b")]
    counts = nn.count_parameters(model)
    # qkv 8 -> 24, fc 8 -> 32, proj 32 -> 8; rank 2: 2 (in + out) each, in 2 blocks
    assert counts["trainable"] == 2 * 2 * ((8 + 24) + (8 + 32) + (32 + 8))
    assert counts["total"] == counts["trainable"] + counts["frozen"]
    assert nn.lora_layers(model)[0][0] == "blocks.0.mixer.qkv"


def test_frozen_parameters_do_not_change_under_optimizer_steps_while_adapters_do():
    model = small_lm()
    nn.apply_lora(model, "blocks.*.mixer.*", rank=2)
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.numpy().copy() for n, p in model.named_parameters() if p.requires_grad}
    opt = AdamW(nn.trainable_parameters(model), lr=1e-2, weight_decay=0.1)
    x, y = ids(seed=1), ids(seed=2)
    for _ in range(3):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        for n, p in model.named_parameters():
            assert (p.grad is None) == (n in frozen), n
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            np.testing.assert_array_equal(p.numpy(), frozen[n], err_msg=n)
        else:
            assert not np.array_equal(p.numpy(), adapters[n]), n


def test_merge_lora_on_a_model_keeps_its_output():
    model = small_lm().double()
    nn.apply_lora(model, ["blocks.*.mlp.fc", "head"], rank=3, alpha=6)
    for i, (_, layer) in enumerate(nn.lora_layers(model)):
        randomize_b(layer, seed=i)
    x = ids()
    y = model(x).numpy()
    assert nn.merge_lora(model) == ["blocks.0.mlp.fc", "blocks.1.mlp.fc", "head"]
    np.testing.assert_allclose(model(x).numpy(), y, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="already merged"):
        nn.merge_lora(model)
    nn.unmerge_lora(model)
    np.testing.assert_allclose(model(x).numpy(), y, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="not merged"):
        nn.unmerge_lora(model)


def test_apply_lora_bad_input_names_the_pattern_layer_and_value():
    model = small_lm()
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="pattern 'blocks.*.attn' matches no module"):
        nn.apply_lora(model, ["blocks.*.mlp.fc", "blocks.*.attn"], rank=2)
    with pytest.raises(TypeError, match="pattern 'blocks.0.norm1' matches no Linear layer, only "
                                        "'blocks.0.norm1' \\(LayerNorm\\)"):
        nn.apply_lora(model, "blocks.0.norm1", rank=2)
    with pytest.raises(ValueError, match="layer 'blocks.0.mixer.qkv': rank=9 exceeds"):
        nn.apply_lora(model, "blocks.0.mixer.qkv", rank=9)
    with pytest.raises(ValueError, match="apply_lora: rank must be an integer >= 1, got rank=0"):
        nn.apply_lora(model, "head", rank=0)
    with pytest.raises(ValueError, match="patterns must be non-empty strings"):
        nn.apply_lora(model, [], rank=1)
    # nothing was changed by the failed calls
    assert [n for n, _ in model.named_parameters()] == names
    assert all(p.requires_grad for p in model.parameters())
    nn.apply_lora(model, "blocks.0.mlp.fc", rank=2)
    with pytest.raises(ValueError, match="layer 'blocks.0.mlp.fc' .* already has a LoRA adapter"):
        nn.apply_lora(model, "blocks.0.mlp.fc", rank=2)
    with pytest.raises(ValueError, match="layer 'blocks.0.mlp.fc.base' .* already has"):
        nn.apply_lora(model, "*.fc.base", rank=2)


def test_second_apply_lora_keeps_the_first_adapters_trainable():
    model = small_lm()
    nn.apply_lora(model, "blocks.0.mlp.fc", rank=2)
    nn.apply_lora(model, "blocks.1.mlp.fc", rank=2)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "blocks.0.mlp.fc.lora_a", "blocks.0.mlp.fc.lora_b",
        "blocks.1.mlp.fc.lora_a", "blocks.1.mlp.fc.lora_b"]


# ------------------------------------------------------------------------------ freezing
def test_freeze_and_unfreeze_by_name():
    model = small_lm()
    frozen = nn.freeze(model, ["blocks.0", "tok_emb"])
    assert frozen and all(n.startswith(("blocks.0.", "tok_emb.")) for n in frozen)
    assert "blocks.0.mlp.fc.weight" in frozen and "tok_emb.weight" in frozen
    assert not any(n.startswith("blocks.1") for n in frozen)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(frozen)
    assert nn.count_parameters(model)["frozen"] == sum(
        p.numel() for n, p in model.named_parameters() if n in frozen)
    assert nn.unfreeze(model, "blocks.0.*.weight") == [n for n in frozen if
                                                       n.startswith("blocks.0.")
                                                       and n.endswith(".weight")]
    with pytest.raises(ValueError, match="freeze: pattern 'block.0' matches no parameter"):
        nn.freeze(model, "block.0")
    with pytest.raises(ValueError, match="unfreeze: pattern 'nothing' matches no parameter"):
        nn.unfreeze(model, "nothing")
    assert len(nn.trainable_parameters(nn.freeze(model) and model)) == 0
    with pytest.raises(TypeError, match="requires_grad=True"):
        Adam(model.parameters())                         # optimizers refuse frozen parameters


def test_gradual_unfreezing_schedule_from_the_top_down():
    clf = nn.SequenceClassifier(small_lm(), n_classes=3)
    groups = clf.layer_groups()
    assert groups == [["classifier", "body.norm_f"], ["body.blocks.1"], ["body.blocks.0"],
                      ["body.tok_emb", "body.pos_emb"]]
    opt = SGD(clf.classifier.parameters(), lr=0.1)
    schedule = nn.GradualUnfreezing(clf, groups, every=2, optimizer=opt)

    def trainable_tops():
        return sorted({".".join(n.split(".")[:3]) if n.startswith("body.blocks")
                       else ".".join(n.split(".")[:2]) if n.startswith("body") else
                       n.split(".")[0] for n, p in clf.named_parameters() if p.requires_grad})

    assert trainable_tops() == ["body.norm_f", "classifier"]
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]      # the norm_f added
    seen = []
    for step in range(1, 8):
        new = schedule.step()
        seen.append((step, sorted({n.split(".")[1] + (n.split(".")[2] if "blocks" in n else "")
                                   for n in new})))
    assert seen == [(1, []), (2, ["blocks1"]), (3, []), (4, ["blocks0"]), (5, []),
                    (6, ["pos_emb", "tok_emb"]), (7, [])]
    assert all(p.requires_grad for p in clf.parameters())
    assert schedule.group_unfrozen_at(3) == 6
    # every parameter is in the optimizer exactly once
    in_opt = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(in_opt) == sorted(id(p) for p in clf.parameters())


def test_gradual_unfreezing_trains_only_unfrozen_groups():
    clf = nn.SequenceClassifier(small_lm(), n_classes=2, pooling="mean")
    opt = Adam(clf.classifier.parameters(), lr=1e-2)
    schedule = nn.GradualUnfreezing(clf, clf.layer_groups(), every=1, optimizer=opt)
    x, labels = ids(batch=4), fw.tensor(np.array([0, 1, 1, 0]))
    block0 = clf.body.blocks[0].mlp.fc.weight.numpy().copy()
    block1 = clf.body.blocks[1].mlp.fc.weight.numpy().copy()
    for step in range(2):                 # step 0: top group; step 1: + blocks.1
        loss = fw.ops.nn.cross_entropy(clf(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    assert not np.array_equal(clf.body.blocks[1].mlp.fc.weight.numpy(), block1)
    np.testing.assert_array_equal(clf.body.blocks[0].mlp.fc.weight.numpy(), block0)


def test_gradual_unfreezing_bad_input():
    model = small_lm()
    with pytest.raises(ValueError, match="every must be an integer >= 1, got every=0"):
        nn.GradualUnfreezing(model, ["head"], every=0)
    with pytest.raises(ValueError, match="groups is empty"):
        nn.GradualUnfreezing(model, [], every=1)
    with pytest.raises(ValueError, match="group 1: pattern 'blocks.7' matches no parameter"):
        nn.GradualUnfreezing(model, ["head", "blocks.7"], every=1)


def test_add_param_group_uses_defaults_and_rejects_duplicates():
    a = nn.Parameter(fw.tensor(np.ones(3)))
    b = nn.Parameter(fw.tensor(np.ones(2)))
    opt = Adam([a], lr=0.5)
    opt.add_param_group({"params": [b], "lr": 0.1})
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    (a.sum() + b.sum()).backward()
    opt.step()
    np.testing.assert_allclose(a.numpy(), 0.5)          # Adam's first step moves by lr
    np.testing.assert_allclose(b.numpy(), 0.9)
    with pytest.raises(ValueError, match="already in this optimizer"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match="add_param_group: every parameter"):
        opt.add_param_group({"params": [fw.tensor(np.ones(2))]})
    assert len(opt.state_dict()["param_groups"]) == 2


# ------------------------------------------------------------------------------ classifier
def test_pooling_values_against_a_hand_computation():
    hidden = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    h = fw.tensor(hidden)
    lengths = np.array([2, 4])
    last = nn.classifier.pool(h, lengths, "last").numpy()
    assert last.shape == (2, 3)
    np.testing.assert_array_equal(last, [hidden[0, 1], hidden[1, 3]])
    mean = nn.classifier.pool(h, lengths, "mean").numpy()
    assert mean.shape == (2, 3)
    np.testing.assert_allclose(mean, [(hidden[0, 0] + hidden[0, 1]) / 2,
                                      hidden[1].sum(0) / 4])
    np.testing.assert_allclose(mean[0], [1.5, 2.5, 3.5])     # ([0, 1, 2] + [3, 4, 5]) / 2


def test_pooling_gradcheck():
    x = fw.tensor(np.random.default_rng(0).standard_normal((2, 3, 2)), requires_grad=True)
    for mode in nn.POOLINGS:
        assert fw.gradcheck(lambda h: nn.classifier.pool(h, [3, 1], mode), (x,))


@pytest.mark.parametrize("pooling", nn.POOLINGS)
def test_classifier_scores_and_padding_does_not_leak(pooling):
    lm = small_lm()
    clf = nn.SequenceClassifier(lm, n_classes=3, pooling=pooling)
    assert isinstance(lm.head, nn.Identity) and clf.width == 8
    a = np.array([[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 10]])
    b = a.copy()
    b[0, 4:] = [7, 7]                           # other padding after the first row's 4 tokens
    lengths = np.array([4, 6])
    sa, sb = clf(a, lengths).numpy(), clf(b, lengths).numpy()
    assert sa.shape == (2, 3)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    # by hand: the pooled final hidden states of the LM through the classifier Linear
    hidden = lm(fw.tensor(a)).numpy()
    pooled = hidden[0, 3] if pooling == "last" else hidden[0, :4].mean(0)
    W, bias = clf.classifier.weight.numpy(), clf.classifier.bias.numpy()
    np.testing.assert_allclose(sa[0], pooled @ W.T + bias, rtol=1e-5, atol=1e-6)
    alone = clf(a[:1, :4]).numpy()              # the first row unpadded, default lengths
    np.testing.assert_allclose(alone[0], sa[0], rtol=1e-5, atol=1e-6)


def test_classifier_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="pooling='max' is not one of \\('last', 'mean'\\)"):
        nn.SequenceClassifier(small_lm(), 3, pooling="max")
    with pytest.raises(ValueError, match="pool: pooling='first'"):
        nn.classifier.pool(fw.tensor(np.zeros((1, 2, 3))), [1], "first")
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2, got n_classes=1"):
        nn.SequenceClassifier(small_lm(), 1)
    with pytest.raises(TypeError, match="needs an output layer 'head' .* got none"):
        nn.SequenceClassifier(nn.Sequential(nn.Linear(3, 3)), 2)
    clf = nn.SequenceClassifier(small_lm(), 2)
    with pytest.raises(TypeError, match="got Identity"):        # taken over already
        nn.SequenceClassifier(clf.body, 2)
    with pytest.raises(ValueError, match="lengths must be in 1..5 .* got min 0 max 5"):
        clf(np.zeros((2, 5), dtype=np.int64), np.array([0, 5]))
    with pytest.raises(ValueError, match="lengths must be 2 integers"):
        clf(np.zeros((2, 5), dtype=np.int64), np.array([1.0, 5.0]))
