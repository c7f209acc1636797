"""Reconstruction workflow: `reconstruct(model, scan, ...) -> Reconstruction`.

    import ptychopinn as pp
    rec = pp.reconstruct("model_dir", "test.npz", out_dir="rec")
    rec.object          # (H, W) complex64
    rec.metrics         # amplitude / phase ssim, psnr, ms_ssim, frc (when the scan has objectGuess)

Names resolve lazily, so `ptychopinn.reconstruct.geometry` (numpy only) serves the torch-free
ONNX runner. The package itself is callable (forwards to `reconstruct`), so `pp.reconstruct(...)`
works even after `import ptychopinn.reconstruct` has bound the subpackage to that name.
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports, make_callable

_LAZY: dict[str, str] = {
    "reconstruct": "core",
    "Reconstruction": "core",
    "is_legacy_bundle": "core",
    "default_crop": "geometry",
    "patch_weights": "geometry",
    "INFERENCE_SEED": "geometry",
    "TF_CROP": "geometry",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
make_callable(__name__, "reconstruct")
