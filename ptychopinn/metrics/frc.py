"""Fourier ring correlation between two 2-D images (numpy only).

FRC(k) = Re Σ_ring F1·conj(F2) / sqrt(Σ_ring |F1|² · Σ_ring |F2|²), rings of width 1/n
cycles/pixel (n = min(H, W)) from 0 to Nyquist (0.5). Same estimator as the TF evaluation's `FSC`
(spec §7); we report crossings in cycles/pixel and the corresponding resolution in pixels.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["frc", "frc_resolution", "FRCCrossing", "ring_counts", "half_bit_threshold", "ONE_SEVENTH"]

#: the fixed 1/7 FRC threshold (Rosenthal & Henderson 2003)
ONE_SEVENTH = 1.0 / 7.0


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


def ring_counts(shape: tuple[int, int]) -> np.ndarray:
    """(n//2 + 1,) int64: pixels in each ring of `frc` for images of `shape` (H, W), n = min(H, W)."""
    H, W = (int(v) for v in shape)
    n = min(H, W)
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.fftfreq(W)[None, :]
    ring = np.rint(np.sqrt(fx * fx + fy * fy) * n).astype(np.int64).ravel()
    nbins = n // 2 + 1
    return np.bincount(ring[ring < nbins], minlength=nbins).astype(np.int64)


def half_bit_threshold(counts: np.ndarray) -> np.ndarray:
    """½-bit threshold curve of van Heel & Schatz (2005) for rings of `counts` pixels:
    T(k) = (0.2071 + 1.9102/√n_k) / (1.2071 + 0.9102/√n_k); → 0.1716 for large rings."""
    root = np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 1.0))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


class FRCCrossing(NamedTuple):
    """Where an FRC curve first drops below a threshold."""

    #: cycles/pixel; the last frequency (≈ Nyquist) when the curve never drops below
    frequency: float
    #: 1 / frequency, in pixels (full period)
    resolution_px: float
    #: False when the curve stayed above the threshold up to the last ring
    crossed: bool


def frc_resolution(
    curve: np.ndarray, threshold: float | np.ndarray = 1.0 / 7.0, *, frequencies: np.ndarray | None = None
) -> FRCCrossing:
    """First crossing of `curve` below `threshold` after the DC ring, linearly interpolated.

    curve: (K,) FRC values; threshold: a number or a (K,) threshold curve (e.g.
    `half_bit_threshold`); frequencies: (K,) cycles/pixel (default linspace(0, 0.5, K), which is
    what `frc` returns for even n).
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"curve must be 1-D with at least 2 rings, got shape {c.shape}")
    f = np.linspace(0.0, 0.5, c.size) if frequencies is None else np.asarray(frequencies, dtype=np.float64)
    if f.shape != c.shape:
        raise ValueError(f"frequencies shape {f.shape} differs from curve shape {c.shape}")
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), c.shape)
    d = c - thr  # the crossing of curve and threshold is the zero crossing of d
    below = np.nonzero(d[1:] < 0)[0]
    if below.size == 0:
        freq = float(f[-1])
        return FRCCrossing(freq, 1.0 / freq, False)
    k = int(below[0]) + 1
    c0, c1 = d[k - 1], d[k]
    t = c0 / (c0 - c1) if c0 != c1 else 0.0
    t = min(max(t, 0.0), 1.0)
    freq = float(f[k - 1] + t * (f[k] - f[k - 1]))
    return FRCCrossing(freq, 1.0 / freq if freq > 0 else float("inf"), True)
