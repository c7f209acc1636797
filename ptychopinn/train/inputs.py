"""Scan-level inputs shared by training and reconstruction: the scan, nphotons, the probe.

The model input is x = f · s · d (spec §2): d the stored amplitudes `(M, N, N)` sqrt(counts),
f the normalisation factor over the grouped patterns (`data.normalization_factor`) and
s = sqrt(nphotons)/(N/2) (`physics.intensity_scale`); `data.GroupDataset` applies f·s.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..config import DataConfig
from ..data.inputs import as_scan, scan_label  # as_scan re-exported: moved to data (issue 12)
from ..errors import DataError
from ..physics.probe import probe_norm

log = logging.getLogger("ptychopinn")

#: probe normalisation constant of spec §2.3 (ModelConfig default of the TF dataclass path)
DEFAULT_PROBE_SCALE = 4.0


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


def normalised_probe_modes(scan: Any, probe_scale: float = DEFAULT_PROBE_SCALE) -> np.ndarray:
    """The probe the model trains with: `normalised_probe(scan)` `(N, N)`, or, when the scan
    holds K ≥ 2 modes (`Scan.probe_modes` `(K, N, N)`), all K modes `(K, N, N)` complex64
    divided by the one factor that normalises the dominant mode (`Scan.probe`) as spec §2.3,
    so the modes keep their relative powers and a one-mode scan trains exactly as before."""
    single = normalised_probe(scan, probe_scale)
    modes = getattr(scan, "probe_modes", None)
    if modes is None:
        return single
    modes = np.asarray(modes, dtype=np.complex64)
    dominant = np.asarray(scan.probe, dtype=np.complex64)
    if modes.ndim != 3 or modes.shape[1:] != dominant.shape:
        raise DataError(f"{scan_label(scan)}: key 'probeGuess': modes must be (K, N, N) like the probe {dominant.shape}, got {modes.shape}")
    try:
        norm = probe_norm(dominant, probe_scale)
    except ValueError as exc:
        raise DataError(f"{scan_label(scan)}: key 'probeGuess': {exc}") from exc
    return (modes / np.float32(norm)).astype(np.complex64)


__all__ = [
    "as_scan",
    "normalised_probe_modes",
    "scan_label",
    "resolve_nphotons",
    "normalised_probe",
    "DEFAULT_PROBE_SCALE",
]
