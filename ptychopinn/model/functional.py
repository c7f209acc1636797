"""Stateless pieces of the PtychoPINN network (spec §3 heads, §4.3 steps 1–4).

All tensors are channels-first. Nothing here owns parameters.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import AmpActivation, CombineMode
from ..grid import centre_crop as crop_centre  # the one definition (re-exported under the model's name)
from ..kernels import center_mask

_AMP_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "softplus": F.softplus,
    "relu": F.relu,
}


def amp_activation(x: torch.Tensor, name: AmpActivation) -> torch.Tensor:
    """Amplitude-head activation `name` (sigmoid, swish = x·sigmoid(x), softplus, relu)."""
    try:
        fn = _AMP_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown amp_activation {name!r}; expected one of {sorted(_AMP_ACTIVATIONS)}") from None
    return fn(x)


def phase_activation(x: torch.Tensor) -> torch.Tensor:
    """Phase-head activation π·tanh(x), radians in (−π, π)."""
    return math.pi * torch.tanh(x)


def combine_complex(amp: torch.Tensor, phase: torch.Tensor, mode: CombineMode = "polar") -> torch.Tensor:
    """Object patches from amplitude and phase heads, broadcasting a 1-channel amplitude.

    amp `(B, Ca, N, N)`, phase `(B, Cp, N, N)` float → `(B, max(Ca, Cp), N, N)` complex.
    "polar": A·cos φ + i·A·sin φ; "additive": A + iφ (the K1 bug MATH_POLAR_001, spec §8.3).
    """
    if mode == "polar":
        real, imag = amp * torch.cos(phase), amp * torch.sin(phase)
    elif mode == "additive":
        real, imag = torch.broadcast_tensors(amp, phase)
    else:
        raise ValueError(f"unknown combine mode {mode!r}; expected 'polar' or 'additive'")
    return torch.complex(real, imag)


def pad_centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last two axes `(…, n, n)` to `(…, size, size)`, (size − n)//2 before.

    Matches TF's symmetric padding by (size − n)//2 per side when size − n is even.
    """
    n = x.shape[-1]
    before = (size - n) // 2
    pad = (before, size - n - before) * 2
    if torch.is_complex(x):  # F.pad lacks complex support on some backends
        return torch.complex(F.pad(x.real, pad), F.pad(x.imag, pad))
    return F.pad(x, pad)


def border_mask(N: int, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """`(N, N)` 1 − centre mask: zero on rows and columns [N/4, 3N/4), one elsewhere (spec §4.5)."""
    return 1 - center_mask(N, dtype=dtype, device=device)


def pad_reconstruction(obj: torch.Tensor, padded_size: int) -> torch.Tensor:
    """object_big=False canvas (spec §4.3 step 3): `(B, 1, N, N)` → `(B, P, P)`, zero-padded."""
    if obj.shape[1] != 1:
        raise ValueError(f"pad_reconstruction expects one object channel, got shape {tuple(obj.shape)}")
    return pad_centre(obj[:, 0], padded_size)


__all__ = [
    "amp_activation",
    "phase_activation",
    "combine_complex",
    "pad_centre",
    "crop_centre",
    "border_mask",
    "pad_reconstruction",
]
