"""`ptychopinn train | reconstruct | demo`: exit codes, one-line errors, no partial outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ptychopinn.cli import main
from ptychopinn.config import SimulationConfig
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    from ptychopinn.simulate import simulate_to_file

    return simulate_to_file(
        SimulationConfig(N=64, object_size=96, n_positions=10, nphotons=1e6, seed=5),
        tmp_path_factory.mktemp("cli") / "scan.npz",
    )



def test_train_missing_file(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", "--data", str(tmp_path / "missing.npz"), "--out", str(out)]) == 2
    one_line_error(capsys, "missing.npz")
    assert not out.exists()


def test_train_bad_key(tmp_path, capsys, scan_path):
    bad = tmp_path / "bad.npz"
    with np.load(scan_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "xcoords"}
    np.savez(bad, **arrays)
    out = tmp_path / "model"
    assert main(["train", "--data", str(bad), "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    one_line_error(capsys, "xcoords")
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--epochs", "two"], "--epochs"),
        (["--gridsize", "0"], "gridsize"),
        (["--amp", "fp8"], "amp"),
        (["--device", "tpu"], "device"),
    ],
)
def test_train_bad_flags(tmp_path, capsys, scan_path, argv, needle):
    out = tmp_path / "model"
    assert main(["train", "--data", str(scan_path), "--out", str(out), "--quiet", *argv]) == 2
    one_line_error(capsys, needle)
    assert not out.exists()


def test_required_flags_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "m")]) == 2
    one_line_error(capsys, "--data")
    assert main(["reconstruct", "--data", "x.npz", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "--model")


def test_config_file_unknown_key(tmp_path, capsys, scan_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('epochz = 3\n')
    assert main(["train", "--config", str(cfg), "--data", str(scan_path), "--out", str(tmp_path / "m")]) == 2
    one_line_error(capsys, "epochz")


def test_train_then_reconstruct(tmp_path, capsys, scan_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text('epochs = 1\nbatch-size = 16\nn_filters_scale = 1\nvalidation-fraction = 0.0\n')
    model = tmp_path / "model"
    rc = main(["train", "--config", str(cfg), "--data", str(scan_path), "--out", str(model), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    doc = json.loads((model / "config.json").read_text())
    assert doc["model_config"]["n_filters_scale"] == 1 and doc["extra"]["training"]["train_config"]["epochs"] == 1
    # training again into the same folder without --resume is refused, with no change
    before = (model / "model.safetensors").read_bytes()
    assert main(["train", "--data", str(scan_path), "--out", str(model), "--device", "cpu", "--quiet"]) == 2
    one_line_error(capsys, "not empty")
    assert (model / "model.safetensors").read_bytes() == before

    out = tmp_path / "rec"
    rc = main(["reconstruct", "--model", str(model), "--data", str(scan_path), "--out", str(out), "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "SSIM" in captured.out
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["object"].ndim == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ssim", "psnr", "ms_ssim", "frc"} <= set(metrics["amplitude"]) and {"ssim", "psnr", "ms_ssim", "frc"} <= set(metrics["phase"])
    assert (out / "amplitude.png").is_file() and (out / "phase.png").is_file() and (out / "error_map.png").is_file()

    # a failing reconstruction (bad stitch mode / wrong model) leaves no output folder
    out2 = tmp_path / "rec2"
    assert main(["reconstruct", "--model", str(model), "--data", str(scan_path), "--out", str(out2), "--stitch", "nope"]) == 2
    one_line_error(capsys, "--stitch")
    assert main(["reconstruct", "--model", str(tmp_path), "--data", str(scan_path), "--out", str(out2), "--device", "cpu"]) == 2
    one_line_error(capsys, "not a ptychopinn model")
    assert not out2.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no stray temporaries


def test_demo_refuses_existing_folder(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "already exists")


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "ptychopinn", "demo", "--out", str(out), "--epochs", "1", "--n-positions", "12",
         "--object-size", "96", "--device", "cpu", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SSIM" in proc.stdout and "amplitude.png" in proc.stdout
    rdir = out / "reconstruction"
    assert (rdir / "metrics.json").is_file() and (rdir / "amplitude.png").is_file() and (out / "model" / "config.json").is_file()
    with np.load(rdir / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].shape == (96, 96)


def test_reconstruct_measured_scan_without_truth(tmp_path, capsys, scan_path):
    """A scan shaped like a measurement (no objectGuess): exit 0, files written, no metrics."""
    measured = tmp_path / "measured.npz"
    with np.load(scan_path, allow_pickle=False) as z:
        np.savez(measured, **{k: z[k] for k in z.files if k not in ("objectGuess", "Y")})
    cfg = tmp_path / "train.toml"
    cfg.write_text('epochs = 1\nbatch-size = 16\nn_filters_scale = 1\nvalidation-fraction = 0.0\n')
    model = tmp_path / "model"
    assert main(["train", "--config", str(cfg), "--data", str(measured), "--out", str(model), "--device", "cpu", "--quiet"]) == 0
    out = tmp_path / "rec"
    rc = main(["reconstruct", "--model", str(model), "--data", str(measured), "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["object"].ndim == 2
        assert np.isfinite(z["object"]).all() and np.abs(z["object"]).max() > 0
    assert (out / "amplitude.png").is_file() and (out / "phase.png").is_file()
    assert not (out / "metrics.json").exists() and not (out / "error_map.png").exists()
