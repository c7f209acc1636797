"""Atomic file and directory writes (standard library + numpy only; no torch).

Every writer builds its result under a temporary name in the destination's own folder, flushes
and fsyncs it, then renames it into place with `os.replace`, so readers see either the old file
or the complete new one, never a partial file; on error the temporary is removed.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import ConfigError

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_directory",
    "atomic_save_npz",
    "atomic_save_json",
    "json_safe",
    "strict_json_dumps",
    "check_output",
    "folder_mode",
    "file_mode",
]


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc); 0o022 where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _default_file_mode() -> int:
    return 0o666 & ~_umask()


def file_mode() -> int:
    """Permission bits a new file gets under the process umask (0o644 for umask 022); for
    writers that create their temporary with `tempfile.mkstemp` (0o600)."""
    return _default_file_mode()


def folder_mode() -> int:
    """Permission bits a new folder gets under the process umask (0o755 for umask 022)."""
    return 0o777 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    """Persist a rename on POSIX (best effort; not supported on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it is renamed onto `path`.

    For libraries that want a file name (h5py, matplotlib). The caller must have closed the file
    by the end of the block. On an exception the temporary is deleted and `path` is untouched.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        mode = target.stat().st_mode & 0o777 if target.exists() else _default_file_mode()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; rename it onto `path` on success.

    mode: "wb" or "w" (text; `encoding` defaults to UTF-8). On an exception inside the block no
    file is left behind and an existing `path` keeps its old content.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling directory; on success it replaces `path` as a whole.

    replace=False: an existing non-empty `path` is not replaced; ConfigError when the block ends
    (the temporary is removed, `path` untouched) — for outputs the user did not allow to overwrite.

    An existing directory at `path` is first renamed aside and deleted only after the new one
    is in place (restored if that rename fails). An existing *file* at `path` is an error.
    On an exception the temporary directory is removed and `path` is untouched.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        yield tmp
        for sub in tmp.rglob("*"):
            if sub.is_file():
                with open(sub, "rb") as fh:
                    os.fsync(fh.fileno())
        dir_mode = 0o777 & ~_umask()
        os.chmod(tmp, dir_mode)  # mkdtemp creates 0o700
        for sub in tmp.rglob("*"):  # nested temporary folders (e.g. from mkdtemp) too
            if sub.is_dir() and not sub.is_symlink():
                os.chmod(sub, dir_mode)
        if not replace and target.exists() and not _is_empty_dir(target):
            raise ConfigError(f"{target}: output exists and is not empty (pass overwrite=True to replace it)")
        _swap_directory(tmp, target, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(folder)


def _swap_directory(new: Path, target: Path, folder: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=folder))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write an uncompressed `.npz` (np.savez) atomically; returns the path (no suffix added)."""
    import numpy as np

    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±Infinity) replaced by None, numpy scalars and
    arrays turned into Python numbers and lists, tuples into lists, Paths into strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar or array, without importing numpy
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strict_json_dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` of `json_safe(obj)` with `allow_nan=False`: strict JSON (null, never NaN/Infinity)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def atomic_save_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write `obj` as strict UTF-8 JSON atomically (non-finite floats become null)."""
    text = strict_json_dumps(obj, indent=indent, ensure_ascii=False)
    with atomic_write(path, "w") as fh:
        fh.write(text + "\n")
    return Path(path)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_output(path: str | os.PathLike, *, overwrite: bool, directory: bool, flag: str = "overwrite=True") -> Path:
    """Refuse to destroy an existing output; call before any work.

    directory=True (an output folder): an existing empty folder is fine; an existing non-empty
    folder needs `overwrite`; an existing file is always an error. directory=False (an output
    file): an existing file needs `overwrite`; an existing folder is an error; the parent folder
    must exist (no folders are created for a file). Raises ConfigError naming the path and `flag`.
    """
    p = Path(path)
    if directory:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p}: exists and is not a folder (choose another output folder)")
        if p.is_dir() and not overwrite and not _is_empty_dir(p):
            raise ConfigError(f"{p}: output folder exists and is not empty (pass {flag} to replace it)")
        return p
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; expected an output file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{p}: folder {parent} does not exist (create it first)")
    if p.exists() and not overwrite:
        raise ConfigError(f"{p}: output file exists (pass {flag} to replace it)")
    return p
