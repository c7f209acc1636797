"""Legacy Keras conv weights ↔ `PtychoPINN` parameters (spec §3.1).

A legacy model lists its weights (`model.weights`, `get_weights()`, the H5 `layers/conv2d_k`
groups and the S1 checkpoint `layer_with_weights-i`) in one fixed order: for each Conv2D its
kernel `(3, 3, in, out)` then its bias `(out,)`. `keras_weight_order(config)` gives the torch
module path of each Conv2D in that order; the loader copies `kernel.transpose(3, 2, 0, 1)` into
`<path>.weight` and the bias into `<path>.bias`.

This module imports no torch at import time (the functions that touch a model import it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import ModelConfig
from ..errors import ModelFormatError
from ..model.architecture import keras_conv_order

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

_KERNEL_TO_TORCH = (3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
_TORCH_TO_KERNEL = (2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def keras_weight_order(config: ModelConfig) -> list[str]:
    """Torch conv module paths in Keras `model.weights` order (each = kernel, bias)."""
    return [spec.path for spec in keras_conv_order(config)]


def keras_weight_shapes(config: ModelConfig) -> list[tuple[int, ...]]:
    """Expected Keras array shapes, `2 × len(keras_weight_order(config))` entries."""
    shapes: list[tuple[int, ...]] = []
    for spec in keras_conv_order(config):
        shapes += [spec.keras_kernel_shape, (spec.out_channels,)]
    return shapes


def _config_of(model: "nn.Module") -> ModelConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"expected a PtychoPINN model with a ModelConfig, got {type(model).__name__}")
    return config


def load_keras_weights(model: "nn.Module", arrays: Sequence[np.ndarray], *, source: str = "keras weights") -> None:
    """Copy legacy Keras conv weights, in `model.weights` order, into `model` (in place).

    arrays: `[kernel_0 (3,3,in,out), bias_0 (out,), kernel_1, …]`, numpy, any float dtype.
    Raises ModelFormatError naming `source`, the index and both shapes on any mismatch; nothing
    is copied unless every array fits.
    """
    import torch

    config = _config_of(model)
    specs = keras_conv_order(config)
    if len(arrays) != 2 * len(specs):
        raise ModelFormatError(
            f"{source}: expected {2 * len(specs)} arrays (kernel, bias for {len(specs)} convs), got {len(arrays)}"
        )
    modules = dict(model.named_modules())
    staged: list[tuple[torch.Tensor, np.ndarray]] = []
    for k, spec in enumerate(specs):
        conv = modules.get(spec.path)
        if conv is None:
            raise ModelFormatError(f"{source}: model has no module {spec.path!r} (weight index {2 * k})")
        kernel, bias = np.asarray(arrays[2 * k]), np.asarray(arrays[2 * k + 1])
        if kernel.shape != spec.keras_kernel_shape:
            raise ModelFormatError(
                f"{source}: weight index {2 * k} ({spec.path}.weight) has shape {kernel.shape}, "
                f"expected {spec.keras_kernel_shape}"
            )
        if bias.shape != (spec.out_channels,):
            raise ModelFormatError(
                f"{source}: weight index {2 * k + 1} ({spec.path}.bias) has shape {bias.shape}, "
                f"expected {(spec.out_channels,)}"
            )
        if tuple(conv.weight.shape) != spec.torch_weight_shape:  # the model disagrees with its plan
            raise ModelFormatError(
                f"{source}: module {spec.path}.weight has shape {tuple(conv.weight.shape)}, "
                f"expected {spec.torch_weight_shape} for weight index {2 * k}"
            )
        staged.append((conv.weight, kernel.transpose(_KERNEL_TO_TORCH)))
        staged.append((conv.bias, bias))
    with torch.no_grad():
        for param, value in staged:
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(param.dtype))


def export_keras_weights(model: "nn.Module") -> list[np.ndarray]:
    """The inverse of `load_keras_weights`: float32 arrays `[kernel (3,3,in,out), bias, …]`."""
    config = _config_of(model)
    modules = dict(model.named_modules())
    arrays: list[np.ndarray] = []
    for spec in keras_conv_order(config):
        conv = modules[spec.path]
        w = conv.weight.detach().to("cpu").float().numpy()
        arrays.append(np.ascontiguousarray(w.transpose(_TORCH_TO_KERNEL)))
        arrays.append(conv.bias.detach().to("cpu").float().numpy().copy())
    return arrays


__all__ = ["keras_weight_order", "keras_weight_shapes", "load_keras_weights", "export_keras_weights"]
