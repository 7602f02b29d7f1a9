"""The lights demo (demos/lights.py): its quick mode end to end, the generator's held-out split,
the vocabulary's unknown words and the warm start's shapes. No timings and no claims (such as
"warm beats random") are asserted: those are the demo's results, not properties of the code."""
import importlib.util
import json
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demos",
                     "lights.py")
_spec = importlib.util.spec_from_file_location("lights_demo", _PATH)
lights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lights)

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _check_stat(stat, n_values):
    assert set(stat) == {"mean", "std", "min", "max", "n"}
    assert stat["n"] == n_values
    assert 0.0 <= stat["min"] <= stat["mean"] <= stat["max"] <= 1.0
    assert stat["std"] >= 0.0


def test_quick_mode_writes_the_three_results(tmp_path):
    sizes = [25, 50]
    result = lights.main(["--quick", "--out", str(tmp_path), "--sizes", *map(str, sizes),
                          "--steps", "30", "--test", "120"])
    names = sorted(os.listdir(tmp_path))
    # no temporary files left; the plot only where matplotlib is installed (the 'plot' extra)
    assert names == ["lights.json", "lights.md"] + (["lights.png"] if HAVE_MATPLOTLIB else [])
    with open(tmp_path / "lights.json", encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["sizes"] == sizes and saved["arms"] == ["random", "warm", "warm+adam"]
    seeds = saved["settings"]["seeds"]
    assert seeds == 2 and saved["held_out"]["n"] == 120
    assert len(saved["runs"]) == len(sizes) * seeds * 3
    for run in saved["runs"]:
        assert 0.0 <= run["all"] <= 1.0
        assert run["n_known"] + run["n_unseen"] == 120
        for part in ("known", "unseen"):
            assert run[part] is None or 0.0 <= run[part] <= 1.0
        # the curve: the warm start is one point (step 0); Adam arms end at the last step
        steps = [int(k) for k in run["curve"]]
        assert steps == sorted(steps)
        if run["arm"] == "warm":
            assert steps == [0]
        else:
            assert steps[0] == 0 and steps[-1] == 30
        assert run["curve"][str(steps[-1])] == run["all"]
    for arm in saved["arms"]:
        assert sorted(saved["summary"][arm]) == sorted(map(str, sizes))
        for n in sizes:
            entry = saved["summary"][arm][str(n)]
            _check_stat(entry["all"], seeds)
            for part in ("known", "unseen"):
                if entry[part] is not None:
                    assert 1 <= entry[part]["n"] <= seeds
                    assert 0.0 <= entry[part]["mean"] <= 1.0
    deployed = saved["deployed_model"]
    assert deployed["parameters"] > 0 and deployed["checkpoint_bytes"] > 0
    assert deployed["weight_bytes"] == 4 * deployed["parameters"]               # float32
    assert deployed["inference"]["median_s"] > 0 and deployed["inference"]["calls"] == 40
    assert 0.0 <= deployed["held_out_accuracy"] <= 1.0
    assert saved == json.loads(json.dumps(result))
    text = (tmp_path / "lights.md").read_text(encoding="utf-8")
    for n in sizes:
        assert f"\n| {n} | " in text
    assert "parameters" in text and "checkpoint file" in text
    if HAVE_MATPLOTLIB:
        assert (tmp_path / "lights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_held_out_phrasings_never_occur_in_training():
    rng = np.random.default_rng(0)
    train = lights.generate(rng, 600, held_out=False)
    test = lights.generate(rng, 300, held_out=True)
    assert not {t for t, _ in train} & {t for t, _ in test}
    assert {y for _, y in train} == {0, 1, 2}
    # the words only the held-out side uses include the held-out objects and wrappers
    train_words = {w for t, _ in train for w in t.split()}
    assert "hallway" not in train_words and "porch" not in train_words
    assert any("hallway" in t or "porch" in t for t, _ in test)


def test_vocabulary_ranks_by_frequency_and_maps_unseen_words_to_unk():
    vocab = lights.Vocabulary(["turn on the lights", "turn off the lights", "the lamp"])
    assert vocab.words[0] == "<unk>" and vocab.words[1] == "the"     # 3 times
    assert set(vocab.words[2:4]) == {"lights", "turn"}               # twice each
    assert vocab.encode("turn on the porch light") == [vocab.index["turn"], vocab.index["on"],
                                                       1, 0, 0]
    assert vocab.knows("the lamp") and not vocab.knows("the porch lamp")
    ids, last = vocab.batch(["the lamp", "turn on the lights"])
    assert ids.shape == (2, 4) and list(last) == [1, 3] and list(ids[0, 2:]) == [0, 0]
    vectors = vocab.cipher_vectors(8)
    assert vectors.shape == (len(vocab), 8)
    assert not vectors[0].any()                                      # <unk>: the zero code
    np.testing.assert_allclose(vectors[1:].sum(axis=1), 1.0)
    assert len({tuple(v) for v in vectors}) == len(vocab)            # every word distinct
    with pytest.raises(ValueError, match="empty command"):
        vocab.batch(["the lamp", ""])


def test_warm_start_sets_cipher_embedding_and_three_class_output():
    train = lights.generate(np.random.default_rng(3), 40, held_out=False)
    vocab = lights.Vocabulary(t for t, _ in train)
    model = lights.CommandClassifier(len(vocab), width=16)
    report = lights.warm_start_(model, vocab, train, eps=0.1)
    assert np.isfinite(report["loss"])
    np.testing.assert_allclose(model.emb.weight.numpy(), vocab.cipher_vectors(16), atol=1e-7)
    assert model.safu.w_o.shape == (model.safu.d_z, 3)
    assert np.all(np.isfinite(model.safu.w_o.numpy()))
    ids, last = vocab.batch([t for t, _ in train])
    pred = model.predict(ids, last)
    assert pred.shape == (40,) and set(pred) <= {0, 1, 2}
    assert lights.classify(model, vocab, "turn on the lights") in lights.CLASSES


@pytest.mark.parametrize("flag, value", [("--steps", "-1"), ("--seeds", "0"), ("--eps", "0"),
                                         ("--sizes", "0")])
def test_bad_options_name_the_flag(tmp_path, flag, value):
    with pytest.raises(SystemExit, match=flag):
        lights.main(["--quick", "--out", str(tmp_path), flag, value])
    assert not os.listdir(tmp_path)
