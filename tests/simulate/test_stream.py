"""`ptychopinn simulate --stream` / `ptychopinn.simulate.stream`: a live SWMR file that follows the
scan contract once complete, positions that lag the frames, and a crashed writer's file readable
SWMR with what was flushed (scan_complete still False)."""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from ptychopinn import data
from ptychopinn.cli import main
from ptychopinn.errors import ConfigError
from ptychopinn.simulate.stream import stream_scan
from tests.conftest import REPO_ROOT


def _arrays(M: int = 30, N: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return dict(diffraction=rng.random((M, N, N)).astype(np.float32), xcoords=rng.uniform(40, 90, M), ycoords=rng.uniform(40, 90, M),
                probeGuess=(rng.random((N, N)) + 1j).astype(np.complex64))


def test_stream_writes_the_scan_contract_and_scan_complete(tmp_path) -> None:
    a = _arrays()
    rep = stream_scan(a, tmp_path / "live.h5", float("inf"), position_lag=4)
    assert rep.frames == 30
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert bool(f.attrs["scan_complete"])
        assert f["diffraction"].maxshape == (None, 64, 64) and f["xcoords"].maxshape == (None,)
        ts = f["timestamp"][()]
        assert ts.shape == (30,) and np.all(np.diff(ts) >= 0)
        assert "objectGuess" not in f  # beamline-like: no ground truth
    s = data.load_scan(tmp_path / "live.h5")
    np.testing.assert_array_equal(np.asarray(s.diffraction[:]), a["diffraction"])
    np.testing.assert_array_equal(s.xcoords, a["xcoords"])
    np.testing.assert_array_equal(s.probe, a["probeGuess"])
    with pytest.raises(ConfigError, match="exists"):
        stream_scan(a, tmp_path / "live.h5", 100.0)
    with pytest.raises(ConfigError, match="rate"):
        stream_scan(a, tmp_path / "other.h5", 0.0)


def test_crashed_writer_leaves_a_swmr_readable_file_with_lagging_positions(tmp_path) -> None:
    data.save_scan_h5(tmp_path / "scan.h5", **_arrays())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "ptychopinn.simulate.stream", str(tmp_path / "scan.h5"), str(tmp_path / "live.h5"),
                           "--rate", "1000", "--position-lag", "6", "--die-after", "20"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with h5py.File(tmp_path / "live.h5", "r", swmr=True) as f:
        assert f["diffraction"].shape[0] == 20 and f["xcoords"].shape[0] == 14 and f["ycoords"].shape[0] == 14
        assert not bool(f.attrs["scan_complete"])


def test_cli_simulate_stream(tmp_path, capsys) -> None:
    out = tmp_path / "live.h5"
    rc = main(["simulate", "--stream", str(out), "--rate", "2000", "--object-size", "128", "--n-positions", "12", "--nphotons", "1e4",
               "--position-lag", "3"])
    assert rc == 0 and "streamed 12 frames" in capsys.readouterr().out
    s = data.load_scan(out)
    assert s.diffraction.shape == (12, 64, 64) and s.object is None
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["scan_complete"])
    assert main(["simulate", "--stream", str(out), "--rate", "2000", "--object-size", "128", "--n-positions", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptychopinn: error:") and "exists" in err and "\n" not in err
    assert main(["simulate", "--N", "64"]) == 2 and "--out is required" in capsys.readouterr().err
