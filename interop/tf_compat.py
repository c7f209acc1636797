"""TF-exact wrappers and layout conversions (the only place that knows TF's NHWC / (B,1,2,C) layouts).

Functions accept numpy arrays or torch tensors and return the same kind. torch is imported inside
the functions, so importing this module is cheap.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ptychopinn.errors import DataError

__all__ = [
    "reassemble_position",
    "translate_tf",
    "nhwc_to_nchw",
    "nchw_to_nhwc",
    "tf_offsets_to_channels_first",
    "channels_first_to_tf_offsets",
]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_torch(x: Any, **kw):
    import torch

    return x.to(**kw) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x)).to(**kw)


def nhwc_to_nchw(x):
    """`(..., H, W, C)` -> `(..., C, H, W)` (numpy or torch, a view where possible)."""
    return x.movedim(-1, -3) if _is_torch(x) else np.moveaxis(x, -1, -3)


def nchw_to_nhwc(x):
    """`(..., C, H, W)` -> `(..., H, W, C)` (numpy or torch, a view where possible)."""
    return x.movedim(-3, -1) if _is_torch(x) else np.moveaxis(x, -3, -1)


def tf_offsets_to_channels_first(offsets):
    """TF channel-format offsets `(B, 1, 2, C)` -> `(B, C, 2)` `[x, y]`."""
    if offsets.ndim != 4 or offsets.shape[1] != 1 or offsets.shape[2] != 2:
        raise DataError(f"tf_offsets_to_channels_first: expected offsets (B, 1, 2, C), got {tuple(offsets.shape)}")
    x = offsets[:, 0]
    return x.transpose(-1, -2) if _is_torch(x) else np.swapaxes(x, -1, -2)


def channels_first_to_tf_offsets(offsets):
    """`(B, C, 2)` `[x, y]` -> TF channel-format offsets `(B, 1, 2, C)`."""
    if offsets.ndim != 3 or offsets.shape[2] != 2:
        raise DataError(f"channels_first_to_tf_offsets: expected offsets (B, C, 2), got {tuple(offsets.shape)}")
    x = offsets.transpose(-1, -2) if _is_torch(offsets) else np.swapaxes(offsets, -1, -2)
    return x[:, None]


def translate_tf(images, offsets):
    """TF `Translation` on NHWC: `images (B, H, W, C)`, `offsets (B_off, 2)` `[dx, dy]`.

    Image `i` uses offset row `i mod B_off` (TF's modular broadcast); every channel of an image
    gets the same shift. Returns `(B, H, W, C)`, same kind (numpy/torch) and dtype as `images`.
    """
    import torch

    from ptychopinn.kernels import translate

    if images.ndim != 4:
        raise DataError(f"translate_tf: expected images (B, H, W, C), got {tuple(images.shape)}")
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise DataError(f"translate_tf: expected offsets (B_off, 2), got {tuple(offsets.shape)}")
    as_torch = _is_torch(images)
    img = _to_torch(images)
    off = _to_torch(offsets, device=img.device)
    rows = torch.arange(img.shape[0], device=img.device) % off.shape[0]
    out = translate(img.movedim(-1, 1), off[rows][:, None, :]).movedim(1, -1)
    return out if as_torch else out.cpu().numpy()


def _flat_offsets(offsets, n: int):
    shape = tuple(offsets.shape)
    if shape not in ((n, 2), (n, 1, 1, 2), (n, 1, 2, 1)):
        raise DataError(
            f"reassemble_position: expected offsets (n, 2), (n, 1, 1, 2) or (n, 1, 2, 1) with n={n}, got {shape}"
        )
    return offsets.reshape(n, 2)


def _tf_mean_f32(values: np.ndarray) -> np.ndarray:
    """Column mean of `(n, 2)` float32 as TF computes it on CPU (spec addendum): a sequential
    float32 running sum divided by n in float32. Other summation orders differ by an ulp of
    the offsets (~1e-5 px), which changes noisy stitched images by ~3e-5 relative."""
    total = np.cumsum(values.astype(np.float32), axis=0, dtype=np.float32)[-1]
    return (total / np.float32(values.shape[0])).astype(np.float32)


def reassemble_position(patches, offsets, M: int = 20):
    """TF's global stitcher `reassemble_position` (spec §4.6) on top of `kernels.stitch`.

    `patches (n, N, N)` or `(n, N, N, 1)` complex; `offsets` `[x, y]` as `(n, 2)`, `(n, 1, 1, 2)`
    or `(n, 1, 2, 1)` (the group centres). The central `M × M` of each patch is placed at
    `g = off − mean(off)` (float32, as TF) on a canvas of `S = M + 2·pad`,
    `pad = ceil(max|g|)` rounded up to even; the result is `Σ crops / (1e-9 + Σ crop masks)`,
    complex `(S, S)` (complex64 for complex64 input), numpy in -> numpy out, torch in -> torch out.
    """
    import torch

    from ptychopinn.kernels import stitch

    if patches.ndim == 4 and patches.shape[-1] == 1:
        patches = patches[..., 0]
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise DataError(f"reassemble_position: expected patches (n, N, N) or (n, N, N, 1), got {tuple(patches.shape)}")
    n, N = patches.shape[0], patches.shape[1]
    if n == 0:
        raise DataError("reassemble_position: no patches given (n = 0)")
    half = M // 2
    if M <= 0 or N // 2 - half < 0 or N // 2 + half > N:
        raise DataError(f"reassemble_position: M={M} does not fit in patches of size N={N}")
    as_torch = _is_torch(patches)
    p = _to_torch(patches)
    if not p.is_complex():
        p = p.to(torch.complex64)
    dev = p.device
    off = _to_torch(_flat_offsets(offsets, n), dtype=torch.float32).cpu().numpy()
    g = torch.from_numpy(off - _tf_mean_f32(off)).to(dev)
    pad = int(math.ceil(float(g.abs().max())))
    pad += pad % 2
    m = 2 * half
    S = m + 2 * pad
    crop = p[:, N // 2 - half : N // 2 + half, N // 2 - half : N // 2 + half]
    positions = g.to(torch.float64) + (pad + half)
    num, den = stitch(crop, positions, (S, S))
    out = num / (den + 1e-9)
    return out if as_torch else out.cpu().numpy()
