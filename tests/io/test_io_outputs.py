"""Reconstruction files: NPZ/HDF5 round trips, PNGs with and without matplotlib."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychopinn.errors import ConfigError
from ptychopinn.io.outputs import NO_MATPLOTLIB, load_reconstruction, save_images, save_reconstruction, write_reconstruction_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _obj(rng, shape=(24, 30)) -> np.ndarray:
    return (rng.random(shape) * np.exp(1j * rng.uniform(-3, 3, shape))).astype(np.complex64)


def test_save_reconstruction_round_trip(tmp_path, rng):
    obj = _obj(rng)
    meta = {"model": "runs/m", "n_positions": 17, "metrics": {"amplitude": {"psnr": 30.1}}, "ok": True}
    written = save_reconstruction(tmp_path / "out", obj, metadata=meta)
    assert set(written) == {"npz", "h5"}
    assert sorted(os.listdir(tmp_path / "out")) == ["reconstruction.h5", "reconstruction.npz"]

    with np.load(written["npz"], allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["object"].shape == obj.shape
        np.testing.assert_array_equal(z["object"], obj)
        np.testing.assert_array_equal(z["amplitude"], np.abs(obj).astype(np.float32))
        np.testing.assert_array_equal(z["phase"], np.angle(obj).astype(np.float32))
        assert json.loads(str(z["_metadata"])) == meta

    with h5py.File(written["h5"], "r") as h5:
        assert h5["object"].dtype == np.complex64
        np.testing.assert_array_equal(h5["object"][()], obj)
        assert h5.attrs["model"] == "runs/m" and h5.attrs["n_positions"] == 17
        assert json.loads(h5.attrs["metadata_json"]) == meta

    for path in written.values():
        back, m = load_reconstruction(path)
        np.testing.assert_array_equal(back, obj)
        assert m == meta


def test_save_reconstruction_formats_and_errors(tmp_path, rng):
    obj = _obj(rng)
    assert set(save_reconstruction(tmp_path, obj, metadata={}, formats=("npz",))) == {"npz"}
    assert os.listdir(tmp_path) == ["reconstruction.npz"]
    with pytest.raises(ValueError, match="unknown format"):
        save_reconstruction(tmp_path, obj, metadata={}, formats=("tiff",))
    with pytest.raises(ValueError, match="2-D"):
        save_reconstruction(tmp_path, obj[None], metadata={})
    with pytest.raises(ValueError, match="JSON"):
        save_reconstruction(tmp_path / "x", obj, metadata={"a": object()})
    assert not (tmp_path / "x" / "reconstruction.npz").exists()


def test_save_reconstruction_accepts_torch(tmp_path, rng):
    import torch

    obj = _obj(rng)
    written = save_reconstruction(tmp_path, torch.from_numpy(obj), metadata={}, formats=("npz",))
    np.testing.assert_array_equal(load_reconstruction(written["npz"])[0], obj)


def test_save_images(tmp_path, rng):
    from matplotlib.image import imread  # the "test" extra installs matplotlib

    truth = _obj(rng)
    rec = truth * np.complex64(0.5 * np.exp(0.7j))
    written = save_images(tmp_path, rec, truth=truth)
    assert set(written) == {"amplitude", "phase", "comparison", "error_map"}
    assert sorted(os.listdir(tmp_path)) == ["amplitude.png", "comparison.png", "error_map.png", "phase.png"]
    for path in written.values():
        assert path.read_bytes()[:8] == PNG_MAGIC
    # the error map is wider (two panels) than the single-panel images
    assert imread(written["error_map"]).shape[1] > imread(written["amplitude"]).shape[1]
    without = save_images(tmp_path / "b", rec)
    assert set(without) == {"amplitude", "phase"}


def test_save_images_without_matplotlib(tmp_path, rng, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        assert save_images(tmp_path / "img", _obj(rng)) == {}
    assert not (tmp_path / "img").exists()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ['matplotlib is not installed: no PNG images written (pip install "ptychopinn[plot]")']


def test_metadata_is_strict_json(tmp_path, rng):
    """NaN/inf metadata values are stored as null (strict JSON), in the NPZ and the HDF5 file."""
    paths = save_reconstruction(tmp_path, _obj(rng), metadata={"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2)})
    for p in paths.values():
        _, meta = load_reconstruction(p)
        assert meta == {"a": None, "b": [1.0, None], "c": 2.0}
    with np.load(paths["npz"], allow_pickle=False) as z:
        text = str(z["_metadata"])
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def _frc_result(K: int = 12):
    """What `save_frc_plot` reads of a `reconstruct.frc_halves.HalfSetFRC` (duck-typed)."""
    from types import SimpleNamespace

    from ptychopinn.metrics.frc import FRCCrossing

    return SimpleNamespace(frequencies=np.linspace(0, 0.5, K), curve=np.linspace(1, 0, K), half_bit=np.full(K, 0.3), truth_curve=None,
                           half_bit_crossing=FRCCrossing(0.2, 5.0, True), one_seventh_crossing=FRCCrossing(0.3, 3.3, True),
                           region=(0, 16, 0, 16), n_positions=(10, 9))


def test_write_reconstruction_dir_writes_every_part(tmp_path, rng):
    """The one folder writer: arrays + metadata, PNGs of `image_box` (error map against the
    truth region), metrics.json, refinement.npz, frc_halves.png; the returned paths are final."""
    from matplotlib.image import imread

    obj = _obj(rng, (30, 40))
    truth = _obj(rng, (12, 20))
    probe = np.ones((1, 8, 8), np.complex64)
    meta = {"stitch": "barycentric", "origin": [1.0, 2.0]}
    out = tmp_path / "rec"
    paths = write_reconstruction_dir(out, obj, meta, image_box=(3, 15, 10, 30), truth=truth, metrics={"a": float("nan")},
                                     refinement={"probe": probe, "loss": np.array([2.0, 1.0])}, frc_halves=_frc_result())
    assert set(paths) == {"npz", "h5", "amplitude", "phase", "comparison", "error_map", "metrics", "refinement", "frc_halves"}
    assert sorted(os.listdir(out)) == sorted(Path(p).name for p in paths.values())
    assert all(Path(p).parent == out for p in paths.values())
    back, m = load_reconstruction(paths["npz"])
    np.testing.assert_array_equal(back, obj)
    assert m == meta
    assert json.loads((out / "metrics.json").read_text()) == {"a": None}
    with np.load(paths["refinement"], allow_pickle=False) as z:
        assert sorted(z.files) == ["loss", "probe"]
        np.testing.assert_array_equal(z["probe"], probe)
    # the PNGs are those of the 12 x 20 box beside the truth region (matplotlib's Agg output is deterministic)
    ref = save_images(tmp_path / "ref", obj[3:15, 10:30], truth=truth)
    for name in ("amplitude", "phase", "comparison", "error_map"):
        assert Path(paths[name]).read_bytes() == ref[name].read_bytes(), name
    assert Path(paths["amplitude"]).read_bytes() != save_images(tmp_path / "whole", obj)["amplitude"].read_bytes()
    assert imread(paths["frc_halves"]).shape[2] in (3, 4)


def test_write_reconstruction_dir_options(tmp_path, rng, monkeypatch, caplog):
    obj = _obj(rng)
    paths = write_reconstruction_dir(tmp_path / "a", obj, {}, image_box=(0, 24, 0, 30), formats=("h5",), images=False)
    assert set(paths) == {"h5"} and os.listdir(tmp_path / "a") == ["reconstruction.h5"]
    # an existing non-empty folder is refused without overwrite, and left untouched
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError):
        write_reconstruction_dir(tmp_path / "b", obj, {}, image_box=(0, 24, 0, 30), overwrite=False)
    assert os.listdir(tmp_path / "b") == ["mine.txt"]
    write_reconstruction_dir(tmp_path / "b", obj, {}, image_box=(0, 24, 0, 30), images=False)
    assert sorted(os.listdir(tmp_path / "b")) == ["reconstruction.h5", "reconstruction.npz"]
    # without matplotlib: one warning line with the caller's hint, the arrays are still written
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        paths = write_reconstruction_dir(tmp_path / "c", obj, {}, image_box=(0, 24, 0, 30), no_images_hint="; --no-images skips them")
    assert set(paths) == {"npz", "h5"}
    assert [r.getMessage() for r in caplog.records] == [NO_MATPLOTLIB + "; --no-images skips them"]
