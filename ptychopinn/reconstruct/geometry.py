"""Whole-object geometry of a reconstruction: numpy only, no torch.

Shared by `ptychopinn.reconstruct` (torch) and the torch-free ONNX runner
(`ptychopinn.interop.onnx.runner`), so both stitch the same crop, with the same weights, onto
the same canvas.
"""
from __future__ import annotations

import logging

import numpy as np

from ..data.inputs import INFERENCE_SEED  # re-exported: the runner, the CLI and tests read it here
from ..errors import ConfigError, DataError
from ..grid import centre_crop  # re-exported: the ONNX runner and live follow use geometry.centre_crop

log = logging.getLogger("ptychopinn")

#: TF's stitching crop at N = 64 (spec §4.6, `reassemble_position(M=20)`)
TF_CROP = 20
#: patch weightings of the barycentric stitcher
PATCH_WEIGHTS = ("probe", "uniform")


def default_crop(N: int) -> int:
    """Side of the central patch region stitched by default: N/2 (the measured best, docs/usage.md).

    The model's object patch is trustworthy inside the probe's bright region; on simulated
    lines-object scans (N=64, gridsize 1 and 2) the central N/2 gave the highest SSIM of
    N/4, N/2, 3N/4 and N (see docs/usage.md, "Stitching").
    """
    return N // 2


def patch_weights(probe: np.ndarray, crop: int, kind: str) -> np.ndarray | None:
    """`(crop, crop)` float32 stitching weights: |probe|² of the central crop (normalised to max 1)
    for kind "probe", or None (uniform weights) for kind "uniform"."""
    if kind == "uniform":
        return None
    if kind != "probe":
        raise ConfigError(f"weight must be one of {PATCH_WEIGHTS}, got {kind!r}")
    w = np.abs(centre_crop(np.asarray(probe), crop)).astype(np.float64) ** 2
    if not w.max() > 0:
        raise DataError("probeGuess is zero in the stitched region; use weight='uniform'")
    return (w / w.max()).astype(np.float32)


def canvas_geometry(centres: np.ndarray, crop: int, obj_shape: tuple[int, int] | None) -> tuple[tuple[int, int], np.ndarray]:
    """(canvas shape (H, W), origin [x0, y0] float64) so that every `crop × crop` patch centred at
    `centres (B, 2)` `[x, y]` lands fully on the canvas; the object's frame (origin 0) when all
    centres lie inside `obj_shape` (H, W)."""
    if obj_shape is not None:
        H, W = obj_shape
        inside = (centres[:, 0] >= 0) & (centres[:, 0] <= W - 1) & (centres[:, 1] >= 0) & (centres[:, 1] <= H - 1)
        if inside.all():
            return (int(H), int(W)), np.zeros(2)
        log.warning("scan positions leave the objectGuess frame; the canvas is sized from the positions instead")
    half = crop // 2
    lo = np.floor(centres.min(axis=0)) - half - 1
    hi = np.ceil(centres.max(axis=0)) + (crop - half) + 1
    size = (hi - lo).astype(int)
    return (int(size[1]), int(size[0])), lo


def covered_box(weight: np.ndarray, frac: float = 0.5) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) bounding box of pixels with weight ≥ frac · max (None if empty)."""
    if not weight.size or weight.max() <= 0:
        return None
    mask = weight >= frac * weight.max()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


__all__ = [
    "INFERENCE_SEED",
    "TF_CROP",
    "PATCH_WEIGHTS",
    "default_crop",
    "patch_weights",
    "centre_crop",
    "canvas_geometry",
    "covered_box",
]
