"""Float64 master weights for the convolutions: bit-reproducible training on CPU.

With `TrainConfig.exact_gradients` on (`--deterministic` or `--exact-gradients on`), the convolution weights and biases are held (and
updated by Adam) in float64 while activations stay float32: each convolution casts its
weights to float32 for the forward pass and reduces its weight gradient in float64
(`kernels.conv2d_master_weight`). Gradients then no longer depend on the order of the float
reductions, so one process, any thread count, and `torchrun` with any number of processes
give the same model. Saved models are always float32.
"""
from __future__ import annotations

import copy

import torch

from ..config import TrainConfig
from ..errors import ConfigError
from ..model.layers import Conv2d

MASTER_PREFIX = "master."


def resolve(train_config: TrainConfig, device: torch.device) -> bool:
    """Whether this run trains with float64 master weights.

    "auto" (the default): only with `deterministic` (reproducibility is opt-in; the fast
    float32 path otherwise), in float32 (`amp` "none") on a device with float64 (not MPS).
    "on" / "off" force it ("on" needs `amp` "none" and a device with float64, and also turns on
    deterministic kernels).
    """
    mode = train_config.exact_gradients
    if mode == "auto":
        return bool(train_config.deterministic) and train_config.amp == "none" and device.type != "mps"
    if mode == "off":
        return False
    if train_config.amp != "none":
        raise ConfigError("TrainConfig: exact_gradients 'on' needs amp 'none' (float32 activations)")
    if device.type == "mps":
        raise ConfigError("TrainConfig: exact_gradients 'on' needs float64, which MPS lacks")
    return True


def _convs(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, Conv2d)]


def _retype(model: torch.nn.Module, dtype: torch.dtype) -> None:
    for conv in _convs(model):
        for p in (conv.weight, conv.bias):
            if p is not None and p.dtype != dtype:
                p.data = p.data.to(dtype)  # keeps the memory format (channels_last)


def promote(model: torch.nn.Module) -> None:
    """Make the convolution weights and biases float64 masters, in place (before the optimiser)."""
    _retype(model, torch.float64)


def demote(model: torch.nn.Module) -> None:
    """Back to float32 weights (rounded masters), in place."""
    _retype(model, torch.float32)


def has_masters(model: torch.nn.Module) -> bool:
    return any(p.dtype == torch.float64 for conv in _convs(model) for p in conv.parameters())


def float32_model(model: torch.nn.Module) -> torch.nn.Module:
    """`model` itself, or a float32 copy when it holds float64 masters (for saving)."""
    if not has_masters(model):
        return model
    clone = copy.deepcopy(model)
    demote(clone)
    return clone


def master_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The float64 masters by parameter name (prefixed), for the training checkpoint."""
    return {
        MASTER_PREFIX + name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.dtype == torch.float64
    }


def load_master_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy checkpointed masters (if any) into the float64 parameters of `model`."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            saved = tensors.get(MASTER_PREFIX + name)
            if saved is not None and p.dtype == torch.float64:
                p.copy_(saved.to(torch.float64))


__all__ = [
    "resolve",
    "promote",
    "demote",
    "has_masters",
    "float32_model",
    "master_tensors",
    "load_master_tensors",
    "MASTER_PREFIX",
]
