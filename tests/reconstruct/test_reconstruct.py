"""Reconstruction: stitching oracle with a perfect model, end to end train → save → load →
reconstruct → metrics at gridsize 1 and 2, outputs on disk, the tf stitch mode, model hooks."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig
from ptychopinn.errors import ConfigError, ModelFormatError, PtychoPINNError


# -- a perfect model: returns the true object patch at each group centre ------------------------
class PerfectModel(torch.nn.Module):
    """Stands in for PtychoPINN: `predict_object` returns truth patches in group order."""

    def __init__(self, truth: np.ndarray, centres: np.ndarray, gridsize: int = 1, N: int = 64) -> None:
        super().__init__()
        from ptychopinn.data import object_patches

        self.config = ModelConfig(N=N, gridsize=gridsize)
        self.intensity_scale = 1.0
        self.patches = torch.from_numpy(object_patches(truth, centres, N))
        self.calls = 0
        self.seen = 0

    def predict_object(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        assert x.shape[1:] == (self.config.channels, self.config.N, self.config.N)
        out = self.patches[self.seen : self.seen + b]
        self.seen += b
        self.calls += 1
        return out


def _smooth_object(H: int, W: int, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    amp = 0.5 + 0.5 * gaussian_filter(rng.random((H, W)), 3) / 0.6
    ph = gaussian_filter(rng.standard_normal((H, W)), 4) * 8
    return (amp * np.exp(1j * ph)).astype(np.complex64)


def _scan_with_positions(obj: np.ndarray | None, xy: np.ndarray, N: int = 64, shape=(128, 128)):
    from ptychopinn.data import make_scan
    from ptychopinn.physics.probe import default_probe

    M = xy.shape[0]
    rng = np.random.default_rng(1)
    arrays = dict(
        diffraction=(rng.random((M, N, N)) + 0.5).astype(np.float32),
        xcoords=xy[:, 0].astype(np.float64),
        ycoords=xy[:, 1].astype(np.float64),
        probeGuess=default_probe(N),
    )
    if obj is not None:
        arrays["objectGuess"] = obj
    return make_scan(**arrays)


@pytest.mark.parametrize("stitch, weight", [("barycentric", "probe"), ("barycentric", "uniform"), ("tf", "probe")])
def test_perfect_model_reproduces_the_object(stitch, weight):
    from ptychopinn.data import group_scan
    from ptychopinn.reconstruct import reconstruct

    obj = _smooth_object(128, 128)
    rng = np.random.default_rng(2)
    xy = rng.uniform(40, 88, (40, 2))
    scan = _scan_with_positions(obj, xy)
    groups = group_scan(scan, DataConfig(gridsize=1, seed=45))
    model = PerfectModel(obj, groups.centres)
    rec = reconstruct(model, scan, batch_size=7, stitch=stitch, weight=weight, device="cpu")
    assert model.seen == 40 and model.calls == 6  # every position, in bounded batches
    assert rec.object.dtype == np.complex64 and rec.object.ndim == 2
    if stitch == "barycentric":
        assert rec.object.shape == obj.shape and rec.origin == (0.0, 0.0)
    r0, r1, c0, c1 = rec.region
    oy, ox = round(rec.origin[1]), round(rec.origin[0])
    got = rec.object[r0 - oy : r1 - oy, c0 - ox : c1 - ox][4:-4, 4:-4]
    want = obj[r0:r1, c0:c1][4:-4, 4:-4]
    # truth patches are bilinear samples of a smooth object and are splatted back bilinearly:
    # only the double interpolation separates them (no systematic shift or scale)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < 0.03, rel
    assert rec.metrics["amplitude"]["ssim"] > 0.95 and rec.metrics["phase"]["ssim"] > 0.95


def test_canvas_from_positions_keeps_every_patch():
    """No objectGuess and positions near 0 / negative: the canvas grows; no patch is dropped."""
    from ptychopinn.data import group_scan
    from ptychopinn.reconstruct import reconstruct

    xy = np.array([[-20.0, 5.0], [0.0, 0.0], [30.5, 12.25], [90.0, -40.0]])
    scan = _scan_with_positions(None, xy)
    groups = group_scan(scan, DataConfig(gridsize=1, seed=45))
    ones = np.ones((300, 300), np.complex64)
    model = PerfectModel(ones, groups.centres + 150)
    rec = reconstruct(model, scan, crop=16, weight="uniform", device="cpu")
    assert rec.metrics is None
    centres = rec.centres
    assert centres.min() >= 8 and (centres[:, 0] <= rec.object.shape[1] - 8).all() and (centres[:, 1] <= rec.object.shape[0] - 8).all()
    for cx, cy in centres:  # every patch's full crop landed on the canvas
        r, c = int(round(cy)), int(round(cx))
        assert rec.weight[r - 7 : r + 7, c - 7 : c + 7].min() > 0.99
        np.testing.assert_allclose(rec.object[r - 7 : r + 7, c - 7 : c + 7], 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    base = tmp_path_factory.mktemp("rec")
    path = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=10, nphotons=1e6, seed=4), base / "scan.npz")
    return base, path


@pytest.mark.parametrize("gridsize", [1, 2])
def test_end_to_end_train_save_load_reconstruct(tiny, gridsize):
    import ptychopinn as pp

    base, scan_path = tiny
    mdir = base / f"model_gs{gridsize}"
    result = pp.train(
        scan_path,
        model_config=ModelConfig(gridsize=gridsize, n_filters_scale=1),
        data_config=DataConfig(gridsize=gridsize),
        train_config=TrainConfig(epochs=1, batch_size=16, device="cpu", validation_fraction=0.0),
        out_dir=mdir,
        progress=False,
    )
    out = base / f"rec_gs{gridsize}"
    rec = pp.reconstruct(mdir, scan_path, device="cpu", out_dir=out)
    same = pp.reconstruct(result.model, scan_path, device="cpu")
    np.testing.assert_array_equal(rec.object, same.object)  # path and module give the same numbers
    assert rec.n_groups == 10  # one group per scan position, never a prefix
    assert rec.normalization_factor == pytest.approx(result.normalization_factor, rel=1e-6)
    assert rec.intensity_scale == pytest.approx(result.intensity_scale, rel=1e-6)
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
    assert obj.dtype == np.complex64 and obj.shape == (96, 96)
    np.testing.assert_array_equal(obj, rec.object)
    metrics = json.loads((out / "metrics.json").read_text())
    for part in ("amplitude", "phase"):
        for key in ("ssim", "psnr", "ms_ssim", "frc"):
            assert key in metrics[part], (part, key)
        assert -1 <= metrics[part]["ssim"] <= 1
    names = {p.name for p in out.iterdir()}
    assert {"reconstruction.npz", "reconstruction.h5", "amplitude.png", "phase.png", "error_map.png", "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporaries left behind


def test_tf_stitch_mode_with_a_trained_model(tiny):
    import ptychopinn as pp
    from ptychopinn.interop.tf_compat import reassemble_position

    base, scan_path = tiny
    mdir = base / "model_gs1"
    if not mdir.exists():
        pp.train(scan_path, ModelConfig(n_filters_scale=1), None, TrainConfig(epochs=1, batch_size=16, device="cpu", validation_fraction=0.0), out_dir=mdir, progress=False)
    rec = pp.reconstruct(mdir, scan_path, device="cpu", stitch="tf")
    assert rec.crop == 20 and rec.object.dtype == np.complex64 and rec.object.ndim == 2
    assert rec.metrics is not None and np.isfinite(rec.metrics["amplitude"]["ssim"])
    # same numbers as calling the TF-compatible stitcher on all patches directly
    from ptychopinn import data
    from ptychopinn.io import load_model

    model = load_model(mdir)
    scan = data.load_scan(scan_path)
    groups = data.group_scan(scan, DataConfig(seed=45))
    f = float(data.normalization_factor(scan.diffraction, groups.indices))
    ds = data.GroupDataset(scan, groups, f * model.intensity_scale)
    b = ds.batch(np.arange(len(ds)))
    with torch.inference_mode():
        patches = model.predict_object(b["x"], b["offsets"]).numpy()
    ref = reassemble_position(patches, groups.centres, M=20)
    np.testing.assert_allclose(rec.object, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_model_argument_errors(tiny, tmp_path):
    from ptychopinn.reconstruct import reconstruct

    _, scan_path = tiny
    with pytest.raises(ModelFormatError, match="not found"):
        reconstruct(tmp_path / "nope", scan_path, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="not a ptychopinn model"):
        reconstruct(tmp_path / "empty", scan_path, device="cpu")
    with pytest.raises(ConfigError, match="stitch"):
        reconstruct(tmp_path / "empty", scan_path, stitch="poisson")
    # a legacy bundle (zip with manifest.dill) is routed to ptychopinn.interop, which rejects junk
    legacy = tmp_path / "wts.h5.zip"
    with zipfile.ZipFile(legacy, "w") as zf:
        zf.writestr("manifest.dill", b"not a pickle")
    from ptychopinn.reconstruct import is_legacy_bundle

    assert is_legacy_bundle(legacy)
    with pytest.raises(PtychoPINNError):
        reconstruct(legacy, scan_path, device="cpu")
