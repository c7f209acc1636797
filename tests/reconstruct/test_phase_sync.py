"""Per-patch phase synchronisation (`reconstruct.phase_sync`, `reconstruct(..., phase_sync=K)`,
`--phase-sync K`): patches of a known object with random constant phase offsets are put back in
phase; already consistent patches are left alone; 0 rounds is the plain stitch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.kernels import gather_patches
from ptychopinn.kernels import stitch as kstitch
from ptychopinn.reconstruct.phase_sync import fits, synchronise_phases


def _patches(seed: int = 0, n: int = 60, size: int = 96, c: int = 24):
    from ptychopinn.simulate.objects import grf_object

    rng = np.random.default_rng(seed)
    truth = torch.from_numpy(grf_object(size, rng, correlation_length=6.0, phase_max=1.0))
    pos = torch.from_numpy(rng.uniform(c / 2 + 1, size - c / 2 - 2, (n, 2)))
    clean = gather_patches(truth, pos, c)
    offsets = torch.from_numpy(np.exp(1j * rng.uniform(-np.pi, np.pi, n)).astype(np.complex64))
    return truth, pos, clean, offsets


def _stitched(p: torch.Tensor, pos: torch.Tensor, shape) -> torch.Tensor:
    num, den = kstitch(p, pos, shape)
    return torch.where(den > 0, num / den.clamp_min(1e-9), torch.zeros((), dtype=num.dtype))


def _aligned_error(a: torch.Tensor, b: torch.Tensor, box) -> float:
    a, b = a[box].flatten().to(torch.complex128), b[box].flatten().to(torch.complex128)
    s = torch.vdot(a, b) / torch.vdot(a, a)
    return float((s * a - b).norm() / b.norm())


def test_random_patch_phase_offsets_are_removed():
    truth, pos, clean, offsets = _patches()
    shape = tuple(truth.shape)
    box = (slice(20, 76), slice(20, 76))
    scrambled = clean * offsets[:, None, None]
    before = _aligned_error(_stitched(scrambled, pos, shape), truth, box)
    u = synchronise_phases(scrambled, pos, shape, 30)
    assert u.shape == (60,) and torch.allclose(u.abs(), torch.ones(60), atol=1e-5)
    after = _aligned_error(_stitched(scrambled * u[:, None, None], pos, shape), truth, box)
    assert before > 0.3 and after < 0.02, (before, after)
    # u undoes the offsets up to one global phase; the power iteration's slow modes (a smooth
    # phase drift across the scan) need more rounds: max residual 0.06 rad after 30, 0.005 after 100
    r = u * offsets
    assert float((r / r.mean()).angle().abs().max()) < 0.1
    u = synchronise_phases(scrambled, pos, shape, 100)
    r = u * offsets
    assert float((r / r.mean()).angle().abs().max()) < 0.01


def test_consistent_patches_are_left_alone_and_the_global_phase_is_kept():
    truth, pos, clean, _ = _patches(seed=1)
    g = np.exp(0.7j)
    u = synchronise_phases(clean * g, pos, tuple(truth.shape), 10)
    # already in phase: no rotation beyond the bilinear stitch-then-gather blur (4e-3 rad measured), no global one
    assert float((u - 1).abs().max()) < 1e-2 and abs(float(u.mean().angle())) < 1e-6


def test_memory_budget():
    assert fits(1000, 32) and not fits(10_000_000, 32) and not fits(10, 32, max_bytes=1000)


@pytest.fixture(scope="module")
def model_and_scan(tmp_path_factory):
    """A 2-epoch model and a scan without objectGuess (int counts)."""
    import ptychopinn as pp
    from ptychopinn.config import ModelConfig, SimulationConfig, TrainConfig
    from ptychopinn.data import save_scan
    from ptychopinn.simulate import simulate

    base = tmp_path_factory.mktemp("sync")
    sim = simulate(SimulationConfig(N=64, object_kind="grf", object_size=112, n_positions=40, nphotons=1e6, seed=4))
    arrays = {k: v for k, v in sim.items() if k != "_metadata"}
    save_scan(base / "truth.npz", **arrays)
    arrays.pop("objectGuess")
    counts = np.rint(arrays["diffraction"].astype(np.float64) ** 2).astype(np.int32)
    np.savez(base / "scan.npz", **{**arrays, "diffraction": counts})
    pp.train(base / "scan.npz", ModelConfig(n_filters_scale=1), None,
             TrainConfig(epochs=2, batch_size=8, device="cpu", validation_fraction=0.0), out_dir=base / "model", progress=False)
    return base


def test_reconstruct_phase_sync_option(model_and_scan):
    import ptychopinn as pp
    from ptychopinn.errors import ConfigError

    base = model_and_scan
    plain = pp.reconstruct(base / "model", base / "truth.npz", device="cpu")
    zero = pp.reconstruct(base / "model", base / "truth.npz", device="cpu", phase_sync=0)
    np.testing.assert_array_equal(plain.object, zero.object)
    synced = pp.reconstruct(base / "model", base / "truth.npz", device="cpu", phase_sync=20)
    assert synced.object.shape == plain.object.shape and synced.origin == plain.origin
    np.testing.assert_array_equal(synced.weight, plain.weight)
    assert not np.array_equal(synced.object, plain.object)
    # only phases move: the stitched amplitude cannot exceed the plain one's pointwise bound
    # (|Σ w u p| <= Σ w |p|), and the patches line up better: more stitched amplitude survives
    cov = plain.weight > 0.5 * plain.weight.max()
    assert np.abs(synced.object[cov]).mean() > np.abs(plain.object[cov]).mean()
    with pytest.raises(ConfigError, match="phase_sync"):
        pp.reconstruct(base / "model", base / "truth.npz", device="cpu", phase_sync=-1)
    with pytest.raises(ConfigError, match="phase_sync"):
        pp.reconstruct(base / "model", base / "truth.npz", device="cpu", phase_sync=5, stitch="tf")


def test_cli_phase_sync_on_counts_without_truth(model_and_scan, capsys):
    from ptychopinn.cli import main

    base = model_and_scan
    out = base / "out_sync"
    assert main(["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(out),
                 "--device", "cpu", "--quiet", "--phase-sync", "10", "--refine", "2"]) == 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert np.isfinite(z["object"]).all()
    assert not (out / "metrics.json").read_text().count('"amplitude"')  # no truth: only the refine record
    bad = base / "out_bad"
    assert main(["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(bad),
                 "--device", "cpu", "--phase-sync", "-3"]) == 2
    assert "--phase-sync" in capsys.readouterr().err and not bad.exists()
