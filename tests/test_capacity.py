"""The capacity experiment (demos/capacity.py): the task generator and model quickly, and a
reduced reproduction of the paper's findings under ``-m slow``.

What the reproduction asserts is the paper's claim, not this machine's numbers: in setting 2
(keys repeat, the memory must overwrite) the delta rule solves the task (evaluation loss <= 1e-3)
while the sum rule with the same feature map stays above 0.05; in setting 1 linear attention
(ELU+1, dimension 64) solves 20 keys and fails 120, and at 80 keys it fails where DPFP-1
(dimension 128) solves.
"""
import importlib.util
import os

import numpy as np
import pytest

import tinyfw as fw

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demos",
                     "capacity.py")
_spec = importlib.util.spec_from_file_location("capacity_demo", _PATH)
capacity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(capacity)


def test_setting_1_batches_are_permutations_with_the_right_target():
    rng = np.random.default_rng(0)
    keys, values, query, target = capacity.make_batch(rng, 1, 7, 5)
    assert keys.shape == values.shape == (5, 7)
    for b in range(5):
        assert sorted(keys[b]) == list(range(7)) and sorted(values[b]) == list(range(7))
        assert target[b] == values[b][list(keys[b]).index(query[b])]


def test_setting_2_target_is_the_value_at_the_last_occurrence():
    rng = np.random.default_rng(1)
    keys, values, query, target = capacity.make_batch(rng, 2, 4, 50)
    assert keys.shape == (50, 8)
    repeated = 0
    for b in range(50):
        positions = np.nonzero(keys[b] == query[b])[0]
        assert len(positions) >= 1
        assert target[b] == values[b, positions[-1]]
        repeated += len(positions) > 1
    assert repeated > 0        # the case that needs overwriting does occur


def test_all_queries_cover_every_distinct_key():
    keys = np.array([[2, 0, 2, 1], [3, 3, 3, 3]])
    values = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    q, t, m = capacity.all_queries(keys, values)
    assert q[0].tolist() == [0, 1, 2] and t[0].tolist() == [6, 8, 7] and m[0].all()
    assert q[1, 0] == 3 and t[1, 0] == 4 and m[1].tolist() == [True, False, False]


def test_model_names():
    assert capacity.parse_model("elu") == ("elu", None, "sum")
    assert capacity.parse_model("dpfp3-delta") == ("dpfp", 3, "delta")
    assert capacity.parse_model("favor64") == ("favor", 64, "sum")
    assert capacity.feature_dim("dpfp2") == 256 and capacity.feature_dim("favor64") == 128
    for bad in ("relu", "dpfp", "softmax-delta", "dpfp0"):
        with pytest.raises(ValueError, match="capacity"):
            capacity.parse_model(bad)


@pytest.mark.parametrize("name", ["softmax", "elu", "dpfp1-delta", "favor8"])
def test_model_reads_one_vector_per_query_and_trains(name):
    result = capacity.run(1, name, 6, max_steps=3, eval_every=3, log=lambda *a: None)
    assert result["steps"] == 3 and np.isfinite(result["final_eval_loss"])
    model = capacity.CapacityModel(name, 6)
    rng = np.random.default_rng(2)
    keys, values, _, _ = capacity.make_batch(rng, 1, 6, 3)
    q, t, m = capacity.all_queries(keys, values)
    assert model(keys, values, q).shape == (3, 6, 6)


def test_a_perfect_memory_has_zero_loss_and_zeros_have_half():
    """The loss is 0.5 |onehot - y|^2 averaged over queries: 0.5 for an all-zero prediction."""
    model = capacity.CapacityModel("elu", 5)
    keys, values, _, _ = capacity.make_batch(np.random.default_rng(3), 1, 5, 2)
    q, t, m = capacity.all_queries(keys, values)

    class Fixed:
        eye = model.eye

        def __init__(self, y):
            self.y = y

        def __call__(self, *args):
            return fw.tensor(self.y)

    zeros = Fixed(np.zeros((2, 5, 5), dtype=np.float32))
    assert abs(capacity.retrieval_loss(zeros, keys, values, q, t, m).item() - 0.5) < 1e-6
    perfect = Fixed(model.eye[t])
    assert capacity.retrieval_loss(perfect, keys, values, q, t, m).item() == 0.0


@pytest.mark.slow
def test_setting_2_delta_rule_overwrites_and_sum_rule_cannot():
    delta = capacity.run(2, "dpfp1-delta", 20, max_steps=3000, log=lambda *a: None)
    summed = capacity.run(2, "dpfp1", 20, max_steps=3000, log=lambda *a: None)
    assert delta["solved"] and delta["best_eval_loss"] <= 1e-3
    assert not summed["solved"] and summed["best_eval_loss"] > 0.05


@pytest.mark.slow
def test_setting_1_capacity_follows_the_feature_dimension():
    """Linear attention (ELU+1, d_key 64) solves 20 keys and fails 120; at 80 keys, beyond its
    feature dimension, it fails where DPFP-1 (dimension 128) solves."""
    quiet = dict(max_steps=3000, log=lambda *a: None)
    assert capacity.run(1, "elu", 20, **quiet)["solved"]
    elu_120 = capacity.run(1, "elu", 120, **quiet)
    assert not elu_120["solved"] and elu_120["best_eval_loss"] > 0.05
    elu_80 = capacity.run(1, "elu", 80, **quiet)
    dpfp_80 = capacity.run(1, "dpfp1", 80, **quiet)
    assert not elu_80["solved"] and dpfp_80["solved"]


def _plan(**flags):
    import argparse
    args = argparse.Namespace(**{"completion": False, "setting": None, "models": None,
                                 "keys": None, **flags})
    return capacity.planned_runs(args, capacity.REDUCED)


def test_completion_plans_the_new_configurations_and_filters_them():
    plan = _plan(completion=True)
    assert (1, "dpfp3", 320) in plan and (1, "favor192", 80) in plan
    for rule in ("dpfp1", "dpfp1-delta"):
        assert [k for s, m, k in plan if s == 2 and m == rule] == [20, 40, 60, 80]
    assert capacity.feature_dim("dpfp3") == 384 == capacity.feature_dim("favor192")
    assert _plan(completion=True, setting=[2], models=["dpfp1"], keys=[60]) == [(2, "dpfp1", 60)]
    # without --completion, --models and --keys replace the reduced sweep's lists
    assert _plan(setting=[1], models=["elu"], keys=[7]) == [(1, "elu", 7)]
    with pytest.raises(SystemExit):
        capacity.main(["--full", "--completion"])


def _committed():
    path = os.path.join(os.path.dirname(_PATH), "results", "capacity.json")
    import json
    with open(path) as f:
        return {(r["setting"], r["model"], r["keys"]): r for r in json.load(f)}


def test_committed_sweep_holds_the_completed_rows():
    rows = _committed()
    required = [(1, "favor192", k) for k in (40, 80)] + [
        (2, name, k) for name in ("dpfp1", "dpfp1-delta") for k in (20, 40, 60, 80)]
    for key in required:
        assert key in rows, key
    for (setting, name, n_keys), r in rows.items():
        assert r["feature_dim"] == capacity.feature_dim(name)
        assert r["best_eval_loss"] <= r["final_eval_loss"] + 1e-12
        assert r["solved"] == (r["best_eval_loss"] <= 1e-3)


def test_committed_setting_2_sum_rule_error_grows_with_the_keys():
    """Overwriting: the sum rule cannot, so its error grows with the number of keys; the delta
    rule with the same feature map (DPFP-1) stays below it at every size."""
    rows = _committed()
    summed = [rows[(2, "dpfp1", s)]["best_eval_loss"] for s in (20, 40, 60, 80)]
    delta = [rows[(2, "dpfp1-delta", s)]["best_eval_loss"] for s in (20, 40, 60, 80)]
    assert all(a < b for a, b in zip(summed, summed[1:])), summed
    assert all(d < s for d, s in zip(delta, summed)), (delta, summed)
    assert rows[(2, "dpfp1-delta", 20)]["solved"] and not rows[(2, "dpfp1", 20)]["solved"]
