"""Reconstruction workflow: `reconstruct(model, scan, ...) -> Reconstruction`.

    import ptychopinn as pp
    rec = pp.reconstruct("model_dir", "test.npz", out_dir="rec")
    rec.object          # (H, W) complex64
    rec.metrics         # amplitude / phase ssim, psnr, ms_ssim, frc (when the scan has objectGuess)

The package module itself is callable (forwards to `reconstruct`), so `pp.reconstruct(...)` works
even after `import ptychopinn.reconstruct` has bound the submodule to that name.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from .core import INFERENCE_SEED, TF_CROP, Reconstruction, default_crop, is_legacy_bundle, reconstruct


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Reconstruction:
        return reconstruct(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["reconstruct", "Reconstruction", "default_crop", "is_legacy_bundle", "INFERENCE_SEED", "TF_CROP"]
