"""Remove the ambiguities of a ptychographic reconstruction before comparing it with the truth.

A reconstruction is only defined up to a global complex factor (amplitude scale and phase
offset) and, when the probe is refined, a linear phase ramp. `fit_alignment` estimates those
from the (trimmed) pair and `align` applies them to the reconstruction.

Differences from TensorFlow `eval_reconstruction` (spec §7):
- TF scaled the amplitude by mean(target)/mean(pred); we use the least-squares amplitude scale
  Σ|r||t| / Σ|r|².
- TF fitted and subtracted a plane from the predicted and the true phase *separately*, on wrapped
  phases. We estimate one global offset (the phase of Σ conj(r)·t, i.e. the phase of the complex
  least-squares α) and, optionally, one *relative* ramp, from the complex product t·conj(r), so
  phase wrapping never corrupts the fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Alignment", "trim_border", "fit_alignment", "apply_alignment", "align", "wrap_phase"]


@dataclass(frozen=True)
class Alignment:
    """Global factors mapping a reconstruction r onto the truth t.

    aligned = scale · exp(i·(phase_offset + 2π·(ramp_x·x + ramp_y·y))) · r, with x, y the
    column/row pixel coordinates measured from the image centre ((W−1)/2, (H−1)/2).
    `ramp_x`, `ramp_y` are in cycles/pixel (0 when no ramp was fitted); `phase_offset` in radians.
    """

    scale: float
    phase_offset: float
    ramp_x: float = 0.0
    ramp_y: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "scale": float(self.scale),
            "phase_offset": float(self.phase_offset),
            "ramp_x": float(self.ramp_x),
            "ramp_y": float(self.ramp_y),
        }


def wrap_phase(phi: np.ndarray) -> np.ndarray:
    """Wrap angles (radians) into (−π, π]."""
    phi = np.asarray(phi, dtype=np.float64)
    wrapped = np.mod(phi + np.pi, 2 * np.pi) - np.pi  # [−π, π)
    return np.where(wrapped == -np.pi, np.pi, wrapped)


def trim_border(image: np.ndarray, trim: int) -> np.ndarray:
    """Drop `trim` pixels from each border of the last two axes: (..., H, W) → (..., H−2t, W−2t)."""
    trim = int(trim)
    if trim < 0:
        raise ValueError(f"trim must be >= 0, got {trim}")
    if trim == 0:
        return image
    H, W = image.shape[-2:]
    if 2 * trim >= min(H, W):
        raise ValueError(f"trim={trim} leaves nothing of a {H}x{W} image")
    return image[..., trim : H - trim, trim : W - trim]


def _centred_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    H, W = shape
    y = np.arange(H, dtype=np.float64) - (H - 1) / 2.0
    x = np.arange(W, dtype=np.float64) - (W - 1) / 2.0
    return x[None, :], y[:, None]


def _check_pair(reconstruction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reconstruction)
    t = np.asarray(truth)
    if r.ndim != 2 or r.shape != t.shape:
        raise ValueError(
            f"reconstruction and truth must be 2-D arrays of the same shape, got {r.shape} and {t.shape}"
        )
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(t))):
        raise ValueError("reconstruction and truth must be finite (found NaN or inf)")
    return r.astype(np.complex128), t.astype(np.complex128)


def _fit_ramp(product: np.ndarray, upsample: int = 4) -> tuple[float, float]:
    """Linear phase ramp (cycles/pixel) of `product` (H, W) complex: coarse FFT peak + LS refinement."""
    H, W = product.shape
    spectrum = np.abs(np.fft.fft2(product, s=(upsample * H, upsample * W)))
    ky, kx = np.unravel_index(int(np.argmax(spectrum)), spectrum.shape)
    fy = np.fft.fftfreq(upsample * H)[ky]
    fx = np.fft.fftfreq(upsample * W)[kx]
    x, y = _centred_grid((H, W))
    residual = product * np.exp(-2j * np.pi * (fx * x + fy * y))
    # after the coarse step the residual ramp is < 1/(2·upsample) cycles across the image: no wraps
    residual = residual * np.exp(-1j * np.angle(residual.sum()))
    phi = np.angle(residual).ravel()
    w = np.abs(product).ravel()
    A = np.stack([np.broadcast_to(x, (H, W)).ravel(), np.broadcast_to(y, (H, W)).ravel(), np.ones(H * W)], axis=1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(A * sw[:, None], phi * sw, rcond=None)
    return float(fx + coef[0] / (2 * np.pi)), float(fy + coef[1] / (2 * np.pi))


def fit_alignment(
    reconstruction: np.ndarray, truth: np.ndarray, *, phase_ramp: bool = False
) -> Alignment:
    """Estimate scale, phase offset (and optionally a phase ramp) mapping `reconstruction` onto `truth`.

    reconstruction, truth: (H, W) complex (real arrays are treated as complex with zero phase).
    scale = Σ|r||t| / Σ|r|² (least-squares amplitude fit); phase_offset = arg Σ conj(r)·t
    (the phase of the complex least-squares α minimising ‖α·r − t‖), after the ramp when fitted.
    """
    r, t = _check_pair(reconstruction, truth)
    ar, at = np.abs(r), np.abs(t)
    denom = float(np.sum(ar * ar))
    scale = float(np.sum(ar * at) / denom) if denom > 0 else 1.0
    product = t * np.conj(r)
    ramp_x = ramp_y = 0.0
    if phase_ramp:
        ramp_x, ramp_y = _fit_ramp(product)
        x, y = _centred_grid(r.shape)
        product = product * np.exp(-2j * np.pi * (ramp_x * x + ramp_y * y))
    total = product.sum()
    offset = float(np.angle(total)) if abs(total) > 0 else 0.0
    return Alignment(scale=scale, phase_offset=offset, ramp_x=ramp_x, ramp_y=ramp_y)


def apply_alignment(reconstruction: np.ndarray, alignment: Alignment) -> np.ndarray:
    """α·r for an (H, W) reconstruction; returns complex128 (H, W)."""
    r = np.asarray(reconstruction, dtype=np.complex128)
    phase: float | np.ndarray = alignment.phase_offset
    if alignment.ramp_x or alignment.ramp_y:
        x, y = _centred_grid(r.shape)
        phase = phase + 2 * np.pi * (alignment.ramp_x * x + alignment.ramp_y * y)
    return alignment.scale * np.exp(1j * phase) * r


def align(
    reconstruction: np.ndarray,
    truth: np.ndarray,
    *,
    trim: int = 0,
    phase_ramp: bool = False,
) -> np.ndarray:
    """Trim `trim` px per border, then remove global scale/phase (and ramp) from the reconstruction.

    reconstruction, truth: (H, W) complex. Returns the aligned reconstruction (H−2·trim, W−2·trim)
    complex128; compare it with `trim_border(truth, trim)`.
    """
    r = trim_border(np.asarray(reconstruction), trim)
    t = trim_border(np.asarray(truth), trim)
    return apply_alignment(r, fit_alignment(r, t, phase_ramp=phase_ramp))
