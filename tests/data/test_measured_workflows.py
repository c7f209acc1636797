"""Measured scans end to end through the CLI (train, reconstruct, ptychopinn-onnx) with a tiny
trained model, on scans WITHOUT objectGuess: counts = amplitudes, flagged hot pixels,
frames larger than the model (--bin, --crop-detector), positions in metres."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ptychopinn.cli import main
from ptychopinn.config import SimulationConfig
from tests.conftest import rel_l2

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """uint32 counts of a simulated scan (no objectGuess), a model trained on them by the CLI,
    and its ONNX export."""
    from ptychopinn.interop.onnx import export_onnx
    from ptychopinn.simulate import simulate_to_file

    root = tmp_path_factory.mktemp("measured")
    sim = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=16, nphotons=1e6, seed=5), root / "sim.npz")
    with np.load(sim, allow_pickle=False) as z:
        counts = np.rint(z["diffraction"].astype(np.float64) ** 2).astype(np.uint32)
        base = dict(xcoords=z["xcoords"], ycoords=z["ycoords"], probeGuess=z["probeGuess"].astype(np.complex128)[None],
                    _metadata=z["_metadata"])
    paths = {"counts": _save(root / "counts.npz", diffraction=counts, **base)}
    model = root / "model"
    # 5 short epochs: enough for the object to depend on the data (an untrained net is nearly constant)
    rc = main(["train", "--data", str(paths["counts"]), "--out", str(model), "--epochs", "5", "--n-filters-scale", "1",
               "--validation-fraction", "0", "--batch-size", "4", "--device", "cpu", "--quiet"])
    assert rc == 0
    export_onnx(model, root / "model.onnx", verify=False)
    return {"root": root, "C": counts, "base": base, "model": model, "onnx": root / "model.onnx", **paths}


def _reconstruct(m, scan, out, *flags, capsys=None):
    rc = main(["reconstruct", "--model", str(m["model"]), "--data", str(scan), "--out", str(out), "--device", "cpu", "--quiet", *flags])
    assert rc == 0, capsys.readouterr().err if capsys else rc
    assert not (out / "metrics.json").exists()  # no ground truth: no metrics
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
    assert obj.dtype == np.complex64 and obj.ndim == 2 and np.isfinite(obj).all() and np.abs(obj).max() > 0
    return obj


def _onnx(m, scan, out, *flags):
    from ptychopinn.interop.onnx.runner import main as runner_main

    assert runner_main([str(m["onnx"]), str(scan), "--out", str(out), "--threads", "1", "--no-images", *flags]) == 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        return z["object"]


def test_counts_and_equivalent_amplitudes_give_the_same_object(measured, tmp_path, capsys):
    m = measured
    amp = _save(tmp_path / "amp.npz", diffraction=np.sqrt(m["C"].astype(np.float32)),
                **dict(m["base"], probeGuess=m["base"]["probeGuess"][0].astype(np.complex64)))
    fcounts = _save(tmp_path / "fcounts.npz", diffraction=m["C"].astype(np.float32), **m["base"])
    ref = _reconstruct(m, m["counts"], tmp_path / "r_counts", capsys=capsys)
    assert rel_l2(_reconstruct(m, amp, tmp_path / "r_amp", capsys=capsys), ref) <= 1e-4
    assert rel_l2(_reconstruct(m, fcounts, tmp_path / "r_f", "--diffraction-units", "counts", capsys=capsys), ref) <= 1e-4
    # undeclared float counts are read as amplitudes: an object that fails the same tolerance, and a warning
    with pytest.warns(UserWarning, match="looks like intensities"):
        wrong = _reconstruct(m, fcounts, tmp_path / "r_wrong", capsys=capsys)
    assert rel_l2(wrong, ref) > 1e-4
    # ... which the command line prints as ONE line
    proc = subprocess.run(
        [sys.executable, "-m", "ptychopinn", "reconstruct", "--model", str(m["model"]), "--data", str(fcounts),
         "--out", str(tmp_path / "r_sub"), "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    hits = [ln for ln in lines if "looks like intensities" in ln]
    assert len(hits) == 1 and hits[0].startswith("ptychopinn: warning:"), proc.stderr
    assert not [ln for ln in lines if ln.startswith(" ")], proc.stderr  # no source-line continuation
    proc = subprocess.run(
        [sys.executable, "-m", "ptychopinn.interop.onnx.runner", str(m["onnx"]), str(fcounts), "--out", str(tmp_path / "o_sub"),
         "--threads", "1", "--no-images"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr
    hits = [ln for ln in proc.stderr.splitlines() if "looks like intensities" in ln]
    assert len(hits) == 1 and hits[0].startswith("ptychopinn-onnx: warning:"), proc.stderr
    # the torch-free runner reads counts the same way
    assert rel_l2(_onnx(m, m["counts"], tmp_path / "o_counts"), ref) <= 1e-4
    assert rel_l2(_onnx(m, fcounts, tmp_path / "o_f", "--diffraction-units", "counts"), ref) <= 1e-4


def test_flagged_hot_pixels_do_not_spoil_the_reconstruction(measured, tmp_path, capsys):
    m = measured
    rng = np.random.default_rng(11)
    flat = rng.choice(64 * 64, size=24, replace=False)
    bad = np.zeros(64 * 64, bool)
    bad[flat] = True
    bad = bad.reshape(64, 64)
    hot = m["C"].copy()
    hot[:, bad] = 10**6
    flagged = _save(tmp_path / "flagged.npz", diffraction=hot, bad_pixels=bad, **m["base"])
    unflagged = _save(tmp_path / "unflagged.npz", diffraction=hot, **m["base"])
    clean = _reconstruct(m, m["counts"], tmp_path / "r_clean", capsys=capsys)
    got = _reconstruct(m, flagged, tmp_path / "r_flagged", capsys=capsys)
    change = rel_l2(got, clean)
    assert change <= 0.05, change
    # the same hot pixels unflagged fail that tolerance: the test can fail, the mask is what saves it
    spoilt = rel_l2(_reconstruct(m, unflagged, tmp_path / "r_unflagged", capsys=capsys), clean)
    assert spoilt > 0.05 and spoilt > 100 * change, (spoilt, change)
    # the ONNX runner fills and normalises exactly like reconstruct
    assert rel_l2(_onnx(m, flagged, tmp_path / "o_flagged"), got) <= 1e-4
    # and training on the flagged scan runs (mask excluded from the normalisation, filled at the input)
    out = tmp_path / "model_flagged"
    rc = main(["train", "--data", str(flagged), "--out", str(out), "--epochs", "1", "--n-filters-scale", "1",
               "--validation-fraction", "0", "--batch-size", "8", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "config.json").read_text())["extra"]["training"]
    assert np.isfinite(summary["history"][-1]["loss"])


def test_frames_larger_than_the_model_with_bin_and_crop(measured, tmp_path, capsys):
    m = measured
    counts = m["C"].astype(np.int64)
    ref = _reconstruct(m, m["counts"], tmp_path / "r_ref", capsys=capsys)
    # 128x128 frames whose 2x2 blocks sum to the 64x64 counts: --bin 2 gives the same object
    rng = np.random.default_rng(2)
    split = np.zeros((counts.shape[0], 128, 128), np.uint32)
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        part = rng.binomial(counts, 1 / (4 - 2 * i - j)) if (i, j) != (1, 1) else counts
        split[:, i::2, j::2] = part
        counts = counts - part
    big = _save(tmp_path / "big.npz", diffraction=split, **m["base"])
    assert rel_l2(_reconstruct(m, big, tmp_path / "r_bin", "--bin", "2", capsys=capsys), ref) <= 1e-4
    assert rel_l2(_onnx(m, big, tmp_path / "o_bin", "--bin", "2"), ref) <= 1e-4
    # train takes the flag too: the binned scan normalises exactly like the 64x64 one
    out = tmp_path / "model_bin"
    rc = main(["train", "--data", str(big), "--bin", "2", "--out", str(out), "--epochs", "1", "--n-filters-scale", "1",
               "--validation-fraction", "0", "--batch-size", "8", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    f_bin = json.loads((out / "config.json").read_text())["extra"]["training"]["normalization_factor"]
    f_ref = json.loads((m["model"] / "config.json").read_text())["extra"]["training"]["normalization_factor"]
    assert abs(f_bin / f_ref - 1) <= 1e-6
    # without a flag: exit 2, one line that names the flags
    assert main(["reconstruct", "--model", str(m["model"]), "--data", str(big), "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--crop-detector" in err and "--bin 2" in err and not (tmp_path / "x").exists()
    # 128x128 frames holding the 64x64 patterns around their centroid (positions at the finer
    # sampling of the bigger detector): --crop-detector cuts them out again
    cy = (m["C"].astype(np.float64).mean(0).sum(1) @ np.arange(64)) / m["C"].astype(np.float64).mean(0).sum()
    cx = (m["C"].astype(np.float64).mean(0).sum(0) @ np.arange(64)) / m["C"].astype(np.float64).mean(0).sum()
    assert (int(np.floor(cy + 0.5)), int(np.floor(cx + 0.5))) == (32, 32)  # far field centred at N/2
    embedded = np.zeros((counts.shape[0], 128, 128), np.uint32)
    embedded[:, 40:104, 21:85] = m["C"]
    base = dict(m["base"], xcoords=2 * m["base"]["xcoords"], ycoords=2 * m["base"]["ycoords"])
    wide = _save(tmp_path / "wide.npz", diffraction=embedded, **base)
    assert rel_l2(_reconstruct(m, wide, tmp_path / "r_crop", "--crop-detector", capsys=capsys), ref) <= 1e-4
    assert rel_l2(_onnx(m, wide, tmp_path / "o_crop", "--crop-detector"), ref) <= 1e-4


def test_positions_in_metres_with_pixel_size(measured, tmp_path, capsys):
    m = measured
    px = 8e-9
    base = dict(m["base"], xcoords=m["base"]["xcoords"] * px, ycoords=m["base"]["ycoords"] * px)
    metres = _save(tmp_path / "metres.npz", diffraction=m["C"], **base)
    ref = _reconstruct(m, m["counts"], tmp_path / "r_ref", capsys=capsys)
    assert rel_l2(_reconstruct(m, metres, tmp_path / "r_m", "--pixel-size", str(px), capsys=capsys), ref) <= 1e-4
    with pytest.warns(UserWarning, match="less than one.*--pixel-size"):  # metres read as pixels
        _reconstruct(m, metres, tmp_path / "r_px", capsys=capsys)
    assert main(["reconstruct", "--model", str(m["model"]), "--data", str(metres), "--out", str(tmp_path / "y"),
                 "--pixel-size", "-1", "--device", "cpu"]) == 2
    assert "--pixel-size" in capsys.readouterr().err


def test_sparse_scan_at_gridsize_2_warns_through_the_cli(measured, tmp_path, capsys):
    """Group offsets beyond N/2 (patterns of a group do not overlap): one warning, still exit 0."""
    from ptychopinn import io
    from ptychopinn.config import ModelConfig
    from ptychopinn.model import PtychoPINN

    m = measured
    torch.manual_seed(0)
    model = tmp_path / "gs2"
    io.save_model(PtychoPINN(ModelConfig(N=64, gridsize=2, n_filters_scale=1), probe=m["base"]["probeGuess"][0]), model)
    xy = np.stack(np.meshgrid(np.arange(4) * 60.0, np.arange(4) * 60.0), -1).reshape(-1, 2)
    sparse = _save(tmp_path / "sparse.npz", diffraction=m["C"], **dict(m["base"], xcoords=xy[:, 0], ycoords=xy[:, 1]))
    with pytest.warns(UserWarning, match="more than N/2 = 32.*too sparse for gridsize 2"):
        rc = main(["reconstruct", "--model", str(model), "--data", str(sparse), "--out", str(tmp_path / "r"), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
