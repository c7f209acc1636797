"""The training objective of one batch (spec §4.7), built from `ptychopinn.physics` losses.

PINN: nll_weight·PoissonNLL(Î, x²) + mae_weight·MAE(Â, x) + realspace_weight·realspace(obj).
Supervised: MAE of the predicted object patch against the ground-truth patch (amplitude MAE +
phase MAE, `physics.complex_mae`), plus the optional real-space term.
x is the model input `(B, C, N, N)` in sqrt-photons, so x² are the observed counts.
"""
from __future__ import annotations

import contextlib
from typing import Any, cast

import numpy as np
import torch

from .. import physics
from ..config import ModelConfig, TrainConfig


def batch_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    offsets: torch.Tensor,
    labels: torch.Tensor | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    centre_mask: torch.Tensor | None = None,
    autocast: Any = None,
    batch_size: int | None = None,
    weight: float = 1.0,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss (0-d float32) and its named, weighted parts (detached 0-d tensors).

    x `(B, C, N, N)` float32 sqrt-photons; offsets `(B, C, 2)` px; labels `(B, N, N)` complex64
    ground-truth object patches at the group centres, or None. `autocast` is a context manager
    factory (AMP) applied to the forward pass only; losses are evaluated in float32.

    Shards of a larger batch (distributed training): `batch_size` is the whole batch's size, so
    the mean terms divide by it (`physics.batch_mean`) and the total-variation term (a sum over
    the batch) is the shard's own sum: the shards' losses, and the gradient reaching every
    element, add up exactly to those of the whole batch. `weight` 0 marks a padding shard.

    valid: `(N, N)` bool detector mask (True = measured, i.e. `~Scan.bad_pixels`) or None; the
    diffraction terms (NLL, MAE) then leave the masked pixels out (`physics.poisson_nll`).
    """
    ctx = autocast() if autocast is not None else contextlib.nullcontext()
    with ctx:
        out = model(x, offsets)
    obj = out.object.to(torch.complex64)
    amplitude = out.amplitude.float()
    intensity = out.intensity.float()
    parts: dict[str, torch.Tensor] = {}
    tc = train_config
    B = batch_size
    if tc.model_type == "pinn":
        if tc.nll_weight:
            parts["nll"] = tc.nll_weight * physics.poisson_nll(
                intensity, x.square(), form=tc.nll_form, batch_size=B, valid=valid
            )
        if tc.mae_weight:
            parts["mae"] = tc.mae_weight * physics.mae(amplitude, x, batch_size=B, valid=valid)
    else:  # supervised
        assert labels is not None  # checked before training starts
        parts["mae"] = physics.complex_mae(labels, obj, batch_size=B)
    if tc.realspace_weight and (tc.tv_weight or tc.realspace_mae_weight):
        mask = None if model_config.probe_big else centre_mask
        parts["realspace"] = tc.realspace_weight * physics.realspace_loss(
            obj, labels, tv_weight=tc.tv_weight, mae_weight=tc.realspace_mae_weight, center_mask=mask, batch_size=B
        )
    if not parts:
        raise ValueError("batch_loss: every loss weight is zero")
    if weight != 1.0:
        parts = {k: v * weight for k, v in parts.items()}
    total = cast(torch.Tensor, sum(parts.values()))  # parts is non-empty: a tensor, never sum's start 0
    return total, {k: v.detach() for k, v in parts.items()}


def needs_labels(train_config: TrainConfig) -> bool:
    """True when the objective compares against ground-truth object patches."""
    tc = train_config
    return tc.model_type == "supervised" or bool(tc.realspace_weight and tc.realspace_mae_weight)


def detector_valid(scan: Any, device: torch.device | str | None = None) -> torch.Tensor | None:
    """`~scan.bad_pixels` as an `(N, N)` bool tensor (True = measured), or None when the scan
    flags no bad pixels (`Scan.bad_pixels` None or absent)."""
    bad = getattr(scan, "bad_pixels", None)
    if bad is None:
        return None
    return ~torch.as_tensor(np.asarray(bad, dtype=bool), device=device)


__all__ = ["batch_loss", "needs_labels", "detector_valid"]
