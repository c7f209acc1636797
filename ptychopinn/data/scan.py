"""The scan data contract: `Scan`, `load_scan` (NPZ / HDF5), `make_scan`, `save_scan`, `save_scan_h5`.

Keys, shapes and dtypes (M positions, N×N detector, H×W object; see docs/data-contract.md):

    diffraction | diff3d   (M, N, N) amplitudes (sqrt counts) or counts → float32 amplitudes   required
    diffraction_units      'amplitude' | 'counts' (0-d string; also HDF5 attribute / _metadata) optional
    xcoords, ycoords       (M,) object pixels                  → float64   required
    probeGuess             (N, N) or (K, N, N) modes           → complex64 required
    bad_pixels             (N, N) bool, True = not measured                optional
    xcoords_start, ycoords_start (M,)                          → float64   optional (= xcoords/ycoords)
    scan_index             (M,) integer                        → int64     optional (= zeros)
    objectGuess            (H, W) ground truth                 → complex64 optional
    initial_object         (H, W) an initial guess, not truth  → complex64 optional
    Y                      (M, N, N) ground-truth patches      → complex64 optional (kept only if first axis is M)
    _metadata              JSON text (0-d or 1-element str/bytes array; HDF5 dataset or attribute)

The ptychodus training exports (`save_ptychopinn_training_data` NPZ, `save_training_data` HDF5)
are read as they are. Nothing is ever unpickled. Every violation raises `DataError` with one line
naming the file, the key and what was expected. numpy, h5py only; no torch.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, DataError
from ..io.atomic import atomic_path
from .detector import UNITS, DetectorTransform, crop_window, resample_object, size_hint, transform_mask, transform_probe
from .lazy import H5Source, LazyArray, iter_chunks
from .npz import NpzReader, write_npz

__all__ = ["Scan", "LoadOptions", "load_options_from_flags", "load_scan", "make_scan", "save_scan", "save_scan_h5"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: legacy/alias keyword → canonical file key, for `make_scan` / `save_scan`
_ALIASES = {"probe": "probeGuess", "object": "objectGuess", "diff3d": "diffraction", "metadata": "_metadata"}
#: the ptychodus HDF5 training file (`ptychodus.api.io.save_training_data`, TrainingDataFileKeys)
_PTYCHODUS_H5_KEYS = {"patterns", "probe", "probe_position_x_px", "probe_position_y_px"}
#: contract name → ptychodus HDF5 dataset
_PTYCHODUS_H5_NAMES = {
    "diffraction": "patterns",
    "probeGuess": "probe",
    "xcoords": "probe_position_x_px",
    "ycoords": "probe_position_y_px",
    "objectGuess": "object",
    "bad_pixels": "bad_pixels",
}
#: Scan.metadata key → ptychodus HDF5 scalar dataset (physical metadata, SI units)
_PTYCHODUS_H5_META = {
    "object_pixel_width_m": "object_pixel_width_m",
    "object_pixel_height_m": "object_pixel_height_m",
    "detector_distance_m": "detector_object_distance_m",
    "photon_energy_eV": "photon_energy_eV",
}


@dataclass(frozen=True)
class LoadOptions:
    """How a scan file is read (the CLI flags of `train`, `reconstruct` and `ptychopinn-onnx`).

    diffraction_units: 'counts' | 'amplitude' | None (None: the file's declaration, else the
        dtype: integers are counts, floats amplitudes) — `--diffraction-units`.
    pixel_size: metres per object pixel; the positions are then metres and are divided by it
        (`--pixel-size`). At the sampling of the stored frames (before any crop).
    crop: crop the (binned) patterns to `crop × crop` around the centroid of the mean pattern;
        the raw window is `crop · bin` pixels.
    bin: sum `bin × bin` blocks of counts (`--bin`); a binned pixel is bad if any sub-pixel is.
    crop_detector: crop to the model's N (`--crop-detector`); the workflows resolve it with
        `for_size(N)` once the model size is known.
    """

    diffraction_units: str | None = None
    pixel_size: float | None = None
    crop: int | None = None
    bin: int = 1
    crop_detector: bool = False

    def for_size(self, N: int) -> "LoadOptions":
        """These options with `crop_detector` resolved to `crop = N` (the model's size)."""
        if self.crop_detector and self.crop is None:
            return replace(self, crop=int(N), crop_detector=False)
        return self

    @property
    def is_default(self) -> bool:
        return self == LoadOptions()


def load_options_from_flags(
    diffraction_units: Any = None, pixel_size: Any = None, crop_detector: Any = False, bin: Any = None
) -> LoadOptions:
    """`LoadOptions` from the CLI flag values (strings or None), one-line `ConfigError`s naming the flag."""
    units = None if diffraction_units in (None, "") else str(diffraction_units)
    if units is not None and units not in UNITS:
        raise ConfigError(f"--diffraction-units: expected counts or amplitude, got {diffraction_units!r}")
    size = None
    if pixel_size not in (None, ""):
        try:
            size = float(pixel_size)
        except (TypeError, ValueError):
            raise ConfigError(f"--pixel-size: expected a number of metres, got {pixel_size!r}") from None
        if not (np.isfinite(size) and size > 0):
            raise ConfigError(f"--pixel-size: expected a positive number of metres, got {pixel_size!r}")
    b = 1
    if bin not in (None, ""):
        try:
            bf = float(bin)
            if not bf.is_integer():
                raise ValueError
            b = int(bf)
        except (TypeError, ValueError):
            raise ConfigError(f"--bin: expected an integer, got {bin!r}") from None
        if b < 1:
            raise ConfigError(f"--bin: expected a positive integer, got {bin!r}")
    return LoadOptions(diffraction_units=units, pixel_size=size, bin=b, crop_detector=bool(crop_detector))


@dataclass
class Scan:
    """One ptychographic scan, validated against the data contract.

    diffraction: (M, N, N) float32 amplitudes, sqrt(counts); a `LazyArray` (memory-mapped NPZ
        member or HDF5 dataset) when read from a file, gathered by index on demand.
    xcoords, ycoords, xcoords_start, ycoords_start: (M,) float64 positions in object pixels
        (x = column, y = row).
    probe: (N, N) complex64, the dominant mode (max Σ|P|²) of `probeGuess`.
    object: (H, W) complex64 ground truth or None (metrics are computed only against it).
    scan_index: (M,) int64. Y: (M, N, N) complex64 ground-truth patches or None.
    metadata: parsed `_metadata` JSON plus physical metadata of foreign formats (docs).
    diffraction_units: what the file held, 'amplitude' or 'counts' (reads are amplitudes anyway).
    bad_pixels: (N, N) bool, True = not measured, or None (no pixel flagged).
    probe_modes: (K, N, N) complex64 when the file holds K >= 2 probe modes, else None.
    initial_object: (H, W) complex64 initial guess (e.g. a ptychodus export's object) or None.
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
    diffraction_units: str = "amplitude"
    bad_pixels: np.ndarray | None = None
    probe_modes: np.ndarray | None = None
    initial_object: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray | None:
        """(N, N) bool, True = measured (`~bad_pixels`), or None when every pixel is measured."""
        return None if self.bad_pixels is None else ~self.bad_pixels

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
        extra = f", units={self.diffraction_units!r}" if self.diffraction_units != "amplitude" else ""
        if self.bad_pixels is not None:
            extra += f", bad_pixels={int(self.bad_pixels.sum())}"
        if self.probe_modes is not None:
            extra += f", probe_modes={self.probe_modes.shape[0]}"
        return (
            f"Scan(M={self.n_positions}, N={self.N}, object={obj}, Y={self.Y is not None}{extra}, "
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

    def attribute(self, name: str) -> str | None:
        """A root string attribute (HDF5 only)."""
        return None


class _RenamedSource(_Source):
    """Another layout (ptychodus HDF5) seen under the contract's names, plus scalar metadata."""

    def __init__(self, inner: _Source, names: Mapping[str, str], meta: Mapping[str, str]) -> None:
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


@dataclass
class _Stats:
    """What one chunked pass over the raw diffraction found (`_scan_values`)."""

    mean_energy: float  # mean over patterns of Σ_measured intensity (photons per pattern)
    mean_pattern: np.ndarray | None  # (S, S) float64 mean intensity, bad pixels zeroed


def _scan_values(
    label: str, key: str, raw: Any, *, counts: bool, bad: np.ndarray | None, check: bool, mean_pattern: bool, energy: bool = True
) -> _Stats:
    """One sequential, chunked pass over the raw data: finite and non-negative (when `check`),
    the mean photons per pattern over the measured pixels, and (optionally) the mean pattern."""
    unit = "counts" if counts else "amplitudes (sqrt of counts)"
    valid = None if bad is None else ~bad
    total = 0.0
    acc = None
    M = int(raw.shape[0])
    try:
        for start, block in iter_chunks(raw):
            if check:
                finite = np.isfinite(block)
                if not finite.all():
                    row = start + int(np.argwhere(~finite)[0][0])
                    raise DataError(
                        f"{label}: key {key!r} has NaN/inf at pattern {row}, expected finite {'counts' if counts else 'amplitudes'} >= 0"
                    )
                if (block < 0).any():
                    row = start + int(np.argwhere(block < 0)[0][0])
                    raise DataError(f"{label}: key {key!r} has negative values at pattern {row}, expected {unit} >= 0")
            if not (energy or mean_pattern):
                continue
            inten = block.astype(np.float64) if counts else np.square(block, dtype=np.float64)
            if valid is not None:
                inten[:, ~valid] = 0.0
            total += float(inten.sum())
            if mean_pattern:
                part = inten.sum(axis=0)
                acc = part if acc is None else acc + part
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{label}: key {key!r} cannot be read ({exc})") from None
    return _Stats(mean_energy=total / max(M, 1), mean_pattern=None if acc is None else acc / max(M, 1))


def _text(src: _Source, key: str, label: str) -> str:
    """A 0-d / 1-element string stored under `key`."""
    arr = np.asarray(src.full(key))
    if arr.size != 1 or arr.dtype.kind not in "USO":
        raise DataError(f"{label}: key {key!r} has shape {arr.shape} {arr.dtype}, expected one string ('counts' or 'amplitude')")
    value = arr.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _file_units(src: _Source, meta: dict[str, Any], label: str, fmt: str) -> tuple[str | None, str]:
    """(declared units or None, where) from the `diffraction_units` key / HDF5 attribute / `_metadata`.

    ptychodus exports hold detector counts (their `diff3d`/`patterns` are the measured intensities).
    """
    found: dict[str, str] = {}
    if "diffraction_units" in src.keys():
        found["key 'diffraction_units'"] = _text(src, "diffraction_units", label)
    attr = src.attribute("diffraction_units")
    if attr is not None:
        found["attribute 'diffraction_units'"] = attr
    if "diffraction_units" in meta:
        found["key '_metadata.diffraction_units'"] = str(meta.pop("diffraction_units"))
    for where, value in found.items():
        if value not in UNITS:
            raise DataError(f"{label}: {where} is {value!r}, expected 'counts' or 'amplitude'")
    if len(set(found.values())) > 1:
        raise DataError(f"{label}: {' and '.join(f'{w}={v!r}' for w, v in found.items())} disagree")
    if found:
        where, value = next(iter(found.items()))
        return value, where
    if fmt.startswith("ptychodus"):
        return "counts", f"the {fmt} format (detector counts)"
    return None, ""


def _resolve_units(label: str, dtype: np.dtype, declared: str | None, where: str, option: str | None) -> str:
    """Precedence: the explicit option (`--diffraction-units`) > the file's declaration > the dtype
    (integers are counts, floats amplitudes). A flag that contradicts the file warns (one line)."""
    if option is not None:
        if option not in UNITS:
            raise ConfigError(f"--diffraction-units: expected counts or amplitude, got {option!r}")
        if declared is not None and declared != option:
            warnings.warn(
                f"{label}: --diffraction-units {option} overrides {where} = {declared!r} (an explicit flag beats file metadata)",
                stacklevel=4,
            )
        return option
    if declared is not None:
        return declared
    return "counts" if dtype.kind in "iub" else "amplitude"


def _bad_pixels(src: _Source, label: str, S: int) -> np.ndarray | None:
    """The stored `(S, S)` bool mask (True = not measured), None when absent or all False."""
    if "bad_pixels" not in src.keys():
        return None
    shape, dtype = src.info("bad_pixels")
    if shape != (S, S) or dtype.kind != "b":
        raise _shape_error(label, "bad_pixels", shape, dtype, f"(N, N) = ({S}, {S}) bool (True = not measured)")
    bad = np.ascontiguousarray(src.full("bad_pixels"), dtype=bool)
    if bad.all():
        raise DataError(f"{label}: key 'bad_pixels' flags all {S}x{S} pixels, expected at least one measured pixel")
    return bad if bad.any() else None


def _probe_modes(src: _Source, label: str, S: int, N: int, window: Any, bin: int) -> np.ndarray:
    """`probeGuess` as `(K, N, N)` complex64: `(N, N)`, `(K, N, N)` (or `(N, N, 1)`) at the model's
    size, or at the raw frame size S (then resampled like the detector: `detector.transform_probe`)."""
    key = "probeGuess"
    sizes = {(N, N), (S, S)}
    spec = f"(N, N) = ({N}, {N}) complex64 (or (K, {N}, {N}) modes" + (f"; or the frame size {S}" if S != N else "") + ")"
    if key not in src.keys():
        raise DataError(f"{label}: missing key {key!r}, expected {spec}")
    shape, dtype = src.info(key)
    core = shape[:-1] if len(shape) == 3 and shape[-1] == 1 else shape
    if dtype.kind not in "fiuc" or len(core) not in (2, 3) or tuple(core[-2:]) not in sizes or (len(core) == 3 and core[0] < 1):
        p = core[-1] if len(core) in (2, 3) and core[-1] == core[-2] else None
        hint = f" for {S}x{S} frames{size_hint(S, p)}" if p is not None and p < N == S else ""
        raise _shape_error(label, key, shape, dtype, spec + hint)
    arr = np.asarray(src.full(key)).reshape(core)
    modes = np.ascontiguousarray(arr if arr.ndim == 3 else arr[None], dtype=np.complex128 if arr.dtype == np.complex128 else np.complex64)
    _check_finite(label, key, modes)
    if modes.shape[-1] != N:
        modes = transform_probe(modes, S, window, bin)
    return np.ascontiguousarray(modes, dtype=np.complex64)


def _pixel_sizes(meta: dict[str, Any], label: str) -> tuple[float, float] | None:
    """(x, y) object pixel size in metres from `_metadata` (`object_pixel_size_m` or the ptychodus
    `object_pixel_width_m` / `object_pixel_height_m`), or None."""
    def num(key: str) -> float | None:
        if key not in meta:
            return None
        try:
            v = float(meta[key])
        except (TypeError, ValueError):
            raise DataError(f"{label}: key '_metadata.{key}' must be a number of metres, got {meta[key]!r}") from None
        if not (np.isfinite(v) and v > 0):
            raise DataError(f"{label}: key '_metadata.{key}' must be > 0 metres, got {meta[key]!r}")
        return v

    both = num("object_pixel_size_m")
    w, h = num("object_pixel_width_m"), num("object_pixel_height_m")
    if w is not None and h is not None:
        return w, h
    if both is not None:
        return both, both
    return None


def _positions_to_pixels(
    x: list[np.ndarray], y: list[np.ndarray], meta: dict[str, Any], label: str, pixel_size: float | None
) -> tuple[float, float] | None:
    """Convert metres → object pixels in place when asked; returns the pixel size used (x, y) m.

    Precedence: the `pixel_size` option (`--pixel-size`, positions are metres) > the file's
    `_metadata.position_units` ('px' default, or 'm' with `object_pixel_size_m`)."""
    units = meta.pop("position_units", None)
    if units is not None and units not in ("px", "m"):
        raise DataError(f"{label}: key '_metadata.position_units' is {units!r}, expected 'px' (object pixels) or 'm'")
    file_size = _pixel_sizes(meta, label)
    if pixel_size is not None:
        ps = float(pixel_size)
        if not (np.isfinite(ps) and ps > 0):
            raise ConfigError(f"--pixel-size: expected a positive number of metres, got {pixel_size!r}")
        if units == "px":
            warnings.warn(
                f"{label}: --pixel-size {ps:g} m overrides _metadata.position_units = 'px' (an explicit flag beats file metadata): "
                "positions are read as metres",
                stacklevel=4,
            )
        elif units == "m" and file_size is not None and not np.allclose(file_size, (ps, ps), rtol=1e-6):
            warnings.warn(
                f"{label}: --pixel-size {ps:g} m overrides the file's object pixel size {file_size[0]:g} x {file_size[1]:g} m "
                "(an explicit flag beats file metadata)",
                stacklevel=4,
            )
        size = (ps, ps)
    elif units == "m":
        if file_size is None:
            raise DataError(
                f"{label}: key '_metadata.position_units' is 'm' but the file has no '_metadata.object_pixel_size_m'; "
                "pass --pixel-size (metres per object pixel)"
            )
        size = file_size
    else:
        return None
    for arr in x:
        arr /= size[0]
    for arr in y:
        arr /= size[1]
    return size


def _source_format(src: _Source) -> str:
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


def _assemble(src: _Source, *, check_values: bool, path: Path | None, options: LoadOptions | None = None) -> Scan:
    opts = options or LoadOptions()
    if opts.crop_detector and opts.crop is None:
        raise ConfigError("--crop-detector needs the model's N: resolve LoadOptions.for_size(N) first (or pass crop=N)")
    fmt = _source_format(src)
    if fmt == "ptychodus-h5":
        src = _RenamedSource(src, _PTYCHODUS_H5_NAMES, _PTYCHODUS_H5_META)
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
        raise DataError(f"{label}: missing key 'diffraction' (or legacy 'diff3d'), expected (M, N, N) = ({M}, N, N) float32 amplitudes or integer counts")
    dshape, ddtype = src.info(dkey)
    dspec = f"(M, N, N) = ({M}, N, N) float32 amplitudes or integer counts (or legacy (N, N, M))"
    if ddtype.kind not in "fiu":
        raise _shape_error(label, dkey, dshape, ddtype, dspec)
    legacy, squeeze, (_, S, _) = _stack_layout(label, dkey, dshape, ddtype, M, dspec)

    meta = src.metadata()
    if fmt != "ptychopinn":
        meta.setdefault("source_format", fmt)
    declared, where = _file_units(src, meta, label, fmt)
    units = _resolve_units(label, ddtype, declared, where, opts.diffraction_units)
    counts = units == "counts"
    bad_raw = _bad_pixels(src, label, S)

    B = int(opts.bin)
    if B < 1:
        raise ConfigError(f"--bin: expected a positive integer, got {opts.bin!r}")
    if opts.crop is not None and int(opts.crop) < 1:
        raise ConfigError(f"--crop-detector: expected a positive size, got {opts.crop!r}")
    if opts.crop is None and S % B:
        raise DataError(f"{label}: key {dkey!r} has {S}x{S} frames, not divisible by --bin {B}; add --crop-detector")

    raw = src.lazy(dkey)
    raw_view = LazyArray(raw, np.float32, legacy=legacy, squeeze=squeeze)
    stats = None
    if check_values or opts.crop is not None:
        stats = _scan_values(
            label, dkey, raw_view, counts=counts, bad=bad_raw, check=check_values, mean_pattern=opts.crop is not None,
            energy="nphotons" in meta,
        )
    window = None
    if opts.crop is not None:
        assert stats is not None and stats.mean_pattern is not None
        window, (cy, cx) = crop_window(stats.mean_pattern, int(opts.crop), B, label=label)
        meta["detector_crop"] = {"row0": window[0], "col0": window[1], "size": window[2], "centroid": [cy, cx], "frame": S}
    if B > 1:
        meta["detector_bin"] = B
    transform = DetectorTransform(counts=counts, window=window, bin=B)
    N = transform.out_size(S)
    diffraction: Any = LazyArray(raw, np.float32, legacy=legacy, squeeze=squeeze, transform=None if transform.identity else transform)
    if isinstance(raw, np.ndarray) and not isinstance(raw, np.memmap):
        diffraction = np.ascontiguousarray(diffraction[:])  # already in memory: fix layout once
    bad = transform_mask(bad_raw, window, B)

    nphot = meta.get("nphotons")
    if stats is not None and isinstance(nphot, (int, float)) and nphot > 0:
        ratio = stats.mean_energy / float(nphot)
        if ratio > 10 and not counts:
            warnings.warn(
                f"{label}: key {dkey!r} looks like intensities, not amplitudes: Σ d² per pattern is {stats.mean_energy:.3g} "
                f"but _metadata.nphotons = {float(nphot):.3g}; if it holds photon counts pass --diffraction-units counts",
                stacklevel=3,
            )
        elif ratio < 0.1 and counts:
            warnings.warn(
                f"{label}: key {dkey!r} declared counts sums to {stats.mean_energy:.3g} photons per pattern "
                f"but _metadata.nphotons = {float(nphot):.3g}; if it holds amplitudes pass --diffraction-units amplitude",
                stacklevel=3,
            )

    modes = _probe_modes(src, label, S, N, window, B)
    power = np.einsum("khw,khw->k", modes.real, modes.real) + np.einsum("khw,khw->k", modes.imag, modes.imag)
    probe = np.ascontiguousarray(modes[int(np.argmax(power))])
    probe_modes = modes if modes.shape[0] >= 2 else None

    if fmt.startswith("ptychodus") and opts.pixel_size is not None:
        # ptychodus exports store positions in object pixels by construction: the flag only
        # states the object pixel size (metres), it converts nothing
        ps = float(opts.pixel_size)
        if not (np.isfinite(ps) and ps > 0):
            raise ConfigError(f"--pixel-size: expected a positive number of metres, got {opts.pixel_size!r}")
        size: tuple[float, float] | None = (ps, ps)
    else:
        size = _positions_to_pixels([x, xs], [y, ys], meta, label, opts.pixel_size)
    if size is not None:
        meta["object_pixel_width_m"], meta["object_pixel_height_m"] = size
        meta.pop("object_pixel_size_m", None)
    Wraw = S if window is None else window[2]
    if Wraw != S:  # a smaller detector window makes object pixels S/W times larger
        factor = Wraw / S
        for arr in (x, y, xs, ys):
            arr *= factor
        px = _pixel_sizes(meta, label)
        if px is not None:
            meta["object_pixel_width_m"], meta["object_pixel_height_m"] = px[0] / factor, px[1] / factor
            meta.pop("object_pixel_size_m", None)
    if M > 1 and max(np.ptp(x), np.ptp(y)) < 1.0:
        warnings.warn(
            f"{label}: the scan positions span {max(np.ptp(x), np.ptp(y)):.3g} object pixels (less than one); "
            "positions are in object pixels: if they are metres pass --pixel-size",
            stacklevel=3,
        )

    obj = init = None
    okey = "objectGuess"
    if okey in keys:
        arr = _complex(label, okey, src, lambda s: len(s) == 2 and min(s) >= 1, "(H, W) complex64")
        if fmt.startswith("ptychodus"):
            init = arr  # ptychodus exports carry the initial guess, never ground truth
        else:
            obj = arr
    if "initial_object" in keys:
        init = _complex(label, "initial_object", src, lambda s: len(s) == 2 and min(s) >= 1, "(H, W) complex64")
    if Wraw != S:
        obj = None if obj is None else resample_object(obj, Wraw / S)
        init = None if init is None else resample_object(init, Wraw / S)

    if "scan_index" in keys:
        sshape, sdtype = src.info("scan_index")
        if sdtype.kind not in "iu" or sshape != (M,):
            raise _shape_error(label, "scan_index", sshape, sdtype, f"(M,) = ({M},) int64")
        scan_index = src.full("scan_index").astype(np.int64)
    else:
        scan_index = np.zeros(M, dtype=np.int64)

    Y: LazyArray | np.ndarray | None = None
    if "Y" in keys:
        yshape, ydtype = src.info("Y")
        core = yshape[:-1] if len(yshape) == 4 and yshape[-1] == 1 else yshape
        if len(core) == 3 and core[0] == M:
            if ydtype.kind not in "fiuc" or core[1:] != (S, S):
                raise _shape_error(label, "Y", yshape, ydtype, f"(M, N, N) = ({M}, {S}, {S}) complex64")
            if N != S:
                warnings.warn(f"{label}: key 'Y' ({S}x{S} patches) dropped: the detector was cropped/binned to {N}x{N}", stacklevel=3)
            else:
                yraw = src.lazy("Y")
                Y = LazyArray(yraw, np.complex64, squeeze=len(yshape) == 4)
                if isinstance(yraw, np.ndarray) and not isinstance(yraw, np.memmap):
                    Y = np.ascontiguousarray(Y[:])
        else:
            warnings.warn(
                f"{label}: key 'Y' has shape {_fmt(yshape)}, not (M, N, N) = ({M}, {S}, {S}); ignored",
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
        metadata=meta,
        path=path,
        diffraction_units=units,
        bad_pixels=bad,
        probe_modes=probe_modes,
        initial_object=init,
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


def load_scan(
    path: str | os.PathLike[str],
    *,
    mmap: bool = True,
    check_values: bool = True,
    diffraction_units: str | None = None,
    pixel_size: float | None = None,
    crop: int | None = None,
    bin: int = 1,
    options: LoadOptions | None = None,
) -> Scan:
    """Read and validate a scan file (`.npz` or `.h5`/`.hdf5`, recognised by content).

    Also reads the ptychodus training exports as they are (NPZ of
    `save_ptychopinn_training_data`, HDF5 of `save_training_data`).
    diffraction_units, pixel_size, crop, bin: see `LoadOptions` (or pass `options=`); an
    explicit option beats the file's metadata (with a one-line warning when they disagree).

    mmap: when True, `diffraction` (and `Y`) stay on disk: uncompressed NPZ members are
        memory-mapped, HDF5 datasets read on access; compressed NPZ members are read fully.
        When False everything is read into memory.
    check_values: scan the diffraction once, chunk by chunk (one sequential read of the
        file), for NaN/inf and negative amplitudes.
    """
    path = Path(path)
    if options is None:
        options = LoadOptions(diffraction_units, pixel_size, crop, bin)
    kind = _sniff(path)
    if kind == "npz":
        reader = NpzReader(path)
        try:
            return _assemble(_NpzSource(reader, mmap), check_values=check_values, path=path, options=options)
        finally:
            reader.close()  # memory maps stay valid after the zip handle closes
    src = _H5Source(path, mmap)
    try:
        return _assemble(src, check_values=check_values, path=path, options=options)
    except (OSError, KeyError) as exc:
        raise DataError(f"{path.name}: HDF5 content cannot be read ({exc})") from None
    finally:
        src.close()


def _canonical(scan: Scan | None, arrays: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scan is not None:
        out.update(
            diffraction=scan.diffraction,
            diffraction_units="amplitude",  # a Scan's diffraction always reads as amplitudes
            xcoords=scan.xcoords,
            ycoords=scan.ycoords,
            xcoords_start=scan.xcoords_start,
            ycoords_start=scan.ycoords_start,
            probeGuess=scan.probe_modes if scan.probe_modes is not None else scan.probe,
            objectGuess=scan.object,
            initial_object=scan.initial_object,
            bad_pixels=scan.bad_pixels,
            scan_index=scan.scan_index,
            Y=scan.Y,
            _metadata=dict(scan.metadata),
        )
        if ("diffraction" in arrays or "diff3d" in arrays) and "diffraction_units" not in arrays:
            out.pop("diffraction_units")  # new data: units from its dtype / declaration
    for key, value in arrays.items():
        canon = _ALIASES.get(key, key)
        if canon != key and key in arrays and canon in arrays:
            raise DataError(f"both {key!r} and {canon!r} were given; pass only one")
        out[canon] = value
    return {k: v for k, v in out.items() if v is not None}


def make_scan(
    scan: Scan | None = None, /, *, check_values: bool = True, options: LoadOptions | None = None, **arrays: Any
) -> Scan:
    """A validated in-memory `Scan` from arrays named as in the file contract.

    Also accepts the aliases `probe`, `object`, `metadata` (a dict) and `diff3d`, and the keys
    `diffraction_units` ('counts' | 'amplitude'), `bad_pixels`, `initial_object`.
    """
    return _assemble(
        _MemorySource(_canonical(scan, arrays), "<arrays>"), check_values=check_values, path=None, options=options
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
        "probeGuess": (scan.probe_modes if scan.probe_modes is not None else scan.probe).astype(np.complex64),
        "scan_index": np.asarray(scan.scan_index, dtype=np.int64),
    }
    if scan.bad_pixels is not None:
        out["bad_pixels"] = np.asarray(scan.bad_pixels, dtype=bool)
    if scan.object is not None:
        out["objectGuess"] = scan.object.astype(np.complex64)
    if scan.initial_object is not None:
        out["initial_object"] = scan.initial_object.astype(np.complex64)
    if scan.Y is not None:
        out["Y"] = scan.Y
    # float32 amplitudes are written; Scan.metadata never holds the file's `diffraction_units`
    # (consumed at load), so the saved file reads back as amplitudes
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
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
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
    return path
