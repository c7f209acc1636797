"""`train`: a plain PyTorch training loop for PtychoPINN with exact resume (spec §4.7, §7).

Adam (Keras ε = 1e-7) with a per-epoch learning-rate schedule over stages (`schedules`: plateau
on the monitored loss, exponential or cosine, warm-up), early stopping, `--keep-best` (`best`),
gradient accumulation and clipping (`step.train_step`); the validation groups are a
region of the scan (`data.split_by_region`), so no diffraction pattern is on both sides.
Every epoch appends one JSON line to `out_dir/metrics.jsonl` (and a row to the chosen logger,
`loggers`) and atomically replaces
`out_dir/checkpoint/` (model + optimiser/scheduler/RNG state, no pickle). The final model is a
native model directory at `out_dir` (`io.save_model`).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import data, io, physics
from .. import distributed as dist_
from ..config import DataConfig, ModelConfig, TrainConfig, config_to_dict
from ..data import object_patches
from ..data.detector import size_hint
from ..data.inputs import as_scan, scan_label
from ..errors import ConfigError, DataError, ModelFormatError, PtychoPINNError
from ..io.atomic import atomic_directory, atomic_write, strict_json_dumps
from ..io.device import resolve_device
from ..io.tensor_codec import decode_state
from ..kernels import center_mask
from ..model import PtychoPINN
from ..model.generators import get_generator
from . import loggers, master_weights
from . import state as st
from .best import BestKeeper
from .inputs import normalised_probe_modes, resolve_nphotons
from .losses import batch_loss, detector_valid, needs_labels
from .schedules import EpochSchedule, stage_of
from .step import NonFiniteLoss, train_step

log = logging.getLogger("ptychopinn")

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
#: Keras' Adam epsilon (TF used it; torch's default is 1e-8)
ADAM_EPS = 1e-7


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


class _BatchView(torch.utils.data.Dataset):
    """Indexes a `GroupDataset` by a list of group numbers → one batched dict (one gather)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, which: list[int]) -> dict[str, torch.Tensor]:
        return self.dataset.batch(which)


def _validate(tc: TrainConfig) -> None:
    """ConfigError on an out-of-range setting (TrainConfig checks itself on construction)."""
    tc.check()


@contextlib.contextmanager
def _determinism(enabled: bool, seed: int) -> Iterator[None]:
    """Seed torch/numpy/python and force deterministic kernels for the block.

    Restored after the block: the python, numpy and torch CPU generators (and the CUDA ones when
    CUDA was initialised on entry), the deterministic-algorithm and cuDNN flags, and
    `CUBLAS_WORKSPACE_CONFIG` (removed again when this set it).
    """
    if not enabled:
        yield
        return
    py_state, np_state, cpu_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    set_cublas = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    prev_alg = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_det = torch.backends.cudnn.deterministic
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_alg, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_det
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if set_cublas:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _autocast_factory(amp: str, device: torch.device) -> Callable[[], Any] | None:
    if amp == "none":
        return None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _build_model(model_config: ModelConfig, probe: np.ndarray, scale: float, seed: int, device: torch.device) -> torch.nn.Module:
    """PtychoPINN with weights drawn from a private generator state seeded by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PtychoPINN(model_config, probe=probe, intensity_scale=scale)
    return model.to(device)


def _save_native(model: torch.nn.Module, path: Path, extra: dict[str, Any]) -> None:
    io.save_model(master_weights.float32_model(model), path, extra=extra)


def _write_checkpoint(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    np_rng: np.random.Generator,
    epoch: int,
    history: list[dict[str, Any]],
    extra: dict[str, Any],
    loop_state: dict[str, Any] | None = None,
) -> None:
    """Atomically replace `out_dir/checkpoint/` with the state after `epoch` epochs.

    loop_state: JSON state of the loop's helpers (stages, early stopping, kept best epochs,
    logger), saved under "loop"."""
    tensors, opt_info = st.optimizer_state(optimizer)
    rng_t, rng_info = st.rng_state(np_rng)
    tensors.update(rng_t)
    tensors.update(master_weights.master_tensors(model))  # the float32 model file rounds them
    info: dict[str, Any] = {
        "epoch": epoch,
        "optimizer": opt_info,
        "scheduler": scheduler.state_dict(),
        "history": history,
        "rng": rng_info,
        "loop": dict(loop_state or {}),
    }
    if scaler is not None:
        info["grad_scaler"] = {k: v for k, v in scaler.state_dict().items()}
    with atomic_directory(out_dir / CHECKPOINT_DIR) as tmp:
        _save_native(model, tmp, extra)
        st.write_state(tmp, tensors, info)


def _append_metrics(out_dir: Path, row: dict[str, Any]) -> None:
    with open(out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(strict_json_dumps(row) + "\n")  # strict JSON: a NaN loss is written as null
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_metrics(out_dir: Path, epochs_done: int) -> None:
    """Keep the first `epochs_done` lines of metrics.jsonl (a crash may have left one more)."""
    path = out_dir / METRICS_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()[:epochs_done]
    with atomic_write(path, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))


def _restore_checkpoint(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    np_rng: np.random.Generator,
    model_config: ModelConfig,
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Load `out_dir/checkpoint/` into the live objects; returns (epochs done, history, loop state)."""
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
    _load_weights(model, ckpt / "model.safetensors")
    tensors, info = st.read_state(ckpt)
    master_weights.load_master_tensors(model, tensors)
    st.load_optimizer_state(optimizer, tensors, info["optimizer"])
    scheduler.load_state_dict(info["scheduler"])
    if scaler is not None and "grad_scaler" in info:
        scaler.load_state_dict(info["grad_scaler"])
    st.restore_rng_state(np_rng, tensors, info["rng"])
    return int(info["epoch"]), list(info.get("history", [])), dict(info.get("loop", {}))


def _load_weights(model: torch.nn.Module, path: Path) -> None:
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


def _shard_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    model_config: ModelConfig,
    tc: TrainConfig,
    centre_mask: torch.Tensor | None,
    autocast: Any,
    labels_of: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None,
    batch_size: int,
    weight: float,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`batch_loss` of one (shard of a) global batch of `batch_size` groups, on `device`
    (valid: the `(N, N)` detector mask, True = measured, or None)."""
    x = batch["x"].to(device, non_blocking=True)
    offsets = batch["offsets"].to(device, non_blocking=True)
    labels = labels_of(batch).to(device) if labels_of is not None else None
    return batch_loss(
        model, x, offsets, labels, model_config, tc, centre_mask=centre_mask, autocast=autocast,
        batch_size=batch_size, weight=weight, valid=valid,
    )


def _evaluate(
    model: torch.nn.Module,
    dataset: Any,
    val_idx: np.ndarray,
    batch_size: int,
    num_workers: int,
    pin: bool,
    device: torch.device,
    model_config: ModelConfig,
    tc: TrainConfig,
    centre_mask: torch.Tensor | None,
    autocast: Any,
    labels_of: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None,
    info: Any = None,
    valid: torch.Tensor | None = None,
) -> float:
    """Mean loss over the batches of `val_idx` (weighted by batch size), no gradients.

    Distributed: the same global batches, each split across ranks and summed (`_global_loss`),
    so the value equals the single-process one.
    """
    plan = _shards(np.asarray(val_idx), batch_size, info)
    loader = _loader_of(dataset, [p[0] for p in plan], num_workers, pin)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad():
        for batch, (_, weight, B) in zip(loader, plan):
            loss, parts = _shard_loss(model, batch, device, model_config, tc, centre_mask, autocast, labels_of, B, weight, valid)
            batch_total, _ = _global_loss(loss, parts, info)
            total += batch_total * B
            count += B
    return float(total) / max(count, 1)


def _labels(scan: Any, groups: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Ground-truth object patches `(B, N, N)` complex64 at the batch's group centres.

    Cut from `scan.object` (bilinear, `data.object_patches`); gridsize-1 scans without an object
    use their per-pattern `Y`.
    """
    b = batch["index"].numpy()
    if scan.object is not None:
        return torch.from_numpy(object_patches(scan.object, groups.centres[b], scan.N))
    return torch.from_numpy(np.asarray(scan.Y[groups.indices[b, 0]], dtype=np.complex64))


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
    try:
        setup = _setup(scan_or_path, model_config, data_config, train_config, out_dir, resume, info, load)
    except PtychoPINNError as exc:
        error, setup = exc, None
    if info is not None:
        dist_.agree(error)  # every rank raises when any rank's inputs are bad
    elif error is not None:
        raise error
    assert setup is not None
    return _run(setup, info, progress)


@dataclass
class _Setup:
    """Validated inputs of one training run (see `train`)."""

    model_config: ModelConfig
    data_config: DataConfig
    tc: TrainConfig
    out: Path | None
    resume: bool
    scan: Any
    label: str
    use_labels: bool
    groups: Any
    train_idx: np.ndarray
    val_idx: np.ndarray
    probe: np.ndarray
    nphotons: float
    scale: float
    device: torch.device


def _setup(scan_or_path, model_config, data_config, train_config, out_dir, resume, info, load=None) -> _Setup:
    """Validate everything that can be checked without collectives (all ranks, same answers)."""

    model_config = model_config or ModelConfig()
    data_config = data_config or DataConfig(gridsize=model_config.gridsize)
    tc = train_config or TrainConfig()
    _validate(tc)
    if data_config.gridsize != model_config.gridsize:
        raise ConfigError(
            f"DataConfig.gridsize={data_config.gridsize} differs from ModelConfig.gridsize={model_config.gridsize}"
        )
    get_generator(model_config.generator)  # ConfigError naming the known generators
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and tc.logger != "none":
        loggers.check_available(tc.logger)
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir (the folder holding checkpoint/)")
    if out is not None and not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: output folder exists and is not empty (pass resume=True or choose a new folder)")

    scan = as_scan(scan_or_path, load, model_config.N)
    label = scan_label(scan)
    if scan.N != model_config.N:
        raise DataError(
            f"{label}: key 'diffraction' has patterns of {scan.N}x{scan.N}, expected N={model_config.N} (ModelConfig.N)"
            + size_hint(scan.N, model_config.N)
        )
    use_labels = needs_labels(tc)
    if use_labels and scan.object is None and (scan.Y is None or model_config.gridsize > 1):
        raise DataError(
            f"{label}: model_type={tc.model_type!r} needs ground truth, but the scan has no 'objectGuess'"
            + (" (and 'Y' labels only serve gridsize 1)" if scan.Y is not None else " or 'Y'")
        )
    groups = data.group_scan(scan, data_config)
    train_idx, val_idx = data.split_by_region(groups, tc.validation_fraction)
    if train_idx.size == 0:
        raise DataError(f"{label}: no training groups left after the validation split ({groups.n_groups} groups)")
    if tc.validation_fraction > 0 and val_idx.size == 0 and (info is None or info.is_main):
        log.warning("validation split produced no groups; the LR schedule follows the training loss")
    if info is not None:
        W = info.world_size
        if W > tc.batch_size:
            raise ConfigError(
                f"TrainConfig.batch_size={tc.batch_size} is the global batch and must be >= the world size {W} (each process needs a share)"
            )
        if W > train_idx.size:
            raise DataError(f"{label}: {train_idx.size} training groups for {W} processes; use fewer processes")
    nphotons = resolve_nphotons(scan, data_config)
    scale = physics.intensity_scale(nphotons, model_config.N)
    probe = normalised_probe_modes(scan, getattr(model_config, "probe_scale", 4.0))  # (N, N) or (K, N, N)
    device = resolve_device(tc.device) if info is None else dist_.rank_device(tc.device, info.local_rank)
    if tc.amp == "fp16" and device.type == "cpu":
        raise ConfigError("TrainConfig.amp='fp16' needs a GPU; use amp='bf16' on CPU")
    if tc.monitor == "val_loss" and val_idx.size == 0:
        raise ConfigError("TrainConfig.monitor='val_loss' but the validation split is empty (monitor 'loss' or raise validation_fraction)")
    return _Setup(model_config, data_config, tc, out, resume, scan, label, use_labels, groups, train_idx, val_idx, probe, nphotons, scale, device)


def _shards(order: np.ndarray, batch_size: int, info: Any) -> list[tuple[list[int], float, int]]:
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


def _run(su: _Setup, info: Any, progress: bool) -> TrainResult:
    """The training loop proper (single process or one rank of a distributed job)."""

    model_config, data_config, tc, out, scan, label = su.model_config, su.data_config, su.tc, su.out, su.scan, su.label
    groups, train_idx, val_idx, device, scale = su.groups, su.train_idx, su.val_idx, su.device, su.scale
    main = info is None or info.is_main
    W = 1 if info is None else info.world_size
    progress = progress and main
    if info is None:
        factor = float(data.normalization_factor(scan.diffraction, groups.indices, bad_pixels=scan.bad_pixels))
    else:  # each rank reads only its share of the patterns
        factor = float(dist_.normalization_factor(scan.diffraction, groups.indices, device, bad_pixels=scan.bad_pixels))
    dataset = data.GroupDataset(scan, groups, factor * scale, start_offsets=True)
    pin = device.type == "cuda"
    labels_of = (lambda batch: _labels(scan, groups, batch)) if su.use_labels else None

    exact = master_weights.resolve(tc, device)
    with _determinism(tc.deterministic or exact, tc.seed):
        model = _build_model(model_config, su.probe, scale, tc.seed, device)
        if exact:
            master_weights.promote(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=tc.learning_rate, eps=ADAM_EPS)
        schedule = EpochSchedule(tc, optimizer)
        scaler = torch.amp.GradScaler(device.type) if tc.amp == "fp16" else None
        np_rng = np.random.default_rng(tc.seed)
        history: list[dict[str, Any]] = []
        start_epoch = 0
        loop_state: dict[str, Any] = {}
        if su.resume:
            start_epoch, history, loop_state = _restore_checkpoint(out, model, optimizer, schedule, scaler, np_rng, model_config)  # type: ignore[arg-type]  # resume implies an output folder: out is not None here
            _check_resumable(out, tc, loop_state)  # type: ignore[arg-type]  # resume implies an output folder: out is not None here
            dist_.barrier()  # every rank has read the checkpoint before rank 0 touches the folder
            if main:
                _truncate_metrics(out, start_epoch)  # type: ignore[arg-type]  # resume implies an output folder: out is not None here
                log.info("resuming from %s after epoch %d", out / CHECKPOINT_DIR, start_epoch)  # type: ignore[operator]  # resume implies an output folder: out is not None here
        run_model: Any = model
        if info is not None:  # gradients averaged over ranks; buffers never change, so not broadcast
            sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
            ddp_kwargs: dict[str, Any] = {sync: False}  # the keyword's name depends on the torch version
            run_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, **ddp_kwargs
            )
            run_model.register_comm_hook(None, dist_.sum_gradients_hook)
        no_sync = run_model.no_sync if info is not None else None
        if tc.compile:
            run_model = torch.compile(run_model)
        eval_model: Any = torch.compile(model) if (tc.compile and info is not None) else run_model
        autocast = _autocast_factory(tc.amp, device)
        centre_mask = _centre_mask(model_config, device) if (tc.realspace_weight and not model_config.probe_big) else None
        valid = detector_valid(scan, device)  # ~Scan.bad_pixels: masked pixels leave the NLL/MAE
        monitor = _monitor_name(tc, val_idx)

        summary = {
            "normalization_factor": factor,
            "intensity_scale": scale,
            "nphotons": su.nphotons,
            "data_config": config_to_dict(data_config),
            "train_config": config_to_dict(tc),
            "scan": label,
            "n_groups": int(groups.n_groups),
            "n_train_groups": int(train_idx.size),
            "n_val_groups": int(val_idx.size),
            "exact_gradients": exact,
            "monitor": monitor,
        }
        if info is not None:
            summary["world_size"] = W
        stopper = dict(loop_state.get("early_stop") or {"best": None, "bad": 0, "stage": 0, "stopped_after": None})
        keeper = BestKeeper(out, tc.keep_best, monitor, loop_state.get("best")) if (out is not None and tc.keep_best) else None
        if keeper is not None and su.resume and main:
            keeper.reconcile()
        metrics_logger = loggers.make_logger(tc.logger, out, start_epoch, _flat_params(tc, model_config), loop_state.get("logger")) if main else loggers.Logger()
        C = model_config.channels
        try:
            for epoch in range(start_epoch, tc.epochs):
                if stopper["stopped_after"] is not None:
                    break
                stage_index, _ = stage_of(tc, epoch)
                stc = tc.stage_config(stage_index)  # this stage's learning rate and loss weights
                if stopper["stage"] != stage_index:  # a new stage's losses are not comparable with the last
                    stopper.update(best=None, bad=0, stage=stage_index)
                lr = schedule.begin_epoch(epoch)
                t0 = time.perf_counter()
                model.train()
                order = np_rng.permutation(train_idx)
                windows = _windows(order, tc.batch_size, tc.accumulate_grad_batches, info)
                flat = [m for w in windows for m in w]
                loader = iter(_loader_of(dataset, [m[0] for m in flat], tc.num_workers, pin))
                bar = _progress(progress, len(windows), f"epoch {epoch + 1}/{tc.epochs}")
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                parts_sum: dict[str, torch.Tensor] = {}
                seen = 0
                for step, window in enumerate(windows):
                    micro = [(next(loader), weight, Bw) for (_, weight, Bw) in window]

                    def loss_of(m: tuple[dict[str, torch.Tensor], float, int], stc: TrainConfig = stc) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                        batch, weight, Bw = m
                        return _shard_loss(run_model, batch, device, model_config, stc, centre_mask, autocast, labels_of, Bw, weight, valid)

                    try:
                        window_loss, parts, _ = train_step(
                            optimizer, micro, loss_of, params=params, scaler=scaler, clip_grad_norm=tc.clip_grad_norm,
                            exact=exact, no_sync=no_sync, reduce=lambda loss, parts: _global_loss(loss, parts, info),
                        )
                    except NonFiniteLoss as exc:
                        raise DataError(
                            f"{label}: loss became {exc.value} at epoch {epoch + 1}, step {step + 1} (check the data scale)"
                        ) from None
                    Bw = window[0][2]
                    loss_sum += window_loss * Bw
                    for k, v in parts.items():
                        parts_sum[k] = parts_sum.get(k, 0) + v * Bw
                    seen += Bw
                    if bar is not None:
                        rate = seen * C / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(loss=f"{float(window_loss):.5g}", patterns_s=f"{rate:.0f}")
                        bar.update(1)
                if bar is not None:
                    bar.close()
                train_loss = float(loss_sum) / seen
                val_loss = None
                if val_idx.size:
                    model.eval()
                    val_loss = _evaluate(
                        eval_model, dataset, val_idx, tc.batch_size, tc.num_workers, pin, device, model_config, stc,
                        centre_mask, autocast, labels_of, info, valid,
                    )
                monitored = val_loss if (monitor == "val_loss" and val_loss is not None) else train_loss
                schedule.end_epoch(epoch, monitored)
                seconds = time.perf_counter() - t0
                row = {
                    "epoch": epoch + 1,
                    "stage": stage_index + 1,
                    "loss": train_loss,
                    "val_loss": val_loss,
                    "lr": lr,
                    "parts": {k: float(v) / seen for k, v in parts_sum.items()},
                    "patterns_per_s": seen * C / max(seconds, 1e-9),
                    "seconds": seconds,
                }
                history.append(row)
                if main:
                    log.info(
                        "epoch %d/%d loss %.6g val_loss %s lr %.3g (%.1f patterns/s)",
                        epoch + 1, tc.epochs, train_loss, "n/a" if val_loss is None else f"{val_loss:.6g}", lr, row["patterns_per_s"],
                    )
                if stopper["best"] is None or monitored < stopper["best"]:
                    stopper.update(best=monitored, bad=0)
                else:
                    stopper["bad"] += 1
                if tc.early_stop_patience and stopper["bad"] >= tc.early_stop_patience:
                    stopper["stopped_after"] = epoch + 1
                    if main:
                        log.info("early stop after epoch %d: %s did not improve for %d epochs", epoch + 1, monitor, stopper["bad"])
                if out is not None:
                    def write(epoch: int = epoch, row: dict[str, Any] = row, monitored: float = monitored) -> None:
                        if keeper is not None:
                            keeper.consider(epoch + 1, monitored, lambda path: _save_native(model, path, {"training": {**summary, "epoch": epoch + 1}}))
                        state = {
                            "stages": [config_to_dict(st_) for st_ in tc.stages],
                            "early_stop": dict(stopper),
                            "best": keeper.state() if keeper is not None else None,
                            "logger": metrics_logger.state(),
                        }
                        metrics_logger.log_epoch(row)  # before the checkpoint: a resume trims what lies past it
                        _epoch_files(out, model, optimizer, schedule, scaler, np_rng, epoch + 1, history, summary, row, state)
                        if keeper is not None:
                            keeper.commit()

                    _on_main(info, write)
        finally:
            metrics_logger.close()

    if stopper["stopped_after"] is not None:
        summary["stopped_early_after_epoch"] = stopper["stopped_after"]
    if keeper is not None:
        summary["best"] = keeper.state()
    model.eval()
    master_weights.demote(model)
    summary["history"] = history
    if out is not None:
        _on_main(info, lambda: _write_final(out, model, {"training": summary}))
    return TrainResult(
        model=model,
        history=history,
        normalization_factor=factor,
        intensity_scale=scale,
        nphotons=su.nphotons,
        model_config=model_config,
        data_config=data_config,
        train_config=tc,
        n_train_groups=int(train_idx.size),
        n_val_groups=int(val_idx.size),
        device=str(device),
        out_dir=out,
        extra={"training": summary},
        groups=groups,
        train_index=train_idx,
        val_index=val_idx,
    )


def _epoch_files(out, model, optimizer, scheduler, scaler, np_rng, epochs_done, history, summary, row, loop_state=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _append_metrics(out, row)
    _write_checkpoint(out, model, optimizer, scheduler, scaler, np_rng, epochs_done, history, {"training": summary}, loop_state)


def _windows(order: np.ndarray, batch_size: int, accumulate: int, info: Any) -> list[list[tuple[list[int], float, int]]]:
    """The optimiser steps of one epoch: per step, its micro-batches as `_shards` gives them, with
    B = the step's whole window (up to accumulate·batch_size groups), so the micro-batch losses
    add up to the loss of the window as one batch."""
    span = batch_size * accumulate
    steps = []
    for i in range(0, len(order), span):
        window = order[i : i + span]
        steps.append([(ids, weight, len(window)) for ids, weight, _ in _shards(window, batch_size, info)])
    return steps


def _monitor_name(tc: TrainConfig, val_idx: np.ndarray) -> str:
    """The monitored loss ("val_loss" or "loss") for plateau, early stopping and --keep-best."""
    if tc.monitor == "auto":
        return "val_loss" if val_idx.size else "loss"
    return tc.monitor


def _flat_params(tc: TrainConfig, mc: ModelConfig) -> dict[str, Any]:
    """Flat name -> value of the run's settings (MLflow params)."""
    flat = {f"train.{k}": v for k, v in config_to_dict(tc).items()}
    flat.update({f"model.{k}": v for k, v in config_to_dict(mc).items()})
    return flat


def _check_resumable(out: Path, tc: TrainConfig, loop_state: dict[str, Any]) -> None:
    """The requested stages must be those the checkpoint was trained with."""
    saved = loop_state.get("stages") or []
    wanted = [config_to_dict(s) for s in tc.stages]
    if json.loads(json.dumps(saved)) != json.loads(json.dumps(wanted)):
        raise ConfigError(
            f"{out / CHECKPOINT_DIR}: key 'loop.stages' ({len(saved)} stages) differs from the requested stages ({len(wanted)}); "
            "resume with the same --stages"
        )


def _on_main(info: Any, write: Callable[[], None]) -> None:
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


def _global_loss(loss: torch.Tensor, parts: dict[str, torch.Tensor], info: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss of the whole global batch, its parts) as float64 — the shards' losses summed over ranks."""
    if info is None:
        return loss.detach().double(), {k: v.double() for k, v in parts.items()}
    keys = sorted(parts)
    stats = torch.stack([loss.detach()] + [parts[k] for k in keys]).double()
    dist_.all_reduce_sum(stats)
    return stats[0], {k: stats[i + 1] for i, k in enumerate(keys)}


def _loader_of(dataset: Any, batches: list[list[int]], num_workers: int, pin: bool) -> torch.utils.data.DataLoader:
    """DataLoader yielding one batched dict per list of group numbers (in the given order)."""
    return torch.utils.data.DataLoader(
        _BatchView(dataset), batch_size=None, sampler=batches, num_workers=num_workers, pin_memory=pin
    )


def _write_final(out: Path, model: torch.nn.Module, extra: dict[str, Any]) -> None:
    """The native model files at `out/` (each file replaced atomically; checkpoint/ is kept)."""
    staged = out / ".final-model.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        _save_native(model, staged, extra)
        for f in sorted(staged.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _centre_mask(model_config: ModelConfig, device: torch.device) -> torch.Tensor:
    """(N, N) float32 ones on the central N/2 square (spec §4.5): `kernels.center_mask`."""
    return center_mask(model_config.N, device=device)


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm  # lazy: only with a progress bar (tqdm.auto probes for notebooks on import)

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


__all__ = ["train", "TrainResult", "CHECKPOINT_DIR", "METRICS_FILE", "ADAM_EPS"]
