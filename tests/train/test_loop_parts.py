"""The loop's parts on their own: early stopping, the windows of an epoch (accumulation and
rank shards), and a `TrainingState` through checkpoint/ and back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, SimulationConfig, TrainConfig
from ptychopinn.distributed import DistInfo
from ptychopinn.train import checkpoint, ddp, setup
from ptychopinn.train.early_stop import EarlyStop


def test_early_stop_counts_per_stage_and_round_trips():
    es = EarlyStop()
    assert [es.end_epoch(e, v, patience=2) for e, v in enumerate([1.0, 0.5, 0.7])] == [False, False, False]
    assert (es.best, es.bad) == (0.5, 1)
    es.begin_stage(1)  # a new stage: losses not comparable, count afresh
    assert (es.best, es.bad, es.stage) == (None, 0, 1)
    assert [es.end_epoch(e, v, patience=2) for e, v in zip((3, 4, 5), [2.0, 2.0, 2.5])] == [False, False, True]
    assert es.stopped and es.stopped_after == 6
    # the checkpoint's `loop.early_stop` keys, in this order
    assert list(es.state()) == ["best", "bad", "stage", "stopped_after"]
    assert EarlyStop.from_state(es.state()) == es and EarlyStop.from_state(None) == EarlyStop()
    assert not EarlyStop().end_epoch(0, float("nan"), patience=0)  # patience 0: never stops


def test_windows_accumulate_and_shard():
    order = np.arange(10)
    steps = ddp.windows(order, batch_size=3, accumulate=2, info=None)
    assert steps == [[([0, 1, 2], 1.0, 6), ([3, 4, 5], 1.0, 6)], [([6, 7, 8], 1.0, 4), ([9], 1.0, 4)]]
    # rank 1 of 2: the strided slice of each micro-batch; an empty slice is a weight-0 stand-in
    ranked = ddp.windows(order, batch_size=3, accumulate=2, info=DistInfo(1, 2, 1))
    assert [[(ids, w) for ids, w, _ in step] for step in ranked] == [[([1], 1.0), ([4], 1.0)], [([7], 1.0), ([9], 0.0)]]
    assert [B for step in ranked for _, _, B in step] == [6, 6, 4, 4]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    scan = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=12, nphotons=1e6, seed=2), tmp_path_factory.mktemp("s") / "s.npz")
    tc = TrainConfig(epochs=3, batch_size=4, device="cpu", validation_fraction=0.0, keep_best=0)
    return setup.check_inputs(scan, ModelConfig(n_filters_scale=1), None, tc, None, False, None)


def test_training_state_through_the_checkpoint(inputs, tmp_path):
    state = setup.new_state(inputs, exact=True)
    params = [p for p in state.model.parameters() if p.requires_grad]
    for p in params:  # one Adam step: non-trivial moments and float64 masters
        p.grad = torch.ones_like(p)
    state.optimizer.step()
    state.np_rng.permutation(10)
    state.epochs_done, state.history = 1, [{"epoch": 1, "loss": 0.5}]
    state.early_stop.end_epoch(0, 0.5, patience=3)
    checkpoint.write_checkpoint(tmp_path, state)

    fresh = setup.new_state(inputs, exact=True)
    loop = checkpoint.restore(tmp_path, fresh, inputs.model_config)
    assert loop["stages"] == [] and loop["best"] is None and set(loop) == {"stages", "early_stop", "best", "logger"}
    assert (fresh.epochs_done, fresh.history, fresh.early_stop) == (1, state.history, state.early_stop)
    assert fresh.np_rng.integers(1 << 30) == state.np_rng.integers(1 << 30)
    for a, b in zip(state.model.parameters(), fresh.model.parameters()):
        assert a.dtype == b.dtype and torch.equal(a, b)  # the float64 masters, not their float32 rounding
    sa, sb = state.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
