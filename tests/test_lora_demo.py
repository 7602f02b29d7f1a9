"""demos/lora_finetune.py in its quick mode: pretraining, the Tiny Shakespeare arms (on a small
stand-in text), the lights task, and the three result files; the skip without the corpus; bad
options. No claim (such as "LoRA is close to full fine-tuning") is asserted: those are results."""
import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demos",
                     "lora_finetune.py")
_spec = importlib.util.spec_from_file_location("lora_finetune_demo", _PATH)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
TEXT = "".join(f"{who}:\nWhat say you, {whom}? I say the {thing} is {how}.\n\n"
               for who in ("ROMEO", "JULIET", "NURSE") for whom in ("sir", "madam", "friend")
               for thing in ("night", "day", "moon") for how in ("fair", "dark")) * 4


def test_quick_mode_runs_every_arm_and_writes_three_files(tmp_path):
    corpus = tmp_path / "shakespeare.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    logged = []
    result = demo.main(["--quick", "--out", str(out), "--shakespeare", str(corpus)],
                       log=logged.append)
    names = sorted(os.listdir(out))
    assert names == ["lora_finetune.json", "lora_finetune.md"] + (
        ["lora_finetune.png"] if HAVE_MATPLOTLIB else [])
    saved = json.loads((out / "lora_finetune.json").read_text(encoding="utf-8"))
    st = saved["settings"]
    assert st["quick"] and st["seeds"] == 2 and st["ranks"] == [4]
    adapt = saved["adaptation"]
    assert adapt["arms"] == ["scratch", "full", "lora r=4"]
    assert len(adapt["runs"]) == 3 * st["seeds"]
    total = saved["pretraining"]["parameters"]
    for run in adapt["runs"]:
        steps = sorted(int(k) for k in run["curve"])
        assert steps[0] == 0 and steps[-1] == st["adapt_steps"]
        if run["arm"].startswith("lora"):
            assert run["total"] == total + run["trainable"]           # the adapters are new
            # rank 4 adapters on qkv, proj, fc, mlp.proj of each block and on the output layer
            d, blocks = st["d_model"], st["layers"]
            per_block = 4 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
            assert run["trainable"] == blocks * per_block + 4 * (d + 256)
            assert run["merge_difference"] < 1e-4
        else:
            assert run["trainable"] == run["total"] == total
    # the two pretrained arms start from the same model; scratch from a different one
    by_arm = {r["arm"]: r for r in adapt["runs"] if r["seed"] == 0}
    assert by_arm["full"]["curve"]["0"] == by_arm["lora r=4"]["curve"]["0"]
    assert by_arm["scratch"]["curve"]["0"] != by_arm["full"]["curve"]["0"]
    lights = saved["lights"]
    assert len(lights["runs"]) == 2 * len(st["lights_sizes"]) * st["seeds"]
    for run in lights["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0
    for n in st["lights_sizes"]:
        assert lights["paired"]["pretrained"][str(n)]["difference"]["n"] == st["seeds"]
    assert list(lights["paired"]) == ["pretrained"]
    text = (out / "lora_finetune.md").read_text(encoding="utf-8")
    assert "--quick: a smoke run, not a result" in text
    assert "| lora r=4 |" in text and "**LoRA near full fine-tuning?**" in text
    for n in st["lights_sizes"]:
        assert f"\n| {n} | " in text
    assert result["adaptation"]["summary"]["full"]["trainable"] == total
    if HAVE_MATPLOTLIB:
        assert (out / "lora_finetune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_tiny_shakespeare_the_part_is_skipped_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "shared_data_path", lambda name: None)
    logged = []
    result = demo.main(["--quick", "--out", str(tmp_path), "--seeds", "1", "--pretrain-steps",
                        "2", "--lights-sizes", "6", "--lights-steps", "8", "--lights-test", "20",
                        "--lights-arms", "gradual", "scratch", "pretrained"],
                       log=logged.append)
    assert result["adaptation"] is None
    assert any("tinyshakespeare.txt is not in ../shared/data/" in line for line in logged)
    text = (tmp_path / "lora_finetune.md").read_text(encoding="utf-8")
    assert "Skipped: tinyshakespeare.txt was not found" in text
    assert "**Pretraining on the lights task?**" in text
    # the ULMFiT arm: run for every size and seed, compared with scratch seed by seed
    lights = result["lights"]
    assert result["settings"]["lights_arms"] == ["scratch", "pretrained", "gradual"]
    assert [r["arm"] for r in lights["runs"]] == ["scratch", "pretrained", "gradual"]
    assert lights["paired"]["gradual"]["6"]["difference"]["n"] == 1
    assert "**Gradual unfreezing (ULMFiT)" in text and "gradual - scratch" in text


@pytest.mark.parametrize("args, flag", [(["--seeds", "0"], "--seeds"),
                                        (["--ranks", "0"], "--ranks"),
                                        (["--ranks", "40"], "--ranks"),
                                        (["--lora-lr", "0"], "--lora-lr"),
                                        (["--heads", "3"], "--heads"),
                                        (["--lights-arms", "gradual"], "--lights-arms"),
                                        (["--shakespeare", "/no/such/file.txt"],
                                         "--shakespeare")])
def test_bad_options_name_the_flag(tmp_path, args, flag):
    with pytest.raises(SystemExit, match=flag):
        demo.main(["--quick", "--out", str(tmp_path), *args])
    assert not os.listdir(tmp_path)


def test_unknown_option_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--quick", "--out", str(tmp_path), "--learning-rate", "1"])
    assert "unrecognized arguments: --learning-rate 1" in capsys.readouterr().err
