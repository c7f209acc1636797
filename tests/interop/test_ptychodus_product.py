"""ptychodus products written by ptychopinn, read back with ptychodus 1.7's own `load_product`.

Placement is checked against ptychodus's position → pixel map: each scan position must map onto
the canvas pixel where the reconstruction put that position's patch centre.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="needs the ptychodus extra (CI installs it)")

from _ptychodus_helpers import (  # noqa: E402
    CENTER_M,
    DISTANCE_M,
    ENERGY_EV,
    far_field_pixel_m,
    mapped_positions,
    simulated_session,
    write_diffraction_file,
)
from ptychodus.api.io import load_product, save_product  # noqa: E402

from conftest import legacy_dir, one_line_error  # noqa: E402
from ptychopinn.cli import main  # noqa: E402
from ptychopinn.interop.ptychodus import product as pm  # noqa: E402


@pytest.fixture(scope="module")
def session():
    return simulated_session()


@pytest.fixture(scope="module")
def legacy_model():
    return legacy_dir("n64_gs1") / "wts.h5.zip"



def _assert_same_positions(a, b):
    np.testing.assert_array_equal(a.probe_positions.get_indexes(), b.probe_positions.get_indexes())
    np.testing.assert_array_equal(a.probe_positions.get_coordinates_x_m(), b.probe_positions.get_coordinates_x_m())
    np.testing.assert_array_equal(a.probe_positions.get_coordinates_y_m(), b.probe_positions.get_coordinates_y_m())


def test_scan_from_reconstruct_input_uses_ptychodus_map(session):
    converted = pm.scan_from_reconstruct_input(session.reconstruct_input)
    scan = converted.scan
    np.testing.assert_allclose(scan.coords, mapped_positions(session.product), rtol=0, atol=1e-12)
    # counts → amplitudes on gather; the hot pixels are flagged (the model never trusts them)
    assert scan.diffraction_units == "counts"
    np.testing.assert_array_equal(scan.bad_pixels, session.bad_pixels)
    good = ~session.bad_pixels
    amp = np.asarray(scan.diffraction[np.arange(scan.n_positions)])
    np.testing.assert_allclose(amp[:, good] ** 2, session.counts[:, good], rtol=1e-5)
    assert scan.object is None  # ptychodus's object is an initial guess, never ground truth
    np.testing.assert_array_equal(scan.initial_object, session.product.object_.get_layer(0))
    g = converted.geometry
    assert g.pixel_width_m == pytest.approx(far_field_pixel_m())
    assert (g.detector_distance_m, g.photon_energy_eV) == (DISTANCE_M, ENERGY_EV)
    x_m, y_m = g.to_metres(scan.xcoords, scan.ycoords)
    np.testing.assert_allclose(x_m, session.product.probe_positions.get_coordinates_x_m(), rtol=0, atol=1e-18)
    np.testing.assert_allclose(y_m, session.product.probe_positions.get_coordinates_y_m(), rtol=0, atol=1e-18)


def test_product_roundtrip_api_placement(session, legacy_model, tmp_path):
    from ptychopinn.reconstruct import reconstruct

    converted = pm.scan_from_reconstruct_input(session.reconstruct_input)
    rec = reconstruct(str(legacy_model), converted.scan, device="cpu")
    product = pm.product_from_reconstruction(rec, converted.scan, converted.geometry, source=converted.product)
    path = pm.write_product(tmp_path / "out.h5", product)
    back = load_product(path)
    _assert_same_positions(back, session.product)
    np.testing.assert_array_equal(back.probes.get_array(), session.product.probes.get_array())
    assert back.metadata == session.product.metadata
    obj = back.object_
    assert obj.get_pixel_geometry().width_m == pytest.approx(far_field_pixel_m(), rel=1e-15)
    np.testing.assert_array_equal(obj.get_layer(0), rec.object)
    # gridsize 1: group i is scan position i; its patch centre is at canvas pixel rec.centres[i]
    np.testing.assert_allclose(mapped_positions(back), rec.centres, rtol=0, atol=1e-9)
    # and the object is where the patches went: covered pixels surround every mapped position
    cols, rows = np.rint(rec.centres).astype(int).T
    assert np.all(rec.weight[rows, cols] > 0)
    assert np.all(np.abs(obj.get_layer(0)[rows, cols]) > 0)


def test_cli_product_in_and_product(session, legacy_model, tmp_path, capsys):
    from ptychopinn.io import load_reconstruction

    product_in = tmp_path / "product.h5"
    save_product(product_in, session.product)
    patterns = write_diffraction_file(tmp_path / "diffraction.h5", session)
    out, prod = tmp_path / "rec", tmp_path / "ptychopinn_product.h5"
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(patterns), "--product-in", str(product_in),
            "--out", str(out), "--product", str(prod), "--device", "cpu", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "ptychodus product" in capsys.readouterr().out
    back = load_product(prod)
    _assert_same_positions(back, session.product)
    assert back.metadata == session.product.metadata
    obj, meta = load_reconstruction(out / "reconstruction.npz")
    np.testing.assert_array_equal(back.object_.get_layer(0), obj)
    # position p (input object pixels) sits at canvas pixel p − origin
    expected = mapped_positions(session.product) - np.asarray(meta["origin"])
    np.testing.assert_allclose(mapped_positions(back), expected, rtol=0, atol=1e-9)
    # a second run refuses to overwrite the product (exit 2, one line, file untouched)
    before = prod.read_bytes()
    argv[argv.index("--out") + 1] = str(tmp_path / "rec2")
    assert main(argv) == 2
    one_line_error(capsys, "exists")
    assert prod.read_bytes() == before and not (tmp_path / "rec2").exists()


def test_cli_flag_disagreeing_with_product_is_an_error(session, legacy_model, tmp_path, capsys):
    product_in = tmp_path / "product.h5"
    save_product(product_in, session.product)
    patterns = write_diffraction_file(tmp_path / "diffraction.h5", session)
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(patterns), "--product-in", str(product_in),
            "--out", str(tmp_path / "rec"), "--product", str(tmp_path / "p.h5"), "--photon-energy", "9000", "--quiet"]
    assert main(argv) == 2
    one_line_error(capsys, "--photon-energy", "disagrees")
    assert not (tmp_path / "rec").exists() and not (tmp_path / "p.h5").exists()


@pytest.fixture(scope="module")
def native_scan(tmp_path_factory):
    """A ptychopinn scan file with no physical metadata (positions in pixels only)."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_to_file

    return simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=12, nphotons=1e6, seed=7),
                            tmp_path_factory.mktemp("scan") / "scan.npz")


def test_cli_missing_geometry_isone_line_error(native_scan, legacy_model, tmp_path, capsys):
    out, prod = tmp_path / "rec", tmp_path / "p.h5"
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(native_scan), "--out", str(out), "--product", str(prod), "--quiet"]
    assert main(argv) == 2
    one_line_error(capsys, "--pixel-size", "--detector-distance", "--photon-energy")
    assert not out.exists() and not prod.exists()
    assert main(argv + ["--pixel-size", "-1"]) == 2
    one_line_error(capsys, "--pixel-size")


def test_cli_native_scan_in_metres_with_flags(native_scan, legacy_model, tmp_path, capsys):
    """A ptychopinn scan with positions in metres: --pixel-size converts them (data contract) and is
    the product's pixel size; the product's positions are the file's metres, unchanged."""
    from ptychopinn.data import load_scan, save_scan
    from ptychopinn.io import load_reconstruction

    dx = 2.5e-8
    px = load_scan(native_scan)
    arrays = dict(diffraction=np.asarray(px.diffraction), xcoords=px.xcoords * dx, ycoords=px.ycoords * dx, probeGuess=px.probe)
    with pytest.warns(UserWarning, match="less than one"):  # the file alone does not say metres
        metres = save_scan(tmp_path / "metres.npz", **arrays)
    out, prod = tmp_path / "rec", tmp_path / "p.h5"
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(metres), "--out", str(out), "--product", str(prod),
            "--pixel-size", str(dx), "--detector-distance", "2.0", "--photon-energy", "7000", "--device", "cpu", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    back = load_product(prod)
    np.testing.assert_allclose(back.probe_positions.get_coordinates_x_m(), arrays["xcoords"], rtol=1e-15, atol=0)
    np.testing.assert_allclose(back.probe_positions.get_coordinates_y_m(), arrays["ycoords"], rtol=1e-15, atol=0)
    assert back.metadata.detector_distance_m == 2.0 and back.metadata.photon_energy_eV == 7000.0
    assert back.probes.get_pixel_geometry().width_m == dx
    np.testing.assert_array_equal(back.probes.get_array()[0, 0], px.probe)
    obj, meta = load_reconstruction(out / "reconstruction.npz")
    np.testing.assert_allclose(mapped_positions(back), px.coords - np.asarray(meta["origin"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_cli_roundtrip_through_ptychodus_exports(session, legacy_model, tmp_path, capsys, kind):
    """save_ptychopinn_training_data (NPZ) / save_training_data (HDF5) → reconstruct --product → load_product."""
    from ptychodus.api.io import save_ptychopinn_training_data, save_training_data

    from ptychopinn.io import load_reconstruction

    export = tmp_path / f"export.{kind}"
    (save_ptychopinn_training_data if kind == "npz" else save_training_data)(export, session.reconstruct_input)
    out, prod = tmp_path / "rec", tmp_path / "p.h5"
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(export), "--out", str(out), "--product", str(prod), "--device", "cpu", "--quiet"]
    dx = far_field_pixel_m()
    if kind == "npz":  # the NPZ export holds no physical metadata: one line naming the three flags
        assert main(argv) == 2
        one_line_error(capsys, "--pixel-size", "--detector-distance", "--photon-energy")
        assert not out.exists() and not prod.exists()
        argv += ["--pixel-size", repr(dx), "--detector-distance", str(DISTANCE_M), "--photon-energy", str(ENERGY_EV)]
    else:  # the HDF5 export holds them; a disagreeing flag is an error
        assert main(argv + ["--detector-distance", "3.0"]) == 2
        one_line_error(capsys, "--detector-distance", "disagrees")
    assert main(argv) == 0, capsys.readouterr().err
    assert not (out / "metrics.json").exists()  # the export's objectGuess is an initial guess, not truth
    back = load_product(prod)
    assert back.metadata.detector_distance_m == DISTANCE_M and back.metadata.photon_energy_eV == ENERGY_EV
    assert back.object_.get_pixel_geometry().width_m == pytest.approx(dx, rel=1e-12)
    # the exports drop the absolute origin: positions come back about the exported object's centre
    np.testing.assert_array_equal(back.probe_positions.get_indexes(), np.arange(len(session.product.probe_positions)))
    x0, y0 = CENTER_M
    np.testing.assert_allclose(back.probe_positions.get_coordinates_x_m(), session.product.probe_positions.get_coordinates_x_m() - x0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(back.probe_positions.get_coordinates_y_m(), session.product.probe_positions.get_coordinates_y_m() - y0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(back.probes.get_array()[0], session.product.probes.get_array()[0], rtol=1e-6)
    # placement: position p (export pixels) sits at canvas pixel p − origin
    obj, meta = load_reconstruction(out / "reconstruction.npz")
    np.testing.assert_array_equal(back.object_.get_layer(0), obj)
    np.testing.assert_allclose(mapped_positions(back), mapped_positions(session.product) - np.asarray(meta["origin"]), rtol=0, atol=1e-6)


def test_object_center_formula():
    g = pm.ProductGeometry(pixel_width_m=2.0, pixel_height_m=3.0, detector_distance_m=1.0, photon_energy_eV=1.0,
                           origin_x_m=CENTER_M[0], origin_y_m=CENTER_M[1])
    c = g.object_center((5.0, -4.0), (7, 10))  # (H, W)
    assert c.x_m == pytest.approx(CENTER_M[0] + 2.0 * (5.0 + 4.5))
    assert c.y_m == pytest.approx(CENTER_M[1] + 3.0 * (-4.0 + 3.0))


@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_cli_export_with_larger_frames_crop_detector(legacy_model, tmp_path, capsys, kind):
    """128×128 frames cropped to the model's 64 (`--crop-detector`): object pixels twice as large,
    positions (metres) unchanged, placement still exact."""
    from ptychodus.api.io import save_ptychopinn_training_data, save_training_data

    from ptychopinn.io import load_reconstruction

    big = simulated_session(N=128, object_size=192, n_positions=12, seed=4)
    export = tmp_path / f"export.{kind}"
    (save_ptychopinn_training_data if kind == "npz" else save_training_data)(export, big.reconstruct_input)
    out, prod = tmp_path / "rec", tmp_path / "p.h5"
    dx = far_field_pixel_m(128)
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(export), "--out", str(out), "--product", str(prod),
            "--crop-detector", "--device", "cpu", "--quiet"]
    if kind == "npz":  # --pixel-size is at the sampling of the stored (128×128) frames
        argv += ["--pixel-size", repr(dx), "--detector-distance", str(DISTANCE_M), "--photon-energy", str(ENERGY_EV)]
    assert main(argv) == 0, capsys.readouterr().err
    back = load_product(prod)
    assert back.object_.get_pixel_geometry().width_m == pytest.approx(2 * dx, rel=1e-12)
    assert back.probes.get_array().shape[-2:] == (64, 64)
    x0, y0 = CENTER_M
    np.testing.assert_allclose(back.probe_positions.get_coordinates_x_m(), big.product.probe_positions.get_coordinates_x_m() - x0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(back.probe_positions.get_coordinates_y_m(), big.product.probe_positions.get_coordinates_y_m() - y0, rtol=0, atol=1e-15)
    obj, meta = load_reconstruction(out / "reconstruction.npz")
    # export pixels p are 2p' in the cropped frame's pixels p'; p' − origin is the canvas pixel
    expected = mapped_positions(big.product) / 2 - np.asarray(meta["origin"])
    np.testing.assert_allclose(mapped_positions(back), expected, rtol=0, atol=1e-6)


def test_cli_export_probe_modes_carried(legacy_model, tmp_path, capsys):
    """A 3-mode probe export: the network uses the dominant mode, the product keeps all three."""
    from ptychodus.api.io import save_training_data

    s3 = simulated_session(n_positions=10, n_modes=3)
    export = tmp_path / "export.h5"
    save_training_data(export, s3.reconstruct_input)
    prod = tmp_path / "p.h5"
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(export), "--out", str(tmp_path / "rec"), "--product", str(prod), "--device", "cpu", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    back = load_product(prod)
    assert back.probes.num_incoherent_modes == 3
    np.testing.assert_allclose(back.probes.get_array()[0], s3.product.probes.get_array()[0], rtol=1e-6, atol=1e-7)


def test_cli_product_without_ptychodus_is_one_line(native_scan, legacy_model, tmp_path, capsys, monkeypatch):
    """Without the extra, --product is a one-line error naming the install; plain reconstruct is unaffected."""
    import sys

    import ptychopinn.interop.ptychodus as pkg

    monkeypatch.setitem(sys.modules, "ptychodus.api.io", None)  # what an absent package looks like to import
    monkeypatch.delitem(sys.modules, "ptychopinn.interop.ptychodus.product")
    monkeypatch.delattr(pkg, "product", raising=False)
    out, prod = tmp_path / "rec", tmp_path / "p.h5"
    argv = ["reconstruct", "--model", str(legacy_model), "--data", str(native_scan), "--out", str(out), "--product", str(prod), "--quiet"]
    assert main(argv) == 2
    one_line_error(capsys, "--product", "pip install")
    assert not out.exists() and not prod.exists()
