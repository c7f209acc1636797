"""Generator registry: the encoder/decoder family of a PtychoPINN, chosen by `ModelConfig.generator`.

    from ptychopinn.model.generators import get_generator, available_generators
    available_generators()          # ("cnn", "fno")
    spec = get_generator("fno")     # GeneratorSpec(name, encoder, decoder, tf_bundle, onnx, ...)

Every generator maps x `(B, C, N, N)` normalised amplitudes to features (`encoder(config)`) and
the features to one head's output `(B, Cout, N, N)` after its activation (`decoder(config,
"amp" | "phase")`), honouring `pad_object` / `probe_big` like the CNN (spec §3), so the physics
head and the losses are the same for all. `PtychoPINN` builds them through `model.layers.Encoder`
/ `Decoder`, which dispatch here for any generator but "cnn".

- "cnn": the TF-parity U-free autoencoder (`model.layers`), optionally with CBAM/ECA attention
  after each encoder block (`ModelConfig.attention`); the only generator that converts to legacy
  TF bundles, and it exports to ONNX.
- "fno": Fourier-neural-operator blocks (`fno.py`): spectral convolutions on the lowest Fourier
  modes (`torch.fft.rfft2`, learnable complex weights) plus a pointwise convolution. Its
  inference graph needs FFTs, so ONNX export refuses it (the exported graph is FFT-free).

`register_generator` adds a generator under a new name (it must build modules whose parameters
save in the native format; only "cnn" models convert to TF bundles).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ...config import ModelConfig
from ...errors import ConfigError


@dataclass(frozen=True)
class GeneratorSpec:
    """A named generator: module factories and what it can be converted to."""

    name: str
    #: config -> encoder module, x `(B, C, N, N)` -> features
    encoder: Callable[[ModelConfig], nn.Module]
    #: (config, "amp" | "phase") -> decoder module, features -> `(B, Cout, N, N)` activated
    decoder: Callable[[ModelConfig, str], nn.Module]
    #: converts to a legacy TensorFlow bundle (interop.write_tf_bundle)
    tf_bundle: bool = False
    #: exports to ONNX (the exported inference graph must be FFT-free)
    onnx: bool = True
    description: str = ""


_REGISTRY: dict[str, GeneratorSpec] = {}


def register_generator(spec: GeneratorSpec) -> GeneratorSpec:
    """Add `spec` under `spec.name` (ConfigError when the name is taken)."""
    if spec.name in _REGISTRY:
        raise ConfigError(f"generator {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_generator(name: str) -> GeneratorSpec:
    """The generator registered as `name`; ConfigError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown generator {name!r}; expected one of {', '.join(available_generators())}") from None


def available_generators() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _cnn_encoder(config: ModelConfig) -> nn.Module:
    from ..layers import Encoder  # lazy: import cycle (model.layers imports this registry)

    return Encoder(config)


def _cnn_decoder(config: ModelConfig, which: str) -> nn.Module:
    from ..layers import Decoder  # lazy: import cycle (model.layers imports this registry)

    return Decoder(config, which)


def _fno_encoder(config: ModelConfig) -> nn.Module:
    from .fno import FNOEncoder  # lazy: import cycle (fno builds on model.layers, which imports this registry)

    return FNOEncoder(config)


def _fno_decoder(config: ModelConfig, which: str) -> nn.Module:
    from .fno import FNODecoder  # lazy: import cycle (fno builds on model.layers, which imports this registry)

    return FNODecoder(config, which)


register_generator(GeneratorSpec(
    "cnn", _cnn_encoder, _cnn_decoder, tf_bundle=True, onnx=True,
    description="TF-parity convolutional encoder/decoders (spec §3); optional CBAM/ECA attention",
))
register_generator(GeneratorSpec(
    "fno", _fno_encoder, _fno_decoder, tf_bundle=False, onnx=False,
    description="Fourier neural operator: spectral convolutions (rfft2, low modes) + pointwise convolutions",
))

__all__ = ["GeneratorSpec", "register_generator", "get_generator", "available_generators"]
