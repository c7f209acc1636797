"""How a scan file is read: `LoadOptions` (the load flags of `train`, `reconstruct` and
`ptychopinn-onnx`) and `load_options_from_flags` (their parsing, one-line `ConfigError`s)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigError
from .detector import UNITS

__all__ = ["LoadOptions", "load_options_from_flags"]


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
