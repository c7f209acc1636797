"""Scan positions: read them, convert metres to object pixels, follow a detector crop (numpy only).

Positions are `[x, y]` in object pixels (x = column). A file may hold metres instead
(`_metadata.position_units = 'm'` with `object_pixel_size_m`, or the `--pixel-size` option);
a detector window of W of the S raw pixels makes the object pixel S/W times larger, so positions
in pixels scale by W/S (docs/data-contract.md). The physical pixel size used is recorded in
`metadata` as `object_pixel_width_m` / `object_pixel_height_m`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, DataError
from .validation import read_real, shape_error, warn_caller

if TYPE_CHECKING:  # annotations only
    from .sources import Source

__all__ = ["Positions", "read_positions", "pixel_sizes", "positive_pixel_size", "to_object_pixels", "scale_to_window", "check_span"]


@dataclass
class Positions:
    """(M,) float64 scan positions (`x` = column, `y` = row) and their `_start` twins."""

    x: np.ndarray
    y: np.ndarray
    x_start: np.ndarray
    y_start: np.ndarray

    @property
    def M(self) -> int:
        return int(self.x.shape[0])


def read_positions(src: Source, label: str) -> Positions:
    """`xcoords`, `ycoords` (M,) real, M >= 1, finite; `xcoords_start` / `ycoords_start` default to them."""
    keys = src.keys()
    for key in ("xcoords", "ycoords"):
        if key not in keys:
            raise DataError(f"{label}: missing key {key!r}, expected (M,) float64 positions in object pixels")
    xshape, xdtype = src.info("xcoords")
    if len(xshape) != 1 or xdtype.kind not in "fiu":
        raise shape_error(label, "xcoords", xshape, xdtype, "(M,) float64")
    M = xshape[0]
    if M == 0:
        raise DataError(f"{label}: key 'xcoords' has shape (0,), expected at least one scan position")
    spec_m = f"(M,) = ({M},) float64"
    x = read_real(label, "xcoords", src, (M,), spec_m)
    y = read_real(label, "ycoords", src, (M,), spec_m)
    xs = read_real(label, "xcoords_start", src, (M,), spec_m) if "xcoords_start" in keys else x.copy()
    ys = read_real(label, "ycoords_start", src, (M,), spec_m) if "ycoords_start" in keys else y.copy()
    return Positions(x, y, xs, ys)


def pixel_sizes(meta: dict[str, Any], label: str) -> tuple[float, float] | None:
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


def positive_pixel_size(pixel_size: Any) -> float:
    """The `--pixel-size` option as a positive, finite float (metres per object pixel)."""
    ps = float(pixel_size)
    if not (np.isfinite(ps) and ps > 0):
        raise ConfigError(f"--pixel-size: expected a positive number of metres, got {pixel_size!r}")
    return ps


def _metres_to_pixels(pos: Positions, meta: dict[str, Any], label: str, pixel_size: float | None) -> tuple[float, float] | None:
    """Convert metres → object pixels in place when asked; returns the pixel size used (x, y) m.

    Precedence: the `pixel_size` option (`--pixel-size`, positions are metres) > the file's
    `_metadata.position_units` ('px' default, or 'm' with `object_pixel_size_m`)."""
    units = meta.pop("position_units", None)
    if units is not None and units not in ("px", "m"):
        raise DataError(f"{label}: key '_metadata.position_units' is {units!r}, expected 'px' (object pixels) or 'm'")
    file_size = pixel_sizes(meta, label)
    if pixel_size is not None:
        ps = positive_pixel_size(pixel_size)
        if units == "px":
            warn_caller(
                f"{label}: --pixel-size {ps:g} m overrides _metadata.position_units = 'px' (an explicit flag beats file metadata): "
                "positions are read as metres"
            )
        elif units == "m" and file_size is not None and not np.allclose(file_size, (ps, ps), rtol=1e-6):
            warn_caller(
                f"{label}: --pixel-size {ps:g} m overrides the file's object pixel size {file_size[0]:g} x {file_size[1]:g} m "
                "(an explicit flag beats file metadata)"
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
    for arr in (pos.x, pos.x_start):
        arr /= size[0]
    for arr in (pos.y, pos.y_start):
        arr /= size[1]
    return size


def to_object_pixels(pos: Positions, meta: dict[str, Any], label: str, pixel_size: float | None, fmt: str) -> None:
    """Positions in object pixels (in place) and the pixel size used recorded in `meta`.

    ptychodus exports (`fmt` 'ptychodus-*') store positions in object pixels by construction:
    there `pixel_size` only states the object pixel size (metres), it converts nothing.
    """
    size: tuple[float, float] | None
    if fmt.startswith("ptychodus") and pixel_size is not None:
        ps = positive_pixel_size(pixel_size)
        size = (ps, ps)
    else:
        size = _metres_to_pixels(pos, meta, label, pixel_size)
    if size is not None:
        meta["object_pixel_width_m"], meta["object_pixel_height_m"] = size
        meta.pop("object_pixel_size_m", None)


def scale_to_window(pos: Positions, meta: dict[str, Any], label: str, factor: float) -> None:
    """A detector window of W of S raw pixels (`factor` = W/S): positions scale by W/S and the
    recorded object pixel size by S/W (in place)."""
    for arr in (pos.x, pos.y, pos.x_start, pos.y_start):
        arr *= factor
    px = pixel_sizes(meta, label)
    if px is not None:
        meta["object_pixel_width_m"], meta["object_pixel_height_m"] = px[0] / factor, px[1] / factor
        meta.pop("object_pixel_size_m", None)


def check_span(pos: Positions, label: str) -> None:
    """Warn when more than one position spans less than one object pixel (metres read as pixels)."""
    if pos.M > 1 and max(np.ptp(pos.x), np.ptp(pos.y)) < 1.0:
        warn_caller(
            f"{label}: the scan positions span {max(np.ptp(pos.x), np.ptp(pos.y)):.3g} object pixels (less than one); "
            "positions are in object pixels: if they are metres pass --pixel-size"
        )
