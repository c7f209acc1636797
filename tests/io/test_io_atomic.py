"""Atomic writers: complete file or nothing, no temporaries left behind, torch-free import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.io.atomic import atomic_directory, atomic_save_json, atomic_save_npz, atomic_write


class Boom(RuntimeError):
    pass


def test_atomic_write_bytes_and_text(tmp_path):
    p = tmp_path / "sub" / "a.bin"
    with atomic_write(p) as fh:
        fh.write(b"\x00\x01abc")
    assert p.read_bytes() == b"\x00\x01abc"
    with atomic_write(tmp_path / "t.txt", "w") as fh:
        fh.write("héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert sorted(os.listdir(tmp_path)) == ["sub", "t.txt"]
    assert os.listdir(tmp_path / "sub") == ["a.bin"]


def test_atomic_write_mode_respects_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "m.bin") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.bin").stat().st_mode & 0o777 == 0o640


def test_atomic_write_leaves_nothing_on_exception(tmp_path):
    p = tmp_path / "out.bin"
    with pytest.raises(Boom):
        with atomic_write(p) as fh:
            fh.write(b"partial data")
            raise Boom()
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_old_content_on_exception(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(Boom):
        with atomic_write(p, "w") as fh:
            fh.write("new but incomplete")
            raise Boom()
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_write_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "rb"):
            pass


def test_atomic_directory_create_replace_and_fail(tmp_path):
    d = tmp_path / "model"
    with atomic_directory(d) as tmp:
        assert tmp.parent == tmp_path and tmp != d
        (tmp / "a.txt").write_text("1")
    assert sorted(os.listdir(d)) == ["a.txt"]
    # replace: old content disappears as a whole
    with atomic_directory(d) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(d)) == ["b.txt"]
    # failure: old directory intact, no temporaries
    with pytest.raises(Boom):
        with atomic_directory(d) as tmp:
            (tmp / "c.txt").write_text("3")
            raise Boom()
    assert sorted(os.listdir(d)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_atomic_directory_refuses_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        with atomic_directory(f):
            pass
    assert f.read_text() == "x"


def test_atomic_save_npz_uncompressed_no_pickle(tmp_path):
    p = tmp_path / "arrays.data"  # no .npz suffix appended
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = (np.arange(4) + 1j).astype(np.complex64)
    atomic_save_npz(p, a=a, c=c)
    assert os.listdir(tmp_path) == ["arrays.data"]
    with zipfile.ZipFile(p) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    with np.load(p, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["a"], a)
        np.testing.assert_array_equal(z["c"], c)
        assert z["c"].dtype == np.complex64


def test_atomic_save_json_round_trip(tmp_path):
    obj = {"psnr": 31.5, "nested": {"x": [1, 2]}, "name": "é"}
    atomic_save_json(tmp_path / "m.json", obj)
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == obj


def test_atomic_and_outputs_import_without_torch():
    code = (
        "import sys; import ptychopinn.io, ptychopinn.io.atomic, ptychopinn.io.outputs, ptychopinn.metrics; "
        "assert 'torch' not in sys.modules and 'skimage' not in sys.modules, sorted(m for m in ('torch', 'skimage') if m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_atomic_save_json_is_strict(tmp_path):
    """NaN / ±Infinity (also numpy scalars and arrays) are written as null: strict JSON."""
    obj = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": np.float32("nan"), "d": np.array([1.0, np.inf]),
           "e": (np.int64(3),)}
    atomic_save_json(tmp_path / "m.json", obj)
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert doc == {"a": None, "b": [None, None, 1.5], "c": None, "d": [1.0, None], "e": [3]}


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_directory_follows_umask(tmp_path, umask, file_mode, dir_mode):
    """No 0600/0700 entries from mkstemp/mkdtemp: the folder, nested folders and files follow the umask."""
    import tempfile

    from ptychopinn.io.atomic import atomic_path

    old = os.umask(umask)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            with atomic_path(tmp / "a.bin") as p:
                p.write_bytes(b"x")
            (tmp / "plain.txt").write_text("y")
            nested = Path(tempfile.mkdtemp(dir=tmp))  # 0700 when created
            (nested / "b.txt").write_text("z")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == dir_mode
    for p in out.rglob("*"):
        want = dir_mode if p.is_dir() else file_mode
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode & 0o777))


def test_atomic_directory_replace_false_keeps_user_files(tmp_path):
    from ptychopinn.errors import ConfigError

    d = tmp_path / "out"
    d.mkdir()
    (d / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not empty"):
        with atomic_directory(d, replace=False) as tmp:
            (tmp / "new.txt").write_text("1")
    assert sorted(os.listdir(d)) == ["mine.txt"] and (d / "mine.txt").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["out"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty, replace=False) as tmp:  # an empty folder may be filled
        (tmp / "new.txt").write_text("1")
    assert os.listdir(empty) == ["new.txt"]


def test_check_output(tmp_path):
    from ptychopinn.errors import ConfigError
    from ptychopinn.io.atomic import check_output

    folder = tmp_path / "f"
    assert check_output(folder, overwrite=False, directory=True) == folder  # absent: fine
    folder.mkdir()
    check_output(folder, overwrite=False, directory=True)  # empty: fine
    (folder / "x").write_text("1")
    with pytest.raises(ConfigError, match=r"f: output folder exists and is not empty \(pass --overwrite to replace it\)"):
        check_output(folder, overwrite=False, directory=True, flag="--overwrite")
    check_output(folder, overwrite=True, directory=True)
    with pytest.raises(ConfigError, match="not a folder"):
        check_output(folder / "x", overwrite=True, directory=True)
    with pytest.raises(ConfigError, match="output file exists"):
        check_output(folder / "x", overwrite=False, directory=False)
    check_output(folder / "x", overwrite=True, directory=False)
    with pytest.raises(ConfigError, match="does not exist"):
        check_output(tmp_path / "missing_dir" / "x.onnx", overwrite=True, directory=False)
    assert not (tmp_path / "missing_dir").exists()
    with pytest.raises(ConfigError, match="is a folder"):
        check_output(folder, overwrite=True, directory=False)


@pytest.mark.parametrize("umask, file_mode", [(0o022, 0o644), (0o027, 0o640)])
def test_scan_writers_follow_the_umask(tmp_path, umask, file_mode):
    """`simulate`'s NPZ and HDF5 scan files (data.save_scan / save_scan_h5) are not 0600."""
    from ptychopinn.data import make_scan, save_scan, save_scan_h5
    from ptychopinn.physics.probe import default_probe

    scan = make_scan(diffraction=np.ones((3, 64, 64), np.float32), xcoords=np.arange(3.0), ycoords=np.arange(3.0),
                     probeGuess=default_probe(64))
    old = os.umask(umask)
    try:
        paths = [save_scan(tmp_path / "s.npz", scan), save_scan_h5(tmp_path / "s.h5", scan)]
    finally:
        os.umask(old)
    for p in paths:
        assert Path(p).stat().st_mode & 0o777 == file_mode, (p, oct(Path(p).stat().st_mode & 0o777))
