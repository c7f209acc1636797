"""Analytic FLOP count of the PtychoPINN conv network (from the layer plan, no torch)."""
from __future__ import annotations

from ptychopinn.config import ModelConfig
from ptychopinn.model import architecture as arch


def _conv(h: int, cin: int, cout: int) -> int:
    """Multiply-adds ×2 of a 3×3 'same' conv on an h×h map."""
    return 2 * h * h * cin * cout * 9


def conv_flops_per_pattern(config: ModelConfig) -> float:
    """FLOP of all 3×3 convolutions for one group (B = 1), divided by C (per pattern).

    Encoder block i runs at N/2^i; decoder block j at 8·2^j; head1 and the full-size branch's
    Up block at N/2; head2 at N. Pooling, activations and physics are not counted (< 1 %).
    """
    N, C = config.N, config.channels
    total = 0
    for i, spec in enumerate(arch.encoder_convs(config)):
        total += _conv(N >> (i // 2), spec.in_channels, spec.out_channels)
    for which in ("amp", "phase"):
        for role, spec in arch.decoder_convs(config, which).items():
            if role.startswith("blocks."):
                h = 8 << int(role.split(".")[1])
            elif role.startswith("x2_block") or role == "head1":
                h = N // 2
            else:  # head2
                h = N
            total += _conv(h, spec.in_channels, spec.out_channels)
    return total / C


__all__ = ["conv_flops_per_pattern"]
