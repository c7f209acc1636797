"""NPZ members without pickle: memory-mapped reads, safe metadata, aligned atomic writes.

An NPZ file is a zip archive of `.npy` members. A member stored uncompressed (ZIP_STORED) is a
plain byte range of the archive, so it can be memory-mapped: its data offset is the local file
header offset + 30 + file-name length + extra-field length (read from the *local* header, which
may differ from the central directory), plus the length of the `.npy` header. Compressed members
are read fully. Object (pickled) members are never unpickled; `object_member_strings` only lists
the string literals of their pickle stream, by parsing opcodes without executing any.
numpy only; no torch.
"""
from __future__ import annotations

import io
import os
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import DataError
from ..io.atomic import atomic_path
from .lazy import iter_chunks

__all__ = ["NpzReader", "MemberHeader", "write_npz"]

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"
#: zip "extra field" id used for alignment padding (the id Android's zipalign uses)
_ALIGN_EXTRA_ID = 0xD935
_ALIGN = 64
#: largest pickled (object) member we will scan for a JSON string
_MAX_OBJECT_BYTES = 16 * 2**20


@dataclass(frozen=True)
class MemberHeader:
    """Where one `.npy` member's array lives inside the archive."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    stored: bool  # ZIP_STORED (uncompressed)
    data_offset: int  # absolute file offset of the array data (valid when stored)
    member_end: int  # absolute end offset of the member data (valid when stored)


def _read_npy_header(fp: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:  # (3, 0): utf-8 header, same layout as 2.0
            shape, fortran, dtype = fmt._read_array_header(fp, version)  # type: ignore[attr-defined]  # noqa: SLF001  # numpy's private v3.0 reader, not in its stubs
    except (ValueError, OSError, EOFError, SyntaxError, struct.error) as exc:
        raise DataError(f"{where}: not a valid .npy member ({exc})") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


class NpzReader:
    """Read the members of one NPZ archive; `key` names are member names without `.npy`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.label = self.path.name
        try:
            self._zip = zipfile.ZipFile(self.path, "r")
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DataError(f"{self.label}: not a readable NPZ (zip) archive ({exc})") from None
        self.file_size = self.path.stat().st_size
        self._infos = {
            info.filename[:-4]: info for info in self._zip.infolist() if info.filename.endswith(".npy")
        }

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, key: str) -> bool:
        return key in self._infos

    def header(self, key: str) -> MemberHeader:
        info = self._infos[key]
        where = f"{self.label}: key {key!r}"
        stored = info.compress_type == zipfile.ZIP_STORED
        if not stored:
            with self._open_member(key) as fp:
                shape, fortran, dtype = _read_npy_header(fp, where)
            return MemberHeader(key, shape, dtype, fortran, False, -1, -1)
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            raw = f.read(_LOCAL_HEADER.size)
            if len(raw) < _LOCAL_HEADER.size or raw[:4] != _LOCAL_MAGIC:
                raise DataError(f"{where}: corrupt zip local header (file truncated or damaged)")
            fields = _LOCAL_HEADER.unpack(raw)
            name_len, extra_len = fields[-2], fields[-1]
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            f.seek(start)
            shape, fortran, dtype = _read_npy_header(f, where)
            data_offset = f.tell()
        end = start + info.compress_size
        nbytes = int(np.prod(shape)) * dtype.itemsize if not dtype.hasobject else 0
        if end > self.file_size or data_offset + nbytes > end:
            raise DataError(
                f"{where}: member data is truncated ({shape} {dtype} needs {nbytes} bytes, "
                f"{max(0, min(end, self.file_size) - data_offset)} present)"
            )
        return MemberHeader(key, shape, dtype, fortran, True, data_offset, end)

    def _open_member(self, key: str) -> Any:
        try:
            return self._zip.open(self._infos[key])
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise DataError(f"{self.label}: key {key!r} cannot be read ({exc})") from None

    def array(self, key: str, *, mmap: bool = True) -> np.ndarray:
        """The member as an array: a read-only `np.memmap` when stored and `mmap`, else a full read.

        Object (pickle) members raise `DataError`: they are never unpickled.
        """
        head = self.header(key)
        where = f"{self.label}: key {key!r}"
        if head.dtype.hasobject:
            raise DataError(f"{where} is a pickled object array; refusing to unpickle (allow_pickle=False)")
        if mmap and head.stored and int(np.prod(head.shape)) > 0:
            return np.memmap(
                self.path,
                dtype=head.dtype,
                mode="r",
                offset=head.data_offset,
                shape=head.shape,
                order="F" if head.fortran_order else "C",
            )
        with self._open_member(key) as fp:
            try:
                return np.lib.format.read_array(fp, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(f"{where} cannot be read ({exc})") from None

    def object_member_strings(self, key: str) -> list[str]:
        """String literals inside a pickled member, found by parsing (never running) its opcodes."""
        info = self._infos[key]
        if info.file_size > _MAX_OBJECT_BYTES:
            return []
        with self._open_member(key) as fp:
            _read_npy_header(fp, f"{self.label}: key {key!r}")
            payload = fp.read()
        found: list[str] = []
        try:
            for _opcode, arg, _pos in pickletools.genops(io.BytesIO(payload)):
                if isinstance(arg, str):
                    found.append(arg)
                elif isinstance(arg, (bytes, bytearray)):
                    try:
                        found.append(bytes(arg).decode("utf-8"))
                    except UnicodeDecodeError:
                        pass
        except Exception:  # noqa: BLE001 - malformed pickle: just no strings
            return found
        return found


def _npy_header_bytes(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # header longer than 64 KiB
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> Path:
    """Atomically write an uncompressed NPZ whose array data is 64-byte aligned in the file.

    `arrays` maps keys to numpy arrays or lazy arrays (anything with `shape`, `dtype` and row
    slicing); large arrays are streamed in chunks. Object dtypes are refused. The archive is
    written to a temporary file in the destination folder and moved into place
    (`io.atomic.atomic_path`: fsync, umask permissions), so readers never see a half-written file.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w+b") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, value in arrays.items():
                _write_member(zf, raw, key, value)
    return path


def _write_member(zf: zipfile.ZipFile, raw: Any, key: str, value: Any) -> None:
    arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
    dtype = np.dtype(arr.dtype)
    if dtype.hasobject:
        raise DataError(f"{key!r}: object arrays cannot be written (they would need pickle)")
    shape = tuple(int(s) for s in arr.shape)
    header = _npy_header_bytes(shape, dtype)
    nbytes = len(header) + int(np.prod(shape)) * dtype.itemsize
    name = f"{key}.npy"
    force_zip64 = nbytes > 0x7FFFFFFF
    # pad the local header's extra field so that the member (and so the array) starts aligned
    base = raw.tell() + _LOCAL_HEADER.size + len(name.encode("utf-8")) + (20 if force_zip64 else 0) + 4
    pad = (-base) % _ALIGN
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.extra = struct.pack("<HH", _ALIGN_EXTRA_ID, pad) + b"\0" * pad
    with zf.open(info, "w", force_zip64=force_zip64) as out:
        out.write(header)
        if arr.ndim == 0:
            out.write(np.asarray(arr, dtype=dtype).tobytes())
        else:
            for _start, block in _blocks(arr):
                out.write(np.ascontiguousarray(block, dtype=dtype).data)


def _blocks(arr: Any) -> Iterable[tuple[int, np.ndarray]]:
    if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
        yield 0, arr
    else:
        yield from iter_chunks(arr)
