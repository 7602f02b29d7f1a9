"""The mixer registry (tinyfw/nn/mixers.py): the model config, make_mixer and the command line
all read it, so one ``register_mixer`` call adds a mixer everywhere."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw.cli import build_parser
from tinyfw.nn.attention import CausalSelfAttention
from tinyfw.nn.fast_weights import FastWeightAttention
from tinyfw.nn.mixers import MIXERS, register_mixer
from tinyfw.nn.models import LanguageModel, ModelConfig, make_mixer
from tinyfw.nn.module import Module
from tinyfw.nn.safu import SAFUMixer


class _Identity(Module):
    """A mixer that mixes nothing: (B, T, D) -> the same."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x, state=None, return_state=False):
        y = x * self.scale
        return (y, None) if return_state else y


@pytest.fixture
def identity_mixer():
    register_mixer("identity", lambda cfg, **options: _Identity(**options))
    try:
        yield "identity"
    finally:
        del MIXERS["identity"]


def _config(mixer, **options):
    return ModelConfig(vocab_size=11, context_length=8, n_layers=1, n_heads=2, d_model=8,
                       mixer=mixer, mixer_options=options)


def test_the_built_in_mixers_in_order():
    assert tuple(MIXERS) == ("softmax", "linear", "delta", "safu")


def test_make_mixer_builds_each_built_in_mixer():
    assert isinstance(make_mixer(_config("softmax")), CausalSelfAttention)
    linear = make_mixer(_config("linear"))
    assert isinstance(linear, FastWeightAttention)
    assert (linear.update, linear.feature_map) == ("sum", "elu")
    delta = make_mixer(_config("delta"))
    assert (delta.update, delta.feature_map) == ("delta", "dpfp")
    assert make_mixer(_config("delta", feature_map="elu")).feature_map == "elu"
    assert isinstance(make_mixer(_config("safu", block=4, radial=1)), SAFUMixer)


def test_config_and_cli_reject_a_mixer_that_is_not_registered(capsys):
    with pytest.raises(ValueError, match=r"mixer='identity' must be one of \('softmax', "
                                         r"'linear', 'delta', 'safu'\)"):
        _config("identity")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--mixer", "identity"])
    assert "invalid choice: 'identity'" in capsys.readouterr().err


def test_one_call_registers_a_mixer_for_config_model_and_cli(identity_mixer):
    cfg = _config(identity_mixer, scale=2.0)
    model = LanguageModel(cfg)
    assert isinstance(model.blocks[0].mixer, _Identity) and model.blocks[0].mixer.scale == 2.0
    ids = fw.tensor(np.arange(8).reshape(1, 8) % 11)
    logits = model(ids)
    assert logits.shape == (1, 8, 11) and np.isfinite(logits.numpy()).all()
    args = build_parser().parse_args(["train", "--mixer", identity_mixer])
    assert args.mixer == identity_mixer


def test_register_mixer_rejects_bad_registrations():
    with pytest.raises(ValueError, match="'softmax' is already registered"):
        register_mixer("softmax", lambda cfg: None)
    with pytest.raises(ValueError, match="non-empty string"):
        register_mixer("", lambda cfg: None)
    with pytest.raises(TypeError, match=r"register_mixer\('x'\): constructor must be callable"):
        register_mixer("x", "not a function")
    assert tuple(MIXERS) == ("softmax", "linear", "delta", "safu")
