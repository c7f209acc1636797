"""Encoder and decoders of PtychoPINN (spec §3): one `nn.Conv2d` per legacy Keras Conv2D.

Module paths (`encoder.blocks.{i}.conv1`, `decoder_amp.head1`, …) are those of
`model.architecture`, which also fixes the Keras weight order.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ptychopinn.kernels import conv2d_master_weight

from ..config import ModelConfig
from . import architecture as arch
from .functional import amp_activation, border_mask, pad_centre, phase_activation


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that also runs with float64 master weights on float32 activations.

    Normally identical to `nn.Conv2d`. When training promotes the weights to float64
    (`ptychopinn.train.master_weights`), the convolution still computes in the activations'
    dtype and only the weight/bias gradients are reduced in float64
    (`kernels.conv2d_master_weight`): bit-reproducible gradients across thread counts and
    process counts.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if weight.dtype == input.dtype or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return conv2d_master_weight(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def conv3x3(in_channels: int, out_channels: int) -> Conv2d:
    """3×3, stride 1, 'same' (1-pixel zero pad), with bias: a Keras Conv2D(…, 3, padding='same')."""
    return Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)


class _ConvPair(nn.Module):
    """conv3x3 → ReLU → conv3x3 → ReLU, then the subclass's resampling (`conv1`, `conv2` map
    one-to-one onto two Keras Conv2D layers)."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, filters)
        self.conv2 = conv3x3(filters, filters)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd (inference) the ReLUs overwrite the fresh convolution outputs in
        # place: same values, one activation buffer less per layer.
        inplace = not torch.is_grad_enabled()
        return self.resample(F.relu(self.conv2(F.relu(self.conv1(x), inplace=inplace)), inplace=inplace))


class ConvPoolBlock(_ConvPair):
    """conv3x3 → ReLU → conv3x3 → ReLU → 2×2 max-pool: `(B, Cin, H, W)` → `(B, f, H/2, W/2)`."""

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2)


class ConvUpBlock(_ConvPair):
    """conv3x3 → ReLU → conv3x3 → ReLU → nearest ×2 upsampling: `(B, Cin, H, W)` → `(B, f, 2H, 2W)`."""

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


def _from_registry(cls: type, args: tuple, kwargs: dict) -> nn.Module | None:
    """The registered generator's module when `config.generator` is not "cnn" (else None)."""
    config = args[0] if args else kwargs.get("config")
    name = getattr(config, "generator", "cnn")
    if name == "cnn":
        return None
    from .generators import get_generator  # lazy: import cycle (the generator registry builds on these layers)

    spec = get_generator(name)
    config = cast(ModelConfig, config)  # not None here: a missing config has generator "cnn" (returned above)
    return spec.encoder(config) if cls is Encoder else spec.decoder(config, *args[1:], **{k: v for k, v in kwargs.items() if k != "config"})


class Encoder(nn.Module):
    """`(B, C, N, N)` normalised amplitudes → `(B, E, 8, 8)` features.

    With `config.attention` ("cbam" | "eca") an attention block follows each Conv_Pool block
    (`encoder.attention.{i}`). `Encoder(config)` of a config whose `generator` is not "cnn"
    returns that generator's encoder (`model.generators`).
    """

    def __new__(cls, *args, **kwargs):
        other = _from_registry(cls, args, kwargs) if cls is Encoder else None
        return other if other is not None else super().__new__(cls)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        specs = arch.encoder_convs(config)
        filters = arch.encoder_filters(config)
        self.blocks = nn.ModuleList(ConvPoolBlock(specs[2 * i].in_channels, f) for i, f in enumerate(filters))
        if config.attention is not None:
            from .generators.attention import attention_block  # lazy: import cycle (attention blocks use this module's Conv2d)

            self.attention = nn.ModuleList(attention_block(config.attention, f) for f in filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = getattr(self, "attention", None)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if attention is not None:
                x = attention[i](x)
        return x


class Decoder(nn.Module):
    """One decoder (amplitude or phase): `(B, E, 8, 8)` → `(B, Cout, N, N)` after its activation.

    pad_object=True: x1 = act(head1(feat[:, :F−4])) zero-padded by N/4; with probe_big the
    full-size branch adds swish(head2(x2_block(feat[:, F−4:]))) outside the centre square.
    pad_object=False: act(head2(x2_block(feat))).
    A config whose `generator` is not "cnn" gets that generator's decoder (`model.generators`).
    """

    def __new__(cls, *args, **kwargs):
        other = _from_registry(cls, args, kwargs) if cls is Decoder else None
        return other if other is not None else super().__new__(cls)

    def __init__(self, config: ModelConfig, which: str) -> None:
        super().__init__()
        self.which = which
        self.N = config.N
        self.pad_object = config.pad_object
        self.probe_big = config.probe_big
        self.amp_activation_name = config.amp_activation
        self.split = arch.decoder_features(config) - arch.X2_SPLIT
        convs = arch.decoder_convs(config, which)
        self.blocks = nn.ModuleList(
            ConvUpBlock(convs[f"blocks.{j}.conv1"].in_channels, f) for j, f in enumerate(arch.decoder_filters(config))
        )
        if "head1" in convs:
            self.head1 = conv3x3(convs["head1"].in_channels, convs["head1"].out_channels)
        if "head2" in convs:
            self.x2_block = ConvUpBlock(convs["x2_block.conv1"].in_channels, arch.x2_filters(config))
            self.head2 = conv3x3(convs["head2"].in_channels, convs["head2"].out_channels)
        if self.pad_object and self.probe_big:
            self.border: torch.Tensor
            self.register_buffer("border", border_mask(config.N), persistent=False)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.which == "amp":
            return amp_activation(x, self.amp_activation_name)
        return phase_activation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if not self.pad_object:
            return self.activation(self.head2(self.x2_block(x)))
        x1 = pad_centre(self.activation(self.head1(x[:, : self.split])), self.N)
        if not self.probe_big:
            return x1
        x2 = F.silu(self.head2(self.x2_block(x[:, self.split :])))
        return x1 + x2 * self.border


__all__ = ["conv3x3", "ConvPoolBlock", "ConvUpBlock", "Encoder", "Decoder"]
