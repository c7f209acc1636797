"""Scan writers: `save_scan` (NPZ) and `save_scan_h5` (HDF5), atomic through `ptychopinn.io.atomic`.

Both validate first (`make_scan`: the same rules as `load_scan`), write under a temporary name
in the destination folder (`io.atomic.atomic_path`: fsync, umask permissions, rename into place;
nothing half-written on error) and return the path. What a file holds reads back as the same
`Scan`: float32 amplitudes, float64 positions, complex64 probe (modes) and objects, `_metadata`
as one JSON string. numpy, h5py only; no torch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from .lazy import iter_chunks
from .npz import write_npz
from .scan import Scan, make_scan

__all__ = ["save_scan", "save_scan_h5", "file_arrays"]

#: bytes per HDF5 chunk of `diffraction` / `Y` (whole patterns, so index gathers read what they need)
_H5_CHUNK_BYTES = 2**20


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")


def file_arrays(scan: Scan) -> dict[str, Any]:
    """The contract's keys for a valid `Scan`, in the stored dtypes (`diffraction`, `Y` stay lazy)."""
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
    return write_npz(path, file_arrays(valid))


def _write_stack(f: Any, key: str, value: Any, compression: str | None) -> None:
    """(M, N, N) `diffraction` (float32) or `Y` (complex64), chunked in whole patterns, streamed."""
    M, N = value.shape[0], value.shape[-1]
    dtype = np.float32 if key == "diffraction" else np.complex64
    ds = f.create_dataset(
        key, shape=(M, N, N), dtype=dtype, chunks=(min(M, max(1, _H5_CHUNK_BYTES // (N * N * 4))), N, N),
        compression=compression,
    )
    for start, block in iter_chunks(value):
        ds[start : start + block.shape[0]] = block


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
        for key, value in file_arrays(valid).items():
            if key == "_metadata":
                f.create_dataset(key, data=str(value[()]), dtype=h5py.string_dtype("utf-8"))
            elif key in ("diffraction", "Y"):
                _write_stack(f, key, value, compression)
            else:
                f.create_dataset(key, data=value)
    return path
