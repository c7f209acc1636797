"""`train`: a plain PyTorch training loop for PtychoPINN with exact resume (spec §4.7, §7).

Adam (Keras ε = 1e-7) with a per-epoch learning-rate schedule over stages (`schedules`: plateau
on the monitored loss, exponential or cosine, warm-up), early stopping (`early_stop`),
`--keep-best` (`best`), gradient accumulation and clipping (`step.train_step`); the validation
groups are a region of the scan (`data.split_by_region`), so no diffraction pattern is on both
sides. Every epoch appends one JSON line to `out_dir/metrics.jsonl` (and a row to the chosen
logger, `loggers`) and atomically replaces `out_dir/checkpoint/` (model + optimiser/scheduler/RNG
state, no pickle: `checkpoint`). The final model is a native model directory at `out_dir`.

The pieces: `setup` (inputs, model, optimiser, the `Run`), `checkpoint` (`TrainingState` and its
files), `ddp` (shards, the global loss, rank-0 writes); this module is the loop itself (`_fit`).
"""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist_
from ..config import DataConfig, ModelConfig, TrainConfig
from ..errors import DataError, PtychoPINNError
from . import checkpoint, ddp, master_weights, setup
from .checkpoint import CHECKPOINT_DIR, METRICS_FILE, TrainingState
from .losses import batch_loss
from .schedules import stage_of
from .setup import ADAM_EPS, Run, Setup
from .step import NonFiniteLoss, train_step

log = logging.getLogger("ptychopinn")


@dataclass
class TrainResult:
    """What `train` returns.

    model: the trained `PtychoPINN` (on the training device, eval mode);
    history: one dict per epoch (epoch, loss, val_loss, lr, parts, patterns_per_s, seconds);
    normalization_factor f and intensity_scale s used for the inputs x = f·s·d;
    out_dir: the native model directory written, or None; groups / train_index / val_index:
    the grouping and its leak-free split by scan region.
    """

    model: torch.nn.Module
    history: list[dict[str, Any]]
    normalization_factor: float
    intensity_scale: float
    nphotons: float
    model_config: ModelConfig
    data_config: DataConfig
    train_config: TrainConfig
    n_train_groups: int
    n_val_groups: int
    device: str
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the grouping used (`data.Groups`) and the group numbers of the two sides of the split
    groups: Any = None
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None


def train(
    scan_or_path: Any,
    model_config: ModelConfig | None = None,
    data_config: DataConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    load: Any = None,
) -> TrainResult:
    """Train a PtychoPINN on one scan; returns a `TrainResult` (model, history, f, s, ...).

    scan_or_path: a `data.Scan` or an NPZ/HDF5 scan path. Defaults: ModelConfig(),
    DataConfig(gridsize=model_config.gridsize), TrainConfig(). With `out_dir`, writes
    metrics.jsonl, checkpoint/ (every epoch) and the final native model (model.safetensors +
    config.json) there; nothing is created before the inputs are validated. `resume=True`
    continues from `out_dir/checkpoint/` exactly (same weights as an uninterrupted run when
    `deterministic`).

    Distributed (a `torch.distributed` default group is initialised, e.g. under `torchrun`):
    `batch_size` is the GLOBAL batch; every rank draws the same seeded permutation, takes the
    rank-strided slice of each global batch, weights its loss by its share of the batch, and
    DistributedDataParallel averages the gradients, so the model equals the single-process one up
    to float reduction order. Only rank 0 writes files, logs and shows progress.

    load: `data.LoadOptions` for reading a scan path (diffraction units, pixel size, detector
    crop/bin); the scan's bad pixels are excluded from the normalisation and filled at the input.
    """
    info = dist_.current()
    error: BaseException | None = None
    su: Setup | None = None
    try:
        su = setup.check_inputs(scan_or_path, model_config, data_config, train_config, out_dir, resume, info, load)
    except PtychoPINNError as exc:
        error = exc
    if info is not None:
        dist_.agree(error)  # every rank raises when any rank's inputs are bad
    elif error is not None:
        raise error
    assert su is not None
    return _run(su, info, progress)


def _run(su: Setup, info: dist_.DistInfo | None, progress: bool) -> TrainResult:
    """Build the run and its state (resumed from the checkpoint), fit, write the final model."""
    tc = su.tc
    exact = master_weights.resolve(tc, su.device)
    dataset, factor = setup.dataset(su, info)
    with setup.determinism(tc.deterministic or exact, tc.seed):
        state = setup.new_state(su, exact)
        loop = setup.resume(su, state, info is None or info.is_main) if su.resume else {}
        run = setup.build_run(su, info, state.model, dataset, factor, exact, progress)
        setup.attach_outputs(state, run, loop)
        try:
            _fit(run, state)
        finally:
            state.logger.close()
    return _finish(run, state)


def _fit(run: Run, state: TrainingState) -> None:
    """For each epoch: for each window of batches one optimiser step; then validate, step the
    schedule, log, early-stop and checkpoint."""
    tc = run.tc
    for epoch in range(state.epochs_done, tc.epochs):
        if state.early_stop.stopped:
            break
        stage, _ = stage_of(tc, epoch)
        stc = tc.stage_config(stage)  # this stage's learning rate and loss weights
        state.early_stop.begin_stage(stage)
        lr = state.scheduler.begin_epoch(epoch)
        t0 = time.perf_counter()
        loss, parts, seen = _train_epoch(run, state, stc, epoch, t0)
        val_loss = _validate(run, state, stc)
        monitored = val_loss if (run.monitor == "val_loss" and val_loss is not None) else loss
        state.scheduler.end_epoch(epoch, monitored)
        seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "stage": stage + 1,
            "loss": loss,
            "val_loss": val_loss,
            "lr": lr,
            "parts": parts,
            "patterns_per_s": seen * run.model_config.channels / max(seconds, 1e-9),
            "seconds": seconds,
        }
        state.history.append(row)
        state.epochs_done = epoch + 1
        _log_epoch(run, row)
        if state.early_stop.end_epoch(epoch, monitored, tc.early_stop_patience) and run.main:
            log.info("early stop after epoch %d: %s did not improve for %d epochs", epoch + 1, run.monitor, state.early_stop.bad)
        if run.out is not None:
            ddp.on_main(run.info, functools.partial(checkpoint.end_epoch, run.out, state, row, monitored))


def _train_epoch(run: Run, state: TrainingState, stc: TrainConfig, epoch: int, t0: float) -> tuple[float, dict[str, float], int]:
    """One pass over the shuffled training groups, one `train_step` per window of
    `accumulate_grad_batches` batches; returns (mean loss, mean loss parts, groups seen)."""
    tc, device = run.tc, run.device
    state.model.train()
    order = state.np_rng.permutation(run.inputs.train_idx)
    windows = ddp.windows(order, tc.batch_size, tc.accumulate_grad_batches, run.info)
    batches = iter(_loader(run, [m[0] for w in windows for m in w]))
    bar = _progress(run.progress, len(windows), f"epoch {epoch + 1}/{tc.epochs}")
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    parts_sum: dict[str, torch.Tensor] = {}
    seen = 0
    for step, window in enumerate(windows):
        micro = [(next(batches), weight, B) for (_, weight, B) in window]
        window_loss, parts = _step(run, state, stc, micro, f"epoch {epoch + 1}, step {step + 1}")
        B = window[0][2]
        loss_sum += window_loss * B
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0) + v * B
        seen += B
        if bar is not None:
            rate = seen * run.model_config.channels / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{float(window_loss):.5g}", patterns_s=f"{rate:.0f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    return float(loss_sum) / seen, {k: float(v) / seen for k, v in parts_sum.items()}, seen


Micro = tuple[dict[str, torch.Tensor], float, int]


def _step(run: Run, state: TrainingState, stc: TrainConfig, micro: list[Micro], where: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step over the window's micro-batches (batch, weight, B): (global loss, parts)."""

    def loss_of(m: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, weight, B = m
        return shard_loss(run, run.run_model, batch, stc, B, weight)

    try:
        loss, parts, _ = train_step(
            state.optimizer, micro, loss_of, params=run.params, scaler=state.scaler, clip_grad_norm=run.tc.clip_grad_norm,
            exact=run.exact, no_sync=run.no_sync, reduce=lambda loss, parts: ddp.global_loss(loss, parts, run.info),
        )
    except NonFiniteLoss as exc:
        raise DataError(f"{run.inputs.label}: loss became {exc.value} at {where} (check the data scale)") from None
    return loss, parts


def _validate(run: Run, state: TrainingState, stc: TrainConfig) -> float | None:
    """The validation loss of the epoch (eval mode), or None without a validation split."""
    if not run.inputs.val_idx.size:
        return None
    state.model.eval()
    return evaluate(run, stc)


def evaluate(run: Run, tc: TrainConfig) -> float:
    """Mean loss (objective of `tc`) over the validation groups' batches (weighted by batch size),
    no gradients.

    Distributed: the same global batches, each split across ranks and summed (`ddp.global_loss`),
    so the value equals the single-process one.
    """
    plan = ddp.shards(np.asarray(run.inputs.val_idx), run.tc.batch_size, run.info)
    loader = _loader(run, [p[0] for p in plan])
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    count = 0
    with torch.no_grad():
        for batch, (_, weight, B) in zip(loader, plan):
            loss, parts = shard_loss(run, run.eval_model, batch, tc, B, weight)
            batch_total, _ = ddp.global_loss(loss, parts, run.info)
            total += batch_total * B
            count += B
    return float(total) / max(count, 1)


def shard_loss(
    run: Run, model: Any, batch: dict[str, torch.Tensor], tc: TrainConfig, batch_size: int, weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`batch_loss` of one (shard of a) global batch of `batch_size` groups, on the run's device
    (with the run's AMP, centre mask, detector mask and labels)."""
    device = run.device
    x = batch["x"].to(device, non_blocking=True)
    offsets = batch["offsets"].to(device, non_blocking=True)
    labels = run.labels_of(batch).to(device) if run.labels_of is not None else None
    return batch_loss(
        model, x, offsets, labels, run.model_config, tc, centre_mask=run.centre_mask, autocast=run.autocast,
        batch_size=batch_size, weight=weight, valid=run.valid,
    )


def _log_epoch(run: Run, row: dict[str, Any]) -> None:
    if run.main:
        val = row["val_loss"]
        log.info(
            "epoch %d/%d loss %.6g val_loss %s lr %.3g (%.1f patterns/s)",
            row["epoch"], run.tc.epochs, row["loss"], "n/a" if val is None else f"{val:.6g}", row["lr"], row["patterns_per_s"],
        )


def _finish(run: Run, state: TrainingState) -> TrainResult:
    """The trained model in eval mode with float32 weights, the final model files, the result."""
    su, summary, model = run.inputs, state.summary, state.model
    if state.early_stop.stopped:
        summary["stopped_early_after_epoch"] = state.early_stop.stopped_after
    if state.keeper is not None:
        summary["best"] = state.keeper.state()
    model.eval()
    master_weights.demote(model)
    summary["history"] = state.history
    if su.out is not None:
        ddp.on_main(run.info, functools.partial(checkpoint.write_final, su.out, model, {"training": summary}))
    return TrainResult(
        model=model,
        history=state.history,
        normalization_factor=run.factor,
        intensity_scale=su.scale,
        nphotons=su.nphotons,
        model_config=su.model_config,
        data_config=su.data_config,
        train_config=su.tc,
        n_train_groups=int(su.train_idx.size),
        n_val_groups=int(su.val_idx.size),
        device=str(su.device),
        out_dir=su.out,
        extra={"training": summary},
        groups=su.groups,
        train_index=su.train_idx,
        val_index=su.val_idx,
    )


class _BatchView(torch.utils.data.Dataset):
    """Indexes a `GroupDataset` by a list of group numbers → one batched dict (one gather)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, which: list[int]) -> dict[str, torch.Tensor]:
        return self.dataset.batch(which)


def _loader(run: Run, batches: list[list[int]]) -> torch.utils.data.DataLoader:
    """DataLoader yielding one batched dict per list of group numbers (in the given order)."""
    return torch.utils.data.DataLoader(
        _BatchView(run.dataset), batch_size=None, sampler=batches, num_workers=run.tc.num_workers, pin_memory=run.pin
    )


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm  # lazy: only with a progress bar (tqdm.auto probes for notebooks on import)

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


__all__ = ["train", "TrainResult", "evaluate", "shard_loss", "CHECKPOINT_DIR", "METRICS_FILE", "ADAM_EPS"]
