"""Half-set FRC (resolution without ground truth): thresholds, the split, and end to end through
`reconstruct(frc_halves=True)` with an oracle model that returns the true patch of each position
(identical halves → FRC ≈ 1) or the true patch plus independent noise (→ FRC ≈ 0 at high
frequencies)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.metrics.frc import frc_resolution, half_bit_threshold, ring_counts


class IndexModel(torch.nn.Module):
    """Stands in for PtychoPINN: reads the scan position m from its input (pattern pixel
    [0, 0] / pixel [0, 1] = m + 1, invariant to the input scaling) and returns the true
    object patch there, plus independent complex noise of std `noise` (seeded by m)."""

    def __init__(self, patches: np.ndarray, noise: float = 0.0) -> None:
        super().__init__()
        self.config = ModelConfig(N=patches.shape[-1], gridsize=1)
        self.intensity_scale = 1.0
        p = patches.astype(np.complex64)
        if noise:
            rng = np.random.default_rng(99)
            p = p + (noise * (rng.standard_normal(p.shape) + 1j * rng.standard_normal(p.shape))).astype(np.complex64)
        self.patches = torch.from_numpy(p)

    def predict_object(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        m = torch.round(x[:, 0, 0, 0] / x[:, 0, 0, 1]).long() - 1
        return self.patches[m]


def _grid_scan(obj: np.ndarray | None, shape=(160, 160), N: int = 64, step: int = 8):
    """A grid scan at integer positions (extraction and stitching are exact there)."""
    from ptychopinn.data import make_scan
    from ptychopinn.physics.probe import default_probe

    c = np.arange(40, shape[0] - 40 + 1, step, dtype=np.float64)
    xx, yy = np.meshgrid(c, c)
    xy = np.stack([xx.ravel(), yy.ravel()], axis=1)
    M = xy.shape[0]
    d = np.ones((M, N, N), np.float32)
    d[:, 0, 0] = np.arange(M) + 1
    arrays = dict(diffraction=d, xcoords=xy[:, 0], ycoords=xy[:, 1], probeGuess=default_probe(N))
    if obj is not None:
        arrays["objectGuess"] = obj
    return make_scan(**arrays), xy


def _patches(truth: np.ndarray, xy: np.ndarray, N: int = 64) -> np.ndarray:
    from ptychopinn.data import object_patches

    return object_patches(truth, xy, N)


def _white_object(shape=(160, 160), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((0.5 + rng.random(shape)) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


def _smooth_object(shape=(160, 160), seed=0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    amp = 1.0 + 2.0 * gaussian_filter(rng.standard_normal(shape), 2)
    ph = 3.0 * gaussian_filter(rng.standard_normal(shape), 2)
    return (amp * np.exp(1j * ph)).astype(np.complex64)


def test_thresholds():
    counts = ring_counts((64, 64))
    assert counts.shape == (33,) and counts[0] == 1 and counts[1] == 8  # DC, then the first ring
    t = half_bit_threshold(counts)
    assert t[0] == pytest.approx(1.0)  # one pixel: (0.2071 + 1.9102) / (1.2071 + 0.9102)
    assert half_bit_threshold(np.array([1e12]))[0] == pytest.approx(0.2071 / 1.2071, rel=1e-5)
    assert np.all(np.diff(t[1:]) < 0.05)  # falls as the rings grow
    # a curve crossing a threshold curve: interpolated zero of (curve − threshold)
    f = np.linspace(0, 0.5, 6)
    c = frc_resolution(np.array([1, 0.9, 0.6, 0.2, 0.1, 0.0]), np.full(6, 0.4), frequencies=f)
    assert c.crossed and c.frequency == pytest.approx(0.2 + 0.1 * 0.5) and c.resolution_px == pytest.approx(4.0)
    assert frc_resolution(np.array([1, 0.9, 0.6, 0.2]), 0.5) == frc_resolution(np.array([1, 0.9, 0.6, 0.2]), np.full(4, 0.5))


def test_crossing_starts_where_the_curve_reaches_the_threshold():
    """The ½-bit curve is ≈ 1 at the smallest rings: a curve starting below it is not 'crossed' there."""
    from ptychopinn.reconstruct.frc_halves import crossing

    f = np.linspace(0, 0.5, 6)
    thr = np.array([1.0, 0.8, 0.4, 0.3, 0.3, 0.3])
    c = crossing(np.array([1.0, 0.6, 0.7, 0.5, 0.1, 0.0]), thr, f)
    assert c.crossed and c.frequency == pytest.approx(0.3 + 0.1 * (0.2 / 0.4))  # between rings 3 and 4
    never = crossing(np.array([1.0, 0.1, 0.1, 0.0, 0.0, 0.0]), thr, f)
    assert never.crossed and never.frequency == 0.0 and never.resolution_px == float("inf")
    from ptychopinn.io.atomic import strict_json_dumps

    assert json.loads(strict_json_dumps({"r": never.resolution_px})) == {"r": None}
    # reaching the threshold only at high frequency (noise, past the start window) resolves nothing
    f20 = np.linspace(0, 0.5, 20)
    late = np.zeros(20)
    late[0], late[14] = 1.0, 0.9
    noise = crossing(late, np.full(20, 0.3), f20)
    assert noise.frequency == 0.0 and noise.resolution_px == float("inf")
    flat = crossing(np.ones(6), thr, f)
    assert not flat.crossed and flat.frequency == 0.5


def test_split_interleaved_and_subset_view():
    from ptychopinn.reconstruct.frc_halves import split_interleaved, subset_scan

    a, b = split_interleaved(7)
    np.testing.assert_array_equal(a, [0, 2, 4, 6])
    np.testing.assert_array_equal(b, [1, 3, 5])
    scan, xy = _grid_scan(None)
    half = subset_scan(scan, b)
    assert half.n_positions == b.size and half.diffraction.shape == (b.size, 64, 64)
    np.testing.assert_array_equal(half.xcoords, xy[b, 0])
    np.testing.assert_array_equal(half.diffraction[np.array([0, 2])][:, 0, 0], [b[0] + 1, b[2] + 1])


def test_identical_halves_give_frc_one_without_truth(tmp_path):
    """No objectGuess: both halves reproduce the (white, broadband) object exactly → FRC ≈ 1."""
    from ptychopinn.reconstruct import reconstruct

    truth = _white_object()
    scan, xy = _grid_scan(None)
    out = tmp_path / "rec"
    rec = reconstruct(IndexModel(_patches(truth, xy)), scan, device="cpu", frc_halves=True, out_dir=out)
    h = rec.frc_halves
    assert rec.metrics is None and h.n_positions == (61, 60)
    assert h.curve[1:].min() > 0.999, h.curve.min()
    assert not h.half_bit_crossing.crossed and not h.one_seventh_crossing.crossed
    a, b = h.halves
    covered = h.mask > 1e-2  # (the stitcher divides by weight + 1e-9: values fade where the weight is ~0)
    assert covered.mean() > 0.9
    np.testing.assert_allclose(a[covered], b[covered], rtol=1e-5, atol=1e-5)
    doc = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert set(doc) == {"frc_halves"}  # no truth: no amplitude/phase metrics
    entry = doc["frc_halves"]
    assert entry["split"].startswith("interleaved") and entry["one_seventh"]["crossed"] is False
    assert len(entry["curve"]) == len(entry["frequencies_per_px"]) == len(entry["half_bit_threshold"])
    assert (out / "frc_halves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "reconstruction.npz").is_file() and (out / "amplitude.png").is_file()


def test_independent_noise_gives_low_frc_at_high_frequencies_and_truth_curve(tmp_path):
    """Independent noise per position: halves agree at low frequencies (the smooth object) and
    not at high ones; with objectGuess, metrics.json holds the truth metrics and the FRC."""
    from ptychopinn.reconstruct import reconstruct

    truth = _smooth_object()
    scan, xy = _grid_scan(truth)
    out = tmp_path / "rec"
    rec = reconstruct(IndexModel(_patches(truth, xy), noise=1.0), scan, device="cpu", frc_halves=True, out_dir=out)
    h = rec.frc_halves
    f = h.frequencies
    assert h.curve[(f > 0) & (f < 0.05)].mean() > 0.8, h.curve[:8]
    assert np.abs(h.curve[f > 0.3]).mean() < 0.15, h.curve[f > 0.3]
    assert h.half_bit_crossing.crossed and h.one_seventh_crossing.crossed
    assert 0.05 < h.one_seventh_crossing.frequency < 0.3
    assert h.one_seventh_crossing.resolution_px == pytest.approx(1 / h.one_seventh_crossing.frequency)
    assert h.truth_curve is not None and h.truth_curve.shape == h.curve.shape
    doc = json.loads((out / "metrics.json").read_text())
    assert {"amplitude", "phase", "frc_halves"} <= set(doc)
    assert doc["frc_halves"]["truth_one_seventh"]["crossed"] in (True, False)


def test_frc_halves_errors(tmp_path):
    from ptychopinn.reconstruct import reconstruct
    from ptychopinn.reconstruct.frc_halves import half_set_frc

    truth = _white_object()
    scan, xy = _grid_scan(None)
    model = IndexModel(_patches(truth, xy))
    with pytest.raises(ConfigError, match="barycentric"):
        reconstruct(model, scan, device="cpu", stitch="tf", frc_halves=True)
    from ptychopinn.reconstruct.frc_halves import subset_scan

    with pytest.raises(DataError, match="too few"):
        half_set_frc(model, subset_scan(scan, np.array([0])), device="cpu")


def test_overwrite_api(tmp_path):
    """reconstruct(out_dir=...) refuses a non-empty folder before any work; overwrite=True replaces it."""
    from ptychopinn.reconstruct import reconstruct

    truth = _white_object()
    scan, xy = _grid_scan(None)
    model = IndexModel(_patches(truth, xy))
    out = tmp_path / "rec"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"rec: output folder exists and is not empty \(pass overwrite=True"):
        reconstruct(model, scan, device="cpu", out_dir=out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    reconstruct(model, scan, device="cpu", out_dir=out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "reconstruction.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]  # no temporaries left


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_reconstruction_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    """Every file of a reconstruction folder (npz, h5, PNGs, metrics.json) has the umask's mode."""
    import os

    from ptychopinn.reconstruct import reconstruct

    truth = _white_object()
    scan, xy = _grid_scan(None)
    out = tmp_path / "rec"
    old = os.umask(umask)
    try:
        reconstruct(IndexModel(_patches(truth, xy)), scan, device="cpu", frc_halves=True, out_dir=out)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == dir_mode
    files = sorted(out.iterdir())
    assert {p.name for p in files} >= {"reconstruction.npz", "reconstruction.h5", "metrics.json", "frc_halves.png", "amplitude.png"}
    for p in files:
        assert p.stat().st_mode & 0o777 == file_mode, (p.name, oct(p.stat().st_mode & 0o777))


def test_frc_halves_reads_the_model_once(tmp_path, monkeypatch):
    """`reconstruct(path, frc_halves=True)` loads the model once (the halves reuse the loaded
    network and its saved extra info) and gives the same half-set FRC as `half_set_frc(path)`,
    which reads the model itself: the saved training neighbor_count (K=7 here, not the default
    4) reaches the grouping of the halves at gridsize 2."""
    from ptychopinn import io
    from ptychopinn.io import model_format
    from ptychopinn.model import PtychoPINN
    from ptychopinn.reconstruct import reconstruct
    from ptychopinn.reconstruct.frc_halves import half_set_frc

    torch.manual_seed(0)
    N = 64
    path = io.save_model(PtychoPINN(ModelConfig(N=N, gridsize=2, n_filters_scale=1), intensity_scale=10.0), tmp_path / "model",
                         extra={"training": {"data_config": {"neighbor_count": 7}}})
    rng = np.random.default_rng(0)
    c = np.arange(40, 121, 10, dtype=np.float64)
    xx, yy = np.meshgrid(c, c)
    from ptychopinn.data import make_scan
    from ptychopinn.physics.probe import default_probe

    scan = make_scan(diffraction=(rng.random((xx.size, N, N)) * 3).astype(np.float32), xcoords=xx.ravel() + rng.uniform(-1, 1, xx.size),
                     ycoords=yy.ravel() + rng.uniform(-1, 1, xx.size), probeGuess=default_probe(N))
    calls = []
    real_load = model_format.load_model

    def counting_load(*args, **kwargs):
        calls.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(model_format, "load_model", counting_load)  # what the native loader of io.loaders calls
    rec = reconstruct(path, scan, device="cpu", frc_halves=True, out_dir=tmp_path / "rec")
    assert len(calls) == 1, calls
    assert (tmp_path / "rec" / "frc_halves.png").is_file()
    alone = half_set_frc(path, scan, device="cpu")
    assert len(calls) == 2
    assert rec.frc_halves.n_groups == alone.n_groups
    np.testing.assert_array_equal(rec.frc_halves.curve, alone.curve)
    for a, b in zip(rec.frc_halves.halves, alone.halves):
        np.testing.assert_array_equal(a, b)
    # with the default neighbor_count the halves would be grouped differently
    four = half_set_frc(path, scan, device="cpu", extra={})
    assert not np.array_equal(four.halves[0], alone.halves[0])
