"""An FNO-style generator (`ModelConfig.generator = "fno"`): spectral convolutions + pointwise.

Spectral convolution (Li et al., Fourier neural operator): X = rfft2(x) (orthonormal); keep the
lowest `modes` frequencies on each axis (the positive and the negative rows of the half
spectrum), multiply them channel-wise by learnable complex weights `(Cin, Cout, m, m)`, zero the
rest, and transform back. A block is y = GELU(spectral(x) + conv1×1(x)).

Layout, width W = 16·n_filters_scale, m(n) = min(16, n/4) modes at size n:
    encoder  x (B, C, N, N) → conv3×3 lift → block at N → 2×2 avg-pool → block at N/2 → (B, W, N/2, N/2)
    decoder  block at N/2 → heads as the CNN's (spec §3): pad_object: act(conv1×1) on the central
             N/2 square, zero-padded to N, plus with probe_big swish(conv3×3(upsample ×2)) on the
             border; without pad_object act(conv3×3(upsample ×2)).
The FFTs run in float32 (autocast off), whatever the AMP mode. The spectral weights are float32
parameters (master weights cover only the convolutions).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ModelConfig
from ..functional import amp_activation, border_mask, pad_centre, phase_activation
from ..layers import Conv2d, conv3x3


def fno_width(config: ModelConfig) -> int:
    return 16 * config.n_filters_scale


def fno_modes(size: int) -> int:
    return max(1, min(16, size // 4))


class SpectralConv2d(nn.Module):
    """`(B, Cin, H, W)` → `(B, Cout, H, W)`: a learned linear map on the lowest `modes` Fourier modes.

    Weights: two blocks (positive / negative first-axis frequencies), each `(Cin, Cout, m, m)`
    complex, stored as real and imaginary float32 parameters (`pos_real`, `pos_imag`, ...). Needs H ≥ 2m and W//2 + 1 ≥ m.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        std = 1.0 / math.sqrt(2.0 * in_channels)
        shape = (in_channels, out_channels, modes, modes)
        # real and imaginary parts as separate 4-D parameters (channels_last-able, no complex Adam)
        self.pos_real = nn.Parameter(torch.randn(shape) * std)
        self.pos_imag = nn.Parameter(torch.randn(shape) * std)
        self.neg_real = nn.Parameter(torch.randn(shape) * std)
        self.neg_imag = nn.Parameter(torch.randn(shape) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        m = self.modes
        if H < 2 * m or W // 2 + 1 < m:
            raise ValueError(f"SpectralConv2d: {m} modes need H >= {2 * m} and W >= {2 * m - 2}, got {H}x{W}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            X = torch.fft.rfft2(x.float(), norm="ortho")
            wp = torch.complex(self.pos_real.float(), self.pos_imag.float())
            wn = torch.complex(self.neg_real.float(), self.neg_imag.float())
            out = X.new_zeros(B, wp.shape[1], H, W // 2 + 1)
            out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", X[:, :, :m, :m], wp)
            out[:, :, H - m :, :m] = torch.einsum("bixy,ioxy->boxy", X[:, :, H - m :, :m], wn)
            return torch.fft.irfft2(out, s=(H, W), norm="ortho")


class FNOBlock(nn.Module):
    """y = GELU(spectral(x) + conv1×1(x)), `(B, W, n, n)` → same."""

    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.spectral = SpectralConv2d(width, width, modes)
        self.pointwise = Conv2d(width, width, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.spectral(x).to(x.dtype) + self.pointwise(x))


class FNOEncoder(nn.Module):
    """x `(B, C, N, N)` → features `(B, W, N/2, N/2)`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        W, N = fno_width(config), config.N
        self.lift = conv3x3(config.channels, W)
        self.block_full = FNOBlock(W, fno_modes(N))
        self.block_half = FNOBlock(W, fno_modes(N // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_full(self.lift(x))
        return self.block_half(F.avg_pool2d(x, 2))


class FNODecoder(nn.Module):
    """features `(B, W, N/2, N/2)` → one head `(B, Cout, N, N)` after its activation (spec §3 heads)."""

    def __init__(self, config: ModelConfig, which: str) -> None:
        super().__init__()
        if which not in ("amp", "phase"):
            raise ValueError(f"decoder must be 'amp' or 'phase', got {which!r}")
        W, N = fno_width(config), config.N
        self.which, self.N = which, N
        self.pad_object, self.probe_big = config.pad_object, config.probe_big
        self.amp_activation_name = config.amp_activation
        cout = config.amp_channels if which == "amp" else config.head_channels
        self.block = FNOBlock(W, fno_modes(N // 2))
        if self.pad_object:
            self.head1 = Conv2d(W, cout, kernel_size=1, bias=True)
        if self.probe_big or not self.pad_object:
            self.head2 = conv3x3(W, cout)
        if self.pad_object and self.probe_big:
            self.border: torch.Tensor
            self.register_buffer("border", border_mask(N), persistent=False)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.which == "amp":
            return amp_activation(x, self.amp_activation_name)
        return phase_activation(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.block(z)
        if not self.pad_object:
            return self.activation(self.head2(F.interpolate(z, scale_factor=2, mode="nearest")))
        x1 = pad_centre(self.activation(self.head1(z)), self.N)
        if not self.probe_big:
            return x1
        x2 = F.silu(self.head2(F.interpolate(z, scale_factor=2, mode="nearest")))
        return x1 + x2 * self.border


__all__ = ["SpectralConv2d", "FNOBlock", "FNOEncoder", "FNODecoder", "fno_width", "fno_modes"]
