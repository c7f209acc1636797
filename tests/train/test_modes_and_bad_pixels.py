"""Training with bad pixels (excluded from the NLL/MAE) and with a multi-mode probe.

`Scan.bad_pixels` `(N, N)` bool (True = not measured) and `Scan.probe_modes` `(K, N, N)` are
set on a loaded scan here, as the data loader does for files that hold them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig
from ptychopinn.model import ModelOutput
from ptychopinn.physics import mixed_state_probe
from ptychopinn.train.inputs import normalised_probe, normalised_probe_modes
from ptychopinn.train.losses import batch_loss, detector_valid

N = 64


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    cfg = SimulationConfig(N=N, object_size=96, n_positions=10, nphotons=1e6, seed=4)
    return simulate_to_file(cfg, tmp_path_factory.mktemp("scan") / "tiny.npz")


def _bad() -> np.ndarray:
    bad = np.zeros((N, N), bool)
    bad[N // 2, N // 2 + 1] = bad[3, 40] = bad[50, 7] = True
    return bad


class _Fixed(torch.nn.Module):
    """A stand-in model whose prediction is a leaf tensor we can take gradients against."""

    def __init__(self, amplitude: torch.Tensor) -> None:
        super().__init__()
        self.amplitude = amplitude

    def forward(self, x, offsets):
        B = x.shape[0]
        return ModelOutput(torch.zeros(B, N, N, dtype=torch.complex64), self.amplitude, self.amplitude.square())


@pytest.mark.parametrize("weights", [dict(nll_weight=1.0), dict(nll_weight=1.0, mae_weight=0.3), dict(nll_weight=0.0, mae_weight=1.0)])
def test_batch_loss_ignores_masked_pixels(weights):
    g = torch.Generator().manual_seed(0)
    amp = (torch.rand(3, 1, N, N, generator=g) * 5 + 0.1).requires_grad_(True)
    x = torch.poisson(amp.detach() ** 2, generator=g).sqrt()
    offsets = torch.zeros(3, 1, 2)
    tc = TrainConfig(**weights)
    valid = torch.from_numpy(~_bad())
    loss, _ = batch_loss(_Fixed(amp), x, offsets, None, ModelConfig(), tc, valid=valid)
    (grad,) = torch.autograd.grad(loss, amp)
    assert (grad[..., ~valid] == 0).all() and (grad[..., valid] != 0).any()
    hot = x.clone()
    hot[..., ~valid] = 3e4  # a hot pixel: 9e8 counts
    loss_hot, _ = batch_loss(_Fixed(amp), hot, offsets, None, ModelConfig(), tc, valid=valid)
    (grad_hot,) = torch.autograd.grad(loss_hot, amp)
    assert float(loss_hot.detach()) == float(loss.detach()) and torch.equal(grad_hot, grad)
    unmasked, _ = batch_loss(_Fixed(amp), hot, offsets, None, ModelConfig(), tc)
    assert abs(float(unmasked.detach()) - float(loss.detach())) > 10 * abs(float(loss.detach()))  # what the mask protects against


def test_detector_valid_from_scan(scan_path):
    from ptychopinn.data import load_scan

    scan = load_scan(scan_path)
    if getattr(scan, "bad_pixels", None) is None:
        assert detector_valid(scan) is None
    scan.bad_pixels = _bad()
    valid = detector_valid(scan)
    assert valid.dtype == torch.bool and valid.shape == (N, N) and torch.equal(valid, torch.from_numpy(~_bad()))


def test_normalised_modes_share_the_dominant_modes_factor(scan_path):
    from ptychopinn.data import load_scan

    scan = load_scan(scan_path)
    assert np.array_equal(normalised_probe_modes(scan), normalised_probe(scan))  # one mode: unchanged
    raw = mixed_state_probe(np.asarray(scan.probe) * 7.0, 3, 0.4)
    scan.probe, scan.probe_modes = raw[0], raw
    modes = normalised_probe_modes(scan)
    assert modes.shape == (3, N, N) and modes.dtype == np.complex64
    np.testing.assert_allclose(modes[0], normalised_probe(scan), rtol=1e-6)
    power = (np.abs(modes.astype(np.complex128)) ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(power / power[0], [1, 0.4, 0.16], rtol=1e-5)  # relative powers kept


def test_training_builds_a_k_mode_model_and_passes_the_mask(scan_path, tmp_path, monkeypatch):
    import ptychopinn as pp
    import ptychopinn.train.loop as loop
    from ptychopinn.data import load_scan
    from ptychopinn.io import load_model

    seen: list = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("valid"))
        return batch_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "batch_loss", spy)
    scan = load_scan(scan_path)
    modes = mixed_state_probe(np.asarray(scan.probe), 2, 0.5)
    scan.probe, scan.probe_modes, scan.bad_pixels = modes[0], modes, _bad()
    tc = TrainConfig(epochs=1, batch_size=4, device="cpu", validation_fraction=0.25, seed=1)
    result = pp.train(scan, ModelConfig(n_filters_scale=1), DataConfig(), tc, out_dir=tmp_path / "m", progress=False)
    assert result.model.n_modes == 2
    assert np.isfinite(result.history[0]["loss"])
    assert seen and all(v is not None and torch.equal(v.cpu(), torch.from_numpy(~_bad())) for v in seen)
    back = load_model(tmp_path / "m")
    assert back.probe.shape == (2, N, N) and torch.equal(back.probe, result.model.probe.cpu())


@pytest.mark.filterwarnings("ignore:.*looks like intensities")  # the unflagged hot scan, rightly
def test_flagged_hot_pixels_cannot_reach_the_trained_model(tmp_path):
    """End to end (loader fill at the input + normalisation over measured pixels + masked loss):
    24 flagged pixels holding hot values train exactly the model that the same flagged pixels
    holding clean values train; unflagged, the hot values change it."""
    import ptychopinn as pp
    from ptychopinn.simulate import simulate

    arrays = simulate(SimulationConfig(N=N, object_size=96, n_positions=10, nphotons=1e6, seed=6))
    rng = np.random.default_rng(0)
    bad = np.zeros((N, N), bool)
    bad.flat[rng.choice(N * N, 24, replace=False)] = True
    hot = arrays["diffraction"].copy()
    hot[:, bad] = 3e3  # 9e6 counts in one pixel, ~10x a whole pattern's photons
    paths = {}
    for name, diff, flags in (("clean", arrays["diffraction"], bad), ("hot", hot, bad), ("hot_unflagged", hot, None)):
        extra = {} if flags is None else {"bad_pixels": flags}
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], **{**arrays, "diffraction": diff}, **extra)
    tc = TrainConfig(epochs=1, batch_size=4, device="cpu", validation_fraction=0.25, seed=1)
    models = {k: pp.train(p, ModelConfig(n_filters_scale=1), DataConfig(), tc, progress=False).model for k, p in paths.items()}
    clean, flagged, unflagged = (models[k].state_dict() for k in ("clean", "hot", "hot_unflagged"))
    assert all(torch.equal(clean[k], flagged[k]) for k in clean)
    assert not all(torch.equal(clean[k], unflagged[k]) for k in clean)  # the check can fail
