"""Early stopping (`TrainConfig.early_stop_patience`) on the monitored loss, per training stage."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStop:
    """Best monitored loss of the current stage, epochs since it improved, and the epoch (1-based)
    after which training stopped (None while it runs). Saved in the checkpoint as `loop.early_stop`."""

    best: float | None = None
    bad: int = 0
    stage: int = 0
    stopped_after: int | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "EarlyStop":
        return cls(**state) if state else cls()

    def state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def stopped(self) -> bool:
        return self.stopped_after is not None

    def begin_stage(self, stage: int) -> None:
        """A new stage's losses are not comparable with the last: start counting afresh."""
        if self.stage != stage:
            self.best, self.bad, self.stage = None, 0, stage

    def end_epoch(self, epoch: int, monitored: float, patience: int) -> bool:
        """After run epoch `epoch` (0-based) with loss `monitored`: True when training stops now."""
        if self.best is None or monitored < self.best:
            self.best, self.bad = monitored, 0
        else:
            self.bad += 1
        if patience and self.bad >= patience:
            self.stopped_after = epoch + 1
            return True
        return False


__all__ = ["EarlyStop"]
