"""One optimiser step over one or more micro-batches: `train_step` (public; reused by fine-tuning).

A step accumulates the gradients of its micro-batches (each loss already weighted so that they
add up to the loss of the whole window, see `batch_loss(batch_size=...)`), optionally clips
the global gradient norm, and applies the optimiser (through the AMP grad scaler when given).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch


class NonFiniteLoss(ArithmeticError):
    """The loss of a micro-batch was NaN or infinite (`value`, `micro` = its index in the step)."""

    def __init__(self, value: float, micro: int) -> None:
        super().__init__(f"loss became {value} (micro-batch {micro + 1})")
        self.value = value
        self.micro = micro


def grad_norm(params: Iterable[torch.Tensor], exact: bool = False) -> float:
    """Global L2 norm of the parameters' gradients (float64).

    exact: sum the squares with numpy on the CPU (pairwise, single-threaded), so the norm — and
    a clipped step — does not depend on the thread count (the `exact_gradients` guarantee).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if exact:
        total = math.fsum(float(np.sum(np.square(g.detach().double().cpu().numpy()))) for g in grads)
    else:
        total = float(sum(torch.linalg.vector_norm(g.detach(), dtype=torch.float64).square() for g in grads))
    return math.sqrt(total)


def clip_gradients(params: Sequence[torch.Tensor], max_norm: float, exact: bool = False) -> float:
    """Scale the gradients in place so their global L2 norm is at most `max_norm` (torch's
    `clip_grad_norm_` rule: × max_norm/(norm + 1e-6) when larger); returns the norm before."""
    norm = grad_norm(params, exact)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coef)
    return norm


def train_step(
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Any],
    loss_of: Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    *,
    params: Sequence[torch.Tensor] | None = None,
    scaler: Any = None,
    clip_grad_norm: float = 0.0,
    exact: bool = False,
    no_sync: Callable[[], Any] | None = None,
    reduce: Callable[[torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], float | None]:
    """Zero the gradients, backpropagate every micro-batch, (clip,) step once.

    loss_of(micro) -> (loss 0-d, detached parts): the micro-batch's share of the step's loss;
    params: the optimised parameters (default: the optimiser's); scaler: a `torch.amp.GradScaler`
    or None; clip_grad_norm: max global gradient norm (0 = off); exact: thread-count independent
    norm (see `grad_norm`); no_sync: context factory for all micro-batches but the last
    (DistributedDataParallel.no_sync); reduce: turns a shard's (loss, parts) into the global
    ones (a collective; default: detach as float64).
    Returns (the step's loss as float64, its parts, the gradient norm before clipping or None).
    Raises NonFiniteLoss (before any backward pass of that micro-batch) on a NaN/inf loss.
    """
    if params is None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.zero_grad(set_to_none=True)
    total: torch.Tensor | None = None
    parts_total: dict[str, torch.Tensor] = {}
    last = len(micro_batches) - 1
    for i, micro in enumerate(micro_batches):
        ctx = no_sync() if (no_sync is not None and i < last) else contextlib.nullcontext()
        with ctx:
            loss, parts = loss_of(micro)
            g_loss, g_parts = reduce(loss, parts) if reduce is not None else (loss.detach().double(), {k: v.double() for k, v in parts.items()})
            if not torch.isfinite(g_loss):
                raise NonFiniteLoss(float(g_loss), i)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total = g_loss if total is None else total + g_loss
        for k, v in g_parts.items():
            parts_total[k] = parts_total.get(k, 0) + v
    norm = None
    if clip_grad_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = clip_gradients(params, clip_grad_norm, exact)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    assert total is not None, "train_step: no micro-batch"
    return total, parts_total, norm


__all__ = ["train_step", "clip_gradients", "grad_norm", "NonFiniteLoss"]
