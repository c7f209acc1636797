"""Live reconstruction (`--follow`): a writer process plays a scan into an SWMR file at a few
hundred frames/s while the follower runs concurrently (torch blocked in its process). Every frame is
used once, the final canvas equals the batch runner on the finished file (≤ 1e-5 relative), both
endings (scan_complete, idle timeout after a killed writer) leave valid outputs, and the memory
held is bounded by one batch (structural counter, plus a tracemalloc peak that does not grow with
5× the frames). Engine properties use a numpy stand-in network, so they cost no inference."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ptychopinn import data, io
from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.interop.onnx import export_onnx, run_onnx, stitch_np
from ptychopinn.interop.onnx.follow import FollowModel, GrowingCanvas, LiveScan, follow, follow_onnx
from ptychopinn.model import PtychoPINN
from ptychopinn.reconstruct import geometry, reconstruct
from ptychopinn.simulate.stream import LiveWriter, stream_scan
from tests.conftest import REPO_ROOT, rel_l2
from tests.interop.test_onnx_runner import _SITECUSTOMIZE

N = 64


def _arrays(M: int, seed: int = 0, span: tuple[float, float] = (40.0, 150.0)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(
        diffraction=(rng.random((M, N, N)) ** 2 * 5).astype(np.float32),
        xcoords=rng.uniform(*span, M),
        ycoords=rng.uniform(span[0], span[1] - 30, M),
        probeGuess=(rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("follow")
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = PtychoPINN(ModelConfig(N=N, gridsize=1, n_filters_scale=1), intensity_scale=91.0)
    with torch.no_grad():  # at the default init the output hardly depends on the input (1e-5 for a 5 %
        for p in model.parameters():  # change of x); doubled weights make it sensitive (3 %), so the
            if p.ndim >= 2:  # equality checks below can tell a wrong factor or frame rule
                p.mul_(2.0)
    io.save_model(model, root / "model")
    export_onnx(root / "model", root / "gs1.onnx", verify=False)
    data.save_scan_h5(root / "scan.h5", **_arrays(160))
    yield {"root": root, "onnx": root / "gs1.onnx", "model": root / "model", "scan": root / "scan.h5"}
    torch.set_num_threads(before)


def _env(tmp: Path, blocked: tuple[str, ...] = ()) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
    if blocked:
        site = tmp / "site_block"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        paths.insert(0, str(site))
        env["PTYCHOPINN_TEST_BLOCK"] = ",".join(blocked)
        env["PTYCHOPINN_TEST_MODULES"] = str(tmp / "modules.json")
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _writer(scan: Path, live: Path, tmp: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ptychopinn.simulate.stream", str(scan), str(live), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp), cwd=tmp)


def _meta(out: Path) -> dict:
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        return json.loads(str(z["_metadata"]))


def _object(out: Path) -> np.ndarray:
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        return z["object"]


# -- end to end: writer and follower processes -------------------------------------------------
def test_follower_keeps_every_frame_of_a_300hz_writer_and_equals_the_batch_run(setup, tmp_path: Path) -> None:
    live, out = tmp_path / "live.h5", tmp_path / "live_out"
    # the follower starts first: the file does not exist yet
    cmd = [sys.executable, "-m", "ptychopinn.interop.onnx.runner", str(setup["onnx"]), str(live), "--follow", "--out", str(out),
           "--update-every", "0.3", "--idle-timeout", "60", "--batch-size", "32", "--threads", "1", "--no-images"]
    follower = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path, ("torch", "tensorflow")),
                                cwd=tmp_path)
    time.sleep(0.5)
    writer = _writer(setup["scan"], live, tmp_path, "--rate", "300", "--position-lag", "7", "--start-delay", "0.3")
    loads = 0
    while follower.poll() is None:  # every intermediate output is complete and readable
        if (out / "reconstruction.npz").exists():
            try:
                obj = _object(out)
            except FileNotFoundError:  # replaced between exists() and open (atomic swap)
                continue
            assert obj.dtype == np.complex64 and obj.ndim == 2 and np.isfinite(obj).all()
            loads += 1
        time.sleep(0.05)
    w_out, w_err = writer.communicate(timeout=60)
    f_out, f_err = follower.communicate()
    assert writer.returncode == 0, w_err
    assert follower.returncode == 0, f_err
    assert json.loads((tmp_path / "modules.json").read_text()) == []  # no torch, tensorflow, scipy, onnx
    summary = f_out.strip().splitlines()[-1]
    assert summary.startswith("followed 160 frames") and "ended by scan_complete" in summary and "latency write->canvas" in summary

    meta = _meta(out)["follow"]
    assert meta["final"] and meta["scan_complete"] and meta["ended_by"] == "scan_complete"
    assert meta["frames"] == 160 and meta["frames_seen"] == 160
    assert meta["max_frames_in_memory"] <= 32 and meta["batches"] >= 5
    assert meta["final_pass"]  # f of the first 64 frames differs from f of all 160
    assert meta["latency_p50_s"] is not None and meta["latency_p95_s"] >= meta["latency_p50_s"]

    batch = run_onnx(setup["onnx"], live, tmp_path / "batch", threads=1, images=False)
    assert batch.n_groups == 160
    assert _object(out).shape == batch.object.shape
    assert rel_l2(_object(out), batch.object) <= 1e-5
    # without the final pass (provisional f of the first 64 frames) the result is measurably different
    prov = follow_onnx(setup["onnx"], live, None, threads=1, idle_timeout=10, final_pass=False)
    assert prov.stats.frames == 160 and rel_l2(prov.object, batch.object) > 1e-4


def test_killed_writer_leaves_a_valid_partial_reconstruction(setup, tmp_path: Path) -> None:
    live, out = tmp_path / "live.h5", tmp_path / "partial"
    writer = _writer(setup["scan"], live, tmp_path, "--rate", "400", "--position-lag", "5", "--die-after", "70")
    for _ in range(600):  # the writer process is starting (the follower's own wait is idle_timeout)
        if live.exists() or writer.poll() is not None:
            break
        time.sleep(0.05)
    res = follow_onnx(setup["onnx"], live, out, threads=1, idle_timeout=1.5, update_every=0.2, images=False)
    writer.wait(timeout=30)
    assert writer.returncode == -9  # SIGKILL: no close, no scan_complete
    assert res.stats.frames == 65 and res.stats.frames_seen == 70  # positions lag 5 frames
    assert res.stats.ended_by.startswith("idle timeout")
    meta = _meta(out)["follow"]
    assert meta["final"] and not meta["scan_complete"] and meta["frames"] == 65
    # equals the batch run on a finished file of the 65 frames that have positions
    with h5py.File(live, "r", swmr=True) as f:
        part = {k: f[k][:65] for k in ("diffraction", "xcoords", "ycoords")}
        part["probeGuess"] = f["probeGuess"][()]
    data.save_scan_h5(tmp_path / "first65.h5", **part)
    batch = run_onnx(setup["onnx"], tmp_path / "first65.h5", None, threads=1)
    assert rel_l2(_object(out), batch.object) <= 1e-5
    assert rel_l2(res.object, batch.object) <= 1e-5


def test_torch_reconstruct_follow_equals_torch_batch(setup, tmp_path: Path) -> None:
    from ptychopinn.cli import main as cli_main

    live = tmp_path / "live.h5"
    a = _arrays(48, seed=5)
    stream_scan(a, live, float("inf"))
    rc = cli_main(["reconstruct", "--model", str(setup["model"]), "--data", str(live), "--out", str(tmp_path / "t"), "--follow",
                   "--idle-timeout", "30", "--device", "cpu", "--quiet"])
    assert rc == 0
    ref = reconstruct(setup["model"], live, device="cpu")
    assert _meta(tmp_path / "t")["follow"]["frames"] == 48
    assert rel_l2(_object(tmp_path / "t"), ref.object) <= 1e-5


# -- engine properties with a numpy stand-in network ------------------------------------------
def _fake_model(gridsize: int = 1) -> FollowModel:
    def predict(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:  # nonlinear in its input, like the network
        assert x.shape[1:] == (1, N, N) and offsets.shape == (x.shape[0], 1, 2)
        y = x[:, 0]
        return (np.tanh(y) * np.exp(1j * 0.1 * np.sqrt(y))).astype(np.complex64)

    return FollowModel(predict=predict, N=N, gridsize=gridsize, intensity_scale=91.0, crop=N // 2)


def _reference(a: dict[str, np.ndarray], model: FollowModel, obj_shape: tuple[int, int] | None = None) -> np.ndarray:
    """The batch runner's rule, written out: f over all patterns, one canvas for all positions."""
    d = a["diffraction"]
    f = data.normalization_factor(d, np.arange(d.shape[0])[:, None])
    x = d[:, None] * np.float32(float(f) * model.intensity_scale)
    patches = geometry.centre_crop(model.predict(x, np.zeros((d.shape[0], 1, 2), np.float32)), model.crop)
    centres = np.stack([a["xcoords"], a["ycoords"]], axis=1)
    (H, W), origin = geometry.canvas_geometry(centres, model.crop, obj_shape)
    num, den = stitch_np.stitch(np.ascontiguousarray(patches), centres - origin, (H, W),
                                weights=geometry.patch_weights(a["probeGuess"], model.crop, "probe"))
    obj = num / (den + np.float32(1e-9))
    obj[den <= 0] = 0
    return obj


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_final_canvas_does_not_depend_on_batching(tmp_path: Path, batch_size: int) -> None:
    a = _arrays(90, seed=2, span=(-20.0, 300.0))  # the canvas grows (and re-pads) many times
    live = tmp_path / "live.h5"
    stream_scan(a, live, float("inf"))
    model = _fake_model()
    res = follow(model, live, None, batch_size=batch_size, norm_frames=10, idle_timeout=10)
    assert res.stats.frames == 90 and res.stats.final_pass and res.stats.max_frames_in_memory <= batch_size
    assert res.stats.ended_by == "scan_complete"
    assert rel_l2(res.object, _reference(a, model)) <= 1e-6


def test_an_object_guess_sets_the_canvas_frame_as_in_the_batch_run(tmp_path: Path) -> None:
    a = _arrays(30, seed=4)
    a["objectGuess"] = np.ones((200, 220), np.complex64)
    stream_scan(a, tmp_path / "live.h5", float("inf"), include_object=True)
    model = _fake_model()
    res = follow(model, tmp_path / "live.h5", None, batch_size=8, norm_frames=4, idle_timeout=10)
    assert res.object.shape == (200, 220) and res.origin == (0.0, 0.0)
    assert rel_l2(res.object, _reference(a, model, (200, 220))) <= 1e-6


def test_growing_canvas_equals_a_canvas_sized_upfront(rng) -> None:
    crop = 16
    centres = rng.uniform(-50, 400, (200, 2))
    centres = centres[np.argsort(centres.sum(axis=1))]  # a scan that moves: the canvas has to grow
    patches = (rng.standard_normal((200, crop, crop)) + 1j * rng.standard_normal((200, crop, crop))).astype(np.complex64)
    w = rng.random((crop, crop)).astype(np.float32)
    cv = GrowingCanvas(crop, w)
    for s in range(0, 200, 13):
        cv.add(patches[s : s + 13], centres[s : s + 13])
    assert cv.regrows > 0
    obj, den, origin = cv.result(None, 1e-9)
    (H, W), o = geometry.canvas_geometry(centres, crop, None)
    num, dd = stitch_np.stitch(patches, centres - o, (H, W), weights=w)
    ref = num / (dd + np.float32(1e-9))
    np.testing.assert_array_equal(origin, o)
    assert obj.shape == (H, W)
    assert rel_l2(den, dd) <= 1e-6 and rel_l2(obj, ref) <= 1e-6


def test_memory_is_bounded_by_one_batch_whatever_the_scan_length(tmp_path: Path) -> None:
    peaks = {}
    for M in (60, 300):  # same scan area, 5× the frames
        a = _arrays(M, seed=M)
        live = tmp_path / f"live{M}.h5"
        stream_scan(a, live, float("inf"))
        del a
        tracemalloc.start()
        res = follow(_fake_model(), live, None, batch_size=16, idle_timeout=10)
        peaks[M] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert res.stats.frames == M and res.stats.max_frames_in_memory <= 16
    # holding the 240 extra frames would add 240·64·64·4 B ≈ 3.9 MB
    assert peaks[300] < peaks[60] + 1_000_000, peaks


def test_fixed_factor_and_no_final_pass(tmp_path: Path) -> None:
    a = _arrays(40, seed=9)
    live = tmp_path / "live.h5"
    stream_scan(a, live, float("inf"))
    model = _fake_model()
    f = float(data.normalization_factor(a["diffraction"]))
    fixed = follow(model, live, None, norm_factor=f, idle_timeout=10)
    assert not fixed.stats.final_pass and rel_l2(fixed.object, _reference(a, model)) <= 1e-6
    live_only = follow(model, live, None, norm_frames=5, final_pass=False, idle_timeout=10)
    assert not live_only.stats.final_pass and live_only.normalization_factor == live_only.provisional_factor
    assert rel_l2(live_only.object, _reference(a, model)) > 1e-4  # provisional f from 5 frames


def test_an_existing_output_folder_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    a = _arrays(12, seed=3)
    stream_scan(a, tmp_path / "live.h5", float("inf"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ConfigError, match="not empty"):
        follow(_fake_model(), tmp_path / "live.h5", out, idle_timeout=5)
    assert (out / "keep.txt").read_text() == "user data" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    res = follow(_fake_model(), tmp_path / "live.h5", out, idle_timeout=5, overwrite=True, images=False)
    assert res.stats.frames == 12 and not (out / "keep.txt").exists() and (out / "reconstruction.npz").exists()


def test_gridsize2_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gridsize-1 models only") as e:
        follow(_fake_model(gridsize=2), tmp_path / "x.h5", None, idle_timeout=0.2)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="not ready after 0.3 s") as e:
        follow(_fake_model(), tmp_path / "never.h5", None, idle_timeout=0.3)
    assert "never.h5" in str(e.value) and "\n" not in str(e.value)


def test_follow_cli_gridsize2_exits_2(tmp_path: Path, capsys) -> None:
    from ptychopinn.interop.onnx.runner import main as runner_main

    torch.manual_seed(1)
    model = PtychoPINN(ModelConfig(N=N, gridsize=2, n_filters_scale=1), intensity_scale=91.0)
    io.save_model(model, tmp_path / "gs2")
    export_onnx(tmp_path / "gs2", tmp_path / "gs2.onnx", verify=False)
    rc = runner_main([str(tmp_path / "gs2.onnx"), str(tmp_path / "live.h5"), "--follow", "--out", str(tmp_path / "o"), "--idle-timeout", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("ptychopinn-onnx: error:") and "gridsize-1" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


_THIRD_PARTY_WRITER = r'''
import sys, time
import h5py, numpy as np
path, M, N = sys.argv[1], int(sys.argv[2]), 64
rng = np.random.default_rng(4)
f = h5py.File(path, "w", libver="latest")
f["probeGuess"] = (rng.random((N, N)) + 1j).astype(np.complex64)
d = f.create_dataset("diffraction", (0, N, N), maxshape=(None, N, N), dtype="f4", chunks=(4, N, N))
x = f.create_dataset("xcoords", (0,), maxshape=(None,), dtype="f8", chunks=(64,))
y = f.create_dataset("ycoords", (0,), maxshape=(None,), dtype="f8", chunks=(64,))
f.swmr_mode = True
for s in range(0, M, 4):  # bursts of 4 frames; positions one burst behind
    d.resize(s + 4, axis=0); d[s:s + 4] = rng.random((4, N, N)); d.flush()
    if s:
        x.resize(s, axis=0); x[s - 4:s] = 50 + s; x.flush()
        y.resize(s, axis=0); y[s - 4:s] = 60 + (s % 16); y.flush()
    time.sleep(0.005)
x.resize(M, axis=0); x[M - 4:] = 50 + M; y.resize(M, axis=0); y[M - 4:] = 60
f.close()
time.sleep(0.3)
with h5py.File(path, "a") as g:  # no attribute before SWMR: set it after closing, as some writers do
    g.attrs["scan_complete"] = True
'''


def test_a_writer_that_sets_scan_complete_after_reopening_the_file(tmp_path: Path) -> None:
    """The follower holds no file lock, so a writer can close the file and reopen it to set the flag."""
    live = tmp_path / "live.h5"
    (tmp_path / "writer.py").write_text(_THIRD_PARTY_WRITER)
    w = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(live), "40"], stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    res = follow(_fake_model(), live, None, batch_size=8, norm_frames=8, idle_timeout=60)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    assert res.stats.ended_by == "scan_complete" and res.stats.frames == 40


def test_detector_counts_with_bad_pixels_equal_the_batch_run(setup, tmp_path: Path) -> None:
    """uint16 counts (sqrt at read) and a bad-pixel mask (excluded from f, filled at the input):
    the follower applies the batch runner's rules, so the results agree."""
    rng = np.random.default_rng(11)
    M = 40
    bad = np.zeros((N, N), bool)
    bad[5:8, 10:30] = True
    bad[40, :] = True
    counts = rng.poisson(30.0, (M, N, N)).astype(np.uint16)
    counts[:, bad] = 65535  # dead / hot pixels hold garbage
    a = dict(diffraction=counts, xcoords=rng.uniform(40, 120, M), ycoords=rng.uniform(40, 100, M),
             probeGuess=(rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64), bad_pixels=bad)
    live = tmp_path / "live.h5"
    stream_scan(a, live, float("inf"))
    with h5py.File(live, "r") as f:
        assert f["diffraction"].dtype == np.uint16 and f["bad_pixels"].shape == (N, N)
    res = follow_onnx(setup["onnx"], live, tmp_path / "out", threads=1, idle_timeout=10, images=False, norm_frames=8)
    batch = run_onnx(setup["onnx"], live, None, threads=1)
    assert res.stats.frames == M and res.stats.final_pass
    assert abs(res.normalization_factor - batch.normalization_factor) <= 1e-6 * batch.normalization_factor
    assert rel_l2(_object(tmp_path / "out"), batch.object) <= 1e-5
    # the rules matter: ignoring the mask, or reading counts as amplitudes, changes the result
    wrong = follow_onnx(setup["onnx"], live, None, threads=1, idle_timeout=10, diffraction_units="amplitude")
    assert rel_l2(wrong.object, batch.object) > 1e-3


def test_a_units_flag_that_contradicts_the_file_warns_as_in_the_batch_run(tmp_path: Path) -> None:
    """A live file declaring counts (root attribute) read with --diffraction-units amplitude: the flag
    wins and the follower gives load_scan's one-line warning, word for word; no flag, or one that
    agrees, reads counts without a warning."""
    rng = np.random.default_rng(3)
    live = tmp_path / "live.h5"
    w = LiveWriter(live, np.ones((16, 16), np.complex64), frame_dtype=np.float32, diffraction_units="counts")
    w.append((rng.random((4, 16, 16)) * 9).astype(np.float32))
    w.append_positions(np.arange(4.0) * 3, np.arange(4.0) * 2)
    w.complete()
    w.close()
    expected = "live.h5: --diffraction-units amplitude overrides attribute 'diffraction_units' = 'counts' (an explicit flag beats file metadata)"
    with pytest.warns(UserWarning) as batch:
        data.load_scan(live, diffraction_units="amplitude")
    assert [str(m.message) for m in batch] == [expected]
    with pytest.warns(UserWarning) as caught:
        scan = LiveScan(live, timeout=5, diffraction_units="amplitude")
    scan.close()
    assert [str(m.message) for m in caught] == [expected] and not scan.counts
    for option in (None, "counts"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            scan = LiveScan(live, timeout=5, diffraction_units=option)
        scan.close()
        assert scan.counts


def test_zmq_stream_into_a_spool_file_equals_the_batch_run(setup, tmp_path: Path, capsys) -> None:
    """`--zmq`: a PUSH sender on loopback, the bridge process spools to HDF5, the follower follows it."""
    pytest.importorskip("zmq", reason="pyzmq is the optional [zmq] extra")
    import socket
    import threading

    from ptychopinn.interop.onnx.runner import main as runner_main
    from ptychopinn.interop.onnx.zmq_bridge import send_scan

    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    a = _arrays(50, seed=8)
    sender = threading.Thread(target=send_scan, args=(url, a, 500.0), daemon=True)
    sender.start()
    spool, out = tmp_path / "spool.h5", tmp_path / "out"
    rc = runner_main([str(setup["onnx"]), str(spool), "--follow", "--zmq", url, "--out", str(out), "--idle-timeout", "30",
                      "--threads", "1", "--no-images"])
    sender.join(timeout=30)
    assert rc == 0, capsys.readouterr().err
    assert "followed 50 frames" in capsys.readouterr().out and _meta(out)["follow"]["ended_by"] == "scan_complete"
    with h5py.File(spool, "r") as f:
        np.testing.assert_array_equal(f["diffraction"][()], a["diffraction"])
        np.testing.assert_array_equal(f["xcoords"][()], a["xcoords"])
    batch = run_onnx(setup["onnx"], spool, None, threads=1)
    assert rel_l2(_object(out), batch.object) <= 1e-5
    assert runner_main([str(setup["onnx"]), str(spool), "--zmq", url, "--out", str(tmp_path / "o2")]) == 2  # needs --follow


# -- the engine's contract, pinned before splitting `follow` into steps ------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(out_dir="FILE", batch_size=0), "exists and is not a folder"),  # the output folder is checked first
    (dict(batch_size=0, norm_frames=0), "batch_size must be >= 1, got 0"),
    (dict(norm_frames=0, update_every=-1), "norm_frames must be >= 1, got 0"),
    (dict(update_every=-1, norm_factor=-1.0), "update_every must be >= 0 and idle_timeout, poll > 0 s, got -1, 5, 0.02"),
    (dict(poll=0.0, norm_factor=-1.0), "update_every must be >= 0 and idle_timeout, poll > 0 s, got 2.0, 5, 0.0"),
    (dict(norm_factor=float("nan"), gridsize=2), "norm_factor must be a positive finite number, got nan"),
    (dict(norm_factor=0.0), "norm_factor must be a positive finite number, got 0.0"),
    (dict(gridsize=2), "gridsize-1 models only"),
])
def test_argument_errors_come_in_order_before_any_wait(tmp_path: Path, kwargs: dict, match: str) -> None:
    """Each ConfigError is raised at once (the scan file never appears: a check made after the wait
    would surface as the DataError 'not ready' instead), the first failing check wins."""
    (tmp_path / "FILE").write_text("user data")
    out = tmp_path / kwargs.pop("out_dir") if "out_dir" in kwargs else None
    model = _fake_model(gridsize=kwargs.pop("gridsize", 1))
    with pytest.raises(ConfigError) as e:
        follow(model, tmp_path / "never.h5", out, idle_timeout=5, **kwargs)
    assert match in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "FILE").read_text() == "user data"


def test_an_idle_timeout_that_is_not_positive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"got 2.0, 0, 0.02"):
        follow(_fake_model(), tmp_path / "never.h5", None, idle_timeout=0)


@pytest.mark.parametrize("case, n_updates", [
    ("every_batch", 6),  # 5 live writes (40 frames / 8) + the final one; none pending before the final pass
    ("final_pass", 2),  # no live write within 1000 s: the provisional picture, then the final one
    ("fixed_factor", 1),  # no final pass: only the final write
    ("no_final_pass", 1),
])
def test_outputs_are_published_on_schedule_with_the_run_metadata(tmp_path: Path, case: str, n_updates: int) -> None:
    a = _arrays(40, seed=6)
    live = tmp_path / "live.h5"
    stream_scan(a, live, float("inf"))
    out = tmp_path / "out"
    f_all = float(np.float32(data.normalization_factor(a["diffraction"])))
    kwargs: dict = dict(batch_size=8, norm_frames=8, idle_timeout=10, images=False,
                        update_every=0.0 if case == "every_batch" else 1000.0)
    if case == "fixed_factor":
        kwargs["norm_factor"] = f_all
    if case == "no_final_pass":
        kwargs["final_pass"] = False
    seen: list[tuple[int, dict]] = []
    res = follow(_fake_model(), live, out, on_update=lambda s: seen.append((s.updates, _meta(out))), **kwargs)
    s = res.stats
    assert [u for u, _ in seen] == list(range(1, n_updates + 1)) and s.updates == n_updates
    assert [m["follow"]["final"] for _, m in seen] == [False] * (n_updates - 1) + [True]
    # live writes come before the attribute is seen; the writes after the loop come after it
    live_writes = 5 if case == "every_batch" else 0
    assert [m["follow"]["scan_complete"] for _, m in seen] == [False] * live_writes + [True] * (n_updates - live_writes)
    final = seen[-1][1]
    assert set(final) == {"stitch", "crop", "n_groups", "normalization_factor", "intensity_scale", "model", "scan", "frame",
                          "follow", "origin"}
    assert set(final["follow"]) == {"final", "scan_complete", "frames", "frames_seen", "batches", "max_frames_in_memory",
                                    "max_backlog", "updates", "regrows", "final_pass", "ended_by", "latency_source", "live_s",
                                    "total_s", "inference_s", "frames_per_second", "latency_p50_s", "latency_p95_s"}
    assert final["stitch"] == "barycentric" and final["crop"] == N // 2 and final["n_groups"] == 40 and final["model"] == "model"
    assert final["scan"] == str(live) and final["frame"] == "positions - origin" and final["intensity_scale"] == 91.0
    assert final["origin"] == list(res.origin) and final["follow"]["scan_complete"] and final["follow"]["updates"] == n_updates - 1
    assert final["normalization_factor"] == res.normalization_factor
    # the factor written with each picture: provisional while live, the final one at the end
    assert s.final_pass == (case in ("every_batch", "final_pass"))
    if s.final_pass:
        assert res.normalization_factor == pytest.approx(f_all, rel=1e-6) and res.provisional_factor != res.normalization_factor
        assert all(m["normalization_factor"] == res.provisional_factor for _, m in seen[:-1])
    else:
        assert res.normalization_factor == res.provisional_factor
    assert s.frames == s.frames_seen == 40 and s.batches == 5 and s.max_frames_in_memory == 8 and s.max_backlog == 40
    assert s.latency.n == 40 and s.latency_source == "write->canvas" and s.ended_by == "scan_complete"
    assert 0 < s.live_s <= s.total_s and s.inference_s > 0
    assert set(res.paths) == {"npz", "h5"} and Path(res.paths["npz"]) == out / "reconstruction.npz"
    assert rel_l2(_object(out), res.object) == 0.0


def test_no_output_folder_means_no_writes_and_every_latency_counted(tmp_path: Path) -> None:
    a = _arrays(20, seed=7)
    stream_scan(a, tmp_path / "live.h5", float("inf"))
    calls: list[int] = []
    res = follow(_fake_model(), tmp_path / "live.h5", None, batch_size=8, norm_frames=4, update_every=0, idle_timeout=10,
                 on_update=lambda s: calls.append(s.updates))
    assert calls == [] and res.paths == {} and res.stats.updates == 0 and res.stats.final_pass
    assert res.stats.latency.n == 20 and res.stats.batches == 3


def test_frames_without_positions_are_left_out_with_one_warning(tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(12)
    live = tmp_path / "live.h5"
    w = LiveWriter(live, np.ones((N, N), np.complex64))
    w.append((rng.random((12, N, N)) * 3).astype(np.float32))
    w.append_positions(40 + np.arange(9.0) * 3, 40 + np.arange(9.0) * 2)
    w.complete()
    w.close()
    with caplog.at_level("WARNING", logger="ptychopinn"):
        res = follow(_fake_model(), live, None, batch_size=4, norm_frames=4, idle_timeout=10)
    assert res.stats.frames == 9 and res.stats.frames_seen == 12 and res.stats.ended_by == "scan_complete"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "live.h5: 3 frames have no positions yet; reconstructed the 9 that do"]


def test_a_complete_scan_without_positions_is_a_one_line_error(tmp_path: Path) -> None:
    live = tmp_path / "live.h5"
    w = LiveWriter(live, np.ones((N, N), np.complex64))
    w.append(np.ones((5, N, N), np.float32))
    w.complete()
    w.close()
    with pytest.raises(DataError) as e:
        follow(_fake_model(), live, None, idle_timeout=10)
    assert str(e.value) == "live.h5: no frame with both diffraction and positions arrived (scan_complete)"
    with h5py.File(live, "a") as f:  # the follower's handle was closed: the file opens for writing
        assert f["diffraction"].shape[0] == 5


def test_a_model_of_another_size_is_a_one_line_error(tmp_path: Path) -> None:
    stream_scan(_arrays(4, seed=1), tmp_path / "live.h5", float("inf"))
    model = FollowModel(predict=_fake_model().predict, N=32, gridsize=1, intensity_scale=1.0, crop=16)
    with pytest.raises(DataError, match=r"^live.h5: key 'diffraction' has 64x64 patterns, the model expects N=32$"):
        follow(model, tmp_path / "live.h5", None, idle_timeout=10)
