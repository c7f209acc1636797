"""Straightforward torch references the kernels are compared with (correct, not fast).

- `translate_grid_sample`: translation via `F.grid_sample` (bilinear, zeros, align_corners=True),
  which has the same zero-fill, integer-centre semantics as `kernels.translate`.
- `extract_full_translate`: translate the whole canvas (grid_sample), then centre-crop.
- `stitch_full_canvas`: TF's `reassemble_position`/`shift_and_sum` algorithm in torch — every crop
  zero-padded to the full canvas and translated there, in chunks of 32.
- `stitch_four_corners`: a bilinear splat written as four `index_add_` calls (one per corner).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ptychopinn.kernels import translate


def translate_grid_sample(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """`images (n, H, W)` complex64 moved by `shifts (n, 2)` `[dx, dy]` → `(n, H, W)` complex64."""
    n, H, W = images.shape
    planes = torch.view_as_real(images).permute(0, 3, 1, 2)  # (n, 2, H, W)
    xs = torch.arange(W, dtype=torch.float32, device=images.device) - shifts[:, 0:1].float()  # (n, W)
    ys = torch.arange(H, dtype=torch.float32, device=images.device) - shifts[:, 1:2].float()
    gx = (2 * xs / (W - 1) - 1)[:, None, :].expand(n, H, W)
    gy = (2 * ys / (H - 1) - 1)[:, :, None].expand(n, H, W)
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())


def extract_full_translate(canvas: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
    """`canvas (B, P, P)`, `positions (B, C, 2)` → `(B, C, size, size)`: translate the full canvas
    by +position per channel (grid_sample), then take the centre crop."""
    B, C, _ = positions.shape
    P = canvas.shape[-1]
    rep = canvas[:, None].expand(B, C, P, P).reshape(B * C, P, P)
    moved = translate_grid_sample(rep, positions.reshape(B * C, 2))
    k = (P - size) // 2
    return moved[:, k : k + size, k : k + size].reshape(B, C, size, size)


def stitch_full_canvas(patches: torch.Tensor, offsets: np.ndarray, M: int = 20, chunk: int = 32) -> torch.Tensor:
    """TF's `reassemble_position` algorithm (spec §4.6) in torch: `(n, N, N)` complex → `(S, S)`."""
    n, N, _ = patches.shape
    off = np.asarray(offsets, np.float32).reshape(n, 2)
    g = torch.from_numpy(off - off.mean(axis=0, dtype=np.float32)).to(patches.device)
    pad = int(math.ceil(float(g.abs().max())))
    pad += pad % 2
    h = M // 2
    S = M + 2 * pad
    crop = patches[:, N // 2 - h : N // 2 + h, N // 2 - h : N // 2 + h]
    num = torch.zeros(S, S, dtype=patches.dtype, device=patches.device)
    den = torch.zeros(S, S, dtype=torch.float32, device=patches.device)
    ones = F.pad(torch.ones(M, M, device=patches.device), (pad, pad, pad, pad))
    for s in range(0, n, chunk):
        part = crop[s : s + chunk]
        full = torch.complex(F.pad(part.real, (pad, pad, pad, pad)), F.pad(part.imag, (pad, pad, pad, pad)))
        num += translate(full, g[s : s + chunk]).sum(0)
        den += translate(ones, g[s : s + chunk]).sum(0)
    return num / (den + 1e-9)


def stitch_four_corners(patches: torch.Tensor, positions: torch.Tensor, canvas_shape: tuple[int, int], chunk: int = 256):
    """Bilinear splat of `patches (n, h, w)` complex64 at `positions (n, 2)` (pixel (h//2, w//2)
    lands on [x, y]) as four masked `index_add_` calls per chunk → (numerator, weight_sum)."""
    n, h, w = patches.shape
    H, W = canvas_shape
    num = torch.zeros(H * W, dtype=patches.dtype, device=patches.device)
    den = torch.zeros(H * W, dtype=torch.float32, device=patches.device)
    pos = positions.to(torch.float64)
    base = torch.floor(pos)
    frac = (pos - base).float()
    base = base.long()
    rows = torch.arange(h, device=patches.device)
    cols = torch.arange(w, device=patches.device)
    for s in range(0, n, chunk):
        p = patches[s : s + chunk]
        k = p.shape[0]
        x0 = base[s : s + chunk, 0, None] - w // 2 + cols  # (k, w)
        y0 = base[s : s + chunk, 1, None] - h // 2 + rows  # (k, h)
        fx = frac[s : s + chunk, 0].view(k, 1, 1)
        fy = frac[s : s + chunk, 1].view(k, 1, 1)
        for dy, dx, wt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
            yy = (y0 + dy)[:, :, None].expand(k, h, w)
            xx = (x0 + dx)[:, None, :].expand(k, h, w)
            valid = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            idx = (yy * W + xx)[valid]
            wts = wt.expand(k, h, w)[valid]
            num.index_add_(0, idx, (p * wt)[valid])
            den.index_add_(0, idx, wts)
    return num.view(H, W), den.view(H, W)


__all__ = ["translate_grid_sample", "extract_full_translate", "stitch_full_canvas", "stitch_four_corners"]
