"""The scan data contract: `Scan`, `load_scan` (NPZ / HDF5), `make_scan`, `save_scan`, `save_scan_h5`.

Keys, shapes and dtypes (M positions, N×N detector, H×W object; see docs/data-contract.md):

    diffraction | diff3d   (M, N, N) amplitudes (sqrt counts)  → float32   required
    xcoords, ycoords       (M,) object pixels                  → float64   required
    probeGuess             (N, N)                              → complex64 required
    xcoords_start, ycoords_start (M,)                          → float64   optional (= xcoords/ycoords)
    scan_index             (M,) integer                        → int64     optional (= zeros)
    objectGuess            (H, W)                              → complex64 optional
    Y                      (M, N, N) ground-truth patches      → complex64 optional (kept only if first axis is M)
    _metadata              JSON text (0-d or 1-element str/bytes array; HDF5 dataset or attribute)

Nothing is ever unpickled. Every violation raises `DataError` with one line naming the file, the
key and what was expected. numpy, h5py only; no torch.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import DataError
from ..io.atomic import file_mode
from .lazy import H5Source, LazyArray, iter_chunks
from .npz import NpzReader, write_npz

__all__ = ["Scan", "load_scan", "make_scan", "save_scan", "save_scan_h5"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: legacy/alias keyword → canonical file key, for `make_scan` / `save_scan`
_ALIASES = {"probe": "probeGuess", "object": "objectGuess", "diff3d": "diffraction", "metadata": "_metadata"}


@dataclass
class Scan:
    """One ptychographic scan, validated against the data contract.

    diffraction: (M, N, N) float32 amplitudes, sqrt(counts); a `LazyArray` (memory-mapped NPZ
        member or HDF5 dataset) when read from a file, gathered by index on demand.
    xcoords, ycoords, xcoords_start, ycoords_start: (M,) float64 positions in object pixels
        (x = column, y = row).
    probe: (N, N) complex64. object: (H, W) complex64 or None. scan_index: (M,) int64.
    Y: (M, N, N) complex64 ground-truth patches or None. metadata: parsed `_metadata` JSON.
    """

    diffraction: Any
    xcoords: np.ndarray
    ycoords: np.ndarray
    xcoords_start: np.ndarray
    ycoords_start: np.ndarray
    probe: np.ndarray
    object: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    Y: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def N(self) -> int:
        """Detector (patch) size in pixels."""
        return int(self.diffraction.shape[-1])

    @property
    def n_positions(self) -> int:
        """M, the number of scan positions."""
        return int(self.xcoords.shape[0])

    @property
    def coords(self) -> np.ndarray:
        """(M, 2) float64 positions `[x, y]`."""
        return np.stack([self.xcoords, self.ycoords], axis=-1)

    @property
    def coords_start(self) -> np.ndarray:
        """(M, 2) float64 start positions `[x, y]`."""
        return np.stack([self.xcoords_start, self.ycoords_start], axis=-1)

    def __repr__(self) -> str:
        obj = None if self.object is None else self.object.shape
        return (
            f"Scan(M={self.n_positions}, N={self.N}, object={obj}, Y={self.Y is not None}, "
            f"path={str(self.path) if self.path else None!r})"
        )


# ----------------------------------------------------------------------------------------------
# sources: a uniform view of "what is stored under each key" for NPZ, HDF5 and in-memory input
# ----------------------------------------------------------------------------------------------
class _Source:
    label: str

    def keys(self) -> set[str]:
        raise NotImplementedError

    def info(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        raise NotImplementedError

    def full(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def lazy(self, key: str) -> Any:
        """Array-like over the stored layout (memmap / ndarray / H5Source)."""
        return self.full(key)

    def metadata(self) -> dict[str, Any]:
        return {}


class _MemorySource(_Source):
    def __init__(self, arrays: Mapping[str, Any], label: str) -> None:
        self.label = label
        self.arrays = {k: v for k, v in arrays.items() if v is not None}

    def keys(self) -> set[str]:
        return set(self.arrays)

    def info(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        v = self.arrays[key]
        if not (hasattr(v, "shape") and hasattr(v, "dtype")):
            v = self.arrays[key] = np.asarray(v)
        return tuple(v.shape), np.dtype(v.dtype)

    def full(self, key: str) -> np.ndarray:
        return np.asarray(self.arrays[key])

    def lazy(self, key: str) -> Any:
        v = self.arrays[key]
        return v if isinstance(v, (np.ndarray, LazyArray)) else np.asarray(v)

    def metadata(self) -> dict[str, Any]:
        meta = self.arrays.get("_metadata")
        if meta is None:
            return {}
        if isinstance(meta, Mapping):
            return dict(meta)
        return _parse_metadata_text(np.asarray(meta), self.label)


class _NpzSource(_Source):
    def __init__(self, reader: NpzReader, mmap: bool) -> None:
        self.reader = reader
        self.label = reader.label
        self.mmap = mmap

    def keys(self) -> set[str]:
        return set(self.reader.keys())

    def info(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        h = self.reader.header(key)
        return h.shape, h.dtype

    def full(self, key: str) -> np.ndarray:
        return np.array(self.reader.array(key, mmap=False))

    def lazy(self, key: str) -> Any:
        return self.reader.array(key, mmap=self.mmap)

    def metadata(self) -> dict[str, Any]:
        if "_metadata" not in self.reader:
            return {}
        head = self.reader.header("_metadata")
        if not head.dtype.hasobject:
            return _parse_metadata_text(self.reader.array("_metadata", mmap=False), self.label)
        # A pickled object array: never unpickle. Look for a JSON object among the pickle's
        # string literals (opcodes are parsed, nothing is executed).
        for text in self.reader.object_member_strings("_metadata"):
            if text.lstrip().startswith("{"):
                try:
                    value = json.loads(text)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    warnings.warn(
                        f"{self.label}: key '_metadata' is a pickled object array; read its JSON text "
                        "without unpickling. Re-save with ptychopinn.data.save_scan to store plain JSON.",
                        stacklevel=4,
                    )
                    return value
        warnings.warn(
            f"{self.label}: key '_metadata' is a pickled object array without readable JSON text; "
            "ignored (pickles are never loaded)",
            stacklevel=4,
        )
        return {}


class _H5Source(_Source):
    def __init__(self, path: Path, mmap: bool) -> None:
        import h5py

        self.path = path
        self.label = path.name
        self.mmap = mmap
        try:
            self.file = h5py.File(path, "r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.label}: not a readable HDF5 file ({exc})") from None
        self._keys = {k for k, v in self.file.items() if isinstance(v, h5py.Dataset)}

    def close(self) -> None:
        self.file.close()

    def keys(self) -> set[str]:
        return set(self._keys)

    def info(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        ds = self.file[key]
        return tuple(int(s) for s in ds.shape), np.dtype(ds.dtype)

    def full(self, key: str) -> np.ndarray:
        try:
            return np.asarray(self.file[key][()])
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{self.label}: key {key!r} cannot be read ({exc})") from None

    def lazy(self, key: str) -> Any:
        if not self.mmap:
            return self.full(key)
        return H5Source(self.path, key)

    def metadata(self) -> dict[str, Any]:
        if "_metadata" in self.file:
            value = self.file["_metadata"][()]
        elif "_metadata" in self.file.attrs:
            value = self.file.attrs["_metadata"]
        else:
            return {}
        return _parse_metadata_text(np.asarray(value), self.label)


def _parse_metadata_text(arr: np.ndarray, label: str) -> dict[str, Any]:
    """JSON object from a 0-d / 1-element unicode or bytes array; anything else is an error."""
    if arr.dtype.hasobject:
        items = [x for x in arr.reshape(-1)]
        if len(items) != 1 or not isinstance(items[0], (str, bytes)):
            raise DataError(f"{label}: key '_metadata' must hold one JSON string, got an object array")
        text: Any = items[0]
    elif arr.dtype.kind in "US" and arr.size == 1:
        text = arr.reshape(-1)[0]
    else:
        raise DataError(
            f"{label}: key '_metadata' has shape {arr.shape} dtype {arr.dtype}, expected one JSON string"
        )
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        value = json.loads(str(text))
    except ValueError as exc:
        raise DataError(f"{label}: key '_metadata' is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{label}: key '_metadata' must be a JSON object, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _shape_error(label: str, key: str, shape: tuple[int, ...], dtype: np.dtype, expected: str) -> DataError:
    return DataError(f"{label}: key {key!r} has shape {_fmt(shape)} {dtype}, expected {expected}")


def _check_finite(label: str, key: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{label}: key {key!r} contains {bad} NaN/inf values, expected finite numbers")


def _real(label: str, key: str, src: _Source, expected_shape: tuple[int, ...], spec: str) -> np.ndarray:
    shape, dtype = src.info(key)
    if dtype.kind not in "fiu" or shape != expected_shape:
        raise _shape_error(label, key, shape, dtype, spec)
    arr = src.full(key).astype(np.float64)
    _check_finite(label, key, arr)
    return arr


def _complex(label: str, key: str, src: _Source, check: Callable[[tuple[int, ...]], bool], spec: str) -> np.ndarray:
    shape, dtype = src.info(key)
    if len(shape) >= 1 and shape[-1] == 1 and len(shape) == 3:
        shape = shape[:-1]
        squeeze = True
    else:
        squeeze = False
    if dtype.kind not in "fiuc" or not check(shape):
        raise _shape_error(label, key, src.info(key)[0], dtype, spec)
    arr = src.full(key)
    arr = arr[..., 0] if squeeze else arr
    arr = np.ascontiguousarray(arr, dtype=np.complex64)
    _check_finite(label, key, arr)
    return arr


def _stack_layout(
    label: str, key: str, shape: tuple[int, ...], dtype: np.dtype, M: int, expected: str
) -> tuple[bool, bool, tuple[int, ...]]:
    """(legacy, squeeze, contract shape) of a stored (M, N, N)-like array.

    Rule: a trailing singleton axis of a 4-D array is dropped; a 3-D array is the legacy
    `(N, N, M)` layout when `shape[0] == shape[1] != shape[2] == M`; otherwise it must be `(M, N, N)`.
    """
    squeeze = len(shape) == 4 and shape[-1] == 1
    core = shape[:-1] if squeeze else shape
    if len(core) != 3:
        raise _shape_error(label, key, shape, dtype, expected)
    legacy = core[0] == core[1] != core[2] and core[2] == M
    out = (core[2], core[0], core[1]) if legacy else core
    if out[0] != M or out[1] != out[2] or out[1] < 1:
        raise _shape_error(label, key, shape, dtype, expected)
    return legacy, squeeze, out


def _check_diffraction_values(label: str, key: str, diffraction: Any) -> None:
    """Chunk-wise scan (one sequential pass over the data): finite and non-negative."""
    try:
        for start, block in iter_chunks(diffraction):
            finite = np.isfinite(block)
            if not finite.all():
                row = start + int(np.argwhere(~finite)[0][0])
                raise DataError(
                    f"{label}: key {key!r} has NaN/inf at pattern {row}, expected finite amplitudes >= 0"
                )
            if (block < 0).any():
                row = start + int(np.argwhere(block < 0)[0][0])
                raise DataError(
                    f"{label}: key {key!r} has negative values at pattern {row}, expected amplitudes "
                    "(sqrt of counts) >= 0"
                )
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{label}: key {key!r} cannot be read ({exc})") from None


def _assemble(src: _Source, *, check_values: bool, path: Path | None) -> Scan:
    label = src.label
    keys = src.keys()
    for key in ("xcoords", "ycoords"):
        if key not in keys:
            raise DataError(f"{label}: missing key {key!r}, expected (M,) float64 positions in object pixels")
    xshape, xdtype = src.info("xcoords")
    if len(xshape) != 1 or xdtype.kind not in "fiu":
        raise _shape_error(label, "xcoords", xshape, xdtype, "(M,) float64")
    M = xshape[0]
    if M == 0:
        raise DataError(f"{label}: key 'xcoords' has shape (0,), expected at least one scan position")
    spec_m = f"(M,) = ({M},) float64"
    x = _real(label, "xcoords", src, (M,), spec_m)
    y = _real(label, "ycoords", src, (M,), spec_m)
    xs = _real(label, "xcoords_start", src, (M,), spec_m) if "xcoords_start" in keys else x.copy()
    ys = _real(label, "ycoords_start", src, (M,), spec_m) if "ycoords_start" in keys else y.copy()

    dkey = "diffraction" if "diffraction" in keys else "diff3d" if "diff3d" in keys else None
    if dkey is None:
        raise DataError(f"{label}: missing key 'diffraction' (or legacy 'diff3d'), expected (M, N, N) = ({M}, N, N) float32 amplitudes")
    dshape, ddtype = src.info(dkey)
    dspec = f"(M, N, N) = ({M}, N, N) float32 amplitudes (or legacy (N, N, M))"
    if ddtype.kind not in "fiu":
        raise _shape_error(label, dkey, dshape, ddtype, dspec)
    legacy, squeeze, (_, N, _) = _stack_layout(label, dkey, dshape, ddtype, M, dspec)
    raw = src.lazy(dkey)
    diffraction: Any = LazyArray(raw, np.float32, legacy=legacy, squeeze=squeeze)
    if isinstance(raw, np.ndarray) and not isinstance(raw, np.memmap):
        diffraction = np.ascontiguousarray(diffraction[:])  # already in memory: fix layout once
    if check_values:
        _check_diffraction_values(label, dkey, diffraction)

    if "probeGuess" not in keys:
        raise DataError(f"{label}: missing key 'probeGuess', expected (N, N) = ({N}, {N}) complex64")
    probe = _complex(label, "probeGuess", src, lambda s: s == (N, N), f"(N, N) = ({N}, {N}) complex64")
    obj = None
    if "objectGuess" in keys:
        obj = _complex(label, "objectGuess", src, lambda s: len(s) == 2 and min(s) >= 1, "(H, W) complex64")

    if "scan_index" in keys:
        sshape, sdtype = src.info("scan_index")
        if sdtype.kind not in "iu" or sshape != (M,):
            raise _shape_error(label, "scan_index", sshape, sdtype, f"(M,) = ({M},) int64")
        scan_index = src.full("scan_index").astype(np.int64)
    else:
        scan_index = np.zeros(M, dtype=np.int64)

    Y = None
    if "Y" in keys:
        yshape, ydtype = src.info("Y")
        core = yshape[:-1] if len(yshape) == 4 and yshape[-1] == 1 else yshape
        if len(core) == 3 and core[0] == M:
            if ydtype.kind not in "fiuc" or core[1:] != (N, N):
                raise _shape_error(label, "Y", yshape, ydtype, f"(M, N, N) = ({M}, {N}, {N}) complex64")
            yraw = src.lazy("Y")
            Y = LazyArray(yraw, np.complex64, squeeze=len(yshape) == 4)
            if isinstance(yraw, np.ndarray) and not isinstance(yraw, np.memmap):
                Y = np.ascontiguousarray(Y[:])
        else:
            warnings.warn(
                f"{label}: key 'Y' has shape {_fmt(yshape)}, not (M, N, N) = ({M}, {N}, {N}); ignored",
                stacklevel=3,
            )
    return Scan(
        diffraction=diffraction,
        xcoords=x,
        ycoords=y,
        xcoords_start=xs,
        ycoords_start=ys,
        probe=probe,
        object=obj,
        scan_index=scan_index,
        Y=Y,
        metadata=src.metadata(),
        path=path,
    )


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def _sniff(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found, expected an .npz or .h5/.hdf5 scan file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an .npz or .h5/.hdf5 scan file")
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if not magic:
        raise DataError(f"{path.name}: empty file, expected an .npz or .h5/.hdf5 scan file")
    if magic[:4] in _ZIP_MAGIC:
        return "npz"
    if magic == _HDF5_MAGIC:
        return "h5"
    import h5py

    if h5py.is_hdf5(path):  # HDF5 with a user block
        return "h5"
    kind = "NPZ (zip)" if path.suffix.lower() == ".npz" else "HDF5" if path.suffix.lower() in (".h5", ".hdf5") else "NPZ or HDF5"
    raise DataError(f"{path.name}: not an {kind} file (unrecognised leading bytes {magic[:4]!r})")


def load_scan(path: str | os.PathLike[str], *, mmap: bool = True, check_values: bool = True) -> Scan:
    """Read and validate a scan file (`.npz` or `.h5`/`.hdf5`, recognised by content).

    mmap: when True, `diffraction` (and `Y`) stay on disk: uncompressed NPZ members are
        memory-mapped, HDF5 datasets read on access; compressed NPZ members are read fully.
        When False everything is read into memory.
    check_values: scan the diffraction once, chunk by chunk (one sequential read of the
        file), for NaN/inf and negative amplitudes.
    """
    path = Path(path)
    kind = _sniff(path)
    if kind == "npz":
        reader = NpzReader(path)
        try:
            return _assemble(_NpzSource(reader, mmap), check_values=check_values, path=path)
        finally:
            reader.close()  # memory maps stay valid after the zip handle closes
    src = _H5Source(path, mmap)
    try:
        return _assemble(src, check_values=check_values, path=path)
    except (OSError, KeyError) as exc:
        raise DataError(f"{path.name}: HDF5 content cannot be read ({exc})") from None
    finally:
        src.close()


def _canonical(scan: Scan | None, arrays: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scan is not None:
        out.update(
            diffraction=scan.diffraction,
            xcoords=scan.xcoords,
            ycoords=scan.ycoords,
            xcoords_start=scan.xcoords_start,
            ycoords_start=scan.ycoords_start,
            probeGuess=scan.probe,
            objectGuess=scan.object,
            scan_index=scan.scan_index,
            Y=scan.Y,
            _metadata=dict(scan.metadata),
        )
    for key, value in arrays.items():
        canon = _ALIASES.get(key, key)
        if canon != key and key in arrays and canon in arrays:
            raise DataError(f"both {key!r} and {canon!r} were given; pass only one")
        out[canon] = value
    return {k: v for k, v in out.items() if v is not None}


def make_scan(scan: Scan | None = None, /, *, check_values: bool = True, **arrays: Any) -> Scan:
    """A validated in-memory `Scan` from arrays named as in the file contract.

    Also accepts the aliases `probe`, `object`, `metadata` (a dict) and `diff3d`.
    """
    return _assemble(
        _MemorySource(_canonical(scan, arrays), "<arrays>"), check_values=check_values, path=None
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")


def _file_arrays(scan: Scan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "diffraction": scan.diffraction,
        "xcoords": scan.xcoords.astype(np.float64),
        "ycoords": scan.ycoords.astype(np.float64),
        "xcoords_start": scan.xcoords_start.astype(np.float64),
        "ycoords_start": scan.ycoords_start.astype(np.float64),
        "probeGuess": scan.probe.astype(np.complex64),
        "scan_index": np.asarray(scan.scan_index, dtype=np.int64),
    }
    if scan.object is not None:
        out["objectGuess"] = scan.object.astype(np.complex64)
    if scan.Y is not None:
        out["Y"] = scan.Y
    out["_metadata"] = np.array(json.dumps(scan.metadata, default=_json_default, sort_keys=True))
    return out


def save_scan(path: str | os.PathLike[str], scan: Scan | None = None, /, **arrays: Any) -> Path:
    """Atomically write a contract-valid, uncompressed (memory-mappable) NPZ.

    Pass a `Scan`, arrays named as in the contract (`diffraction`, `xcoords`, `ycoords`,
    `probeGuess`, optional `objectGuess`, `xcoords_start`, `ycoords_start`, `scan_index`, `Y`,
    `metadata`=dict), or both (arrays override the scan's fields). The data are validated first;
    `_metadata` is stored as a JSON string. Returns the path written.
    """
    valid = make_scan(scan, **arrays)
    return write_npz(path, _file_arrays(valid))


def save_scan_h5(
    path: str | os.PathLike[str], scan: Scan | None = None, /, *, compression: str | None = None, **arrays: Any
) -> Path:
    """Atomically write a contract-valid HDF5 scan: datasets at the root, named as in the NPZ.

    `diffraction` is chunked in blocks of whole patterns (about 1 MiB), so index gathers read only what
    they need; `_metadata` is a scalar UTF-8 string dataset.
    """
    import h5py

    valid = make_scan(scan, **arrays)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in _file_arrays(valid).items():
                if key == "_metadata":
                    f.create_dataset(key, data=str(value[()]), dtype=h5py.string_dtype("utf-8"))
                elif key in ("diffraction", "Y"):
                    M, N = value.shape[0], value.shape[-1]
                    dtype = np.float32 if key == "diffraction" else np.complex64
                    ds = f.create_dataset(
                        key, shape=(M, N, N), dtype=dtype, chunks=(min(M, max(1, 2**20 // (N * N * 4))), N, N),
                        compression=compression,
                    )
                    for start, block in iter_chunks(value):
                        ds[start : start + block.shape[0]] = block
                else:
                    f.create_dataset(key, data=value)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp made it 0o600: follow the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
