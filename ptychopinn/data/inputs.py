"""Resolving what workflows are handed: a scan or its path, its label, the inference grouping.

Shared by training, reconstruction, FRC half-sets, the ONNX exporter and the CLI (numpy-free at
import; the scan readers load on first use).
"""
from __future__ import annotations

import os
from typing import Any

from ..config import DataConfig
from ..errors import ConfigError, DataError

#: seed of the grouping at inference (TF inference seeded numpy with 45)
INFERENCE_SEED = 45


def as_scan(scan_or_path: Any, load: Any = None, N: int | None = None) -> Any:
    """A `data.Scan` from a Scan or a path to an NPZ/HDF5 scan file (loaded lazily).

    load: `data.LoadOptions` for a path (units, pixel size, detector crop/bin), or None;
    N: the model's size, which `crop_detector` crops to.
    """
    from . import scan as scan_mod  # lazy: h5py / the scan readers only for a path

    if isinstance(scan_or_path, (str, os.PathLike)):
        if load is not None and N is not None:
            load = load.for_size(N)
        return scan_mod.load_scan(scan_or_path, options=load)
    if hasattr(scan_or_path, "diffraction") and hasattr(scan_or_path, "xcoords"):
        if load is not None and not load.is_default:
            raise ConfigError("load options (--diffraction-units, --pixel-size, --crop-detector, --bin) apply to scan files; pass them to data.load_scan for an in-memory Scan")
        return scan_or_path
    raise DataError(f"expected a scan file path or a ptychopinn.data.Scan, got {type(scan_or_path).__name__}")


def scan_label(scan: Any) -> str:
    """The scan's file name for messages ('<in-memory scan>' otherwise)."""
    path = getattr(scan, "path", None)
    return str(path) if path else "<in-memory scan>"


def inference_data_config(gridsize: int, extra: dict[str, Any] | None, data_config: DataConfig | None = None, *,
                          n_groups: int | None = None, seed: int | None = None) -> DataConfig:
    """The `DataConfig` to group a scan for inference with a model of `gridsize`.

    data_config: used as is when given (its gridsize must match). Otherwise the model's saved
    training `neighbor_count` (`extra["training"]["data_config"]`, default `DataConfig()`'s),
    all groups unless `n_groups`, and `seed` (default `INFERENCE_SEED`).
    """
    gridsize = int(gridsize)
    if data_config is not None:
        if data_config.gridsize != gridsize:
            raise ConfigError(f"DataConfig.gridsize={data_config.gridsize} differs from the model's gridsize={gridsize}")
        return data_config
    saved = ((extra or {}).get("training") or {}).get("data_config") or {}
    K = int(saved.get("neighbor_count", DataConfig().neighbor_count))
    return DataConfig(gridsize=gridsize, neighbor_count=K, n_groups=n_groups, seed=INFERENCE_SEED if seed is None else int(seed))


__all__ = ["as_scan", "scan_label", "inference_data_config", "INFERENCE_SEED"]
