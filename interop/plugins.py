"""What `ptychopinn.interop` plugs into the core, declared as entry points in pyproject.toml.

- `ptychopinn.model_loaders` → `TF_BUNDLE_LOADER`: legacy TensorFlow `wts.h5.zip` bundles for
  `ptychopinn.io.load_any_model` (and so `ptychopinn.reconstruct("wts.h5.zip", scan)`).
- `ptychopinn.stitchers` → `tf_compat.reassemble_position`: `reconstruct(stitch="tf")`.

The core looks these up by name (`ptychopinn.io.plugins.Registry`); it never imports interop.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ptychopinn.io.loaders import ModelLoader, register_model_loader


def is_legacy_bundle(path: str | Path) -> bool:
    """True for a TensorFlow `wts.h5.zip`: a zip holding `manifest.dill` (at its root or one level down)."""
    path = Path(path)
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n == "manifest.dill" or n.endswith("/manifest.dill") and n.count("/") == 1 for n in zf.namelist())


def load_legacy_bundle(path: Path, device: Any) -> tuple[Any, dict[str, Any]]:
    """(legacy model on `device`, {"legacy_bundle": path}) from a `wts.h5.zip`."""
    from .bundle_model import load_tf_bundle  # lazy: torch and the model only when a bundle is loaded

    bundle = load_tf_bundle(path)
    return bundle.model.to(device), {"legacy_bundle": str(path)}


TF_BUNDLE_LOADER = ModelLoader("tf_bundle", is_legacy_bundle, load_legacy_bundle, "a legacy TensorFlow wts.h5.zip (manifest.dill inside)")


def register() -> None:
    """Register interop's plugins in code (idempotent): for callers that cannot rely on entry
    points (a source tree on `sys.path` without `pip install`). The CLI calls it."""
    from ptychopinn.reconstruct.stitchers import register_stitcher

    from .tf_compat import reassemble_position

    lo = TF_BUNDLE_LOADER
    # replace=True: interop owns these names (a re-imported interop must not clash with itself)
    register_model_loader(lo.name, lo.is_path, lo.load, describe=lo.describe, replace=True)
    register_stitcher("tf", reassemble_position, replace=True)


__all__ = ["TF_BUNDLE_LOADER", "is_legacy_bundle", "load_legacy_bundle", "register"]
