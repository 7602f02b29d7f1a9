"""tinyfw.nn.init.skip_init: initialisers that draw nothing, for weights a file overwrites."""
import numpy as np
import pytest

import tinyfw as fw
from tinyfw import random as _random
from tinyfw.nn import init
from tinyfw.nn.layers import Embedding, Linear
from tinyfw.nn.models import LanguageModel, ModelConfig

CFG = ModelConfig(vocab_size=11, context_length=6, n_layers=2, n_heads=2, d_model=8)


def test_skip_init_draws_nothing_and_leaves_the_placeholders():
    fw.manual_seed(3)
    state = _random.get_rng_state()
    with init.skip_init():
        model = LanguageModel(CFG)
        assert init.skipping_init()
    assert not init.skipping_init()
    assert _random.get_rng_state() == state
    # the allocations are left as made: zeros for weights and biases, ones for norm gains
    params = dict(model.named_parameters())
    assert not params["tok_emb.weight"].numpy().any()
    assert not params["blocks.0.mixer.qkv.weight"].numpy().any()
    np.testing.assert_array_equal(params["norm_f.weight"].numpy(), np.ones(8, np.float32))
    # outside the block the same seed draws the same random model as before
    fw.manual_seed(3)
    a = LanguageModel(CFG)
    fw.manual_seed(3)
    b = LanguageModel(CFG)
    assert a.state_dict()["tok_emb.weight"].numpy().std() > 0.01
    np.testing.assert_array_equal(a.state_dict()["tok_emb.weight"].numpy(),
                                  b.state_dict()["tok_emb.weight"].numpy())


@pytest.mark.parametrize("fill", [lambda t: init.uniform_(t, -1, 1), lambda t: init.normal_(t),
                                  init.zeros_, init.ones_, lambda t: init.constant_(t, 2.5),
                                  init.kaiming_uniform_, init.xavier_uniform_])
def test_every_initialiser_is_skipped(fill):
    t = Linear(3, 4).weight
    before = t.numpy().copy()
    state = _random.get_rng_state()
    with init.skip_init():
        assert fill(t) is t
    np.testing.assert_array_equal(t.numpy(), before)
    assert _random.get_rng_state() == state
    fill(t)                                   # and outside the block it fills again
    assert not np.array_equal(t.numpy(), before)


def test_copy_still_copies_and_blocks_nest():
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    with init.skip_init():
        with init.skip_init():
            emb = Embedding(3, 2, _weight=values)
        assert init.skipping_init()           # the outer block is still open
        init.copy_(emb.weight, values + 1)
    assert not init.skipping_init()
    np.testing.assert_array_equal(emb.weight.numpy(), values + 1)


def test_skip_init_is_closed_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with init.skip_init():
            raise RuntimeError("boom")
    assert not init.skipping_init()
