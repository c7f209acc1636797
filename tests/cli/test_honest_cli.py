"""Honest command-line outputs on measured-like scans (no objectGuess): nothing silently
destroyed (--overwrite), errors that name flags, one-line missing extras, the CPU-fallback log
line, flag-vs-metadata conflicts, Ctrl-C during training, and `reconstruct --frc-halves`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.cli import main
from ptychopinn.config import SimulationConfig
from tests.conftest import one_line_error

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))



@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """(simulated scan with truth, the same scan without objectGuess/Y) — 16 positions."""
    from ptychopinn.simulate import simulate_to_file

    base = tmp_path_factory.mktemp("honest")
    truth = simulate_to_file(SimulationConfig(N=64, object_size=96, n_positions=16, nphotons=1e6, seed=7), base / "truth.npz")
    measured = base / "measured.npz"
    with np.load(truth, allow_pickle=False) as z:
        np.savez(measured, **{k: z[k] for k in z.files if k not in ("objectGuess", "Y")})
    return truth, measured


@pytest.fixture(scope="module")
def model(scans, tmp_path_factory):
    out = tmp_path_factory.mktemp("honest_model") / "model"
    argv = ["train", "--data", str(scans[1]), "--out", str(out), "--epochs", "1", "--batch-size", "16",
            "--n-filters-scale", "1", "--validation-fraction", "0", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    return out


def _folder_with_user_files(path: Path) -> dict[str, bytes]:
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return _snapshot(path)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- nothing silently destroyed ---------------------------------------------------------------------
def test_reconstruct_refuses_a_non_empty_out_dir(tmp_path, capsys, scans, model):
    out = tmp_path / "OUT"
    before = _folder_with_user_files(out)
    argv = ["reconstruct", "--model", str(model), "--data", str(scans[1]), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    err = one_line_error(capsys, str(out), "--overwrite")
    assert "overwrite=True" not in err
    assert _snapshot(out) == before  # untouched
    # with --overwrite the folder is replaced as a whole (atomically)
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"reconstruction.npz", "reconstruction.h5", "amplitude.png", "phase.png"} <= names
    assert "notes.txt" not in names and "metrics.json" not in names  # no truth: no metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]  # no temporaries left
    # an existing empty folder is simply filled
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    assert main(["reconstruct", "--model", str(model), "--data", str(scans[1]), "--out", str(empty), "--device", "cpu", "--quiet"]) == 0
    with np.load(empty / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["object"].ndim == 2


def test_simulate_refuses_an_existing_file(tmp_path, capsys):
    out = tmp_path / "scan.npz"
    out.write_bytes(b"precious")
    argv = ["simulate", "--out", str(out), "--n-positions", "4", "--object-size", "96"]
    assert main(argv) == 2
    one_line_error(capsys, str(out), "--overwrite")
    assert out.read_bytes() == b"precious"
    assert main([*argv, "--overwrite"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["diffraction"].shape == (4, 64, 64)


def test_export_onnx_refuses_missing_folder_and_existing_file(tmp_path, capsys, model):
    target = tmp_path / "missing_dir" / "x.onnx"
    assert main(["export-onnx", str(model), "-o", str(target)]) == 2
    one_line_error(capsys, "missing_dir", "does not exist")
    assert not (tmp_path / "missing_dir").exists()  # no folder made
    existing = tmp_path / "x.onnx"
    existing.write_bytes(b"keep")
    assert main(["export-onnx", str(model), "-o", str(existing)]) == 2
    one_line_error(capsys, str(existing), "--overwrite")
    assert existing.read_bytes() == b"keep"


def test_convert_refuses_an_existing_output(tmp_path, capsys, model):
    source = tmp_path / "wts.h5.zip"
    source.write_bytes(b"not read: the output is checked first")
    out = tmp_path / "native"
    before = _folder_with_user_files(out)
    assert main(["convert", str(source), "-o", str(out)]) == 2
    one_line_error(capsys, str(out), "--overwrite")
    assert _snapshot(out) == before
    legacy = tmp_path / "back.zip"
    legacy.write_bytes(b"keep")
    assert main(["convert", str(model), "-o", str(legacy), "--to-legacy"]) == 2
    one_line_error(capsys, str(legacy), "--overwrite")
    assert legacy.read_bytes() == b"keep"


# -- errors name flags ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--gridsize", "2", "--neighbor-count", "2"], "--neighbor-count"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--gridsize", "0"], "--gridsize"),
        (["--n-groups", "-3"], "--n-groups"),
        (["--amp", "fp8"], "--amp"),
        (["--device", "tpu"], "--device"),
        (["--validation-fraction", "1.5"], "--validation-fraction"),
        (["--resume"], "--resume"),
    ],
)
def test_train_errors_name_the_flag(tmp_path, capsys, scans, argv, flag):
    out = tmp_path / "m"
    assert main(["train", "--data", str(scans[1]), "--out", str(out), "--epochs", "1", "--device", "cpu", "--quiet", *argv]) == 2
    err = one_line_error(capsys, flag)
    for field in ("Config.", "neighbor_count", "batch_size", "learning_rate", "n_groups", "validation_fraction", "resume=True"):
        assert field not in err, err
    assert not out.exists() or flag == "--resume"


def test_train_existing_folder_names_resume(tmp_path, capsys, scans):
    out = tmp_path / "m"
    out.mkdir()
    (out / "x").write_text("1")
    assert main(["train", "--data", str(scans[1]), "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    one_line_error(capsys, "--resume")


@pytest.mark.parametrize(
    "argv, flag",
    [(["--crop", "999"], "--crop must"), (["--weight", "flat"], "--weight must"), (["--batch-size", "0"], "--batch-size must")],
)
def test_reconstruct_errors_name_the_flag(tmp_path, capsys, scans, model, argv, flag):
    out = tmp_path / "r"
    assert main(["reconstruct", "--model", str(model), "--data", str(scans[1]), "--out", str(out), "--device", "cpu", *argv]) == 2
    one_line_error(capsys, flag)
    assert not out.exists()


def test_flag_message_rewrites_only_this_commands_fields():
    from ptychopinn.cli import build_parser, flag_message

    _, subs = build_parser()
    train = subs["train"]
    assert flag_message("TrainConfig.amp='fp16' needs a GPU; use amp='bf16' on CPU", train) == "--amp fp16 needs a GPU; use --amp bf16 on CPU"
    assert flag_message("ModelConfig: ModelConfig.gridsize must be >= 1, got 0", train) == "--gridsize must be >= 1, got 0"
    assert flag_message("TrainConfig: every PINN loss weight (nll_weight, mae_weight, realspace) is zero", train) == (
        "every PINN loss weight (--nll-weight, --mae-weight, realspace) is zero"
    )
    # paths and keys that merely contain a field name stay as they are
    msg = "/data/batch_size/scan.npz: key 'probeGuess' must be (N, N)"
    assert flag_message(msg, train) == msg
    assert flag_message("unknown_field must be 1", train) == "unknown_field must be 1"


# -- missing optional extras: one line naming the pip install ---------------------------------------
def test_missing_onnx_is_one_line(tmp_path, capsys, model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export-onnx", str(model), "-o", str(tmp_path / "m.onnx"), "--no-verify"]) == 2
    one_line_error(capsys, 'pip install "ptychopinn[onnx]"')
    assert not (tmp_path / "m.onnx").exists()


def test_missing_yaml_is_one_line(tmp_path, capsys, scans, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert main(["train", "--config", str(cfg), "--data", str(scans[1]), "--out", str(tmp_path / "m")]) == 2
    one_line_error(capsys, 'pip install "ptychopinn[yaml]"')


def test_missing_matplotlib_with_frc_halves_is_one_line(tmp_path, capsys, scans, model, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "r"
    assert main(["reconstruct", "--model", str(model), "--data", str(scans[1]), "--out", str(out), "--device", "cpu", "--quiet",
                 "--frc-halves"]) == 2
    err = one_line_error(capsys, "--frc-halves", 'pip install "ptychopinn[plot]"')
    assert "frc_halves=True" not in err
    assert not out.exists()


def test_missing_extra_messages():
    from ptychopinn.io.extras import missing_extra_message

    for name, extra in (("onnxruntime", "onnx"), ("matplotlib", "plot"), ("tensorflow", "tf"), ("yaml", "yaml")):
        msg = missing_extra_message(ModuleNotFoundError(f"No module named '{name}'", name=name))
        assert msg.endswith(f'pip install "ptychopinn[{extra}]"') and "\n" not in msg
    assert missing_extra_message(ModuleNotFoundError("x", name="scipy.spatial")).endswith("pip install scipy")


# -- explicit flag vs scan metadata -----------------------------------------------------------------
def test_nphotons_flag_disagreeing_with_metadata_is_an_error(tmp_path, capsys, scans):
    out = tmp_path / "m"
    assert main(["train", "--data", str(scans[1]), "--out", str(out), "--nphotons", "1e5", "--device", "cpu", "--quiet"]) == 2
    one_line_error(capsys, "--nphotons 100000", "_metadata.nphotons", "1e+06")
    assert not out.exists()


# -- the CPU-fallback notice: one log line, not under --quiet ----------------------------------------
def test_cpu_fallback_is_one_log_line_and_quiet_silences_it(tmp_path, scans, model):
    base = [sys.executable, "-m", "ptychopinn", "reconstruct", "--model", str(model), "--data", str(scans[1]), "--device", "auto"]
    env = dict(_env(), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([*base, "--out", str(tmp_path / "a"), "--frc-halves"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "CPU" in line]
    assert lines == ["ptychopinn: device auto: no CUDA GPU is available, running on CPU (slow)"], proc.stderr
    assert "Warning" not in proc.stderr  # a log line, not a Python warning
    proc = subprocess.run([*base, "--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CPU" not in proc.stderr, proc.stderr


# -- half-set FRC through the CLI on a scan without ground truth ------------------------------------
def test_reconstruct_frc_halves_without_truth(tmp_path, capsys, scans, model):
    out = tmp_path / "r"
    rc = main(["reconstruct", "--model", str(model), "--data", str(scans[1]), "--out", str(out), "--device", "cpu", "--quiet",
               "--frc-halves"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "half-set FRC:" in captured.out and "SSIM" not in captured.out
    doc = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert set(doc) == {"frc_halves"}
    h = doc["frc_halves"]
    assert h["n_positions"] == [8, 8] and len(h["curve"]) == len(h["frequencies_per_px"])
    for key in ("half_bit", "one_seventh"):
        c = h[key]
        assert 0 < c["frequency_per_px"] <= 0.5 and c["resolution_px"] == pytest.approx(1 / c["frequency_per_px"])
    assert (out / "frc_halves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "error_map.png").exists()
    # with ground truth: both the truth metrics and the half-set FRC
    out2 = tmp_path / "r2"
    assert main(["reconstruct", "--model", str(model), "--data", str(scans[0]), "--out", str(out2), "--device", "cpu", "--quiet",
                 "--frc-halves"]) == 0
    doc = json.loads((out2 / "metrics.json").read_text())
    assert {"amplitude", "phase", "frc_halves"} <= set(doc) and "truth_curve" in doc["frc_halves"]


# -- --n-groups keeps the model's neighbour count; --seed ---------------------------------------------
def test_n_groups_uses_saved_neighbor_count_and_seed_flag(tmp_path, capsys, scans):
    import argparse

    from ptychopinn.cli.reconstruct import _grouping
    from ptychopinn.config import ModelConfig
    from ptychopinn.io import save_model
    from ptychopinn.model import PtychoPINN
    from ptychopinn.physics.probe import default_probe

    path = tmp_path / "gs2"
    net = PtychoPINN(ModelConfig(gridsize=2, n_filters_scale=1), probe=default_probe(64))
    save_model(net, path, extra={"training": {"data_config": {"gridsize": 2, "neighbor_count": 7}}})
    cfg = _grouping(path, argparse.Namespace(n_groups="5", seed=None))
    assert (cfg.gridsize, cfg.neighbor_count, cfg.n_groups, cfg.seed) == (2, 7, 5, 45)
    cfg = _grouping(path, argparse.Namespace(n_groups=None, seed="3"))
    assert (cfg.neighbor_count, cfg.n_groups, cfg.seed) == (7, None, 3)
    out = tmp_path / "r"
    assert main(["reconstruct", "--model", str(path), "--data", str(scans[1]), "--out", str(out), "--device", "cpu", "--quiet",
                 "--n-groups", "6", "--seed", "11"]) == 0, capsys.readouterr().err
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert json.loads(str(z["_metadata"]))["n_groups"] == 6


# -- Ctrl-C during training ---------------------------------------------------------------------------
def test_ctrl_c_during_training_names_the_checkpoint_and_resume(tmp_path, scans):
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "ptychopinn", "train", "--data", str(scans[1]), "--out", str(out), "--epochs", "100000",
           "--batch-size", "16", "--n-filters-scale", "1", "--validation-fraction", "0", "--device", "cpu", "--quiet"]
    # the child gets the default SIGINT disposition: a test run started in the background by a
    # non-interactive shell inherits SIGINT = ignored, and Python then installs no Ctrl-C handler
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = out / "checkpoint" / "training_state.json"
    try:
        deadline = time.monotonic() + 240
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        assert state.exists(), "no checkpoint within the time limit"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    line = lines[0]
    assert line.startswith("ptychopinn: interrupted; the last checkpoint (") and str(out / "checkpoint") in line and "--resume" in line
    epochs = json.loads(state.read_text())["epoch"]
    assert f"({epochs} epochs)" in line or epochs >= 1
