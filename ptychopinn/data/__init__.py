"""Scan data: the NPZ/HDF5 contract, lazy loading, grouping, normalisation, torch Dataset.

Importing this package (and everything but `GroupDataset`) needs numpy, scipy and h5py only:
names resolve lazily (PEP 562), and only `ptychopinn.data.torch_dataset` imports torch, so the
torch-free ONNX runner can use `load_scan`, `group_scan` and `normalization_factor`.
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

_LAZY = {
    "Scan": "scan",
    "LoadOptions": "options",
    "load_options_from_flags": "options",
    "load_scan": "scan",
    "make_scan": "scan",
    "save_scan": "writers",
    "save_scan_h5": "writers",
    "LazyArray": "lazy",
    "Groups": "grouping",
    "group_scan": "grouping",
    "split_by_region": "grouping",
    "normalization_factor": "normalize",
    "BadPixelFill": "badpixels",
    "fill_bad_pixels": "badpixels",
    "DetectorTransform": "detector",
    "object_patches": "labels",
    "GroupDataset": "torch_dataset",
    "as_scan": "inputs",
    "scan_label": "inputs",
    "inference_data_config": "inputs",
    "INFERENCE_SEED": "inputs",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
