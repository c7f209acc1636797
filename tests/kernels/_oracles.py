"""Slow, obvious reference implementations used by the kernel tests (python loops, float64)."""
from __future__ import annotations

import math

import numpy as np


def translate_oracle(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Pixel-by-pixel bilinear pull of one `(H, W)` image: out(r, c) = I(c − dx, r − dy), zero fill."""
    H, W = img.shape
    out = np.zeros_like(img, dtype=np.result_type(img, np.float64))
    for r in range(H):
        for c in range(W):
            x, y = c - dx, r - dy
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                    if 0 <= yy < H and 0 <= xx < W:
                        out[r, c] += wy * wx * img[yy, xx]
    return out


def stitch_oracle(patches: np.ndarray, positions: np.ndarray, H: int, W: int, weights=None):
    """Loop over patches: zero-pad each patch into a large margin canvas, translate it with the
    pixel-by-pixel oracle so that pixel (h//2, w//2) lands at positions[i], crop to (H, W), sum."""
    n, h, w = patches.shape
    my, mx = h + 2, w + 2
    num = np.zeros((H, W), dtype=np.result_type(patches, np.float64))
    den = np.zeros((H, W))
    for i in range(n):
        wi = np.ones((h, w)) if weights is None else (weights if weights.ndim == 2 else weights[i])
        big = np.zeros((H + 2 * my, W + 2 * mx), dtype=num.dtype)
        bigw = np.zeros((H + 2 * my, W + 2 * mx))
        big[my : my + h, mx : mx + w] = patches[i] * wi
        bigw[my : my + h, mx : mx + w] = wi
        dx, dy = positions[i, 0] - w // 2, positions[i, 1] - h // 2
        num += translate_oracle(big, dx, dy)[my : my + H, mx : mx + W]
        den += translate_oracle(bigw, dx, dy)[my : my + H, mx : mx + W]
    return num, den
