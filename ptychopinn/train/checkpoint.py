"""The training state (`TrainingState`) and its files: checkpoint/, metrics.jsonl, the final model.

`out_dir/checkpoint/` is a native model directory (the float32 model, loadable with
`io.load_model`) plus `state.write_state`'s two files: optimiser, scheduler, RNGs, history,
float64 masters and the loop's own state under "loop" (stages, early stopping, kept best epochs,
logger). It is replaced atomically after every epoch, after the epoch's line was appended to
`out_dir/metrics.jsonl`; a resume trims metrics.jsonl back to the checkpoint's epochs. The final
model is written at `out_dir` itself (each file replaced atomically; checkpoint/ is kept).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..config import ModelConfig, config_to_dict
from ..errors import ConfigError, ModelFormatError
from ..io.atomic import atomic_directory, atomic_write, strict_json_dumps
from ..io.tensor_codec import decode_state
from . import loggers, master_weights
from . import state as st
from .best import BestKeeper
from .early_stop import EarlyStop
from .schedules import EpochSchedule

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainingState:
    """Everything a resume restores: the live training objects and the loop's progress.

    model (float64 conv masters with exact gradients), optimizer (Adam), scheduler (the per-epoch
    learning-rate schedule), scaler (`torch.amp.GradScaler` with amp "fp16", else None),
    np_rng (the epoch permutations), epochs_done, history (one row per epoch, as metrics.jsonl),
    early_stop, keeper (`--keep-best`, or None), logger (rank 0's metrics logger), stages (the
    run's stages as saved: a resume with others is refused) and summary (the run's description,
    saved as the models' extra "training").
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: EpochSchedule
    scaler: torch.amp.GradScaler | None
    np_rng: np.random.Generator
    stages: list[dict[str, Any]]
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    keeper: BestKeeper | None = None
    logger: loggers.Logger = field(default_factory=loggers.Logger)
    summary: dict[str, Any] = field(default_factory=dict)

    def loop_state(self) -> dict[str, Any]:
        """The loop's own JSON state, saved under "loop" in the checkpoint."""
        return {
            "stages": self.stages,
            "early_stop": self.early_stop.state(),
            "best": self.keeper.state() if self.keeper is not None else None,
            "logger": self.logger.state(),
        }


# -- writing ----------------------------------------------------------------------------------
def save_native(model: torch.nn.Module, path: Path, extra: dict[str, Any]) -> None:
    """A native model directory of `model` at `path` (float32, whatever the masters)."""
    io.save_model(master_weights.float32_model(model), path, extra=extra)


def write_checkpoint(out_dir: Path, state: TrainingState) -> None:
    """Atomically replace `out_dir/checkpoint/` with `state` (after `state.epochs_done` epochs)."""
    tensors, opt_info = st.optimizer_state(state.optimizer)
    rng_t, rng_info = st.rng_state(state.np_rng)
    tensors.update(rng_t)
    tensors.update(master_weights.master_tensors(state.model))  # the float32 model file rounds them
    info: dict[str, Any] = {
        "epoch": state.epochs_done,
        "optimizer": opt_info,
        "scheduler": state.scheduler.state_dict(),
        "history": state.history,
        "rng": rng_info,
        "loop": state.loop_state(),
    }
    if state.scaler is not None:
        info["grad_scaler"] = {k: v for k, v in state.scaler.state_dict().items()}
    with atomic_directory(out_dir / CHECKPOINT_DIR) as tmp:
        save_native(state.model, tmp, {"training": state.summary})
        st.write_state(tmp, tensors, info)


def append_metrics(out_dir: Path, row: dict[str, Any]) -> None:
    """One strict-JSON line (a NaN loss as null) appended to `out_dir/metrics.jsonl`, fsynced."""
    with open(out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(strict_json_dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def epoch_files(out_dir: Path, state: TrainingState, row: dict[str, Any]) -> None:
    """The epoch's metrics.jsonl line, then the checkpoint (a resume trims what lies past it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    append_metrics(out_dir, row)
    write_checkpoint(out_dir, state)


def end_epoch(out_dir: Path, state: TrainingState, row: dict[str, Any], monitored: float) -> None:
    """Rank 0 after each epoch: the kept best models, the logger's row, metrics.jsonl, checkpoint/."""
    epoch = state.epochs_done
    keeper = state.keeper
    if keeper is not None:
        extra = {"training": {**state.summary, "epoch": epoch}}
        keeper.consider(epoch, monitored, lambda path: save_native(state.model, path, extra))
    state.logger.log_epoch(row)  # before the checkpoint: a resume trims what lies past it
    epoch_files(out_dir, state, row)
    if keeper is not None:
        keeper.commit()


def write_final(out_dir: Path, model: torch.nn.Module, extra: dict[str, Any]) -> None:
    """The native model files at `out_dir/` (each file replaced atomically; checkpoint/ is kept)."""
    staged = out_dir / ".final-model.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        save_native(model, staged, extra)
        for f in sorted(staged.iterdir()):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


# -- resuming ---------------------------------------------------------------------------------
def restore(out_dir: Path, state: TrainingState, model_config: ModelConfig) -> dict[str, Any]:
    """Load `out_dir/checkpoint/` into `state` (weights, optimiser, scheduler, scaler, RNGs,
    epochs_done, history, early_stop); returns the saved loop state (stages, best, logger)."""
    ckpt = out_dir / CHECKPOINT_DIR
    if not ckpt.is_dir():
        raise ConfigError(f"{ckpt}: no checkpoint to resume from (resume=True needs a checkpoint; train without it first)")
    cfg_path = ckpt / "config.json"
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{cfg_path}: cannot read the checkpoint's model config ({exc})") from exc
    if saved.get("model_config") != config_to_dict(model_config):
        raise ConfigError(f"{cfg_path}: key 'model_config' differs from the requested ModelConfig; cannot resume")
    load_weights(state.model, ckpt / "model.safetensors")
    tensors, info = st.read_state(ckpt)
    master_weights.load_master_tensors(state.model, tensors)
    st.load_optimizer_state(state.optimizer, tensors, info["optimizer"])
    state.scheduler.load_state_dict(info["scheduler"])
    if state.scaler is not None and "grad_scaler" in info:
        state.scaler.load_state_dict(info["grad_scaler"])
    st.restore_rng_state(state.np_rng, tensors, info["rng"])
    loop = dict(info.get("loop", {}))
    state.epochs_done, state.history = int(info["epoch"]), list(info.get("history", []))
    state.early_stop = EarlyStop.from_state(loop.get("early_stop"))
    return loop


def check_resumable(out_dir: Path, stages: list[dict[str, Any]], loop: dict[str, Any]) -> None:
    """The requested stages must be those the checkpoint was trained with."""
    saved = loop.get("stages") or []
    if json.loads(json.dumps(saved)) != json.loads(json.dumps(stages)):
        raise ConfigError(
            f"{out_dir / CHECKPOINT_DIR}: key 'loop.stages' ({len(saved)} stages) differs from the requested stages ({len(stages)}); "
            "resume with the same --stages"
        )


def truncate_metrics(out_dir: Path, epochs_done: int) -> None:
    """Keep the first `epochs_done` lines of metrics.jsonl (a crash may have left one more)."""
    path = out_dir / METRICS_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()[:epochs_done]
    with atomic_write(path, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy the native `model.safetensors` weights into `model` in place (strict)."""
    try:
        weights, _ = decode_state(path.read_bytes(), str(path))
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read checkpoint weights ({exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    if missing:
        raise ModelFormatError(f"{path}: missing tensors {', '.join(missing[:4])}")
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(weights[name].to(target.dtype))


__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "TrainingState",
    "save_native",
    "write_checkpoint",
    "append_metrics",
    "epoch_files",
    "end_epoch",
    "write_final",
    "restore",
    "check_resumable",
    "truncate_metrics",
    "load_weights",
]
