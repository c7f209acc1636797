"""The network input of measured scans: the bad-pixel fill (shared by GroupDataset and the ONNX
runner), the mask a batch carries for the loss, detector crop/bin (lazy, per gather), and the
sparse-group warning."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ptychopinn.config import DataConfig
from ptychopinn.data import BadPixelFill, GroupDataset, group_scan, load_scan, make_scan, normalization_factor
from ptychopinn.data.detector import size_hint
from ptychopinn.errors import DataError


# -- the fill -------------------------------------------------------------------------------
def test_fill_is_the_mean_of_the_measured_4_neighbours(rng):
    x = rng.random((3, 8, 8)).astype(np.float32)
    bad = np.zeros((8, 8), bool)
    bad[3, 4] = True  # isolated
    bad[0, 0] = True  # corner: 2 neighbours
    bad[6, 2] = bad[6, 3] = True  # a 1x2 gap: each has 3 measured neighbours
    out = BadPixelFill(bad)(x)
    np.testing.assert_array_equal(out[:, ~bad], x[:, ~bad])  # measured pixels untouched
    np.testing.assert_allclose(out[:, 3, 4], (x[:, 2, 4] + x[:, 4, 4] + x[:, 3, 3] + x[:, 3, 5]) / 4, rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0], (x[:, 1, 0] + x[:, 0, 1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 6, 2], (x[:, 5, 2] + x[:, 7, 2] + x[:, 6, 1]) / 3, rtol=1e-6)
    # a 3x3 block fills from its rim inwards (the centre is the mean of 4 round-1 values)
    block = np.zeros((8, 8), bool)
    block[2:5, 2:5] = True
    f = BadPixelFill(block)
    assert len(f.rounds) == 2
    y = f(x)
    np.testing.assert_allclose(y[:, 3, 3], (y[:, 2, 3] + y[:, 4, 3] + y[:, 3, 2] + y[:, 3, 4]) / 4, rtol=1e-6)
    # linear (so it commutes with the input scale), in place when asked, shape-checked
    np.testing.assert_allclose(f(2.5 * x + x**2), 2.5 * f(x) + f(x**2), rtol=1e-5)
    z = x.copy()
    assert f(z, out=z) is z
    np.testing.assert_array_equal(z, y)
    with pytest.raises(DataError, match="do not match"):
        f(np.zeros((2, 4, 4), np.float32))


def test_group_dataset_fills_and_carries_the_mask(rng):
    N = 8
    d = (rng.random((10, N, N)) + 0.5).astype(np.float32)
    bad = np.zeros((N, N), bool)
    bad[1, 2] = bad[5, 5] = True
    d[:, bad] = 1e3  # hot
    scan = make_scan(diffraction=d, xcoords=rng.uniform(0, 20, 10), ycoords=rng.uniform(0, 20, 10),
                     probeGuess=np.ones((N, N), np.complex64), bad_pixels=bad)
    groups = group_scan(scan, DataConfig(gridsize=2, neighbor_count=4, seed=1), N=64)
    ds = GroupDataset(scan, groups, scale=0.5)
    batch = ds.batch([0, 3, 3])
    expected = 0.5 * BadPixelFill(bad)(d[groups.indices[[0, 3, 3]]])
    np.testing.assert_allclose(batch["x"].numpy(), expected, rtol=1e-6)
    assert float(batch["x"].max()) < 10  # the hot pixels never reach the network
    assert batch["valid"].shape == (N, N) and batch["valid"].dtype == torch.bool
    np.testing.assert_array_equal(batch["valid"].numpy(), ~bad)
    assert ds.valid is batch["valid"]
    item = ds[2]
    assert "valid" not in item and item["x"].shape == (4, N, N)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    assert next(iter(loader))["x"].shape == (4, 4, N, N)
    clean = make_scan(diffraction=d, xcoords=scan.xcoords, ycoords=scan.ycoords, probeGuess=scan.probe)
    assert "valid" not in GroupDataset(clean, groups, 1.0).batch([0]) and GroupDataset(clean, groups, 1.0).valid is None


# -- detector crop / bin --------------------------------------------------------------------
def _big_frames(tmp_path, S=128, M=6, centre=(70.0, 58.0), dtype=np.uint32, bad=None, name="big.npz"):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:S, :S]
    mean = 500.0 * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 4.0**2)) + 0.5
    counts = rng.poisson(mean, (M, S, S)).astype(dtype)
    arrays = dict(diffraction=counts, xcoords=rng.uniform(30, 60, M), ycoords=rng.uniform(30, 60, M),
                  probeGuess=np.exp(-((yy - S / 2) ** 2 + (xx - S / 2) ** 2) / 200.0).astype(np.complex64))
    if bad is not None:
        arrays["bad_pixels"] = bad
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name, arrays


def _centroid(img):
    img = np.asarray(img, np.float64)
    r = np.arange(img.shape[0])
    return float(img.sum(1) @ r / img.sum()), float(img.sum(0) @ r / img.sum())


def test_crop_centres_on_the_mean_pattern_centroid_lazily(tmp_path):
    path, a = _big_frames(tmp_path)
    scan = load_scan(path, crop=64)
    assert scan.N == 64 and isinstance(scan.diffraction.source, np.memmap)
    cy, cx = _centroid(a["diffraction"].astype(np.float64).mean(axis=0))  # one centre for the whole scan
    np.testing.assert_allclose(scan.metadata["detector_crop"]["centroid"], [cy, cx], rtol=1e-9)
    r0, c0, W = scan.metadata["detector_crop"]["row0"], scan.metadata["detector_crop"]["col0"], 64
    assert (r0, c0) == (int(np.floor(cy + 0.5)) - 32, int(np.floor(cx + 0.5)) - 32)  # centroid -> pixel (32, 32)
    peak = np.unravel_index(np.argmax((np.asarray(scan.diffraction, np.float64) ** 2).mean(0)), (64, 64))
    assert abs(peak[0] - (32 + 70 - cy)) <= 1.5 and abs(peak[1] - (32 + 58 - cx)) <= 1.5
    np.testing.assert_array_equal(scan.diffraction[2], np.sqrt(a["diffraction"][2, r0 : r0 + W, c0 : c0 + W].astype(np.float32)))
    # positions in object pixels scale with the window (object pixels grow by S/W); the probe is resampled
    np.testing.assert_allclose(scan.xcoords, a["xcoords"] * 64 / 128)
    assert scan.probe.shape == (64, 64)


def test_bin_sums_counts_and_marks_binned_bad_pixels(tmp_path):
    bad = np.zeros((128, 128), bool)
    bad[40, 41] = True
    path, a = _big_frames(tmp_path, bad=bad)
    scan = load_scan(path, bin=2)
    assert scan.N == 64 and scan.metadata["detector_bin"] == 2
    c = a["diffraction"].astype(np.float64)
    binned = c.reshape(6, 64, 2, 64, 2).sum(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(scan.diffraction), np.sqrt(binned), rtol=1e-6)
    expected_bad = np.zeros((64, 64), bool)
    expected_bad[20, 20] = True
    np.testing.assert_array_equal(scan.bad_pixels, expected_bad)
    np.testing.assert_allclose(scan.xcoords, a["xcoords"])  # binning keeps the object pixel
    # the equivalent amplitude file bins to the same amplitudes
    amp = dict(a, diffraction=np.sqrt(a["diffraction"].astype(np.float32)))
    np.savez(tmp_path / "amp.npz", **amp)
    np.testing.assert_allclose(np.asarray(load_scan(tmp_path / "amp.npz", bin=2).diffraction), np.asarray(scan.diffraction), rtol=1e-6)
    # crop + bin: 128 -> window 64 -> 32
    both = load_scan(path, bin=2, crop=32)
    assert both.N == 32 and both.metadata["detector_crop"]["size"] == 64
    with pytest.raises(DataError, match="not divisible by --bin 3"):
        load_scan(path, bin=3)


def test_mismatched_size_error_suggests_the_flags():
    assert "--crop-detector" in size_hint(128, 64) and "--bin 2" in size_hint(128, 64)
    assert "--bin 8" in size_hint(512, 64)
    assert size_hint(64, 64) == "" and size_hint(32, 64) == ""


# -- sparse groups ---------------------------------------------------------------------------
def test_sparse_scan_at_gridsize_2_warns_once(rng):
    N = 16
    def scan_with_step(step):
        xy = np.stack(np.meshgrid(np.arange(4) * step, np.arange(4) * step), -1).reshape(-1, 2).astype(np.float64)
        return make_scan(diffraction=np.ones((16, N, N), np.float32), xcoords=xy[:, 0], ycoords=xy[:, 1],
                         probeGuess=np.ones((N, N), np.complex64))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        group_scan(scan_with_step(40.0), DataConfig(gridsize=2, neighbor_count=4))
    msgs = [str(w.message) for w in rec if "more than N/2" in str(w.message)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "too sparse" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group_scan(scan_with_step(3.0), DataConfig(gridsize=2, neighbor_count=4))
        group_scan(scan_with_step(40.0), DataConfig(gridsize=1))


def test_normalisation_accepts_only_a_matching_mask(rng):
    d = rng.random((4, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match=r"bad_pixels has shape \(4, 4\)"):
        normalization_factor(d, bad_pixels=np.zeros((4, 4), bool))


def test_probe_resampling_follows_the_detector_crop(rng):
    """Cropping the detector to W of S pixels = Fourier-cropping the probe: its far field is the
    central W x W of the original far field (up to a constant)."""
    from ptychopinn.data.detector import resample_object, transform_probe

    S, W = 32, 16
    yy, xx = np.mgrid[:S, :S] - S / 2
    probe = np.exp(-(xx**2 + yy**2) / 30.0) * np.exp(1j * 0.02 * (xx**2 + yy**2))
    far = np.abs(np.fft.fftshift(np.fft.fft2(probe))) ** 2
    small = transform_probe(probe, S, (0, 0, W), 1)
    assert small.shape == (W, W) and small.dtype == np.complex64
    far_small = np.abs(np.fft.fftshift(np.fft.fft2(small))) ** 2
    centre = far[S // 2 - W // 2 : S // 2 + W // 2, S // 2 - W // 2 : S // 2 + W // 2]
    np.testing.assert_allclose(far_small / far_small.sum(), centre / centre.sum(), atol=1e-6)
    # binning keeps the pixel: the central N x N of the (resampled) probe
    np.testing.assert_allclose(transform_probe(probe, S, None, 2), probe[8:24, 8:24], rtol=1e-6)
    # objects are resampled on the same coarser grid (a constant stays that constant)
    obj = np.full((40, 60), 0.5 + 0.25j)
    np.testing.assert_allclose(resample_object(obj, 0.5), np.full((20, 30), 0.5 + 0.25j), atol=1e-6)


def test_h5_round_trip_keeps_mask_modes_and_initial_object(tmp_path, rng):
    from ptychopinn.data import save_scan_h5

    N = 8
    bad = np.zeros((N, N), bool)
    bad[2, 3] = True
    modes = (rng.random((2, N, N)) + 1j).astype(np.complex64)
    scan = make_scan(diffraction=rng.integers(0, 50, (5, N, N)).astype(np.uint16), xcoords=rng.uniform(0, 9, 5),
                     ycoords=rng.uniform(0, 9, 5), probeGuess=modes, bad_pixels=bad,
                     initial_object=np.ones((20, 20), np.complex64))
    assert scan.diffraction_units == "counts"
    back = load_scan(save_scan_h5(tmp_path / "s.h5", scan))
    assert back.diffraction_units == "amplitude"
    np.testing.assert_array_equal(np.asarray(back.diffraction), np.asarray(scan.diffraction))
    np.testing.assert_array_equal(back.bad_pixels, bad)
    np.testing.assert_array_equal(back.probe_modes, modes)
    assert back.object is None and back.initial_object.shape == (20, 20)


def test_chunked_scans_budget_for_the_stored_frames(tmp_path):
    """Binning 128x128 frames to 64x64: chunked passes size their blocks by the stored frames."""
    from ptychopinn.data.lazy import iter_chunks

    path, a = _big_frames(tmp_path, M=10)
    scan = load_scan(path, bin=2)
    per_row = 128 * 128 * (4 + 8)
    assert scan.diffraction.row_nbytes == per_row
    blocks = [b.shape[0] for _, b in iter_chunks(scan.diffraction, chunk_bytes=3 * per_row)]
    assert blocks == [3, 3, 3, 1]


def test_workflows_name_the_flags_for_big_frames(tmp_path):
    from ptychopinn.config import ModelConfig, TrainConfig
    from ptychopinn.data import LoadOptions
    from ptychopinn.errors import ConfigError
    from ptychopinn.train import train

    path, _ = _big_frames(tmp_path)  # 128x128 frames and a 128x128 probe
    with pytest.raises(DataError, match=r"128x128, expected N=64.*--crop-detector.*--bin 2") as info:
        train(path, ModelConfig(N=64), train_config=TrainConfig(epochs=1, device="cpu"), progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="apply to scan files"):
        train(load_scan(path), ModelConfig(N=64), train_config=TrainConfig(epochs=1, device="cpu"), progress=False,
              load=LoadOptions(bin=2))
    scan = load_scan(path, bin=2)  # the (128, 128) probe follows the detector: central 64x64
    assert scan.N == 64 and scan.probe.shape == (64, 64)
