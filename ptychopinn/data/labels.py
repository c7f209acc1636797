"""Ground-truth object patches cut at scan positions (numpy only; no torch).

A patch of size N centred at `[x, y]` holds object pixel `(y − N/2 + r, x − N/2 + c)` at patch
pixel `(r, c)` (integer-centre convention: patch pixel `(N//2, N//2)` sits at `(x, y)`), sampled
bilinearly; object pixels outside the image contribute 0 and weights are not renormalised
(the `kernels.translate` convention).

Legacy note (spec §8.7): TF's `get_image_patches` centred channel c of a gridsize > 1 group at
`centre + relative = 2·centre − p_c`, i.e. the label was mirrored about the group centre. We cut
at the true positions `p_c`, which agrees with TF at gridsize 1.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["object_patches"]


def object_patches(obj: np.ndarray, positions: np.ndarray, N: int) -> np.ndarray:
    """(..., N, N) complex64 patches of `obj (H, W)` at `positions (..., 2)` `[x, y]` pixels."""
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise DataError(f"object has shape {obj.shape}, expected (H, W)")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[-1:] != (2,):
        raise DataError(f"positions have shape {pos.shape}, expected (..., 2) [x, y]")
    lead = pos.shape[:-1]
    pos = pos.reshape(-1, 2)
    H, W = obj.shape
    offs = np.arange(N, dtype=np.float64) - N // 2
    xs = pos[:, 0:1] + offs  # (P, N) sample columns
    ys = pos[:, 1:2] + offs  # (P, N) sample rows
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    wx1 = xs - x0
    wy1 = ys - y0
    out = np.zeros((pos.shape[0], N, N), dtype=np.complex128)
    for dy, wy in ((0, 1.0 - wy1), (1, wy1)):
        yi = y0 + dy
        vy = (yi >= 0) & (yi < H)
        yc = np.clip(yi, 0, H - 1)
        for dx, wx in ((0, 1.0 - wx1), (1, wx1)):
            xi = x0 + dx
            vx = (xi >= 0) & (xi < W)
            xc = np.clip(xi, 0, W - 1)
            w = (wy * vy)[:, :, None] * (wx * vx)[:, None, :]  # (P, N, N)
            if not np.any(w):
                continue
            out += w * obj[yc[:, :, None], xc[:, None, :]]
    return out.astype(np.complex64).reshape(*lead, N, N)
