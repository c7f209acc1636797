"""Patch extraction from a per-sample canvas (TF `extract_patches_position`, spec §4.3 step 5)."""
from __future__ import annotations

import torch

from .translate import _real_dtype, sample_grid

__all__ = ["extract_patches"]


def extract_patches(canvas: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
    """Cut `C` patches per sample out of `canvas (B, H, W)` (real or complex).

    `positions (B, C, 2)` = `[x, y]` pixel offsets. The result `(B, C, size, size)` equals the
    centre crop (rows/cols `[(H−size)//2, (H−size)//2 + size)`) of `translate(canvas, +positions)`,
    i.e. TF's `extract_patches_position` in channels-first layout; only the cropped window is
    sampled. Differentiable w.r.t. `canvas` and `positions`.
    """
    if canvas.dim() != 3:
        raise ValueError(f"extract_patches: canvas must be (B, H, W), got {tuple(canvas.shape)}")
    if positions.dim() != 3 or positions.shape[-1] != 2:
        raise ValueError(f"extract_patches: positions must be (B, C, 2), got {tuple(positions.shape)}")
    H, W = canvas.shape[-2], canvas.shape[-1]
    if size > H or size > W:
        raise ValueError(f"extract_patches: size {size} exceeds canvas {H}x{W}")
    rdt = _real_dtype(canvas)
    pos = positions.to(rdt)
    kh, kw = (H - size) // 2, (W - size) // 2
    cols = torch.arange(kw, kw + size, dtype=rdt, device=canvas.device)
    rows = torch.arange(kh, kh + size, dtype=rdt, device=canvas.device)
    xs = cols - pos[..., 0:1]  # (B, C, size)
    ys = rows - pos[..., 1:2]
    return sample_grid(canvas.unsqueeze(1), xs, ys)
