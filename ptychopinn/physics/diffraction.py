"""Far-field diffraction (spec §4.3 step 7, TF `pad_and_diffract`).

    A = sqrt( fftshift( |FFT2(ψ)|² / (h·w) ) )

FFT2 is the unnormalised forward DFT over the last two axes; dividing |·|² by h·w makes the
transform unitary, so Σ A² = Σ |ψ|² (Parseval) when no padding is used. The zero frequency sits
at pixel (N/2, N/2) after the shift. If ψ is in sqrt(photon) units, so is A.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_complex(x: Tensor) -> Tensor:
    if x.is_complex():
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


def far_field_intensity(psi: Tensor, norm: float | None = None) -> Tensor:
    """fftshift(|FFT2 ψ|² / norm) over the last two axes; norm defaults to h·w of ψ.

    psi: `(..., h, w)` complex (real is promoted). Returns `(..., h, w)` real of ψ's precision
    (float32 for complex64), in photons when ψ is in sqrt(photons).
    """
    psi = _as_complex(psi)
    if norm is None:
        norm = float(psi.shape[-2] * psi.shape[-1])
    spectrum = torch.fft.fft2(psi, dim=(-2, -1))
    intensity = (spectrum.real**2 + spectrum.imag**2) / norm
    return torch.fft.fftshift(intensity, dim=(-2, -1))


def amplitude_from_intensity(intensity: Tensor) -> Tensor:
    """A = sqrt(I), `(...)` real → same: forward values are plain sqrt, the gradient is 0 (not
    infinite) where I is exactly 0."""
    positive = intensity > 0
    root = torch.sqrt(torch.where(positive, intensity, torch.ones_like(intensity)))
    return torch.where(positive, root, torch.zeros_like(intensity))


_safe_sqrt = amplitude_from_intensity


def diffract(psi: Tensor) -> Tensor:
    """Diffraction amplitude of exit waves ψ, `(..., N, N)` complex → `(..., N, N)` real.

    A = sqrt(fftshift(|FFT2 ψ|² / (N·N))), float32 for complex64 input (float64 for complex128).
    Forward values are exactly the TF formula (no epsilon). Gradient: d sqrt(I)/dI is taken as 0
    where the intensity I is exactly 0 (TF would give inf·0 = NaN there); elsewhere it is exact.
    """
    return _safe_sqrt(far_field_intensity(psi))


def pad_and_diffract(x: Tensor, h: int, w: int, pad: bool = True) -> tuple[Tensor, Tensor]:
    """TF-compatible `pad_and_diffract`: optional zero padding, then the diffraction amplitude.

    x: `(..., h, w)` complex. With `pad`, zero-pads h//4 rows and w//4 columns on each side
    (→ `(..., h + 2·(h//4), w + 2·(w//4))`). The intensity is normalised by the UNPADDED h·w, as in
    TF, so Parseval then holds only up to that factor. Returns `(padded ψ, amplitude)`.
    """
    if tuple(x.shape[-2:]) != (h, w):
        raise ValueError(f"pad_and_diffract: expected (..., {h}, {w}) input, got {tuple(x.shape)}")
    x = _as_complex(x)
    if pad:
        ph, pw = h // 4, w // 4
        lead = x.shape[:-2]
        flat = x.reshape(-1, h, w)
        # F.pad has no complex support on every backend: pad real and imaginary parts.
        flat = torch.complex(F.pad(flat.real, (pw, pw, ph, ph)), F.pad(flat.imag, (pw, pw, ph, ph)))
        x = flat.reshape(*lead, h + 2 * ph, w + 2 * pw)
    return x, _safe_sqrt(far_field_intensity(x, norm=float(h * w)))


__all__ = ["diffract", "far_field_intensity", "pad_and_diffract", "amplitude_from_intensity"]
