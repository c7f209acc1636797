"""Scan data: the NPZ/HDF5 contract, lazy loading, grouping, normalisation, torch Dataset.

Importing this package (and everything but `GroupDataset`) needs numpy, scipy and h5py only:
names resolve lazily (PEP 562), and only `ptychopinn.data.torch_dataset` imports torch, so the
torch-free ONNX runner can use `load_scan`, `group_scan` and `normalization_factor`.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Scan": "scan",
    "load_scan": "scan",
    "make_scan": "scan",
    "save_scan": "scan",
    "save_scan_h5": "scan",
    "LazyArray": "lazy",
    "Groups": "grouping",
    "group_scan": "grouping",
    "split_by_region": "grouping",
    "normalization_factor": "normalize",
    "object_patches": "labels",
    "GroupDataset": "torch_dataset",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ptychopinn.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
