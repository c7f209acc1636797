"""Training losses (spec §4.7): Poisson negative log-likelihood, MAE, total variation.

Units: intensities in photons (the model's Î = Â² and the observed y = (s·X)²), amplitudes in
sqrt(photons). Every reduction returns a 0-d tensor.

Bad pixels: `poisson_nll` and `mae` take `valid`, a bool mask broadcastable to the inputs
(e.g. the detector's `(N, N)`, True = measured). Masked elements contribute nothing, to the
value or the gradient (exactly 0, whatever they hold, even inf/NaN), and the means run over
the valid elements only (see `batch_mean`); `valid=None` is bit-identical to no mask.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

NLLForm = Literal["mean", "full_sum"]


def _check_same_shape(name: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def batch_mean(per_element: Tensor, batch_size: int | None = None, valid: Tensor | None = None) -> Tensor:
    """Mean over all elements of `(b, ...)` values, as if the batch held `batch_size` samples.

    Computed as `sum · 1/(batch_size · elements per sample)`, so the gradient reaching each
    element is the same constant whether the batch is evaluated whole or as shards (each shard
    passing the whole batch's size): the shards' losses and gradients add up to the batch's.
    batch_size None: the batch is whole (b samples).

    valid: bool, broadcastable to `per_element`, or None. The sum then runs over the valid
    elements (the others are replaced by 0 with `torch.where`, so they pass no gradient) and
    "elements per sample" counts the valid elements of the shard divided by b: the mean over
    the valid elements (exact for the sharded batch too when every sample has the same mask,
    e.g. a detector mask `(N, N)`).
    """
    b = per_element.shape[0] if per_element.ndim else 1
    total = batch_size if batch_size is not None else b
    if valid is None:
        per_sample = per_element.numel() // max(b, 1)
        return per_element.sum() * (1.0 / (total * per_sample))
    valid = torch.broadcast_to(valid.to(device=per_element.device, dtype=torch.bool), per_element.shape)
    masked = torch.where(valid, per_element, torch.zeros_like(per_element))
    # 1 / (batch_size · valid elements per sample), in float64 on the device (no host sync);
    # an all-True mask gives the unmasked value bit for bit, an all-False one 0 (not NaN)
    n_valid = valid.sum(dtype=torch.float64).clamp_min(1)
    inv = (1.0 / (n_valid * (total / max(b, 1)))).to(masked.dtype)
    return masked.sum() * inv


def _masked(valid: Tensor | None, x: Tensor, fill: float) -> Tensor:
    """x with `fill` wherever `valid` is False (no gradient reaches those elements)."""
    if valid is None:
        return x
    valid = valid.to(device=x.device, dtype=torch.bool)
    return torch.where(valid, x, torch.full_like(x, fill))


def poisson_nll_elementwise(pred_intensity: Tensor, observed_intensity: Tensor) -> Tensor:
    """Î − y·log Î per element (TF `log_poisson_loss(y, log Î, compute_full_loss=False)`).

    No Stirling / lgamma term, so values can be negative. y·log Î is `xlogy`: 0 where y = 0
    (even if Î = 0). Î must be > 0 where y > 0 (TF has no epsilon either). The gradient in Î is
    1 − y/Î: zero at Î = y, and 1 (finite) where y = 0 and Î > 0.
    """
    _check_same_shape("poisson_nll", pred_intensity, observed_intensity)
    return pred_intensity - torch.xlogy(observed_intensity, pred_intensity)


def poisson_nll(
    pred_intensity: Tensor,
    observed_intensity: Tensor,
    form: NLLForm = "mean",
    *,
    batch_size: int | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Poisson negative log-likelihood of observed counts y under predicted rates Î, a scalar.

    pred_intensity, observed_intensity: same shape `(B, ...)`, e.g. `(B, C, N, N)`, photons.
    form "mean" (Keras-3 era K1/K2): mean over ALL elements of Î − y·log Î.
    form "full_sum" (SavedModel era S1): per sample b, Σ over the non-batch axes of
    Î − y·log Î + lgamma(y + 1) (= −log Poisson(y; Î)), then the mean over the batch. Same
    gradient direction as "mean", N²·C times larger.
    batch_size: the whole batch's size when this is a shard of it (see `batch_mean`).
    valid: bool broadcastable to the inputs (e.g. `(N, N)`, True = measured) or None. Masked
    pixels are left out: "mean" averages over the valid elements only, "full_sum" sums over
    the valid pixels only (the likelihood of the measured pixels); their gradient is exactly 0.
    """
    if valid is not None:
        _check_same_shape("poisson_nll", pred_intensity, observed_intensity)
        # Î = 1, y = 0 at masked pixels: finite values and gradients whatever they held
        pred_intensity = _masked(valid, pred_intensity, 1.0)
        observed_intensity = _masked(valid, observed_intensity, 0.0)
    elementwise = poisson_nll_elementwise(pred_intensity, observed_intensity)
    if form == "mean":
        return batch_mean(elementwise, batch_size, valid)
    if form == "full_sum":
        if elementwise.ndim < 1:
            raise ValueError("poisson_nll: form 'full_sum' needs a batch axis")
        full = elementwise + torch.lgamma(observed_intensity + 1)
        full = _masked(valid, full, 0.0)
        return batch_mean(full.reshape(full.shape[0], -1).sum(dim=1), batch_size)
    raise ValueError(f"poisson_nll: form must be 'mean' or 'full_sum', got {form!r}")


def mae(pred: Tensor, target: Tensor, *, batch_size: int | None = None, valid: Tensor | None = None) -> Tensor:
    """Mean absolute error mean |pred − target| over all elements (Keras 'mean_absolute_error').

    Complex inputs use the modulus of the complex difference. batch_size: see `batch_mean`.
    valid: bool broadcastable to the inputs (True = use) or None; the mean then runs over the
    valid elements and masked ones pass no gradient.
    """
    _check_same_shape("mae", pred, target)
    diff = pred - target
    if valid is not None:
        diff = _masked(valid, diff, 0.0)
    return batch_mean(torch.abs(diff), batch_size, valid)


def complex_mae(target: Tensor, pred: Tensor, *, batch_size: int | None = None) -> Tensor:
    """MAE of the amplitudes plus MAE of the phases (radians) of two complex tensors.

    Argument order follows TF (`target` first). Phases are not unwrapped.
    """
    _check_same_shape("complex_mae", pred, target)
    return mae(torch.abs(pred), torch.abs(target), batch_size=batch_size) + mae(
        torch.angle(pred), torch.angle(target), batch_size=batch_size
    )


def total_variation(obj: Tensor) -> Tensor:
    """Σ of squared forward differences along the last two axes (rows and columns), summed over
    every leading axis, of the real part plus the imaginary part (spec §4.7).

    obj: `(..., H, W)` real or complex. Returns a 0-d real tensor (not normalised by size).
    """
    parts = (obj.real, obj.imag) if obj.is_complex() else (obj,)
    total = obj.new_zeros((), dtype=parts[0].dtype)
    for p in parts:
        dy = p[..., 1:, :] - p[..., :-1, :]
        dx = p[..., :, 1:] - p[..., :, :-1]
        total = total + (dy**2).sum() + (dx**2).sum()
    return total


def realspace_loss(
    pred: Tensor,
    target: Tensor | None = None,
    *,
    tv_weight: float = 0.0,
    mae_weight: float = 0.0,
    center_mask: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """TF `realspace_loss` on the trimmed object: tv_weight·TV(pred) + mae_weight·complex_mae.

    pred, target: `(B, N, N)` complex object patches. center_mask: `(N, N)` real; when given
    (TF: whenever probe.big is False) pred is multiplied by it first. Terms with weight 0 are
    skipped (target may then be None). The caller multiplies by `realspace_weight`. TV is a sum
    over the batch; batch_size (for the MAE) as in `batch_mean`.
    """
    if center_mask is not None:
        pred = pred * center_mask.to(device=pred.device, dtype=pred.real.dtype)
    loss = pred.real.new_zeros(())
    if tv_weight:
        loss = loss + tv_weight * total_variation(pred)
    if mae_weight:
        if target is None:
            raise ValueError("realspace_loss: mae_weight > 0 needs a target")
        loss = loss + mae_weight * complex_mae(target, pred, batch_size=batch_size)
    return loss


__all__ = [
    "batch_mean",
    "poisson_nll",
    "poisson_nll_elementwise",
    "mae",
    "complex_mae",
    "total_variation",
    "realspace_loss",
]
