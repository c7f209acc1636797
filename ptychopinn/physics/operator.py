"""The ptychographic forward operator: object canvas → far-field intensities, mixed-state probe.

For a canvas O `(B, P, P)`, scan offsets `(B, C, 2)` and K incoherent probe modes P_k:

    patches  O_c   = extract(O, offset_c)                              (B, C, N, N)   linear
    exit waves ψ_kc = M ⊙ G_σ * (P_k ⊙ O_c)                           (B, C, K, N, N) linear
    intensity  I_c  = Σ_k fftshift(|FFT2 ψ_kc|² / N²)                  (B, C, N, N)   photons

G_σ is the optional 3×3 Gaussian smoothing and M the optional probe support of the model
(`illumination.illuminate`); the FFT normalisation and centring are `diffraction.far_field_
intensity`'s. The modes add incoherently (intensities, not fields, are summed), so K = 1 is
exactly today's single-probe model: `diffract(illuminate(O_c, P))² `. By Parseval,
Σ_pixels I_c = Σ_k Σ_pixels |ψ_kc|².

`PtychographyOperator` is the `nn.Module` (deepinv style: the probe is a buffer, or a Parameter
when trainable; `forward` is the measurement operator; the linear exit-wave part has an
`adjoint`); the functions below are its functional forms. The model, the simulator and
refinement all go through them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..kernels import extract_patches
from .diffraction import amplitude_from_intensity, far_field_intensity
from .illumination import gaussian_smooth3_adjoint, illuminate


def probe_modes(probe: Tensor) -> Tensor:
    """The probe as modes `(K, N, N)`: an `(N, N)` probe becomes `(1, N, N)` (a view)."""
    if probe.ndim == 2:
        return probe.unsqueeze(0)
    if probe.ndim != 3 or probe.shape[-1] != probe.shape[-2]:
        raise ValueError(f"probe must be (N, N) or (K, N, N), got shape {tuple(probe.shape)}")
    return probe


def mixed_state_exit_waves(
    patches: Tensor, probe: Tensor, *, mask: Tensor | None = None, smoothing_sigma: float = 0.0
) -> Tensor:
    """Exit waves of every mode, ψ_k = M ⊙ G_σ * (P_k ⊙ O): `(..., N, N)` → `(..., K, N, N)`.

    patches: `(..., N, N)` complex object patches; probe: `(N, N)` or `(K, N, N)` complex;
    mask: `(N, N)` real support or None. Linear in `patches`; the dtype of `patches`.
    """
    return illuminate(patches.unsqueeze(-3), probe_modes(probe), mask=mask, smoothing_sigma=smoothing_sigma)


def mixed_state_exit_waves_adjoint(
    waves: Tensor, probe: Tensor, *, mask: Tensor | None = None, smoothing_sigma: float = 0.0
) -> Tensor:
    """Adjoint of `mixed_state_exit_waves`: Σ_k conj(P_k) ⊙ G_σᵀ * (M ⊙ y_k), `(..., K, N, N)` →
    `(..., N, N)`, so that ⟨ψ(O), y⟩ = ⟨O, ψᴴ(y)⟩ with ⟨a, b⟩ = Σ conj(a)·b."""
    modes = probe_modes(probe)
    if waves.ndim < 3 or tuple(waves.shape[-3:]) != tuple(modes.shape):
        raise ValueError(f"exit-wave adjoint: waves must be (..., {', '.join(map(str, modes.shape))}), got {tuple(waves.shape)}")
    y = waves
    if mask is not None:
        y = y * mask.to(device=y.device, dtype=y.real.dtype)
    y = gaussian_smooth3_adjoint(y, smoothing_sigma)
    return (modes.to(y.dtype).conj() * y).sum(dim=-3)


def intensity_from_exit_waves(waves: Tensor) -> Tensor:
    """Σ_k fftshift(|FFT2 ψ_k|² / N²): `(..., K, N, N)` complex → `(..., N, N)` real, photons."""
    return far_field_intensity(waves).sum(dim=-3)


def mixed_state_intensity(
    patches: Tensor, probe: Tensor, *, mask: Tensor | None = None, smoothing_sigma: float = 0.0
) -> Tensor:
    """Far-field intensity Σ_k |F(P_k ⊙ O)|² of object patches, `(..., N, N)` complex →
    `(..., N, N)` real (photons when the probe is in sqrt(photons)); K = 1 is `diffract(illuminate(O, P))²`."""
    return intensity_from_exit_waves(
        mixed_state_exit_waves(patches, probe, mask=mask, smoothing_sigma=smoothing_sigma)
    )


def ptychography_intensity(
    canvas: Tensor,
    offsets: Tensor,
    probe: Tensor,
    *,
    mask: Tensor | None = None,
    smoothing_sigma: float = 0.0,
) -> Tensor:
    """extract → illuminate → diffract: canvas `(B, P, P)` complex, offsets `(B, C, 2)` [x, y] px →
    `(B, C, N, N)` intensity. Patches are cut with `kernels.extract_patches` (bilinear; an exact
    crop at integer offsets), N is the probe's."""
    patches = extract_patches(canvas, offsets, int(probe.shape[-1]))
    return mixed_state_intensity(patches, probe, mask=mask, smoothing_sigma=smoothing_sigma)


def _as_tensor(value: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().clone().to(dtype)
    return torch.as_tensor(np.asarray(value)).to(dtype)


class PtychographyOperator(nn.Module):
    """The measurement operator A: (canvas, offsets) ↦ Σ_k |F(P_k ⊙ extract(canvas, offsets))|².

    probe: `(N, N)` or `(K, N, N)` complex (numpy or torch), stored as the complex64 buffer
    `probe` of shape `(K, N, N)` (a Parameter when `trainable`), or None when every call passes
    `probe=` (the model does so: it owns its probe, see `PtychoPINN`). mask: `(N, N)` real
    support applied to the exit waves (the model's `probe_mask` option), a non-persistent
    float32 buffer (derived, never stored), or None. smoothing_sigma: the 3×3 Gaussian of
    `illuminate` (0 = off).

    Every method takes an optional `probe=` that overrides the stored one for that call
    (`(N, N)` or `(K, N, N)`), in the deepinv manner of passing physics parameters to `A`.
    """

    def __init__(
        self,
        probe: Any = None,
        *,
        mask: Any = None,
        smoothing_sigma: float = 0.0,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        self.probe: Tensor | None
        if probe is None:
            self.register_buffer("probe", None)
        else:
            p = _as_tensor(probe, torch.complex64)
            try:
                p = probe_modes(p).contiguous()
            except ValueError as exc:
                raise ValueError(f"PtychographyOperator: {exc}") from None
            if trainable:
                self.probe = nn.Parameter(p)
            else:
                self.register_buffer("probe", p)
        m = None if mask is None else _as_tensor(mask, torch.float32)
        if m is not None and (m.ndim != 2 or (probe is not None and tuple(m.shape) != tuple(self.probe.shape[-2:]))):
            raise ValueError(f"PtychographyOperator: mask must be (N, N) like the probe, got {tuple(m.shape)}")
        self.mask: torch.Tensor | None
        self.register_buffer("mask", m, persistent=False)
        if not math.isfinite(smoothing_sigma):
            raise ValueError(f"PtychographyOperator: smoothing_sigma must be finite, got {smoothing_sigma}")
        self.smoothing_sigma = float(smoothing_sigma)

    # -- the probe -------------------------------------------------------------------------
    def modes(self, probe: Tensor | None = None) -> Tensor:
        """The probe modes in use, `(K, N, N)` complex: `probe` when given, else the buffer."""
        p = self.probe if probe is None else probe
        if p is None:
            raise ValueError("PtychographyOperator: no probe; pass probe= or build the operator with one")
        return probe_modes(p)

    @property
    def n_modes(self) -> int:
        """K, the number of stored probe modes (0 when the operator holds no probe)."""
        return 0 if self.probe is None else int(self.probe.shape[0])

    # -- linear part -----------------------------------------------------------------------
    def extract(self, canvas: Tensor, offsets: Tensor, probe: Tensor | None = None) -> Tensor:
        """Object patches `(B, C, N, N)` of canvas `(B, P, P)` at offsets `(B, C, 2)` [x, y] px."""
        return extract_patches(canvas, offsets, int(self.modes(probe).shape[-1]))

    def exit_waves(self, patches: Tensor, probe: Tensor | None = None) -> Tensor:
        """ψ_k = M ⊙ G_σ * (P_k ⊙ O): patches `(..., N, N)` complex → `(..., K, N, N)` (linear)."""
        return mixed_state_exit_waves(patches, self.modes(probe), mask=self.mask, smoothing_sigma=self.smoothing_sigma)

    def adjoint(self, waves: Tensor, probe: Tensor | None = None) -> Tensor:
        """Adjoint of `exit_waves`: `(..., K, N, N)` → `(..., N, N)` (⟨ψ(O), y⟩ = ⟨O, ψᴴ y⟩)."""
        return mixed_state_exit_waves_adjoint(
            waves, self.modes(probe), mask=self.mask, smoothing_sigma=self.smoothing_sigma
        )

    def canvas_exit_waves(self, canvas: Tensor, offsets: Tensor, probe: Tensor | None = None) -> Tensor:
        """The whole linear part, canvas `(B, P, P)` → exit waves `(B, C, K, N, N)`."""
        return self.exit_waves(self.extract(canvas, offsets, probe), probe)

    def canvas_adjoint(
        self, waves: Tensor, offsets: Tensor, canvas_size: int | tuple[int, int], probe: Tensor | None = None
    ) -> Tensor:
        """Adjoint of `canvas_exit_waves`: waves `(B, C, K, N, N)` → canvas `(B, H, W)` of
        `canvas_size` (the patch adjoint, then the bilinear extraction's transpose — a
        scatter-add — taken by autograd, exact for this linear map)."""
        H, W = (canvas_size, canvas_size) if isinstance(canvas_size, int) else canvas_size
        patches_adj = self.adjoint(waves, probe)
        with torch.enable_grad():
            zero = torch.zeros((waves.shape[0], H, W), dtype=waves.dtype, device=waves.device, requires_grad=True)
            patches = extract_patches(zero, offsets.detach(), int(waves.shape[-1]))
            (grad,) = torch.autograd.grad(patches, zero, grad_outputs=patches_adj)
        return grad

    # -- measurements ----------------------------------------------------------------------
    def intensity_from_patches(self, patches: Tensor, probe: Tensor | None = None) -> Tensor:
        """Σ_k |F(P_k ⊙ O)|²: patches `(..., N, N)` complex → `(..., N, N)` real, photons."""
        return intensity_from_exit_waves(self.exit_waves(patches, probe))

    def forward(self, canvas: Tensor, offsets: Tensor, probe: Tensor | None = None) -> Tensor:
        """Far-field intensity `(B, C, N, N)` of canvas `(B, P, P)` complex at offsets `(B, C, 2)`
        [x, y] px: extract → illuminate (every mode) → diffract, summed over the modes."""
        return self.intensity_from_patches(self.extract(canvas, offsets, probe), probe)

    def amplitude(self, canvas: Tensor, offsets: Tensor, probe: Tensor | None = None) -> Tensor:
        """sqrt of `forward` (zero gradient where the intensity is exactly 0), sqrt(photons)."""
        return amplitude_from_intensity(self(canvas, offsets, probe))

    def extra_repr(self) -> str:
        trainable = isinstance(self.probe, nn.Parameter)
        N = None if self.probe is None else int(self.probe.shape[-1])
        return (
            f"modes={self.n_modes}, N={N}, mask={self.mask is not None}, "
            f"smoothing_sigma={self.smoothing_sigma}, trainable={trainable}"
        )


__all__ = [
    "PtychographyOperator",
    "probe_modes",
    "mixed_state_exit_waves",
    "mixed_state_exit_waves_adjoint",
    "intensity_from_exit_waves",
    "mixed_state_intensity",
    "ptychography_intensity",
]
