"""load_scan / save_scan / save_scan_h5: contract, laziness, layouts, errors, security."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychopinn.data import LazyArray, Scan, load_scan, make_scan, save_scan, save_scan_h5
from ptychopinn.data.npz import NpzReader
from ptychopinn.errors import DataError

from ..conftest import BUNDLE_FIXTURES, legacy_dir
from ._helpers import tiny_arrays


def _assert_same_scan(a: Scan, b: dict) -> None:
    np.testing.assert_array_equal(np.asarray(a.diffraction), b["diffraction"])
    np.testing.assert_array_equal(a.xcoords, b["xcoords"])
    np.testing.assert_array_equal(a.ycoords, b["ycoords"])
    np.testing.assert_array_equal(a.probe, b["probeGuess"])
    np.testing.assert_array_equal(a.object, b["objectGuess"])


@pytest.mark.parametrize("writer", [save_scan, save_scan_h5])
def test_round_trip_and_defaults(tmp_path, writer):
    arrays = tiny_arrays()
    path = writer(tmp_path / ("s.npz" if writer is save_scan else "s.h5"), **arrays, metadata={"nphotons": 1e6})
    scan = load_scan(path)
    _assert_same_scan(scan, arrays)
    assert scan.N == 8 and scan.n_positions == 12
    assert scan.diffraction.dtype == np.float32 and scan.diffraction.shape == (12, 8, 8)
    assert scan.xcoords.dtype == np.float64 and scan.probe.dtype == np.complex64
    np.testing.assert_array_equal(scan.xcoords_start, arrays["xcoords"])  # default start = coords
    np.testing.assert_array_equal(scan.scan_index, np.zeros(12, np.int64))
    assert scan.scan_index.dtype == np.int64
    assert scan.metadata == {"nphotons": 1e6}
    assert scan.Y is None
    # no temp files left behind by the atomic writer
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_npz_diffraction_is_memory_mapped_and_aligned(tmp_path):
    arrays = tiny_arrays(M=20, N=16)
    path = save_scan(tmp_path / "s.npz", **arrays)
    scan = load_scan(path)
    assert isinstance(scan.diffraction, LazyArray)
    assert isinstance(scan.diffraction.source, np.memmap)
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    with NpzReader(path) as r:
        assert r.header("diffraction").data_offset % 64 == 0
    # gathers: int, slice, unsorted index array with repeats, boolean mask, tuple
    d = arrays["diffraction"]
    idx = np.array([7, 2, 7, 19, 0])
    np.testing.assert_array_equal(scan.diffraction[3], d[3])
    np.testing.assert_array_equal(scan.diffraction[-1], d[-1])
    np.testing.assert_array_equal(scan.diffraction[2:9:3], d[2:9:3])
    np.testing.assert_array_equal(scan.diffraction[idx], d[idx])
    np.testing.assert_array_equal(scan.diffraction[idx.reshape(5, 1)], d[idx.reshape(5, 1)])
    np.testing.assert_array_equal(scan.diffraction[d[:, 0, 0] > 1], d[d[:, 0, 0] > 1])
    np.testing.assert_array_equal(scan.diffraction[idx, 1:3, 4], d[idx, 1:3, 4])
    out = scan.diffraction[2:4]
    assert type(out) is np.ndarray and out.flags.writeable and out.flags.c_contiguous
    with pytest.raises(IndexError):
        scan.diffraction[20]
    # the zipfile also reads back with numpy's own loader (a standard NPZ)
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["diffraction"], d)
        assert json.loads(str(z["_metadata"])) == {}


def test_lazy_array_pickles_as_a_file_reference(tmp_path):
    path = save_scan(tmp_path / "s.npz", **tiny_arrays(M=64, N=32))
    scan = load_scan(path)
    blob = pickle.dumps(scan.diffraction)
    assert len(blob) < 4096  # not the 256 KiB of data
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back[[5, 1]], scan.diffraction[[5, 1]])


def test_hdf5_lazy_reader(tmp_path):
    arrays = tiny_arrays(M=30)
    path = save_scan_h5(tmp_path / "s.hdf5", **arrays)
    scan = load_scan(path)
    assert isinstance(scan.diffraction, LazyArray) and len(scan.diffraction) == 30
    d = arrays["diffraction"]
    for idx in (np.array([29, 3, 3, 0]), np.array([1, 28]), np.arange(30)[::-1], np.array([], np.int64)):
        np.testing.assert_array_equal(scan.diffraction[idx], d[idx])
    np.testing.assert_array_equal(scan.diffraction[5:9], d[5:9])
    np.testing.assert_array_equal(scan.diffraction[-2], d[-2])
    back = pickle.loads(pickle.dumps(scan.diffraction))  # reopens the file in the new owner
    np.testing.assert_array_equal(back[[4, 2]], d[[4, 2]])


def test_mmap_false_reads_into_memory(tmp_path):
    arrays = tiny_arrays()
    for path in (save_scan(tmp_path / "a.npz", **arrays), save_scan_h5(tmp_path / "a.h5", **arrays)):
        scan = load_scan(path, mmap=False)
        assert type(scan.diffraction) is np.ndarray
        np.testing.assert_array_equal(scan.diffraction, arrays["diffraction"])


def test_legacy_layout_squeeze_downcast_and_aliases(tmp_path):
    a = tiny_arrays(M=12, N=8)
    d = a["diffraction"]
    legacy = dict(a)
    del legacy["diffraction"]
    legacy["diff3d"] = np.ascontiguousarray(np.moveaxis(d, 0, -1)).astype(np.float64)  # (N, N, M) float64
    legacy["probeGuess"] = a["probeGuess"].astype(np.complex128)[..., None]  # (N, N, 1) complex128
    legacy["Y"] = np.ones((12, 8, 8, 1), np.complex128)
    np.savez(tmp_path / "legacy.npz", **legacy)  # uncompressed -> memory-mapped legacy layout
    np.savez_compressed(tmp_path / "legacy_z.npz", **legacy)  # compressed -> full-read fallback
    for name in ("legacy.npz", "legacy_z.npz"):
        scan = load_scan(tmp_path / name)
        assert scan.diffraction.shape == (12, 8, 8) and scan.diffraction.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(scan.diffraction), d)
        np.testing.assert_array_equal(scan.diffraction[[3, 1]], d[[3, 1]])
        assert scan.probe.shape == (8, 8) and scan.probe.dtype == np.complex64
        assert scan.Y.shape == (12, 8, 8) and scan.Y.dtype == np.complex64
        np.testing.assert_array_equal(np.asarray(scan.Y[[0, 5]]), np.ones((2, 8, 8), np.complex64))
    # trailing singleton on (M, N, N, 1)
    sq = dict(a, diffraction=d[..., None])
    np.savez(tmp_path / "sq.npz", **sq)
    np.testing.assert_array_equal(np.asarray(load_scan(tmp_path / "sq.npz").diffraction), d)
    # M == N is ambiguous: read as (M, N, N), documented
    amb = tiny_arrays(M=8, N=8)
    assert make_scan(**amb).diffraction.shape == (8, 8, 8)
    # Y whose first axis is not M is dropped (with a warning), like the legacy loader
    with pytest.warns(UserWarning, match="'Y'"):
        assert make_scan(**a, Y=np.ones((3, 8, 8), np.complex64)).Y is None


def test_make_scan_aliases_and_start_coords():
    a = tiny_arrays()
    scan = make_scan(
        diffraction=a["diffraction"], xcoords=a["xcoords"], ycoords=a["ycoords"], probe=a["probeGuess"],
        object=a["objectGuess"], xcoords_start=a["xcoords"] + 1, ycoords_start=a["ycoords"] - 1,
        scan_index=np.arange(12, dtype=np.int32), metadata={"k": 1},
    )
    np.testing.assert_array_equal(scan.coords_start, np.stack([a["xcoords"] + 1, a["ycoords"] - 1], -1))
    assert scan.scan_index.dtype == np.int64 and scan.metadata == {"k": 1}
    with pytest.raises(DataError, match="both 'probe' and 'probeGuess'"):
        make_scan(**a, probe=a["probeGuess"])


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda a: a.pop("xcoords"), r"s\.npz: missing key 'xcoords'"),
        (lambda a: a.pop("probeGuess"), r"s\.npz: missing key 'probeGuess', expected \(N, N\) = \(8, 8\) complex64"),
        (lambda a: a.pop("diffraction"), r"s\.npz: missing key 'diffraction'"),
        (lambda a: a.update(ycoords=np.zeros(10)), r"s\.npz: key 'ycoords' has shape \(10,\) float64, expected \(M,\) = \(12,\) float64"),
        (lambda a: a.update(xcoords_start=np.zeros(11)), r"key 'xcoords_start' has shape \(11,\)"),
        (lambda a: a.update(xcoords=np.zeros((12, 1))), r"key 'xcoords' has shape \(12, 1\)"),
        (lambda a: a.update(xcoords=np.full(12, "a")), r"key 'xcoords' has shape \(12,\) <U1"),
        (lambda a: a.update(ycoords=np.r_[np.zeros(11), np.nan]), r"key 'ycoords' contains 1 NaN/inf"),
        (lambda a: a.update(diffraction=a["diffraction"][:, :, :7]), r"key 'diffraction' has shape \(12, 8, 7\)"),
        (lambda a: a.update(diffraction=a["diffraction"][:11]), r"expected \(M, N, N\) = \(12, N, N\)"),
        (lambda a: a.update(diffraction=a["diffraction"][0]), r"key 'diffraction' has shape \(8, 8\)"),
        (lambda a: a.update(diffraction=a["diffraction"].astype(np.complex64)), r"key 'diffraction' .* complex64"),
        (lambda a: a["diffraction"].__setitem__((5, 1, 1), np.inf), r"key 'diffraction' has NaN/inf at pattern 5"),
        (lambda a: a["diffraction"].__setitem__((7, 0, 3), -0.5), r"key 'diffraction' has negative values at pattern 7"),
        (lambda a: a.update(probeGuess=a["probeGuess"][:4]), r"key 'probeGuess' has shape \(4, 8\) complex64, expected \(N, N\) = \(8, 8\)"),
        (lambda a: a.update(probeGuess=np.full((8, 8), np.nan, np.complex64)), r"key 'probeGuess' contains 64 NaN/inf"),
        (lambda a: a.update(objectGuess=np.ones(5, np.complex64)), r"key 'objectGuess' has shape \(5,\)"),
        (lambda a: a.update(scan_index=np.zeros(12)), r"key 'scan_index' has shape \(12,\) float64, expected \(M,\) = \(12,\) int64"),
        (lambda a: a.update(Y=np.ones((12, 4, 4), np.complex64)), r"key 'Y' has shape \(12, 4, 4\)"),
        (lambda a: a.update(_metadata=np.array("{not json")), r"key '_metadata' is not valid JSON"),
        (lambda a: a.update(_metadata=np.array("[1, 2]")), r"key '_metadata' must be a JSON object"),
    ],
)
def test_bad_arrays_raise_one_line_data_error(tmp_path, change, pattern):
    a = tiny_arrays()
    change(a)
    np.savez(tmp_path / "s.npz", **a)
    with pytest.raises(DataError, match=pattern) as info:
        load_scan(tmp_path / "s.npz")
    assert "\n" not in str(info.value)


def test_bad_files_raise_data_error(tmp_path):
    good = save_scan(tmp_path / "good.npz", **tiny_arrays(M=40, N=16))
    blob = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("hello, not a zip")
    (tmp_path / "text.h5").write_text("hello, not hdf5")
    h5good = save_scan_h5(tmp_path / "good.h5", **tiny_arrays(M=40, N=16))
    hb = h5good.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(hb[: len(hb) // 2])
    (tmp_path / "folder.npz").mkdir()
    cases = {
        "trunc.npz": "trunc.npz",
        "empty.npz": "empty file",
        "text.npz": r"not an NPZ \(zip\) file",
        "text.h5": "not an HDF5 file",
        "trunc.h5": "trunc.h5",
        "folder.npz": "is a directory",
        "missing.npz": "file not found",
    }
    for name, pattern in cases.items():
        with pytest.raises(DataError, match=pattern) as info:
            load_scan(tmp_path / name)
        assert "\n" not in str(info.value), name


def test_truncated_member_detected_without_reading_data(tmp_path):
    """A stored member whose bytes are cut short is refused before it is memory-mapped."""
    path = save_scan(tmp_path / "s.npz", **tiny_arrays(M=40, N=16))
    with NpzReader(path) as r:
        head = r.header("diffraction")
    blob = bytearray(path.read_bytes())
    # keep the central directory but claim a larger array in the .npy header of diffraction
    text = bytes(blob[head.data_offset - 128 : head.data_offset])
    fixed = text.replace(b"(40, 16, 16)", b"(90, 16, 16)")
    assert fixed != text
    blob[head.data_offset - 128 : head.data_offset] = fixed
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"s\.npz: key 'diffraction': member data is truncated"):
        load_scan(path)


def test_pickled_metadata_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    a = tiny_arrays()
    a["_metadata"] = np.array([Evil()], dtype=object)
    np.savez(tmp_path / "evil.npz", **a)  # numpy pickles the object array
    with pytest.warns(UserWarning, match="pickled object array"):
        scan = load_scan(tmp_path / "evil.npz")
    assert scan.metadata == {}
    assert not sentinel.exists()
    # the upstream form (JSON text inside a pickled object array) is read without unpickling
    a["_metadata"] = np.array(json.dumps({"nphotons": 1e9, "note": "x"}), dtype=object)
    np.savez(tmp_path / "legacy_meta.npz", **a)
    with pytest.warns(UserWarning, match="without unpickling"):
        assert load_scan(tmp_path / "legacy_meta.npz").metadata == {"nphotons": 1e9, "note": "x"}
    # an object array elsewhere is refused outright
    a["_metadata"] = np.array("{}")
    a["xcoords"] = a["xcoords"].astype(object)
    np.savez(tmp_path / "obj_coords.npz", **a)
    with pytest.raises(DataError):
        load_scan(tmp_path / "obj_coords.npz")
    assert not sentinel.exists()


def test_hdf5_metadata_attribute_and_bytes(tmp_path):
    a = tiny_arrays()
    with h5py.File(tmp_path / "m.h5", "w") as f:
        for k, v in a.items():
            f[k] = v
        f.attrs["_metadata"] = json.dumps({"source": "beamline"})
    assert load_scan(tmp_path / "m.h5").metadata == {"source": "beamline"}
    np.savez(tmp_path / "b.npz", **a, _metadata=np.array([b'{"a": 2}']))
    assert load_scan(tmp_path / "b.npz").metadata == {"a": 2}


def test_save_refuses_invalid_data_and_keeps_old_file(tmp_path):
    path = save_scan(tmp_path / "s.npz", **tiny_arrays())
    before = path.read_bytes()
    bad = tiny_arrays()
    bad["diffraction"][0, 0, 0] = np.nan
    with pytest.raises(DataError):
        save_scan(path, **bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_save_scan_from_lazy_scan_round_trip(tmp_path):
    a = tiny_arrays()
    a["Y"] = (np.arange(12 * 64).reshape(12, 8, 8) * (1 + 1j)).astype(np.complex64)
    h5 = save_scan_h5(tmp_path / "a.h5", **a, metadata={"x": [1, 2]})
    again = save_scan(tmp_path / "b.npz", load_scan(h5))  # streams the lazy HDF5 arrays
    scan = load_scan(again)
    _assert_same_scan(scan, a)
    np.testing.assert_array_equal(np.asarray(scan.Y), a["Y"])
    assert scan.metadata == {"x": [1, 2]}


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_loads_tf_fixture_test_data(name):
    folder = legacy_dir(name)
    scan = load_scan(folder / "test_data.npz")
    with np.load(folder / "test_data.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(np.asarray(scan.diffraction), z["diffraction"])
        np.testing.assert_array_equal(scan.xcoords_start, z["xcoords_start"])
        np.testing.assert_array_equal(scan.object, z["objectGuess"])
    assert (scan.n_positions, scan.N) == (256, 64)
    assert scan.object.shape == (224, 224)
    _, ref = folder, np.load(folder / "reference.npz", allow_pickle=False)
    np.testing.assert_array_equal(scan.probe, ref["test_probeGuess"])


def test_import_is_torch_free():
    code = (
        "import sys, ptychopinn.data as d\n"
        "for n in ['load_scan','save_scan','save_scan_h5','Scan','group_scan','Groups',"
        "'split_by_region','normalization_factor','make_scan','object_patches']: getattr(d, n)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert res.returncode == 0, res.stderr
