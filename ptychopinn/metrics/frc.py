"""Fourier ring correlation between two 2-D images (numpy only).

FRC(k) = Re Σ_ring F1·conj(F2) / sqrt(Σ_ring |F1|² · Σ_ring |F2|²), rings of width 1/n
cycles/pixel (n = min(H, W)) from 0 to Nyquist (0.5). Same estimator as the TF evaluation's `FSC`
(spec §7); we report crossings in cycles/pixel and the corresponding resolution in pixels.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["frc", "frc_resolution", "FRCCrossing"]


def frc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ring-averaged Fourier ring correlation.

    a, b: (H, W) real or complex images of one shape.
    Returns (frequencies (n//2 + 1,) float64 in cycles/pixel, curve (n//2 + 1,) float64 in [−1, 1]);
    rings where either image has no power get 0.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"frc takes two 2-D images of one shape, got {a.shape} and {b.shape}")
    H, W = a.shape
    n = min(H, W)
    F1 = np.fft.fft2(a.astype(np.complex128))
    F2 = np.fft.fft2(b.astype(np.complex128))
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.fftfreq(W)[None, :]
    ring = np.rint(np.sqrt(fx * fx + fy * fy) * n).astype(np.int64).ravel()
    nbins = n // 2 + 1
    keep = ring < nbins
    ring = ring[keep]
    cross = np.bincount(ring, weights=np.real(F1 * np.conj(F2)).ravel()[keep], minlength=nbins)
    p1 = np.bincount(ring, weights=(np.abs(F1) ** 2).ravel()[keep], minlength=nbins)
    p2 = np.bincount(ring, weights=(np.abs(F2) ** 2).ravel()[keep], minlength=nbins)
    denom = np.sqrt(p1 * p2)
    curve = np.divide(cross, denom, out=np.zeros(nbins), where=denom > 0)
    frequencies = np.arange(nbins, dtype=np.float64) / n
    return frequencies, curve


class FRCCrossing(NamedTuple):
    """Where an FRC curve first drops below a threshold."""

    #: cycles/pixel; the last frequency (≈ Nyquist) when the curve never drops below
    frequency: float
    #: 1 / frequency, in pixels (full period)
    resolution_px: float
    #: False when the curve stayed above the threshold up to the last ring
    crossed: bool


def frc_resolution(
    curve: np.ndarray, threshold: float = 1.0 / 7.0, *, frequencies: np.ndarray | None = None
) -> FRCCrossing:
    """First crossing of `curve` below `threshold` after the DC ring, linearly interpolated.

    curve: (K,) FRC values; frequencies: (K,) cycles/pixel (default linspace(0, 0.5, K), which is
    what `frc` returns for even n).
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"curve must be 1-D with at least 2 rings, got shape {c.shape}")
    f = np.linspace(0.0, 0.5, c.size) if frequencies is None else np.asarray(frequencies, dtype=np.float64)
    if f.shape != c.shape:
        raise ValueError(f"frequencies shape {f.shape} differs from curve shape {c.shape}")
    below = np.nonzero(c[1:] < threshold)[0]
    if below.size == 0:
        freq = float(f[-1])
        return FRCCrossing(freq, 1.0 / freq, False)
    k = int(below[0]) + 1
    c0, c1 = c[k - 1], c[k]
    t = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    t = min(max(t, 0.0), 1.0)
    freq = float(f[k - 1] + t * (f[k] - f[k - 1]))
    return FRCCrossing(freq, 1.0 / freq if freq > 0 else float("inf"), True)
