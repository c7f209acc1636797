"""Whole-object geometry of a reconstruction, numpy only (no torch).

These functions mirror private helpers of `ptychopinn.reconstruct.core`, which imports torch at
module level and so cannot be used by the torch-free runner. Each one is a line-for-line mirror,
to be unified into a torch-free `ptychopinn/reconstruct/geometry.py` imported by both.
`tests/interop/test_onnx_runner.py` checks them against the core functions.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("ptychopinn")


def canvas_geometry(centres: np.ndarray, crop: int, obj_shape: tuple[int, int] | None) -> tuple[tuple[int, int], np.ndarray]:
    """(canvas shape (H, W), origin [x0, y0] float64) so that every `crop × crop` patch centred at
    `centres (B, 2)` `[x, y]` lands fully on the canvas; the object's frame (origin 0) when all
    centres lie inside `obj_shape` (H, W).

    mirror of reconstruct.core._canvas_geometry — to be unified.
    """
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
    """(row0, row1, col0, col1) bounding box of pixels with weight ≥ frac · max (None if empty).

    mirror of reconstruct.core._covered_box — to be unified.
    """
    if not weight.size or weight.max() <= 0:
        return None
    mask = weight >= frac * weight.max()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def centre_crop(patches: np.ndarray, crop: int) -> np.ndarray:
    """Central `(…, crop, crop)` window of `(…, N, N)`, starting at N//2 − crop//2.

    mirror of reconstruct.core._centre_crop — to be unified.
    """
    N = patches.shape[-1]
    a = N // 2 - crop // 2
    return patches[..., a : a + crop, a : a + crop]


__all__ = ["canvas_geometry", "covered_box", "centre_crop"]
