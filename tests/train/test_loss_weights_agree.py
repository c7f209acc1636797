"""TrainConfig's "every loss weight is zero" check agrees with what `batch_loss` computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, TrainConfig
from ptychopinn.errors import ConfigError
from ptychopinn.model import PtychoPINN
from ptychopinn.train.losses import batch_loss, needs_labels


def test_real_space_mae_only_is_accepted_and_computed():
    """realspace_weight with realspace_mae_weight (no TV) is a real loss: config and loss agree."""
    tc = TrainConfig(nll_weight=0.0, mae_weight=0.0, realspace_weight=1.0, realspace_mae_weight=1.0, tv_weight=0.0)
    assert needs_labels(tc)
    mc = ModelConfig(N=64, gridsize=1, n_filters_scale=1)
    torch.manual_seed(0)
    model = PtychoPINN(mc, probe=np.ones((64, 64), np.complex64), intensity_scale=10.0)
    x = torch.rand(2, 1, 64, 64)
    offsets = torch.zeros(2, 1, 2)
    labels = torch.ones(2, 64, 64, dtype=torch.complex64)
    loss, parts = batch_loss(model, x, offsets, labels, mc, tc, centre_mask=torch.ones(64, 64))
    assert list(parts) == ["realspace"] and torch.isfinite(loss) and float(loss) > 0


def test_all_zero_pinn_weights_still_rejected():
    with pytest.raises(ConfigError, match="every PINN loss weight"):
        TrainConfig(nll_weight=0.0, mae_weight=0.0, realspace_weight=1.0, realspace_mae_weight=0.0, tv_weight=0.0)


def test_determinism_block_restores_global_state(monkeypatch):
    """`setup.determinism` seeds inside the block and leaves python/numpy/torch RNGs and flags as found."""
    import os
    import random

    from ptychopinn.train.setup import determinism

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    prev_alg = torch.are_deterministic_algorithms_enabled()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expect = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with determinism(True, seed=7):
        assert torch.are_deterministic_algorithms_enabled()
        inside = float(torch.rand(()))
        random.random(), np.random.rand()
    torch.manual_seed(7)
    assert inside == float(torch.rand(()))  # seeded with `seed` inside
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with determinism(True, seed=7):
        random.random(), np.random.rand(), torch.rand(())
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expect
    assert torch.are_deterministic_algorithms_enabled() == prev_alg
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_train_config_validates_itself_in_one_line():
    """Out-of-range fields fail on construction (and on `dataclasses.replace`) with one line naming the field."""
    import dataclasses

    for kw, match in [(dict(plateau_factor=1.0), "plateau_factor"), (dict(min_lr=-1.0), "min_lr"), (dict(num_workers=-1), "num_workers"),
                      (dict(plateau_patience=-1), "plateau_patience"), (dict(mae_weight=-0.5), "mae_weight"),
                      (dict(nll_weight=float("nan")), "nll_weight")]:
        with pytest.raises(ConfigError, match=match) as info:
            TrainConfig(**kw)
        assert "\n" not in str(info.value) and str(info.value).startswith("TrainConfig.")
    with pytest.raises(ConfigError, match="batch_size"):
        dataclasses.replace(TrainConfig(), batch_size=0)


def test_real_space_tv_only_objective_trains(tmp_path):
    """A PINN objective of the real-space TV term alone (no NLL/MAE, no labels) passes `train`'s
    checks and trains: its only loss part is "realspace"."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_to_file
    from ptychopinn.train import train

    scan = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=12, nphotons=1e6, seed=3), tmp_path / "scan.npz")
    tc = TrainConfig(epochs=1, batch_size=4, device="cpu", validation_fraction=0.0, nll_weight=0.0, mae_weight=0.0,
                     realspace_weight=1.0, tv_weight=0.1)
    assert not needs_labels(tc)
    result = train(scan, ModelConfig(n_filters_scale=1), None, tc, progress=False)
    assert list(result.history[0]["parts"]) == ["realspace"] and np.isfinite(result.history[0]["loss"])
