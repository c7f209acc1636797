"""`--precision bf16`: bfloat16 network, float32 stitching, on a measured-like scan (counts, no truth)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ptychopinn.cli import main
from ptychopinn.config import SimulationConfig
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Integer counts, a bad pixel, no objectGuess; and a 1-epoch model trained on it."""
    from ptychopinn.simulate import simulate_to_file

    d = tmp_path_factory.mktemp("precision")
    raw = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=12, nphotons=1e6, seed=7), d / "sim.npz")
    with np.load(raw, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in ("objectGuess", "Y")}
    arrays["diffraction"] = np.rint(arrays["diffraction"].astype(np.float64) ** 2).astype(np.int32)
    bad = np.zeros((64, 64), bool)
    bad[5, 7] = True
    arrays["bad_pixels"] = bad
    scan = d / "measured.npz"
    np.savez(scan, **arrays)
    model = d / "model"
    argv = ["train", "--data", str(scan), "--out", str(model), "--epochs", "1", "--n-filters-scale", "1",
            "--validation-fraction", "0", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    return scan, model


def _object(folder) -> np.ndarray:
    with np.load(folder / "reconstruction.npz", allow_pickle=False) as z:
        return z["object"]


def test_bf16_reconstruction_is_close_to_float32(tmp_path, measured):
    scan, model = measured
    base = ["reconstruct", "--model", str(model), "--data", str(scan), "--device", "cpu", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "f32")]) == 0
    assert main(base + ["--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    f32, bf16 = _object(tmp_path / "f32"), _object(tmp_path / "bf16")
    assert bf16.dtype == np.complex64 and bf16.shape == f32.shape
    rel = np.linalg.norm(bf16 - f32) / np.linalg.norm(f32)
    assert 0 < rel < 0.05  # bfloat16 has an 8-bit mantissa: different, but close
    assert not (tmp_path / "bf16" / "metrics.json").exists()  # no ground truth, no metrics


def test_bad_precision_is_a_one_line_error(tmp_path, capsys, measured):
    scan, model = measured
    rc = main(["reconstruct", "--model", str(model), "--data", str(scan), "--out", str(tmp_path / "o"),
               "--device", "cpu", "--quiet", "--precision", "fp8"])
    assert rc == 2
    one_line_error(capsys, "precision", "float32", "bf16")
    assert not (tmp_path / "o").exists()


def test_train_precision_is_the_amp_mode(tmp_path, capsys, measured):
    scan, _ = measured
    argv = ["train", "--data", str(scan), "--epochs", "1", "--n-filters-scale", "1", "--validation-fraction", "0",
            "--n-groups", "4", "--device", "cpu", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "m"), "--precision", "bf16"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert '"amp": "bf16"' in json.dumps(config)  # the training config it records
    assert main(argv + ["--out", str(tmp_path / "m2"), "--precision", "bf16", "--amp", "none"]) == 2
    one_line_error(capsys, "--precision bf16 contradicts --amp none")
