"""The layer plan of the PtychoPINN network, without torch (spec §3, §3.1).

One place says which 3×3 convolutions exist, their channel counts, the torch module path of
each, and the order in which the legacy Keras model lists their weights. `model.layers` builds
the modules from this plan and `interop.keras_layout` maps Keras weights through it, so the two
cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig

#: Encoder Conv_Pool block widths at n_filters_scale = 1 (spec §3); the encoder output is 8×8.
_ENCODER_BASE = {64: (32, 64, 128), 128: (16, 32, 64, 128), 256: (8, 16, 32, 64, 128)}
#: Decoder Conv_Up block widths at n_filters_scale = 1; the decoder output is (N/2)×(N/2).
_DECODER_BASE = {64: (64, 32), 128: (128, 64, 32), 256: (256, 128, 64, 32)}
#: Channels of the decoder features routed to the probe.big branch (the last 4 of F).
X2_SPLIT = 4


@dataclass(frozen=True)
class ConvSpec:
    """One 3×3 'same' convolution with bias: torch module path and channel counts."""

    path: str
    in_channels: int
    out_channels: int

    @property
    def keras_kernel_shape(self) -> tuple[int, int, int, int]:
        """Keras kernel layout (kh, kw, in, out)."""
        return (3, 3, self.in_channels, self.out_channels)

    @property
    def torch_weight_shape(self) -> tuple[int, int, int, int]:
        """torch Conv2d weight layout (out, in, kh, kw)."""
        return (self.out_channels, self.in_channels, 3, 3)


def encoder_filters(config: ModelConfig) -> tuple[int, ...]:
    """Output channels of each encoder Conv_Pool block."""
    return tuple(f * config.n_filters_scale for f in _ENCODER_BASE[config.N])


def decoder_filters(config: ModelConfig) -> tuple[int, ...]:
    """Output channels of each decoder Conv_Up block (both decoders)."""
    return tuple(f * config.n_filters_scale for f in _DECODER_BASE[config.N])


def decoder_features(config: ModelConfig) -> int:
    """F, channels of the decoder output (32·n_filters_scale)."""
    return decoder_filters(config)[-1]


def x2_filters(config: ModelConfig) -> int:
    """Width of the Conv_Up block of the full-size branch: n_filters_scale·2048/N."""
    return config.n_filters_scale * 2048 // config.N


def _has_head1(config: ModelConfig) -> bool:
    return config.pad_object


def _has_x2(config: ModelConfig) -> bool:
    """The full-size branch (Up block + head2) runs with probe_big, or always without pad_object."""
    return config.probe_big or not config.pad_object


def decoder_convs(config: ModelConfig, which: str) -> dict[str, ConvSpec]:
    """Convolutions of the decoder `which` ("amp" or "phase"), keyed by role.

    Roles: "blocks.{j}.conv1|conv2", "x2_block.conv1|conv2", "head2", "head1".
    """
    if which not in ("amp", "phase"):
        raise ValueError(f"decoder must be 'amp' or 'phase', got {which!r}")
    prefix = f"decoder_{which}"
    cout = config.amp_channels if which == "amp" else config.head_channels
    convs: dict[str, ConvSpec] = {}
    cin = encoder_filters(config)[-1]
    for j, f in enumerate(decoder_filters(config)):
        convs[f"blocks.{j}.conv1"] = ConvSpec(f"{prefix}.blocks.{j}.conv1", cin, f)
        convs[f"blocks.{j}.conv2"] = ConvSpec(f"{prefix}.blocks.{j}.conv2", f, f)
        cin = f
    F = cin
    if _has_x2(config):
        fx = x2_filters(config)
        x2_in = X2_SPLIT if config.pad_object else F
        convs["x2_block.conv1"] = ConvSpec(f"{prefix}.x2_block.conv1", x2_in, fx)
        convs["x2_block.conv2"] = ConvSpec(f"{prefix}.x2_block.conv2", fx, fx)
        convs["head2"] = ConvSpec(f"{prefix}.head2", fx, cout)
    if _has_head1(config):
        convs["head1"] = ConvSpec(f"{prefix}.head1", F - X2_SPLIT, cout)
    return convs


def encoder_convs(config: ModelConfig) -> list[ConvSpec]:
    """Encoder convolutions in order: blocks.{i}.conv1, blocks.{i}.conv2."""
    out: list[ConvSpec] = []
    cin = config.channels
    for i, f in enumerate(encoder_filters(config)):
        out.append(ConvSpec(f"encoder.blocks.{i}.conv1", cin, f))
        out.append(ConvSpec(f"encoder.blocks.{i}.conv2", f, f))
        cin = f
    return out


def keras_conv_order(config: ModelConfig) -> list[ConvSpec]:
    """Every convolution in the order of the legacy Keras `model.weights` (spec §3.1).

    Encoder convs; decoder convs interleaved amp/phase stage by stage and conv by conv; then the
    full-size Up-block convs interleaved; then head2 (amp, phase); then head1 (amp, phase).
    """
    amp, phase = decoder_convs(config, "amp"), decoder_convs(config, "phase")
    order = encoder_convs(config)
    roles = [f"blocks.{j}.conv{k}" for j in range(len(decoder_filters(config))) for k in (1, 2)]
    roles += ["x2_block.conv1", "x2_block.conv2", "head2", "head1"]
    for role in roles:
        if role in amp:
            order += [amp[role], phase[role]]
    return order


__all__ = [
    "ConvSpec",
    "X2_SPLIT",
    "encoder_filters",
    "decoder_filters",
    "decoder_features",
    "x2_filters",
    "encoder_convs",
    "decoder_convs",
    "keras_conv_order",
]
