"""Self-supervised fine-tuning: adapt a trained network to the scan being reconstructed.

The unsupervised PINN objective of training (`ptychopinn.train.losses.batch_loss`: Poisson NLL
of the model's predicted intensities against the scan's own counts, no ground truth) drives a
few Adam epochs over the scan's groups, on a deep copy of the model, so the caller's model (and
the saved model files) are untouched unless the copy is saved on purpose (`save_dir`).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch

from .. import io
from ..config import ModelConfig, TrainConfig, config_from_dict
from ..errors import ConfigError, DataError
from ..train.loop import ADAM_EPS
from ..train.losses import batch_loss, needs_labels

log = logging.getLogger("ptychopinn")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of `finetune` (`reconstruct(..., finetune=FinetuneConfig(epochs=5))`).

    epochs: passes over the scan's groups (0 = the network as saved).
    batch_size: groups per Adam step; learning_rate: Adam's (a fine-tune: below training's 1e-3).
    seed: shuffling; progress: tqdm bar per epoch.
    The loss weights are the model's own training objective (its saved TrainConfig when the
    model carries one, else the PINN default: Poisson NLL alone); supervised terms are refused.
    """

    epochs: int = 0
    batch_size: int = 16
    learning_rate: float = 3e-4
    seed: int = 0
    progress: bool = False

    def validate(self) -> None:
        if not isinstance(self.epochs, (int, np.integer)) or self.epochs < 0:
            raise ConfigError(f"FinetuneConfig.epochs={self.epochs!r}: expected an integer >= 0")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ConfigError(f"FinetuneConfig.batch_size={self.batch_size!r}: expected an integer >= 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"FinetuneConfig.learning_rate={self.learning_rate!r}: expected a number > 0")


def objective(extra: dict[str, Any] | None) -> TrainConfig:
    """The unsupervised TrainConfig to fine-tune with: the model's saved one when it is a PINN
    objective (ground-truth terms dropped), else `TrainConfig()` (Poisson NLL)."""
    saved = ((extra or {}).get("training") or {}).get("train_config")
    tc = TrainConfig()
    if saved:
        try:
            tc = config_from_dict(TrainConfig, saved)
        except (ConfigError, TypeError):
            tc = TrainConfig()
    if tc.model_type != "pinn" or needs_labels(tc):
        tc = TrainConfig(nll_weight=tc.nll_weight or 1.0, mae_weight=tc.mae_weight if tc.model_type == "pinn" else 0.0)
    return tc


def finetune(
    model: torch.nn.Module,
    dataset: Any,
    config: FinetuneConfig,
    *,
    extra: dict[str, Any] | None = None,
    device: torch.device | None = None,
    save_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(fine-tuned copy of `model` in eval mode, summary {"epochs", "loss" per epoch, "seconds"}).

    dataset: the inference `data.GroupDataset` of the scan (x = f·s·d, sqrt-photons; offsets).
    save_dir: also write the fine-tuned model there (`io.save_model`, native format).
    """
    config.validate()
    if config.epochs == 0:
        return model, {"epochs": 0, "loss": [], "seconds": 0.0}
    dev = device or next(model.parameters()).device
    tuned = copy.deepcopy(model).to(dev)
    tuned.train()
    params = [p for p in tuned.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("finetune: the model has no trainable parameters")
    tc = objective(extra)
    mcfg = cast(ModelConfig, tuned.config)  # a PtychoPINN's config (reconstruct may not import ptychopinn.model)
    opt = torch.optim.Adam(params, lr=config.learning_rate, eps=ADAM_EPS)
    n = len(dataset)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    bar = None
    if config.progress:
        from tqdm.auto import tqdm  # lazy: only with a progress bar (tqdm.auto probes for notebooks on import)

        bar = tqdm(total=config.epochs, desc="finetune", unit="epoch", leave=False)
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        order = rng.permutation(n)
        total, seen = 0.0, 0
        for s in range(0, n, config.batch_size):
            b = np.sort(order[s : s + config.batch_size])
            batch = dataset.batch(b)
            x = batch["x"].to(dev)
            offsets = batch["offsets"].to(dev)
            loss, _ = batch_loss(tuned, x, offsets, None, mcfg, tc)
            if not torch.isfinite(loss):
                raise DataError(f"finetune: loss became {float(loss)} at epoch {epoch + 1} (check the data scale)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
        losses.append(total / max(seen, 1))
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.5g}")
            bar.update(1)
    if bar is not None:
        bar.close()
    tuned.eval()
    summary: dict[str, Any] = {"epochs": config.epochs, "loss": losses, "seconds": time.perf_counter() - t0, "config": asdict(config)}
    if save_dir is not None:
        info = dict(extra or {})
        info["finetune"] = summary
        io.save_model(tuned, save_dir, extra=info)
        summary["saved"] = str(save_dir)
    return tuned, summary


__all__ = ["FinetuneConfig", "finetune", "objective"]
