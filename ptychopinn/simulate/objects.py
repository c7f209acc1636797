"""Synthetic complex objects (transmission functions) for simulation. NumPy/SciPy only.

Both kinds map a real feature map f ∈ [0, 1] to a weak-phase, partly absorbing object:
amplitude |O| ∈ [amp_min, 1] and phase ∈ [−phase_max, phase_max] radians.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr


def _check_size(size: int) -> None:
    if int(size) != size or size < 2:
        raise ValueError(f"object size must be an integer >= 2, got {size}")


def lines_object(
    size: int,
    rng: np.random.Generator,
    *,
    n_lines: int | None = None,
    blur_sigma: float = 1.0,
    amp_min: float = 0.5,
    phase_max: float = np.pi / 2,
) -> np.ndarray:
    """Random straight line segments, blurred: `(size, size)` complex64.

    n_lines segments (default size // 2) with uniform random centres, orientations, lengths in
    [size/16, size/4] and weights in [0.5, 1] are drawn as dense point samples (every 0.5 px),
    summed per pixel, blurred by a Gaussian of `blur_sigma` px, divided by its 99th percentile
    over inked pixels and clipped to [0, 1] (crossings saturate), giving f. Lines absorb and shift the phase: |O| = 1 − (1 − amp_min)·f, arg O = phase_max·f.
    """
    _check_size(size)
    n = size // 2 if n_lines is None else int(n_lines)
    if n < 1:
        raise ValueError(f"n_lines must be >= 1, got {n}")
    centres = rng.uniform(0, size, (n, 2))
    angles = rng.uniform(0, np.pi, n)
    lengths = rng.uniform(size / 16, size / 4, n)
    weights = rng.uniform(0.5, 1.0, n)
    n_samples = int(np.ceil(2 * size / 4)) + 1  # 0.5 px spacing along the longest segment
    t = np.linspace(-0.5, 0.5, n_samples)  # (S,)
    along = t[None, :] * lengths[:, None]  # (n, S)
    xs = centres[:, 0:1] + along * np.cos(angles)[:, None]
    ys = centres[:, 1:2] + along * np.sin(angles)[:, None]
    cols = np.rint(xs).astype(np.int64).ravel()
    rows = np.rint(ys).astype(np.int64).ravel()
    w = np.broadcast_to(weights[:, None] / n_samples * lengths[:, None] * 2, xs.shape).ravel()
    keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    canvas = np.bincount(rows[keep] * size + cols[keep], weights=w[keep], minlength=size * size)
    canvas = gaussian_filter(canvas.reshape(size, size), blur_sigma, mode="constant")
    inked = canvas[canvas > 0]
    ref = np.quantile(inked, 0.99) if inked.size else 1.0
    f = np.clip(canvas / ref, 0.0, 1.0)
    return _to_object(f, f, amp_min, phase_max, signed_phase=False)


def grf_object(
    size: int,
    rng: np.random.Generator,
    *,
    correlation_length: float = 8.0,
    amp_min: float = 0.5,
    phase_max: float = np.pi / 2,
) -> np.ndarray:
    """Gaussian random field object: `(size, size)` complex64.

    Two independent fields (amplitude, phase): white noise filtered by a Gaussian power spectrum
    (real-space correlation length `correlation_length` px, periodic boundaries), standardised and
    mapped through the normal CDF to uniform marginals u ∈ (0, 1).
    |O| = amp_min + (1 − amp_min)·u_a, arg O = phase_max·(2·u_p − 1).
    """
    _check_size(size)
    if not correlation_length > 0:
        raise ValueError(f"correlation_length must be > 0, got {correlation_length}")
    noise = rng.standard_normal((2, size, size))
    k = np.fft.fftfreq(size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    transfer = np.exp(-2 * (np.pi * correlation_length) ** 2 * k2)  # Gaussian kernel of σ = ℓ
    fields = np.fft.ifft2(np.fft.fft2(noise, axes=(-2, -1)) * transfer, axes=(-2, -1)).real
    fields -= fields.mean(axis=(-2, -1), keepdims=True)
    fields /= fields.std(axis=(-2, -1), keepdims=True)
    u = ndtr(fields)
    return _to_object(u[0], u[1], amp_min, phase_max, signed_phase=True)


def _to_object(fa: np.ndarray, fp: np.ndarray, amp_min: float, phase_max: float, *, signed_phase: bool) -> np.ndarray:
    if not 0 <= amp_min <= 1:
        raise ValueError(f"amp_min must be in [0, 1], got {amp_min}")
    if signed_phase:
        amplitude = amp_min + (1 - amp_min) * fa
        phase = phase_max * (2 * fp - 1)
    else:
        amplitude = 1 - (1 - amp_min) * fa
        phase = phase_max * fp
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_object(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """`lines_object` or `grf_object` by name, default parameters."""
    if kind == "lines":
        return lines_object(size, rng)
    if kind == "grf":
        return grf_object(size, rng)
    raise ValueError(f"object kind must be 'lines' or 'grf', got {kind!r}")


__all__ = ["lines_object", "grf_object", "make_object"]
