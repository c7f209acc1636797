"""Attention blocks for the CNN encoder (`ModelConfig.attention`): CBAM and ECA.

Both map `(B, C, H, W)` → `(B, C, H, W)` (features re-weighted, never resized), and use the
project's `Conv2d`, so float64 master weights (`--deterministic`) cover them too.

- `CBAM` (Woo et al. 2018): channel attention σ(MLP(avgpool x) + MLP(maxpool x)), then spatial
  attention σ(conv7×7([mean_c x, max_c x])).
- `ECA` (Wang et al. 2020): channel attention σ(conv1d_k(avgpool x)) across channels, k the odd
  number nearest |log2(C) + 1| / 2.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import Conv2d


class CBAM(nn.Module):
    """Convolutional block attention: channel then spatial gates, `(B, C, H, W)` → same."""

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.fc2 = Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.spatial = Conv2d(2, 1, kernel_size=spatial_kernel, padding=spatial_kernel // 2, bias=True)

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(v)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self._mlp(avg) + self._mlp(mx))
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive 1-D kernel size: the odd integer from |log2(C)/γ + b/γ|."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention, `(B, C, H, W)` → same: a k-tap filter across channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        # the 1-D convolution across channels, as a (1, k) Conv2d on (B, 1, 1, C)
        self.conv = Conv2d(1, 1, kernel_size=(1, k), padding=(0, k // 2), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        y = x.mean(dim=(2, 3)).reshape(B, 1, 1, C)
        gate = torch.sigmoid(self.conv(y)).reshape(B, C, 1, 1)
        return x * gate


ATTENTION = {"cbam": CBAM, "eca": ECA}


def attention_block(kind: str, channels: int) -> nn.Module:
    """The attention module `kind` ("cbam" | "eca") for `channels` feature maps."""
    return ATTENTION[kind](channels)


__all__ = ["CBAM", "ECA", "attention_block", "eca_kernel_size"]
