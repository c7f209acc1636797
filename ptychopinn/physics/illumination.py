"""Illumination: exit wave ψ = probe ⊙ object patch (spec §4.3 step 6, layer `probe_illumination`).

The `nn.Module` holding the probe is `physics.operator.PtychographyOperator`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_taps(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """softmax(−t² / (2σ²)) for t ∈ {−1, 0, 1}: three taps summing to 1."""
    t = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    taps = torch.softmax(-(t**2) / (2.0 * float(sigma) ** 2), dim=0)
    return taps.to(dtype=dtype, device=device)


def gaussian_smooth3(x: Tensor, sigma: float) -> Tensor:
    """3×3 separable Gaussian on the last two axes with REFLECT padding (mirror, edge not repeated).

    x: `(..., H, W)` real or complex (real and imaginary parts are filtered alike), H, W ≥ 2.
    Returns the same shape and dtype. σ = 0 returns x unchanged (TF skips the filter then).
    """
    if sigma == 0:
        return x
    if x.is_complex():
        return torch.complex(gaussian_smooth3(x.real, sigma), gaussian_smooth3(x.imag, sigma))
    *lead, H, W = x.shape
    taps = _gaussian_taps(sigma, x.dtype, x.device)
    kernel = (taps[:, None] * taps[None, :]).reshape(1, 1, 3, 3)
    flat = x.reshape(-1, 1, H, W)
    out = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="reflect"), kernel)
    return out.reshape(*lead, H, W)


def _reflect_pad1_adjoint(g: Tensor, dim: int) -> Tensor:
    """Adjoint of REFLECT padding by one pixel along `dim` (size n + 2 → n).

    Padding copies x[1] before x[0] and x[n − 2] after x[n − 1]; the adjoint adds those two
    border values back onto x[1] and x[n − 2].
    """
    n = g.shape[dim] - 2
    inner = g.narrow(dim, 1, n).clone()
    inner.narrow(dim, 1, 1).add_(g.narrow(dim, 0, 1))
    inner.narrow(dim, n - 2, 1).add_(g.narrow(dim, n + 1, 1))
    return inner


def gaussian_smooth3_adjoint(y: Tensor, sigma: float) -> Tensor:
    """Adjoint of `gaussian_smooth3(·, σ)` for ⟨a, b⟩ = Σ conj(a)·b: `(..., H, W)` → same.

    The 3×3 filter is symmetric, but REFLECT padding is not self-adjoint at the edges, so this
    is the transposed convolution followed by folding the padded border back (H, W ≥ 3).
    σ = 0 returns y unchanged.
    """
    if sigma == 0:
        return y
    if y.is_complex():
        return torch.complex(gaussian_smooth3_adjoint(y.real, sigma), gaussian_smooth3_adjoint(y.imag, sigma))
    *lead, H, W = y.shape
    taps = _gaussian_taps(sigma, y.dtype, y.device)
    kernel = (taps[:, None] * taps[None, :]).reshape(1, 1, 3, 3)
    g = F.conv_transpose2d(y.reshape(-1, 1, H, W), kernel)  # (·, 1, H + 2, W + 2)
    g = _reflect_pad1_adjoint(_reflect_pad1_adjoint(g, -2), -1)
    return g.reshape(*lead, H, W)


def illuminate(
    patches: Tensor,
    probe: Tensor,
    *,
    mask: Tensor | None = None,
    smoothing_sigma: float = 0.0,
) -> Tensor:
    """Exit waves ψ = probe ⊙ patches, optionally smoothed, then masked.

    patches: `(..., N, N)` complex object patches (transmission, unitless).
    probe: `(N, N)` complex (any tensor broadcastable to patches works).
    smoothing_sigma: if ≠ 0, `gaussian_smooth3(ψ, σ)` (TF `gaussian_smoothing_sigma`, default 0).
    mask: `(N, N)` real support applied last (TF `probe.mask`), or None.
    Returns `(..., N, N)` complex, the dtype of `patches`.
    """
    if patches.shape[-2:] != probe.shape[-2:]:
        raise ValueError(
            f"illuminate: patches (..., {tuple(patches.shape[-2:])}) and probe {tuple(probe.shape)} differ in N"
        )
    psi = probe.to(patches.dtype) * patches
    psi = gaussian_smooth3(psi, smoothing_sigma)
    if mask is not None:
        psi = psi * mask.to(device=psi.device, dtype=psi.real.dtype)
    return psi


__all__ = ["illuminate", "gaussian_smooth3", "gaussian_smooth3_adjoint"]
