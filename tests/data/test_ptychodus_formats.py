"""ptychodus training exports, written by ptychodus's own writers (ptychodus 1.7.0), read as
they are by `load_scan`: counts, bad pixels, probe modes, the object as an initial guess only,
physical metadata; then a CLI reconstruction of each (no ground truth anywhere).

CI installs ptychodus (`pip install ptychodus==1.7.0 --no-deps` plus numpy, scipy, h5py,
scikit-image, pydantic); the skip below only fires where it is genuinely absent."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ptychodus")

from ptychodus.api.geometry import PixelGeometry  # noqa: E402
from ptychodus.api.io import save_ptychopinn_training_data, save_training_data  # noqa: E402
from ptychodus.api.object import Object, ObjectCenter  # noqa: E402
from ptychodus.api.probe import ProbeSequence  # noqa: E402
from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence  # noqa: E402
from ptychodus.api.product import Product, ProductMetadata  # noqa: E402
from ptychodus.api.reconstruct import ReconstructInput  # noqa: E402

from ptychopinn.data import load_scan  # noqa: E402

PIXEL_M = 10e-9


def _reconstruct_input(M: int = 16, N: int = 64, K: int = 2, seed: int = 0, hot: bool = True):
    """(ptychodus ReconstructInput: uint16 counts, a bad-pixel mask, K probe modes, an initial
    object; the true positions x, y in object pixels; the modes)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] - N / 2
    mean = 300.0 * np.exp(-(xx**2 + yy**2) / (2 * 5.0**2)) + 1.0
    counts = rng.poisson(mean, (M, N, N)).astype(np.uint16)
    bad = np.zeros((N, N), bool)
    bad[5, 7] = bad[40, 41] = True
    if hot:
        counts[:, bad] = 60000
    probe = np.exp(-(xx**2 + yy**2) / (2 * 8.0**2)).astype(np.complex64)
    modes = np.stack([probe * (0.3 if k else 1.0) * np.exp(1j * k * xx / N) for k in range(K)]).astype(np.complex64)
    H = W = 128
    obj = np.ones((H, W), np.complex64)  # an initial guess, as ptychodus exports carry
    xs = rng.uniform(40, 88, M)
    ys = rng.uniform(40, 88, M)
    # ptychodus positions are metres about the object centre; x_px = x_m / dx + (W - 1) / 2
    points = [ProbePosition(i, (x - (W - 1) / 2) * PIXEL_M, (y - (H - 1) / 2) * PIXEL_M) for i, (x, y) in enumerate(zip(xs, ys))]
    geom = PixelGeometry(width_m=PIXEL_M, height_m=PIXEL_M)
    product = Product(
        metadata=ProductMetadata(
            name="t", comments="", detector_distance_m=2.5, photon_energy_eV=8800.0, probe_photon_count=1e6,
            exposure_time_s=0.1, mass_attenuation_m2_per_kg=0.0, tomography_angle_deg=0.0,
        ),
        probe_positions=ProbePositionSequence(points),
        probes=ProbeSequence(modes, None, geom),
        object_=Object(obj, geom, ObjectCenter(0.0, 0.0)),
        losses=[],
    )
    return ReconstructInput(diffraction_patterns=counts, bad_pixels=bad, product=product), xs, ys, modes


@pytest.mark.parametrize("kind", ["npz", "h5"])
@pytest.mark.parametrize("inpaint", [True, False])
def test_ptychodus_exports_load_as_they_are(tmp_path, kind, inpaint):
    ri, xs, ys, modes = _reconstruct_input()
    path = tmp_path / f"train.{kind}"
    if kind == "npz":
        save_ptychopinn_training_data(path, ri, inpaint_bad_pixels=inpaint)
    else:
        save_training_data(path, ri, inpaint_bad_pixels=inpaint)
    scan = load_scan(path)
    assert scan.metadata["source_format"] == f"ptychodus-{kind}"
    assert scan.diffraction_units == "counts" and scan.N == 64 and scan.n_positions == 16
    np.testing.assert_array_equal(scan.bad_pixels, ri.bad_pixels)
    # the ptychodus repair (inpainted or zeroed) is kept for measured pixels, read as sqrt(counts)
    stored = np.asarray(ri.diffraction_patterns, np.float32)
    got = np.asarray(scan.diffraction)
    np.testing.assert_array_equal(got[:, ~ri.bad_pixels], np.sqrt(stored[:, ~ri.bad_pixels]))
    np.testing.assert_allclose(scan.xcoords, xs, atol=1e-9)
    np.testing.assert_allclose(scan.ycoords, ys, atol=1e-9)
    assert scan.probe_modes.shape == (2, 64, 64)
    np.testing.assert_array_equal(scan.probe, modes[0])  # the dominant mode
    # the exported object is an initial guess: never ground truth, so no metrics against it
    assert scan.object is None and scan.initial_object.shape == (128, 128)
    if kind == "h5":
        assert scan.metadata["object_pixel_width_m"] == PIXEL_M and scan.metadata["object_pixel_height_m"] == PIXEL_M
        assert scan.metadata["detector_distance_m"] == 2.5 and scan.metadata["photon_energy_eV"] == 8800.0
        assert not isinstance(scan.diffraction, np.ndarray)  # HDF5 (lzf) read per gather


def test_ptychodus_exports_reconstruct_through_the_cli(tmp_path, capsys):
    import torch

    from ptychopinn import io
    from ptychopinn.cli import main
    from ptychopinn.config import ModelConfig
    from ptychopinn.model import PtychoPINN

    ri, _, _, modes = _reconstruct_input(M=12)
    npz, h5 = tmp_path / "t.npz", tmp_path / "t.h5"
    save_ptychopinn_training_data(npz, ri)
    save_training_data(h5, ri)
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    io.save_model(PtychoPINN(ModelConfig(N=64, n_filters_scale=1), probe=modes[0]), model_dir)
    objects = []
    for path in (npz, h5):
        out = tmp_path / f"rec_{path.suffix[1:]}"
        rc = main(["reconstruct", "--model", str(model_dir), "--data", str(path), "--out", str(out), "--device", "cpu", "--quiet"])
        assert rc == 0, capsys.readouterr().err
        assert not (out / "metrics.json").exists()  # no truth: no metrics against the initial guess
        with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
            objects.append(z["object"])
    assert objects[0].dtype == np.complex64 and np.isfinite(objects[0]).all()
    np.testing.assert_allclose(objects[0], objects[1], rtol=0, atol=1e-6 * np.abs(objects[0]).max())
