"""Read untrusted zip archives (and folders laid out like them) without trusting their metadata.

Every member name is checked before anything is read: no absolute paths, drive letters,
backslashes, `..` components, NUL bytes, duplicates, symlinks or encrypted entries. Declared sizes
are capped per member and in total, and a member whose compression ratio is implausibly high is
refused (zip bombs). Members are read into memory (`bytes`); nothing is extracted to disk. A zip
inside the zip (`model.keras`) is opened with `nested`, which shares the remaining size budget.
"""
from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ptychopinn.errors import ModelFormatError


@dataclass(frozen=True)
class Limits:
    """Size caps, in bytes of uncompressed data, and the zip-bomb ratio test."""

    max_member: int = 2 * 1024**3
    max_total: int = 8 * 1024**3
    #: refuse members whose uncompressed/compressed ratio exceeds this ...
    max_ratio: float = 200.0
    #: ... once they are at least this large (tiny all-zero members legitimately compress well)
    ratio_min_size: int = 16 * 1024**2
    max_members: int = 10_000


DEFAULT_LIMITS = Limits()


class _Budget:
    """Remaining total bytes, shared by an archive and the archives nested in it."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, n: int, where: str) -> None:
        if n > self.left:
            raise ModelFormatError(f"{where}: archive expands beyond the total size limit")
        self.left -= n


def check_member_name(name: str, where: str) -> str:
    """Validate a member name and return it normalised (no trailing '/'); raise ModelFormatError."""
    if not name or "\x00" in name:
        raise ModelFormatError(f"{where}: member {name!r}: empty name or NUL byte")
    if "\\" in name:
        raise ModelFormatError(f"{where}: member {name!r}: backslash in member name (path trick refused)")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":"):
        raise ModelFormatError(f"{where}: member {name!r}: absolute path refused")
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in name.rstrip("/").split("/")) or not parts:
        raise ModelFormatError(f"{where}: member {name!r}: '..' or '.' path component refused")
    return name.rstrip("/")


class SafeZip:
    """A validated, read-only view of a zip archive given as a path or as bytes.

    `names()` lists file members (no directories); `read(name)` returns a member's bytes;
    `nested(name)` opens a member that is itself a zip, under the same budget.
    """

    def __init__(self, source: str | os.PathLike | bytes, where: str | None = None,
                 limits: Limits = DEFAULT_LIMITS, _budget: _Budget | None = None) -> None:
        self.where = where or str(source if not isinstance(source, bytes) else "<zip bytes>")
        self.limits = limits
        self._budget = _budget or _Budget(limits.max_total)
        try:
            fileobj = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ModelFormatError(f"{self.where}: cannot open ({exc.strerror})") from None
        try:
            self._zf = zipfile.ZipFile(fileobj)
            infos = self._zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
            fileobj.close()
            raise ModelFormatError(f"{self.where}: not a readable zip archive ({exc})") from None
        self._fileobj = fileobj
        try:
            self._infos = self._validate(infos)
        except ModelFormatError:
            self.close()
            raise

    def _validate(self, infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
        lim = self.limits
        if len(infos) > lim.max_members:
            raise ModelFormatError(f"{self.where}: {len(infos)} members, more than the limit of {lim.max_members}")
        members: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = check_member_name(info.filename, self.where)
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_ISLNK(mode):
                raise ModelFormatError(f"{self.where}: member {name!r}: symbolic link refused")
            if info.flag_bits & 0x1:
                raise ModelFormatError(f"{self.where}: member {name!r}: encrypted member refused")
            if info.is_dir():
                continue
            if name in members:
                raise ModelFormatError(f"{self.where}: member {name!r}: duplicate member name")
            if info.file_size > lim.max_member:
                raise ModelFormatError(f"{self.where}: member {name!r}: declared size {info.file_size} bytes exceeds "
                                       f"the per-member limit of {lim.max_member}")
            if (info.file_size >= lim.ratio_min_size
                    and info.file_size > lim.max_ratio * max(info.compress_size, 1)):
                raise ModelFormatError(f"{self.where}: member {name!r}: compression ratio "
                                       f"{info.file_size / max(info.compress_size, 1):.0f}:1 looks like a zip bomb")
            total += info.file_size
            members[name] = info
        if total > min(lim.max_total, self._budget.left):
            raise ModelFormatError(f"{self.where}: declared total size {total} bytes exceeds the limit")
        return members

    def names(self) -> list[str]:
        """File members (normalised names), in archive order."""
        return list(self._infos)

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def read(self, name: str) -> bytes:
        """A member's bytes. zipfile stops at the declared size and checks the CRC-32."""
        info = self._infos.get(name)
        if info is None:
            raise ModelFormatError(f"{self.where}: member {name!r} not found")
        self._budget.take(info.file_size, self.where)
        try:
            with self._zf.open(info) as fh:
                data = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise ModelFormatError(f"{self.where}: member {name!r}: corrupt or truncated ({exc})") from None
        if len(data) != info.file_size:
            raise ModelFormatError(f"{self.where}: member {name!r}: {len(data)} bytes, declared {info.file_size}")
        return data

    def nested(self, name: str) -> "SafeZip":
        """Open member `name` (itself a zip) with the same checks and the remaining budget."""
        return SafeZip(self.read(name), where=f"{self.where}:{name}", limits=self.limits, _budget=self._budget)

    def close(self) -> None:
        self._zf.close()
        self._fileobj.close()

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SafeDir:
    """The same read interface over a folder: only regular files inside `root`, no symlinks out."""

    def __init__(self, root: str | os.PathLike, where: str | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.root = Path(root).resolve()
        self.where = where or str(root)
        self.limits = limits
        self._budget = _Budget(limits.max_total)

    def _path(self, name: str) -> Path:
        name = check_member_name(name, self.where)
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise ModelFormatError(f"{self.where}: {name!r} resolves outside the bundle folder")
        return path

    def names(self) -> list[str]:
        out = []
        for dirpath, _, files in os.walk(self.root):
            for f in sorted(files):
                out.append(Path(dirpath, f).relative_to(self.root).as_posix())
        return sorted(out)

    def __contains__(self, name: str) -> bool:
        try:
            return self._path(name).is_file()
        except ModelFormatError:
            return False

    def read(self, name: str) -> bytes:
        path = self._path(name)
        if not path.is_file():
            raise ModelFormatError(f"{self.where}: {name!r} not found")
        size = path.stat().st_size
        if size > self.limits.max_member:
            raise ModelFormatError(f"{self.where}: {name!r}: {size} bytes exceeds the per-file limit")
        self._budget.take(size, self.where)
        return path.read_bytes()

    def nested(self, name: str) -> SafeZip:
        return SafeZip(self.read(name), where=f"{self.where}/{name}", limits=self.limits, _budget=self._budget)

    def close(self) -> None:
        pass

    def __enter__(self) -> "SafeDir":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
