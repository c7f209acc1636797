"""`ptychopinn simulate` through the CLI dispatcher."""
from __future__ import annotations

import json

import numpy as np

from ptychopinn.cli import main


def test_cli_writes_scan(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    rc = main(["simulate", "--out", str(out), "--object", "grf", "--object-size", "80", "--scan", "grid",
               "--step", "8", "--nphotons", "1e4", "--seed", "7"])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as z:
        assert z["diffraction"].shape == (4, 64, 64)  # grid 32, 40 on each axis
        meta = json.loads(str(z["_metadata"]))
    assert meta["seed"] == 7 and meta["nphotons"] == 1e4 and meta["object_kind"] == "grf" and meta["scan"] == "grid"


def test_cli_bad_N_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "bad.npz"
    assert main(["simulate", "--out", str(out), "--N", "63"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptychopinn: error:") and "N" in err and "\n" not in err
    assert not out.exists()
    assert main(["simulate", "--out", str(out), "--N", "sixty-four"]) == 2
    assert "--N" in capsys.readouterr().err


def test_cli_bad_choices_and_config_file(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.npz"), "--scan", "spiral"]) == 2
    assert "scan" in capsys.readouterr().err
    cfg = tmp_path / "sim.toml"
    cfg.write_text('object-size = 80\nscan = "grid"\nstep = 16\nnphotons = 1e3\n')
    out = tmp_path / "c.npz"
    assert main(["simulate", "--config", str(cfg), "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["xcoords"].shape == (1,)


def test_cli_probe_modes(tmp_path):
    out = tmp_path / "modes.npz"
    assert main(["simulate", "--out", str(out), "--object-size", "80", "--scan", "grid", "--step", "16",
                 "--nphotons", "1e3", "--probe-modes", "2"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["probeGuess"].shape == (2, 64, 64)
        assert json.loads(str(z["_metadata"]))["probe_modes"] == 2
