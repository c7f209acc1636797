"""Reconstructing a multi-mode scan: which probe weights the stitched patches, and the warning."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, SimulationConfig
from ptychopinn.model import PtychoPINN
from ptychopinn.physics import mixed_state_probe
from ptychopinn.reconstruct import reconstruct
from ptychopinn.reconstruct.core import _stitch_probe


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from ptychopinn.data import load_scan
    from ptychopinn.simulate import simulate_to_file

    folder = tmp_path_factory.mktemp("scan")
    s = load_scan(simulate_to_file(SimulationConfig(N=64, object_size=90, n_positions=6, nphotons=1e6, seed=1), folder / "s.npz"))
    modes = mixed_state_probe(np.asarray(s.probe), 3, 0.5)
    s.probe, s.probe_modes = modes[0], modes  # as the loader gives a (3, N, N) probeGuess
    return s


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_single_mode_model_uses_the_dominant_mode_with_one_warning(scan, caplog):
    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(N=64, n_filters_scale=1), probe=scan.probe)
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        rec = reconstruct(model, scan, device="cpu")
    warnings = [m for m in _messages(caplog) if "probe modes" in m]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "dominant mode" in warnings[0] and "3 probe modes" in warnings[0]
    assert np.isfinite(rec.object).all()
    assert np.array_equal(_stitch_probe(scan, model, warn=False), scan.probe)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        reconstruct(model, scan, device="cpu", weight="uniform")  # the probe is not used: no warning
    assert not [m for m in _messages(caplog) if "probe modes" in m]


def test_multi_mode_model_weights_by_the_total_illumination(scan, caplog):
    model = PtychoPINN(ModelConfig(N=64, n_filters_scale=1), probe=scan.probe_modes)
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        reconstruct(model, scan, device="cpu")
    assert not [m for m in _messages(caplog) if "probe modes" in m]
    total = _stitch_probe(scan, model, warn=False)
    np.testing.assert_allclose(total**2, (np.abs(scan.probe_modes) ** 2).sum(axis=0), rtol=1e-5)
