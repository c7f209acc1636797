"""Patch extraction from a per-sample canvas (TF `extract_patches_position`, spec §4.3 step 5)."""
from __future__ import annotations

import torch

from .translate import _real_dtype, interp_matrix, sample_grid, use_matrices

__all__ = ["extract_patches"]


def extract_patches(canvas: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
    """Cut `C` patches per sample out of `canvas (B, H, W)` (real or complex).

    `positions (B, C, 2)` = `[x, y]` pixel offsets. The result `(B, C, size, size)` equals the
    centre crop (rows/cols `[(H−size)//2, (H−size)//2 + size)`) of `translate(canvas, +positions)`,
    i.e. TF's `extract_patches_position` in channels-first layout; only the cropped window is
    sampled (two matmuls with `(size, H)` / `(size, W)` bilinear interpolation matrices). Differentiable w.r.t. `canvas` and `positions`.
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
    if not use_matrices(size, size, H, W):  # large canvas: gather only the needed pixels
        return sample_grid(canvas.unsqueeze(1), xs, ys)
    tx = interp_matrix(xs, W)  # (B, C, size, W)
    ty = interp_matrix(ys, H)  # (B, C, size, H)
    B, C = tx.shape[:2]
    # Columns first for all C patches at once, canvas (H, W) · [Tx_1 … Tx_C]ᵀ (W, C·size), so the
    # canvas is never broadcast per patch; then each patch's rows: Ty_c (size, H) · Z_c (H, size).
    txs = tx.reshape(B, C * size, W).transpose(-1, -2)  # (B, W, C·size)
    if canvas.is_complex():
        parts = torch.view_as_real(canvas).movedim(-1, 1)  # (B, 2, H, W)
        z = parts @ txs.unsqueeze(1)  # (B, 2, H, C·size)
        z = z.reshape(B, 2, H, C, size).permute(0, 3, 1, 2, 4)  # (B, C, 2, H, size)
        out = ty.unsqueeze(2) @ z  # (B, C, 2, size, size)
        return torch.view_as_complex(out.movedim(2, -1).contiguous())
    z = (canvas @ txs).reshape(B, H, C, size).transpose(1, 2)  # (B, C, H, size)
    return ty @ z
