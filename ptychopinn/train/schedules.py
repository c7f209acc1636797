"""Learning-rate schedules and training stages, one learning rate per epoch (JSON-able state).

The run is a sequence of stages (`TrainConfig.stages`, or one implicit stage of `epochs` at
`learning_rate`). Each stage starts at its own learning rate L and runs its own schedule over its
own epochs; a linear warm-up of W = `warmup_epochs` epochs opens the first stage. For epoch e of
a stage of E epochs (e counted from 0, W = 0 after the first stage), r = `min_lr_ratio`:

- warm-up (e < W):  lr = L·(e+1)/(W+1)
- "cosine":         lr = L·(r + (1−r)·(1 + cos(π·t))/2),  t = (e−W)/(E−W)
- "exponential":    lr = max(L·γ^(e−W), r·L),             γ = `lr_gamma`
- "plateau":        starts at L after the warm-up; ReduceLROnPlateau (factor `plateau_factor`,
                    patience `plateau_patience`, floor `min_lr`) on the monitored loss after
                    every epoch; a new stage starts a fresh one.

`EpochSchedule.state_dict()` is plain JSON, saved in the checkpoint, so `--resume` continues
mid-stage with the same learning rates.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..config import TrainConfig


def stage_bounds(tc: TrainConfig) -> list[tuple[int, int]]:
    """(first epoch, epochs) of each stage, epochs counted from 0 over the whole run."""
    lengths = [s.epochs for s in tc.stages] if tc.stages else [tc.epochs]
    bounds, start = [], 0
    for n in lengths:
        bounds.append((start, n))
        start += n
    return bounds


def stage_of(tc: TrainConfig, epoch: int) -> tuple[int, int]:
    """(stage index, epoch within that stage) of run epoch `epoch` (0-based)."""
    for i, (start, n) in enumerate(stage_bounds(tc)):
        if epoch < start + n:
            return i, epoch - start
    raise ValueError(f"epoch {epoch} is past the last stage ({tc.epochs} epochs)")


def scheduled_lr(tc: TrainConfig, epoch: int) -> float | None:
    """The closed-form learning rate of run epoch `epoch` (0-based), or None where the plateau
    schedule decides (after the warm-up)."""
    index, e = stage_of(tc, epoch)
    stage = tc.stage_config(index)
    L = stage.learning_rate
    E = stage.epochs
    W = tc.warmup_epochs if index == 0 else 0
    if e < W:
        return L * (e + 1) / (W + 1)
    r = tc.min_lr_ratio
    if tc.scheduler == "cosine":
        t = (e - W) / (E - W)
        return L * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * t)))
    if tc.scheduler == "exponential":
        return max(L * tc.lr_gamma ** (e - W), r * L)
    return None


class EpochSchedule:
    """Sets the optimiser's learning rate at the start of each epoch (`begin_epoch`) and feeds
    the plateau schedule the monitored loss at its end (`end_epoch`)."""

    def __init__(self, tc: TrainConfig, optimizer: torch.optim.Optimizer) -> None:
        self.tc = tc
        self.optimizer = optimizer
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.plateau_stage = -1

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _fresh_plateau(self, stage: int) -> None:
        tc = self.tc
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience, min_lr=tc.min_lr
        )
        self.plateau_stage = stage

    def begin_epoch(self, epoch: int) -> float:
        """Install the learning rate of run epoch `epoch` (0-based); returns it."""
        lr = scheduled_lr(self.tc, epoch)
        if lr is not None:
            self._set(lr)
            return lr
        index, e = stage_of(self.tc, epoch)
        W = self.tc.warmup_epochs if index == 0 else 0
        if e == W:  # the plateau part of a stage starts at the stage's learning rate
            self._set(self.tc.stage_config(index).learning_rate)
            self._fresh_plateau(index)
        elif self.plateau is None or self.plateau_stage != index:
            self._fresh_plateau(index)
        return float(self.optimizer.param_groups[0]["lr"])

    def end_epoch(self, epoch: int, monitored: float) -> None:
        """After run epoch `epoch`: one ReduceLROnPlateau step on `monitored` (plateau only)."""
        if scheduled_lr(self.tc, epoch) is None and self.plateau is not None:
            self.plateau.step(monitored)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.tc.scheduler,
            "plateau_stage": self.plateau_stage,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "kind" not in state:  # checkpoints before schedules: a bare ReduceLROnPlateau state
            state = {"kind": "plateau", "plateau_stage": 0, "plateau": state}
        if state.get("plateau") is not None:
            self._fresh_plateau(int(state.get("plateau_stage", 0)))
            assert self.plateau is not None
            self.plateau.load_state_dict(state["plateau"])


__all__ = ["EpochSchedule", "scheduled_lr", "stage_of", "stage_bounds"]
