"""The simulation forward model, the NPZ it writes, and `ptychopinn simulate`."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ptychopinn.config import SimulationConfig
from ptychopinn.errors import ConfigError
from ptychopinn.physics import default_probe, normalize_probe
from ptychopinn.simulate import simulate, simulate_to_file

TINY_GRID = SimulationConfig(N=64, object_kind="grf", object_size=80, scan="grid", step=4, nphotons=1e6, seed=5)
TINY_RANDOM = SimulationConfig(N=64, object_kind="lines", object_size=96, scan="random", n_positions=12, nphotons=1e5, seed=2)


def _oracle_amplitude(obj: np.ndarray, probe: np.ndarray, x: float, y: float, N: int) -> np.ndarray:
    """Slow float64 oracle: bilinear crop centred at (x, y), ψ = P·O, unitary FFT, fftshift."""
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    wx, wy = x - x0, y - y0
    o = obj.astype(np.complex128)
    r, c = y0 - N // 2, x0 - N // 2
    crop = (
        (1 - wx) * (1 - wy) * o[r : r + N, c : c + N]
        + wx * (1 - wy) * o[r : r + N, c + 1 : c + N + 1]
        + (1 - wx) * wy * o[r + 1 : r + N + 1, c : c + N]
        + wx * wy * o[r + 1 : r + N + 1, c + 1 : c + N + 1]
    )
    spec = np.fft.fft2(probe.astype(np.complex128) * crop) / N
    return np.abs(np.fft.fftshift(spec))


@pytest.fixture(scope="module")
def grid_noiseless():
    return simulate(TINY_GRID, poisson_noise=False)


@pytest.fixture(scope="module")
def random_noisy():
    return simulate(TINY_RANDOM)


@pytest.fixture(scope="module")
def random_noiseless():
    return simulate(TINY_RANDOM, poisson_noise=False)


def test_contract_keys_shapes_dtypes(grid_noiseless):
    d = grid_noiseless
    M = 16
    assert d["diffraction"].shape == (M, 64, 64) and d["diffraction"].dtype == np.float32
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        assert d[key].shape == (M,) and d[key].dtype == np.float64
    assert d["probeGuess"].shape == (64, 64) and d["probeGuess"].dtype == np.complex64
    assert d["objectGuess"].shape == (80, 80) and d["objectGuess"].dtype == np.complex64
    assert d["scan_index"].dtype == np.int64 and np.all(d["scan_index"] == 0)
    meta = d["_metadata"]
    assert meta.shape == () and meta.dtype.kind == "U"
    info = json.loads(str(meta))
    assert info["nphotons"] == 1e6 and info["seed"] == 5 and info["N"] == 64 and info["object_kind"] == "grf"
    assert info["version"] == 1


def test_noiseless_mean_photons_and_probe(grid_noiseless):
    d = grid_noiseless
    per_pattern = (d["diffraction"].astype(np.float64) ** 2).sum(axis=(1, 2))
    assert per_pattern.mean() == pytest.approx(1e6, rel=1e-5)
    np.testing.assert_array_equal(d["probeGuess"], normalize_probe(default_probe(64), 4.0))


def test_noiseless_matches_float64_oracle_integer_positions(grid_noiseless):
    d = grid_noiseless
    amps = np.stack([_oracle_amplitude(d["objectGuess"], d["probeGuess"], x, y, 64) for x, y in zip(d["xcoords"], d["ycoords"])])
    s = np.sqrt(1e6 / (amps**2).sum(axis=(1, 2)).mean())
    ref = s * amps
    rel = np.linalg.norm(d["diffraction"] - ref) / np.linalg.norm(ref)
    assert rel < 1e-5


def test_noiseless_matches_oracle_subpixel_positions(random_noiseless):
    d = random_noiseless
    assert not np.all(d["xcoords"] == np.round(d["xcoords"]))
    amps = np.stack([_oracle_amplitude(d["objectGuess"], d["probeGuess"], x, y, 64) for x, y in zip(d["xcoords"], d["ycoords"])])
    ref = np.sqrt(1e5 / (amps**2).sum(axis=(1, 2)).mean()) * amps
    assert np.linalg.norm(d["diffraction"] - ref) / np.linalg.norm(ref) < 1e-4


def test_poisson_counts_and_determinism(random_noisy, random_noiseless):
    a = random_noisy
    b = simulate(TINY_RANDOM)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    counts = a["diffraction"].astype(np.float64) ** 2
    assert np.all(np.abs(counts - np.round(counts)) <= 1e-3 * np.maximum(counts, 1))  # float32 sqrt round trip
    # mean photons per pattern ≈ nphotons within Poisson and scan-to-scan spread
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(1e5, rel=0.02)
    # noise: the noisy counts scatter around the noiseless expectation with variance ≈ mean
    clean = random_noiseless["diffraction"].astype(np.float64) ** 2
    bright = clean > 50
    z = (counts[bright] - clean[bright]) / np.sqrt(clean[bright])
    assert abs(z.mean()) < 0.1 and 0.8 < z.std() < 1.2


def test_seed_changes_noise_but_object_is_independent_of_positions(random_noisy):
    a = random_noisy
    b = simulate(dataclasses.replace(TINY_RANDOM, seed=3))
    assert not np.array_equal(a["diffraction"], b["diffraction"])
    c = simulate(dataclasses.replace(TINY_RANDOM, n_positions=5))
    np.testing.assert_array_equal(a["objectGuess"], c["objectGuess"])
    np.testing.assert_array_equal(a["xcoords"][:5], c["xcoords"][:5])


@pytest.mark.parametrize(
    "change",
    [dict(N=63), dict(N=32), dict(object_kind="disc"), dict(scan="spiral"), dict(object_size=64),
     dict(nphotons=0.0), dict(n_positions=0), dict(step=-1.0), dict(probe_scale=0.0), dict(seed=-1),
     dict(probe_modes=0), dict(probe_modes=2.5), dict(probe_mode_power=0.0), dict(probe_mode_power=1.5)],
)
def test_invalid_configs_raise_config_error(change):
    cfg = dataclasses.replace(TINY_GRID, **change)
    if "n_positions" in change:
        cfg = dataclasses.replace(cfg, scan="random")
    with pytest.raises(ConfigError) as info:
        simulate(cfg)
    assert "\n" not in str(info.value) and "SimulationConfig." in str(info.value)


def test_simulate_to_file_roundtrip(tmp_path):
    path = simulate_to_file(TINY_GRID, tmp_path / "sub" / "scan.npz")
    assert path == tmp_path / "sub" / "scan.npz"
    assert [p.name for p in path.parent.iterdir()] == ["scan.npz"]  # no temp file left behind
    ref = simulate(TINY_GRID)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(ref)
        for key in ref:
            assert z[key].dtype == ref[key].dtype and z[key].tobytes() == ref[key].tobytes(), key


def test_written_file_passes_data_contract(tmp_path, random_noisy):
    from ptychopinn.data import load_scan

    path = simulate_to_file(TINY_RANDOM, tmp_path / "scan.npz")
    scan = load_scan(path)
    np.testing.assert_array_equal(np.asarray(scan.diffraction), random_noisy["diffraction"])
    assert scan.metadata["nphotons"] == 1e5


def test_simulate_to_hdf5(tmp_path):
    from ptychopinn.data import load_scan

    path = simulate_to_file(TINY_GRID, tmp_path / "scan.h5")
    scan = load_scan(path)
    ref = simulate(TINY_GRID)
    np.testing.assert_array_equal(np.asarray(scan.diffraction[:]), ref["diffraction"])
    np.testing.assert_array_equal(scan.xcoords, ref["xcoords"])
    np.testing.assert_array_equal(scan.object, ref["objectGuess"])


def test_package_root_simulate_is_callable(grid_noiseless):
    import ptychopinn
    import ptychopinn.simulate.forward  # noqa: F401  (binds ptychopinn.simulate to the package)

    out = ptychopinn.simulate(TINY_GRID, poisson_noise=False)
    assert out["diffraction"].tobytes() == grid_noiseless["diffraction"].tobytes()


# -- one physics chain: the simulator goes through physics.PtychographyOperator ----------------
def test_one_mode_is_the_single_probe_chain_bit_for_bit(random_noiseless):
    """K = 1 (the default) gives exactly diffract(illuminate(extract(O), P)) · s."""
    import torch

    from ptychopinn.kernels import extract_patches
    from ptychopinn.physics import diffract, illuminate, photon_scale
    from ptychopinn.simulate.forward import _patch_positions

    d = random_noiseless
    obj, probe = d["objectGuess"], d["probeGuess"]
    offsets = torch.from_numpy(_patch_positions(d["xcoords"], d["ycoords"], obj.shape, 64))[None]
    psi = illuminate(extract_patches(torch.from_numpy(obj)[None], offsets, 64)[0], torch.from_numpy(probe))
    amp = diffract(psi).numpy()
    s = photon_scale(1e5, (psi.abs().double() ** 2).sum(dim=(-2, -1)).numpy())
    assert s == json.loads(str(d["_metadata"]))["simulation_intensity_scale"]
    assert np.array_equal(d["diffraction"], np.sqrt((s * amp.astype(np.float64)) ** 2).astype(np.float32))
    assert json.loads(str(d["_metadata"]))["probe_modes"] == 1


def test_mixed_state_simulation():
    """K modes: probeGuess (K, N, N) (mode 0 the usual probe), the noiseless intensity is the sum
    of the modes' intensities (float64 oracle), and nphotons is still the mean per pattern."""
    from ptychopinn.physics import mixed_state_probe

    K = 3
    cfg = dataclasses.replace(TINY_RANDOM, probe_modes=K, probe_mode_power=0.5)
    d = simulate(cfg, poisson_noise=False)
    modes = d["probeGuess"]
    assert modes.shape == (K, 64, 64) and modes.dtype == np.complex64
    np.testing.assert_array_equal(modes, mixed_state_probe(normalize_probe(default_probe(64), 4.0), K, 0.5))
    intens = sum(
        np.stack([_oracle_amplitude(d["objectGuess"], modes[k], x, y, 64) for x, y in zip(d["xcoords"], d["ycoords"])]) ** 2
        for k in range(K)
    )
    ref = np.sqrt(1e5 / intens.sum(axis=(1, 2)).mean() * intens)
    assert np.linalg.norm(d["diffraction"] - ref) / np.linalg.norm(ref) < 1e-4
    assert (d["diffraction"].astype(np.float64) ** 2).sum(axis=(1, 2)).mean() == pytest.approx(1e5, rel=1e-5)
    # the extra modes matter: the patterns differ from the single-mode scan of the same object
    single = simulate(TINY_RANDOM, poisson_noise=False)["diffraction"]
    assert np.linalg.norm(d["diffraction"] - single) > 0.01 * np.linalg.norm(single)
    noisy = simulate(cfg)
    assert np.array_equal(noisy["xcoords"], d["xcoords"]) and noisy["probeGuess"].shape == (K, 64, 64)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_mixed_state_scan_file_loads_with_its_modes(tmp_path, suffix):
    from ptychopinn.data import load_scan

    cfg = dataclasses.replace(TINY_RANDOM, n_positions=4, probe_modes=2)
    scan = load_scan(simulate_to_file(cfg, tmp_path / f"scan{suffix}"))
    ref = simulate(cfg)
    assert scan.probe_modes.shape == (2, 64, 64) and np.array_equal(scan.probe_modes, ref["probeGuess"])
    assert np.array_equal(scan.probe, ref["probeGuess"][0])  # mode 0 is the dominant one
