"""`PtychoPINNReconstructor` driven as ptychodus 1.7 drives a `TrainableReconstructor`, with real
`ReconstructInput`s built from real ptychodus `Product`s and the legacy TF bundles of ../shared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="needs the ptychodus extra (CI installs it)")

from _ptychodus_helpers import mapped_positions, simulated_session  # noqa: E402
from ptychodus.api.product import Product  # noqa: E402
from ptychodus.api.reconstruct import ReconstructOutput, TrainableReconstructor, TrainOutput  # noqa: E402

from conftest import legacy_dir, rel_l2  # noqa: E402
from ptychopinn.errors import ConfigError  # noqa: E402
from ptychopinn.interop.ptychodus import PtychoPINNReconstructor  # noqa: E402


@pytest.fixture(scope="module")
def session():
    return simulated_session()


def test_interface_acceptance_call(session):
    """The issue's acceptance call, verbatim (default settings, legacy wts.h5.zip)."""
    r = PtychoPINNReconstructor()
    assert isinstance(r, TrainableReconstructor) and not r.is_model_loaded()
    r.load_model_from_file(Path(legacy_dir("n64_gs1") / "wts.h5.zip"))
    assert r.is_model_loaded()
    outputs = list(r.reconstruct(session.reconstruct_input))
    assert all(isinstance(o, ReconstructOutput) for o in outputs)
    assert outputs[-1].progress == r.get_progress_goal() and outputs[-1].status == 0
    product = outputs[-1].product
    assert isinstance(product, Product)
    np.testing.assert_array_equal(product.probe_positions.get_indexes(), session.product.probe_positions.get_indexes())
    np.testing.assert_array_equal(product.probe_positions.get_coordinates_x_m(), session.product.probe_positions.get_coordinates_x_m())
    assert product.metadata == session.product.metadata
    obj = product.object_.get_layer(0)
    assert obj.dtype == np.complex64 and np.isfinite(obj).all()
    # every position maps inside the canvas, onto a stitched (non-zero) pixel
    cols, rows = np.rint(mapped_positions(product)).astype(int).T
    assert np.all((cols >= 0) & (cols < obj.shape[1]) & (rows >= 0) & (rows < obj.shape[0]))
    assert np.all(np.abs(obj[rows, cols]) > 0)


@pytest.mark.parametrize("fixture", ["n64_gs1", "n64_gs2"])
def test_legacy_bundle_matches_native_api(session, fixture):
    """Through the reconstructor = through `ptychopinn.reconstruct` on the converted scan."""
    from ptychopinn.interop.ptychodus.product import scan_from_reconstruct_input
    from ptychopinn.reconstruct import reconstruct

    bundle = legacy_dir(fixture) / "wts.h5.zip"
    r = PtychoPINNReconstructor(device="cpu", batch_size=7)
    r.load_model_from_file(bundle.parent)  # a bundle folder, as ptychodus's TF backend saves them
    product = list(r.reconstruct(session.reconstruct_input))[-1].product
    rec = reconstruct(str(bundle), scan_from_reconstruct_input(session.reconstruct_input).scan, device="cpu")
    assert rel_l2(product.object_.get_layer(0), rec.object) < 1e-5
    # group centres are where ptychodus puts the mean of each group's positions
    mapped = mapped_positions(product)
    if fixture == "n64_gs1":
        np.testing.assert_allclose(mapped, rec.centres, atol=1e-9)


def test_save_model_converts_legacy_to_native(session, tmp_path):
    r = PtychoPINNReconstructor(device="cpu")
    r.load_model_from_file(legacy_dir("n64_gs1") / "wts.h5.zip")
    first = list(r.reconstruct(session.reconstruct_input))[-1].product.object_.get_layer(0)
    target = tmp_path / f"model{r.get_model_file_extension()}"
    r.save_model(target)
    from ptychopinn import io

    assert io.is_model_path(target)
    r2 = PtychoPINNReconstructor(device="cpu")
    r2.load_model_from_file(target)
    again = list(r2.reconstruct(session.reconstruct_input))[-1].product.object_.get_layer(0)
    assert rel_l2(again, first) < 1e-6


def test_export_training_data_uses_ptychodus_writers(session, tmp_path):
    import h5py

    r = PtychoPINNReconstructor()
    assert "*.npz" in r.get_training_data_file_filter() and "*.zip" in r.get_model_file_filter()
    r.export_training_data(tmp_path / "train_data.npz", session.reconstruct_input)
    with np.load(tmp_path / "train_data.npz", allow_pickle=False) as z:
        assert {"diff3d", "xcoords", "ycoords", "probeGuess", "objectGuess", "bad_pixels"} <= set(z.files)
        np.testing.assert_allclose(np.stack([z["xcoords"], z["ycoords"]], -1), mapped_positions(session.product))
    r.export_training_data(tmp_path / "train_data.h5", session.reconstruct_input)
    with h5py.File(tmp_path / "train_data.h5", "r") as f:
        assert {"patterns", "probe", "probe_position_x_px", "object_pixel_width_m", "photon_energy_eV"} <= set(f)


def test_train_then_reconstruct(session, tmp_path):
    """train(input folder, output folder) on ptychodus's own export → model.zip, TrainOutput losses, product losses."""
    r = PtychoPINNReconstructor(device="cpu", epochs=2, train_batch_size=8, n_filters_scale=1)
    (tmp_path / "in").mkdir()
    r.export_training_data(tmp_path / "in" / "train_data.npz", session.reconstruct_input)  # ptychodus's NPZ writer
    results = list(r.train(tmp_path / "in", tmp_path / "out"))
    assert all(isinstance(t, TrainOutput) for t in results)
    last = results[-1]
    assert [v.epoch for v in last.training_loss] == [1, 2]  # ptychopinn counts epochs from 1
    assert [v.epoch for v in last.validation_loss] == [1, 2]
    assert all(np.isfinite(v.value) for v in last.training_loss)
    assert (tmp_path / "out" / "model.zip").is_file() and r.is_model_loaded()
    product = list(r.reconstruct(session.reconstruct_input))[-1].product
    assert [(v.epoch, v.value) for v in product.losses] == [(v.epoch, v.value) for v in last.training_loss]
    r2 = PtychoPINNReconstructor(device="cpu")
    r2.load_model_from_file(tmp_path / "out" / "model.zip")
    again = list(r2.reconstruct(session.reconstruct_input))[-1].product
    assert rel_l2(again.object_.get_layer(0), product.object_.get_layer(0)) < 1e-6
    assert len(again.losses) == 2


def test_errors(session, tmp_path):
    with pytest.raises(ConfigError, match="epochz"):
        PtychoPINNReconstructor(epochz=3)
    r = PtychoPINNReconstructor()
    with pytest.raises(RuntimeError, match="no model loaded"):
        list(r.reconstruct(session.reconstruct_input))
    with pytest.raises(Exception, match="train_data"):
        list(r.train(tmp_path, tmp_path / "out"))
