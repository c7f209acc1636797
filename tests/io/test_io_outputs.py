"""Reconstruction files: NPZ/HDF5 round trips, PNGs with and without matplotlib."""
from __future__ import annotations

import json
import logging
import os
import sys

import h5py
import numpy as np
import pytest

from ptychopinn.io.outputs import load_reconstruction, save_images, save_reconstruction

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
