"""Distributed glue of the training loop: shards of a global batch, the global loss, rank-0 writes.

Every helper takes `info` (`distributed.DistInfo` of this rank, or None in a single process) and
is the identity in a single process. `batch_size` is the GLOBAL batch: every rank draws the same
permutation, takes the rank-strided slice of each global batch (`shards`), weights its loss by
its share, and the gradient all-reduce SUMS the shards' gradients (`distributed.sum_gradients_hook`).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import distributed as dist_
from ..distributed import DistInfo
from ..errors import ConfigError, PtychoPINNError

#: one micro-batch of this rank: (its group numbers, its weight, B = the global batch's size)
Shard = tuple[list[int], float, int]


def shards(order: np.ndarray, batch_size: int, info: DistInfo | None) -> list[Shard]:
    """Per global batch of `order`: (this rank's groups, weight, B = the global batch's size).

    Single process: the whole batch, weight 1. Distributed: the rank-strided slice; an empty
    slice becomes the batch's first group with weight 0 (every rank must take part in each
    gradient all-reduce).
    """
    plan = []
    for i in range(0, len(order), batch_size):
        g = order[i : i + batch_size]
        B = len(g)
        if info is None:
            plan.append((g.tolist(), 1.0, B))
            continue
        mine = dist_.shard_batch(g, info.rank, info.world_size)
        if mine.size:
            plan.append((mine.tolist(), 1.0, B))
        else:
            plan.append(([int(g[0])], 0.0, B))
    return plan


def windows(order: np.ndarray, batch_size: int, accumulate: int, info: DistInfo | None) -> list[list[Shard]]:
    """The optimiser steps of one epoch: per step, its micro-batches as `shards` gives them, with
    B = the step's whole window (up to accumulate·batch_size groups), so the micro-batch losses
    add up to the loss of the window as one batch."""
    span = batch_size * accumulate
    steps = []
    for i in range(0, len(order), span):
        window = order[i : i + span]
        steps.append([(ids, weight, len(window)) for ids, weight, _ in shards(window, batch_size, info)])
    return steps


def global_loss(loss: torch.Tensor, parts: dict[str, torch.Tensor], info: DistInfo | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss of the whole global batch, its parts) as float64 — the shards' losses summed over ranks."""
    if info is None:
        return loss.detach().double(), {k: v.double() for k, v in parts.items()}
    keys = sorted(parts)
    stats = torch.stack([loss.detach()] + [parts[k] for k in keys]).double()
    dist_.all_reduce_sum(stats)
    return stats[0], {k: stats[i + 1] for i, k in enumerate(keys)}


def on_main(info: DistInfo | None, write: Callable[[], None]) -> None:
    """Run `write` on rank 0 only, after every rank got here; a write error is raised on all ranks."""
    if info is None:
        write()
        return
    dist_.barrier()
    error: BaseException | None = None
    if info.is_main:
        try:
            write()
        except (PtychoPINNError, OSError) as exc:
            error = exc if isinstance(exc, PtychoPINNError) else ConfigError(f"writing training outputs failed: {exc}")
    dist_.agree(error)


def wrap(model: torch.nn.Module, device: torch.device, info: DistInfo | None) -> tuple[Any, Callable[[], Any] | None]:
    """(the model as the training step calls it, its `no_sync` context factory or None).

    Distributed: `DistributedDataParallel` with the summing gradient hook; the buffers never
    change, so they are not broadcast. Single process: `model` itself, no `no_sync`.
    """
    if info is None:
        return model, None
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
    ddp_kwargs: dict[str, Any] = {sync: False}  # the keyword's name depends on the torch version
    run_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **ddp_kwargs)
    run_model.register_comm_hook(None, dist_.sum_gradients_hook)
    return run_model, run_model.no_sync


__all__ = ["Shard", "shards", "windows", "global_loss", "on_main", "wrap"]
