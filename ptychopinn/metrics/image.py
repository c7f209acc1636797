"""Full-reference image metrics on real 2-D images: PSNR, SSIM, MS-SSIM (numpy + scipy only).

`data_range` defaults to target.max() − target.min() everywhere. TensorFlow's evaluation used
`cv2.PSNR`, whose default peak is 255 whatever the image range (spec §7), so its PSNR values on
[0, 1] amplitudes are ~48 dB higher than ours and not comparable.

`ssim` reproduces `skimage.metrics.structural_similarity` for 2-D images (same defaults: 7×7
uniform window, sample covariance, K1 = 0.01, K2 = 0.03; or `gaussian_weights=True`: σ = 1.5,
truncate 3.5 → 11×11), computed in float64; skimage is not a dependency.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["MS_SSIM_WEIGHTS", "default_data_range", "psnr", "ssim", "ms_ssim"]

#: per-level exponents of MS-SSIM (Wang et al. 2003), as in the TF evaluation (spec §7)
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _real_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    t = np.asarray(target)
    if np.iscomplexobj(p) or np.iscomplexobj(t):
        raise ValueError("image metrics take real images; pass np.abs(...) or np.angle(...) of complex data")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    return p.astype(np.float64, copy=False), t.astype(np.float64, copy=False)


def default_data_range(target: np.ndarray) -> float:
    """target.max() − target.min(); raises when it is 0 (pass data_range explicitly then)."""
    t = np.asarray(target, dtype=np.float64)
    r = float(t.max() - t.min())
    if not r > 0:
        raise ValueError("target is constant, so its data range is 0: pass data_range explicitly")
    return r


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(data_range² / MSE); +inf for identical images.

    pred, target: real arrays of one shape. data_range: peak-to-peak of the signal
    (default target.max() − target.min()).
    """
    p, t = _real_pair(pred, target)
    R = default_data_range(t) if data_range is None else float(data_range)
    mse = float(np.mean((p - t) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * np.log10(R * R / mse))


def _window(gaussian_weights: bool, win_size: int | None, sigma: float):
    """(filter function on a 2-D float64 array, window size used for cropping)."""
    if gaussian_weights:
        truncate = 3.5
        if win_size is None:
            win_size = 2 * int(truncate * sigma + 0.5) + 1

        def filt(a: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect")

    else:
        if win_size is None:
            win_size = 7
        size = win_size

        def filt(a: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(a, size=size, mode="reflect")

    if win_size % 2 != 1 or win_size < 3:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size}")
    return filt, win_size


def ssim_map(
    pred: np.ndarray,
    target: np.ndarray,
    data_range: float | None = None,
    *,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,
    K2: float = 0.03,
) -> np.ndarray:
    """Local SSIM map (H, W) float64, borders of (win_size−1)/2 px already cropped."""
    p, t = _real_pair(pred, target)
    if p.ndim != 2:
        raise ValueError(f"ssim takes 2-D images, got shape {p.shape}")
    filt, win = _window(gaussian_weights, win_size, sigma)
    if min(p.shape) < win:
        raise ValueError(f"image {p.shape} is smaller than the {win}x{win} SSIM window")
    R = default_data_range(t) if data_range is None else float(data_range)
    n = win * win
    cov_norm = n / (n - 1) if use_sample_covariance else 1.0
    ux, uy = filt(p), filt(t)
    vx = cov_norm * (filt(p * p) - ux * ux)
    vy = cov_norm * (filt(t * t) - uy * uy)
    vxy = cov_norm * (filt(p * t) - ux * uy)
    C1 = (K1 * R) ** 2
    C2 = (K2 * R) ** 2
    S = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
    pad = (win - 1) // 2
    return S[pad : S.shape[0] - pad, pad : S.shape[1] - pad]


def ssim(
    pred: np.ndarray,
    target: np.ndarray,
    data_range: float | None = None,
    *,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,
    K2: float = 0.03,
) -> float:
    """Mean structural similarity of two real (H, W) images (1 for identical images).

    Matches skimage.metrics.structural_similarity with the same arguments
    (data_range default: target.max() − target.min(), where skimage requires it for floats).
    """
    return float(
        ssim_map(
            pred,
            target,
            data_range,
            win_size=win_size,
            gaussian_weights=gaussian_weights,
            sigma=sigma,
            use_sample_covariance=use_sample_covariance,
            K1=K1,
            K2=K2,
        ).mean()
    )


def ms_ssim(
    pred: np.ndarray,
    target: np.ndarray,
    data_range: float | None = None,
    *,
    levels: int | None = None,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    win_size: int | None = None,
    gaussian_weights: bool = False,
) -> float:
    """Multi-scale SSIM of two real (H, W) images: Π_l max(SSIM_l, 0)^w_l.

    Level l is the image subsampled by [::2, ::2] l times (no low-pass), as in the TF evaluation;
    each level uses the full SSIM with the full-resolution data_range. `levels=None` uses as many
    of `len(weights)` levels as fit the SSIM window and renormalises the used weights to sum 1
    (TF raised on images too small for 5 levels). Negative SSIM values are clipped to 0 (TF gave
    NaN). TF also smoothed amplitudes with a σ = 1 Gaussian first; we do not.
    """
    p, t = _real_pair(pred, target)
    if p.ndim != 2:
        raise ValueError(f"ms_ssim takes 2-D images, got shape {p.shape}")
    w = np.asarray(weights, dtype=np.float64)
    _, win = _window(gaussian_weights, win_size, 1.5)
    fit = 0
    h, wd = p.shape
    while fit < len(w) and min(h, wd) >= win:
        fit += 1
        h, wd = (h + 1) // 2, (wd + 1) // 2
    if levels is None:
        levels = fit
    if levels < 1 or levels > len(w):
        raise ValueError(f"levels must be in 1..{len(w)}, got {levels}")
    if levels > fit:
        raise ValueError(f"image {p.shape} is too small for {levels} MS-SSIM levels with a {win}x{win} window")
    R = default_data_range(t) if data_range is None else float(data_range)
    w = w[:levels] / w[:levels].sum()
    values = []
    for _ in range(levels):
        values.append(ssim(p, t, R, win_size=win, gaussian_weights=gaussian_weights))
        p, t = p[::2, ::2], t[::2, ::2]
    vals = np.clip(np.asarray(values), 0.0, None)
    return float(np.prod(vals**w))
