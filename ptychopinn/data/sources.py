"""Scan sources: what is stored under each key of an NPZ, an HDF5 file, a ptychodus export or
in-memory arrays, seen through one small interface (`Source`).

A source answers `keys()`, `info(key) -> (shape, dtype)` without reading data, `full(key)` (a
numpy array in memory), `lazy(key)` (memmap / ndarray / `lazy.H5Source`, the stored layout,
read on access), `metadata()` (the parsed `_metadata` JSON object) and `attribute(name)` (an
HDF5 root string attribute). Sources only read; the contract's checks are `data.validation`.

- `NpzSource`: NPZ members through `npz.NpzReader` (memory-mapped when stored; pickled
  members are never unpickled).
- `HDF5FileSource`: root datasets of an HDF5 file (opened by path, or an already-open handle).
- `ptychodus_view` / `source_format`: the ptychodus training exports (`save_training_data`
  HDF5, `save_ptychopinn_training_data` NPZ) under the contract's names.
- `MemorySource`: arrays passed to `make_scan`.

`sniff(path)` tells NPZ from HDF5 by the leading bytes. numpy, h5py only; no torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import DataError
from .lazy import H5Source, LazyArray
from .npz import NpzReader
from .validation import warn_caller

__all__ = [
    "Source",
    "NpzSource",
    "HDF5FileSource",
    "MemorySource",
    "RenamedSource",
    "ptychodus_view",
    "source_format",
    "parse_metadata_text",
    "sniff",
    "PTYCHODUS_H5_NAMES",
    "PTYCHODUS_H5_META",
]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: the ptychodus HDF5 training file (`ptychodus.api.io.save_training_data`, TrainingDataFileKeys)
_PTYCHODUS_H5_KEYS = {"patterns", "probe", "probe_position_x_px", "probe_position_y_px"}
#: contract name → ptychodus HDF5 dataset
PTYCHODUS_H5_NAMES = {
    "diffraction": "patterns",
    "probeGuess": "probe",
    "xcoords": "probe_position_x_px",
    "ycoords": "probe_position_y_px",
    "objectGuess": "object",
    "bad_pixels": "bad_pixels",
}
#: Scan.metadata key → ptychodus HDF5 scalar dataset (physical metadata, SI units)
PTYCHODUS_H5_META = {
    "object_pixel_width_m": "object_pixel_width_m",
    "object_pixel_height_m": "object_pixel_height_m",
    "detector_distance_m": "detector_object_distance_m",
    "photon_energy_eV": "photon_energy_eV",
}


class Source:
    """What is stored under each key (the interface; subclasses read one kind of container)."""

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

    def attribute(self, name: str) -> str | None:
        """A root string attribute (HDF5 only)."""
        return None


class RenamedSource(Source):
    """Another layout (ptychodus HDF5) seen under the contract's names, plus scalar metadata."""

    def __init__(self, inner: Source, names: Mapping[str, str], meta: Mapping[str, str]) -> None:
        self.inner = inner
        self.label = inner.label
        theirs = inner.keys()
        self.names = {ours: key for ours, key in names.items() if key in theirs}
        self.meta = {ours: key for ours, key in meta.items() if key in theirs}

    def keys(self) -> set[str]:
        return set(self.names)

    def info(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        return self.inner.info(self.names[key])

    def full(self, key: str) -> np.ndarray:
        return self.inner.full(self.names[key])

    def lazy(self, key: str) -> Any:
        return self.inner.lazy(self.names[key])

    def metadata(self) -> dict[str, Any]:
        out = self.inner.metadata()
        for ours, key in self.meta.items():
            value = np.asarray(self.inner.full(key))
            if value.size == 1 and value.dtype.kind in "fiu":
                out[ours] = float(value.reshape(-1)[0])
        return out

    def attribute(self, name: str) -> str | None:
        return self.inner.attribute(name)


class MemorySource(Source):
    """In-memory arrays (numpy, `LazyArray`, or anything `np.asarray` takes) named as in the contract."""

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
        return parse_metadata_text(np.asarray(meta), self.label)


class NpzSource(Source):
    """The members of an NPZ archive; `lazy` memory-maps stored members when `mmap`."""

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
            return parse_metadata_text(self.reader.array("_metadata", mmap=False), self.label)
        # A pickled object array: never unpickle. Look for a JSON object among the pickle's
        # string literals (opcodes are parsed, nothing is executed).
        for text in self.reader.object_member_strings("_metadata"):
            if text.lstrip().startswith("{"):
                try:
                    value = json.loads(text)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    warn_caller(
                        f"{self.label}: key '_metadata' is a pickled object array; read its JSON text "
                        "without unpickling. Re-save with ptychopinn.data.save_scan to store plain JSON."
                    )
                    return value
        warn_caller(
            f"{self.label}: key '_metadata' is a pickled object array without readable JSON text; "
            "ignored (pickles are never loaded)"
        )
        return {}


class HDF5FileSource(Source):
    """The root datasets of an HDF5 file, opened read-only from `path` (`file=None`) or an open
    `h5py.File` handle (e.g. a SWMR reader; then `close` leaves it open and `lazy` reads it
    fully). `lazy` returns a picklable `lazy.H5Source` when `mmap`. `label` names the file in
    messages (default: the file name)."""

    def __init__(self, path: Path, mmap: bool, *, file: Any = None, label: str | None = None) -> None:
        import h5py

        self.path = path
        self.label = path.name if label is None else label
        self.mmap = mmap and file is None
        self._owned = file is None
        if file is None:
            try:
                file = h5py.File(path, "r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{self.label}: not a readable HDF5 file ({exc})") from None
        self.file = file
        self._keys = {k for k, v in self.file.items() if isinstance(v, h5py.Dataset)}

    def close(self) -> None:
        if self._owned:
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

    def attribute(self, name: str) -> str | None:
        if name not in self.file.attrs:
            return None
        value = self.file.attrs[name]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    def metadata(self) -> dict[str, Any]:
        if "_metadata" in self.file:
            value = self.file["_metadata"][()]
        elif "_metadata" in self.file.attrs:
            value = self.file.attrs["_metadata"]
        else:
            return {}
        return parse_metadata_text(np.asarray(value), self.label)


def parse_metadata_text(arr: np.ndarray, label: str) -> dict[str, Any]:
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


def source_format(src: Source) -> str:
    """'ptychodus-h5' (`save_training_data`), 'ptychodus-npz' (`save_ptychopinn_training_data`) or 'ptychopinn'.

    The ptychodus NPZ uses the contract's (legacy) names; it is recognised by its signature:
    `diff3d` and `bad_pixels` present, a 3-D `(modes, N, N)` `probeGuess`, no `diffraction`,
    no `_metadata`.
    """
    keys = src.keys()
    if _PTYCHODUS_H5_KEYS <= keys and "diffraction" not in keys:
        return "ptychodus-h5"
    if {"diff3d", "bad_pixels", "probeGuess"} <= keys and not keys & {"diffraction", "_metadata"}:
        if len(src.info("probeGuess")[0]) == 3 and src.info("probeGuess")[0][-1] != 1:
            return "ptychodus-npz"
    return "ptychopinn"


def ptychodus_view(src: Source, fmt: str) -> Source:
    """`src` under the contract's names: the ptychodus HDF5 export renamed, anything else as it is."""
    if fmt == "ptychodus-h5":
        return RenamedSource(src, PTYCHODUS_H5_NAMES, PTYCHODUS_H5_META)
    return src


def sniff(path: Path) -> str:
    """'npz' or 'h5' from the leading bytes (an HDF5 user block too); `DataError` otherwise."""
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
