"""The torch-free ONNX runner: numpy stitcher and geometry against the torch core, whole-scan
parity with `ptychopinn.reconstruct` (≤ 1e-4 relative) in a subprocess where importing torch,
tensorflow (and scipy at gridsize 1) raises, out-of-core `--chunk` mode, and one-line exit-2
errors that leave no partial output."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn import data, io  # noqa: E402
from ptychopinn.config import ModelConfig  # noqa: E402
from ptychopinn.interop.onnx import (  # noqa: E402
    export_onnx,
    run_onnx,
    stitch_np,  # noqa: E402
)
from ptychopinn.interop.onnx.runner import main as runner_main  # noqa: E402
from ptychopinn.kernels import stitch as torch_stitch  # noqa: E402
from ptychopinn.model import PtychoPINN  # noqa: E402
from ptychopinn.reconstruct import (
    geometry,  # noqa: E402
    reconstruct,  # noqa: E402
)
from tests.conftest import REPO_ROOT, rel_l2  # noqa: E402

N = 64

# Installed as sitecustomize in the child: importing a blocked package raises, and the
# packages actually loaded are written to $PTYCHOPINN_TEST_MODULES at exit.
_SITECUSTOMIZE = '''
import atexit, json, os, sys
_BLOCKED = set(os.environ["PTYCHOPINN_TEST_BLOCK"].split(","))
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
@atexit.register
def _report():
    heavy = sorted({m.partition(".")[0] for m in sys.modules} & {"torch", "tensorflow", "scipy", "onnx"})
    with open(os.environ["PTYCHOPINN_TEST_MODULES"], "w") as fh:
        json.dump(heavy, fh)
'''


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _write_scan(path: Path, *, M: int = 24, n: int = N, with_object: bool = True, seed: int = 0, h5: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    arrays = dict(
        diffraction=(rng.random((M, n, n)) ** 2 * 5).astype(np.float32),
        xcoords=rng.uniform(30, 98, M),
        ycoords=rng.uniform(30, 98, M),
        probeGuess=(rng.random((n, n)) + 1j * rng.random((n, n))).astype(np.complex64),
    )
    if with_object:
        arrays["objectGuess"] = (0.5 + 0.5 * rng.random((128, 128)) * np.exp(1j * rng.random((128, 128)))).astype(np.complex64)
    return (data.save_scan_h5 if h5 else data.save_scan)(path, **arrays)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two tiny models (N=64, gridsize 1 and 2) saved natively and exported, plus scans."""
    root = tmp_path_factory.mktemp("onnx_runner")
    out = {"root": root}
    for gs in (1, 2):
        torch.manual_seed(gs)
        model = PtychoPINN(ModelConfig(N=N, gridsize=gs, n_filters_scale=1), intensity_scale=91.0)
        io.save_model(model, root / f"model_gs{gs}")
        export_onnx(root / f"model_gs{gs}", root / f"gs{gs}.onnx", verify=False)
    out["scan"] = _write_scan(root / "scan.npz")
    out["scan_noobj"] = _write_scan(root / "scan_noobj.npz", with_object=False, seed=3)
    return out


def _child(args: list[str], tmp: Path, blocked: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `python -m ptychopinn.interop.onnx.runner ARGS` with `blocked` packages unimportable."""
    site = tmp / "site_block"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    report = tmp / "modules.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["PTYCHOPINN_TEST_BLOCK"] = ",".join(blocked)
    env["PTYCHOPINN_TEST_MODULES"] = str(report)
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "ptychopinn.interop.onnx.runner", *args, "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    return proc, json.loads(report.read_text())


# -- numpy twins of the torch core ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["complex", "real", "weights2d", "weights3d"])
def test_numpy_stitch_equals_kernels_stitch(kind: str, rng) -> None:
    n, h, w, H, W = 37, 9, 7, 30, 26
    p = rng.standard_normal((n, h, w)).astype(np.float32)
    if kind == "complex":
        p = (p + 1j * rng.standard_normal((n, h, w))).astype(np.complex64)
    # positions spill off every edge, with negative and integer coordinates
    pos = np.concatenate([rng.uniform(-6, W + 6, (n - 2, 1)), rng.uniform(-6, H + 6, (n - 2, 1))], axis=1)
    pos = np.concatenate([pos, [[3.0, 4.0], [-2.5, 0.0]]])
    wt = None
    if kind == "weights2d":
        wt = rng.random((h, w)).astype(np.float32)
    elif kind == "weights3d":
        wt = rng.random((n, h, w)).astype(np.float32)
    num, den = stitch_np.stitch(p, pos, (H, W), weights=wt, chunk_size=5)
    tn, td = torch_stitch(torch.from_numpy(p), torch.from_numpy(pos), (H, W), weights=None if wt is None else torch.from_numpy(wt))
    assert num.dtype == p.dtype and den.dtype == np.float32
    np.testing.assert_allclose(num, tn.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(den, td.numpy(), rtol=1e-5, atol=1e-5)
    if wt is None:  # accumulating two halves into existing canvases equals one call
        acc = stitch_np.new_canvas((H, W), p.dtype)
        stitch_np.stitch(p[:20], pos[:20], (H, W), out=acc)
        stitch_np.stitch(p[20:], pos[20:], (H, W), out=acc)
        np.testing.assert_allclose(acc[0], num, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(acc[1], den, rtol=1e-5, atol=1e-5)


def test_numpy_stitch_places_pixels_by_the_contract() -> None:
    """Pixel (r, c) of a patch at integer [x, y] lands on (x + c − w//2, y + r − h//2); off-canvas pixels drop."""
    h, w = 4, 5
    p = np.arange(1, h * w + 1, dtype=np.float32).reshape(1, h, w)
    num, den = stitch_np.stitch(p, np.array([[1.0, 6.0]]), (8, 8))
    expect = np.zeros((8, 8), np.float32)
    for r in range(h):
        for c in range(w):
            X, Y = 1 + c - w // 2, 6 + r - h // 2
            if 0 <= X < 8 and 0 <= Y < 8:
                expect[Y, X] += p[0, r, c]
    np.testing.assert_array_equal(num, expect)
    assert den.sum() == np.count_nonzero(expect)
    # a half-pixel shift in x splits each value equally between two columns
    num2, _ = stitch_np.stitch(np.ones((1, 1, 1), np.float32), np.array([[2.5, 3.0]]), (8, 8))
    assert num2[3, 2] == num2[3, 3] == 0.5 and num2.sum() == 1.0


def test_shared_geometry_keeps_every_crop_on_the_canvas(rng) -> None:
    """The runner and the core share `reconstruct.geometry`: every crop lands fully on the canvas,
    and the objectGuess frame is used only when all centres lie inside it."""
    crop = 32
    for trial in range(6):
        centres = rng.uniform(-20, 150, (25, 2)) if trial % 2 else rng.uniform(5, 100, (25, 2))
        for obj_shape in (None, (128, 120)):
            (H, W), origin = geometry.canvas_geometry(centres, crop, obj_shape)
            local = centres - origin
            inside_obj = obj_shape is not None and bool(
                ((centres >= 0) & (centres <= np.array([obj_shape[1] - 1, obj_shape[0] - 1]))).all()
            )
            if inside_obj:
                assert (H, W) == obj_shape and np.array_equal(origin, [0.0, 0.0])
            else:
                assert (local - crop // 2 >= 0).all()
                assert (local[:, 0] + crop - crop // 2 + 1 <= W).all() and (local[:, 1] + crop - crop // 2 + 1 <= H).all()
    weight = np.zeros((40, 30))
    weight[5:9, 7:20] = 1.0
    weight[0, 0] = 0.2  # below half the maximum: outside the box
    assert geometry.covered_box(weight) == (5, 9, 7, 20)
    assert geometry.covered_box(np.zeros((3, 3))) is None
    patches = torch.randn(2, N, N)
    np.testing.assert_array_equal(geometry.centre_crop(patches.numpy(), crop), patches[:, 16:48, 16:48].numpy())


# -- whole-scan parity, torch-free -----------------------------------------------------------------
@pytest.mark.parametrize("gs", [1, 2])
def test_runner_without_torch_equals_reconstruct(setup, gs: int, tmp_path: Path) -> None:
    root = setup["root"]
    ref = reconstruct(root / f"model_gs{gs}", setup["scan"], device="cpu")  # what `ptychopinn reconstruct` writes
    blocked = ("torch", "tensorflow", "scipy") if gs == 1 else ("torch", "tensorflow")
    images = [] if gs == 1 else ["--no-images"]
    proc, loaded = _child([str(root / f"gs{gs}.onnx"), str(setup["scan"]), "--out", str(tmp_path / "onnx"), *images], tmp_path, blocked)
    assert proc.returncode == 0, proc.stderr
    assert "patterns/s" in proc.stdout
    assert not {"torch", "tensorflow"} & set(loaded), loaded
    with np.load(tmp_path / "onnx" / "reconstruction.npz") as z:
        got = z["object"]
    assert got.dtype == np.complex64 and got.ndim == 2 and got.shape == ref.object.shape == (128, 128)
    assert rel_l2(got, ref.object) <= 1e-4
    assert np.count_nonzero(got) > 0.2 * got.size  # the comparison is not between empty canvases
    written = {"reconstruction.h5", "amplitude.png", "phase.png"} if gs == 1 else {"reconstruction.h5"}
    assert {p.name for p in (tmp_path / "onnx").iterdir()} == written | {"reconstruction.npz"}


def test_scan_off_the_object_frame_hdf5_and_chunked(setup, tmp_path: Path) -> None:
    """No objectGuess (canvas sized from positions, origin ≠ 0); HDF5 input; --chunk equals in-memory."""
    root = setup["root"]
    ref = reconstruct(root / "model_gs2", setup["scan_noobj"], device="cpu")
    whole = run_onnx(root / "gs2.onnx", setup["scan_noobj"], threads=1)
    assert whole.origin == ref.origin != (0.0, 0.0)
    assert whole.object.shape == ref.object.shape
    assert rel_l2(whole.object, ref.object) <= 1e-4
    np.testing.assert_allclose(whole.weight, ref.weight, rtol=1e-5, atol=1e-5)
    h5 = _write_scan(tmp_path / "scan.h5", with_object=False, seed=3, h5=True)
    chunked = run_onnx(root / "gs2.onnx", h5, chunk=7, batch_size=3, threads=1)
    assert rel_l2(chunked.object, whole.object) <= 1e-6
    assert whole.n_patterns == 4 * whole.n_groups and whole.patterns_per_second > 0


def test_core_and_runner_write_one_layout(setup, tmp_path: Path) -> None:
    """Both go through `io.outputs.write_reconstruction_dir`: the same files, array keys and
    shared metadata; each adds its own (the core its patch weighting, the runner the ONNX
    model, the scan and the execution providers)."""
    root = setup["root"]
    ref = reconstruct(root / "model_gs1", setup["scan_noobj"], device="cpu", out_dir=tmp_path / "core")
    rec = run_onnx(root / "gs1.onnx", setup["scan_noobj"], tmp_path / "onnx", threads=1)
    names = {p.name for p in (tmp_path / "core").iterdir()}
    assert names == {p.name for p in (tmp_path / "onnx").iterdir()} == {"reconstruction.npz", "reconstruction.h5", "amplitude.png", "phase.png"}
    assert set(ref.paths) == set(rec.paths) == {"npz", "h5", "amplitude", "phase"}
    metas = {}
    for name in ("core", "onnx"):
        obj, metas[name] = io.load_reconstruction(tmp_path / name / "reconstruction.npz")
        with np.load(tmp_path / name / "reconstruction.npz", allow_pickle=False) as z:
            assert sorted(z.files) == ["_metadata", "amplitude", "object", "phase"]
        _, from_h5 = io.load_reconstruction(tmp_path / name / "reconstruction.h5")
        assert from_h5 == metas[name]
    core, onnx = metas["core"], metas["onnx"]
    assert set(core) - set(onnx) == {"weight"} and core["weight"] == "probe"
    assert set(onnx) - set(core) == {"onnx_model", "scan", "providers"}
    assert onnx["onnx_model"] == str(root / "gs1.onnx") and onnx["scan"] == str(setup["scan_noobj"])
    for key in ("stitch", "crop", "n_groups", "origin", "frame"):
        assert core[key] == onnx[key], key
    assert core["frame"] == "positions - origin"
    for key in ("normalization_factor", "intensity_scale"):
        assert core[key] == pytest.approx(onnx[key], rel=1e-6), key


def test_gridsize2_without_scipy_is_a_one_line_error(setup, tmp_path: Path) -> None:
    proc, _ = _child([str(setup["root"] / "gs2.onnx"), str(setup["scan"]), "--out", str(tmp_path / "out")], tmp_path, ("torch", "tensorflow", "scipy"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "scipy" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# -- bad input: one line, exit 2, nothing written ------------------------------------------------
def _bad_inputs(setup, tmp: Path) -> dict[str, tuple[list[str], str]]:
    root = setup["root"]
    onnx_ok = str(root / "gs1.onnx")
    wrong_n = _write_scan(tmp / "n32.npz", n=32)
    no_probe = tmp / "no_probe.npz"
    with np.load(setup["scan"]) as z:
        np.savez(no_probe, **{k: z[k] for k in z.files if k != "probeGuess"})
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    truncated = tmp / "truncated.onnx"
    blob = (root / "gs1.onnx").read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    import onnx

    foreign = onnx.load(onnx_ok)
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp / "foreign.onnx"))
    scan = str(setup["scan"])
    return {
        "wrong_N": ([onnx_ok, str(wrong_n)], "N=64"),
        "missing_key": ([onnx_ok, str(no_probe)], "probeGuess"),
        "missing_scan": ([onnx_ok, str(tmp / "nope.npz")], "nope.npz"),
        "garbage_onnx": ([str(garbage), scan], "not a valid ONNX model"),
        "truncated_onnx": ([str(truncated), scan], "truncated.onnx"),
        "foreign_onnx": ([str(tmp / "foreign.onnx"), scan], "ptychopinn.format"),
        "bad_provider": ([onnx_ok, scan, "--providers", "NoSuchExecutionProvider"], "NoSuchExecutionProvider"),
        "bad_crop": ([onnx_ok, scan, "--crop", "65"], "crop"),
    }


def test_bad_input_gives_one_line_exit_2_and_no_output(setup, tmp_path: Path, capsys) -> None:
    cases = _bad_inputs(setup, tmp_path)
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "old.txt").write_text("previous run")
    for name, (args, needle) in cases.items():
        out = tmp_path / f"out_{name}"
        for target, extra in ((out, []), (keep, ["--overwrite"])):  # bad input leaves even an --overwrite target intact
            rc = runner_main([*args, "--out", str(target), "--threads", "1", *extra])
            err = capsys.readouterr().err.strip()
            assert rc == 2, name
            assert err.count("\n") == 0 and needle in err and "Traceback" not in err, (name, err)
        assert not out.exists(), name
        assert [p.name for p in keep.iterdir()] == ["old.txt"], name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_runner_cli_on_a_scan_without_truth_refuses_then_overwrites(setup, tmp_path: Path, capsys) -> None:
    """`ptychopinn-onnx` on a measured-like scan (no objectGuess): exit 0, npz/h5 + PNGs, no
    metrics; an existing non-empty --out is refused (one line naming --overwrite, files kept)."""
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    args = [str(setup["root"] / "gs1.onnx"), str(setup["scan_noobj"]), "--out", str(out), "--threads", "1"]
    assert runner_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(out) in err and "--overwrite" in err and "overwrite=True" not in err, err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert runner_main([*args, "--overwrite"]) == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"reconstruction.npz", "reconstruction.h5", "amplitude.png", "phase.png"} <= names
    assert "mine.txt" not in names and "metrics.json" not in names
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["object"].ndim == 2 and np.isfinite(z["object"]).all()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_onnxruntime_is_one_line_naming_the_extra(setup, tmp_path: Path) -> None:
    proc, _ = _child([str(setup["root"] / "gs1.onnx"), str(setup["scan_noobj"]), "--out", str(tmp_path / "out")], tmp_path,
                     ("torch", "tensorflow", "onnxruntime"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and 'pip install "ptychopinn[onnx]"' in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_input_in_a_torch_free_process_has_no_traceback(setup, tmp_path: Path) -> None:
    args, needle = _bad_inputs(setup, tmp_path)["wrong_N"]
    proc, loaded = _child([*args, "--out", str(tmp_path / "out")], tmp_path, ("torch", "tensorflow"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr
    assert not (tmp_path / "out").exists() and "torch" not in loaded


def test_console_script_is_declared() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert eps.get("ptychopinn-onnx") == "ptychopinn.interop.onnx.runner:main"
