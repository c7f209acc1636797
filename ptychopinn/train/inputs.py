"""Scan-level inputs shared by training and reconstruction: the scan, nphotons, the probe.

The model input is x = f · s · d (spec §2): d the stored amplitudes `(M, N, N)` sqrt(counts),
f the normalisation factor over the grouped patterns (`data.normalization_factor`) and
s = sqrt(nphotons)/(N/2) (`physics.intensity_scale`); `data.GroupDataset` applies f·s.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError

log = logging.getLogger("ptychopinn")

#: probe normalisation constant of spec §2.3 (ModelConfig default of the TF dataclass path)
DEFAULT_PROBE_SCALE = 4.0


def as_scan(scan_or_path: Any, load: Any = None, N: int | None = None) -> Any:
    """A `data.Scan` from a Scan or a path to an NPZ/HDF5 scan file (loaded lazily).

    load: `data.LoadOptions` for a path (units, pixel size, detector crop/bin), or None;
    N: the model's size, which `crop_detector` crops to.
    """
    from .. import data

    if isinstance(scan_or_path, (str, os.PathLike)):
        if load is not None and N is not None:
            load = load.for_size(N)
        return data.load_scan(scan_or_path, options=load)
    if hasattr(scan_or_path, "diffraction") and hasattr(scan_or_path, "xcoords"):
        if load is not None and not load.is_default:
            from ..errors import ConfigError

            raise ConfigError("load options (--diffraction-units, --pixel-size, --crop-detector, --bin) apply to scan files; pass them to data.load_scan for an in-memory Scan")
        return scan_or_path
    raise DataError(f"expected a scan file path or a ptychopinn.data.Scan, got {type(scan_or_path).__name__}")


def scan_label(scan: Any) -> str:
    """The scan's file name for messages ('<in-memory scan>' otherwise)."""
    path = getattr(scan, "path", None)
    return str(path) if path else "<in-memory scan>"


def resolve_nphotons(scan: Any, data_config: DataConfig) -> float:
    """nphotons of DataConfig, overridden (with a log line) by the scan's `_metadata` nphotons."""
    meta = getattr(scan, "metadata", None) or {}
    value = meta.get("nphotons") if isinstance(meta, dict) else None
    if value is None:
        return float(data_config.nphotons)
    try:
        nphotons = float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{scan_label(scan)}: key '_metadata.nphotons' must be a number, got {value!r}") from exc
    if not (nphotons > 0 and math.isfinite(nphotons)):
        raise DataError(f"{scan_label(scan)}: key '_metadata.nphotons' must be > 0, got {value!r}")
    if nphotons != float(data_config.nphotons):
        log.info(
            "nphotons: using %.6g from the scan metadata of %s (DataConfig.nphotons=%.6g)",
            nphotons,
            scan_label(scan),
            data_config.nphotons,
        )
    return nphotons


def normalised_probe(scan: Any, probe_scale: float = DEFAULT_PROBE_SCALE) -> np.ndarray:
    """The scan's probeGuess normalised as spec §2.3, `(N, N)` complex64."""
    from ..physics.probe import normalize_probe

    try:
        return normalize_probe(np.asarray(scan.probe, dtype=np.complex64), probe_scale)
    except ValueError as exc:
        raise DataError(f"{scan_label(scan)}: key 'probeGuess': {exc}") from exc


__all__ = [
    "as_scan",
    "scan_label",
    "resolve_nphotons",
    "normalised_probe",
    "DEFAULT_PROBE_SCALE",
]
