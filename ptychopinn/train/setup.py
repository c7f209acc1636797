"""What a training run is built from: checked inputs (`check_inputs` → `Setup`), the data, the
model, optimiser, schedule and scaler (`new_state` → `checkpoint.TrainingState`), the model as the
step calls it and the objective's fixed parts (`build_run` → `Run`), determinism (`determinism`).

The model input is x = f·s·d (spec §2): f the normalisation factor over the grouped patterns
(`data.normalization_factor`, measured pixels only), s = sqrt(nphotons)/(N/2).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import data, physics
from .. import distributed as dist_
from ..config import DataConfig, ModelConfig, TrainConfig, config_to_dict
from ..data import object_patches
from ..data.detector import size_hint
from ..data.inputs import as_scan, scan_label
from ..distributed import DistInfo
from ..errors import ConfigError, DataError
from ..io.device import resolve_device
from ..kernels import center_mask
from ..model import PtychoPINN
from ..model.generators import get_generator
from . import checkpoint, ddp, loggers, master_weights
from .best import BestKeeper
from .checkpoint import CHECKPOINT_DIR, TrainingState
from .inputs import normalised_probe_modes, resolve_nphotons
from .losses import detector_valid, needs_labels
from .schedules import EpochSchedule

log = logging.getLogger("ptychopinn")

#: Keras' Adam epsilon (TF used it; torch's default is 1e-8)
ADAM_EPS = 1e-7

Labels = Callable[[dict[str, torch.Tensor]], torch.Tensor]


# -- inputs -----------------------------------------------------------------------------------
@dataclass
class Setup:
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


def check_inputs(
    scan_or_path: Any,
    model_config: ModelConfig | None,
    data_config: DataConfig | None,
    train_config: TrainConfig | None,
    out_dir: str | os.PathLike[str] | None,
    resume: bool,
    info: DistInfo | None,
    load: Any = None,
) -> Setup:
    """Validate everything that can be checked without collectives (all ranks, same answers);
    nothing is written. Defaults as `train`; the TrainConfig validated itself on construction."""
    mc, dc, tc = _configs(model_config, data_config, train_config)
    out = Path(out_dir) if out_dir is not None else None
    _check_out(out, tc, resume)
    scan = as_scan(scan_or_path, load, mc.N)
    label = scan_label(scan)
    use_labels = _check_scan(scan, label, mc, tc)
    groups = data.group_scan(scan, dc)
    train_idx, val_idx = _split(groups, label, tc, info)
    nphotons = resolve_nphotons(scan, dc)
    scale = physics.intensity_scale(nphotons, mc.N)
    probe = normalised_probe_modes(scan, getattr(mc, "probe_scale", 4.0))  # (N, N) or (K, N, N)
    device = resolve_device(tc.device) if info is None else dist_.rank_device(tc.device, info.local_rank)
    if tc.amp == "fp16" and device.type == "cpu":
        raise ConfigError("TrainConfig.amp='fp16' needs a GPU; use amp='bf16' on CPU")
    if tc.monitor == "val_loss" and val_idx.size == 0:
        raise ConfigError("TrainConfig.monitor='val_loss' but the validation split is empty (monitor 'loss' or raise validation_fraction)")
    return Setup(mc, dc, tc, out, resume, scan, label, use_labels, groups, train_idx, val_idx, probe, nphotons, scale, device)


def _configs(
    model_config: ModelConfig | None, data_config: DataConfig | None, train_config: TrainConfig | None
) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    model_config = model_config or ModelConfig()
    data_config = data_config or DataConfig(gridsize=model_config.gridsize)
    if data_config.gridsize != model_config.gridsize:
        raise ConfigError(
            f"DataConfig.gridsize={data_config.gridsize} differs from ModelConfig.gridsize={model_config.gridsize}"
        )
    get_generator(model_config.generator)  # ConfigError naming the known generators
    return model_config, data_config, train_config or TrainConfig()


def _check_out(out: Path | None, tc: TrainConfig, resume: bool) -> None:
    if out is not None and tc.logger != "none":
        loggers.check_available(tc.logger)
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir (the folder holding checkpoint/)")
    if out is not None and not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: output folder exists and is not empty (pass resume=True or choose a new folder)")


def _check_scan(scan: Any, label: str, mc: ModelConfig, tc: TrainConfig) -> bool:
    """DataError when the scan does not fit the model or the objective; returns whether the
    objective needs ground-truth labels."""
    if scan.N != mc.N:
        raise DataError(
            f"{label}: key 'diffraction' has patterns of {scan.N}x{scan.N}, expected N={mc.N} (ModelConfig.N)"
            + size_hint(scan.N, mc.N)
        )
    use_labels = needs_labels(tc)
    if use_labels and scan.object is None and (scan.Y is None or mc.gridsize > 1):
        raise DataError(
            f"{label}: model_type={tc.model_type!r} needs ground truth, but the scan has no 'objectGuess'"
            + (" (and 'Y' labels only serve gridsize 1)" if scan.Y is not None else " or 'Y'")
        )
    return use_labels


def _split(groups: Any, label: str, tc: TrainConfig, info: DistInfo | None) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) group numbers: a region of the scan each (`data.split_by_region`)."""
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
    return train_idx, val_idx


# -- data -------------------------------------------------------------------------------------
def dataset(su: Setup, info: DistInfo | None) -> tuple[data.GroupDataset, float]:
    """(the groups as model inputs x = f·s·d, the normalisation factor f)."""
    scan, groups = su.scan, su.groups
    if info is None:
        factor = float(data.normalization_factor(scan.diffraction, groups.indices, bad_pixels=scan.bad_pixels))
    else:  # each rank reads only its share of the patterns
        factor = float(dist_.normalization_factor(scan.diffraction, groups.indices, su.device, bad_pixels=scan.bad_pixels))
    return data.GroupDataset(scan, groups, factor * su.scale, start_offsets=True), factor


def labels(scan: Any, groups: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Ground-truth object patches `(B, N, N)` complex64 at the batch's group centres.

    Cut from `scan.object` (bilinear, `data.object_patches`); gridsize-1 scans without an object
    use their per-pattern `Y`.
    """
    b = batch["index"].numpy()
    if scan.object is not None:
        return torch.from_numpy(object_patches(scan.object, groups.centres[b], scan.N))
    return torch.from_numpy(np.asarray(scan.Y[groups.indices[b, 0]], dtype=np.complex64))


# -- determinism and the model ----------------------------------------------------------------
@contextlib.contextmanager
def determinism(enabled: bool, seed: int) -> Iterator[None]:
    """Seed torch/numpy/python and force deterministic kernels for the block.

    Restored after the block: the python, numpy and torch CPU generators (and the CUDA ones when
    CUDA was initialised on entry), the deterministic-algorithm (and its uninitialised-memory fill) and cuDNN flags, and
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
    # getattr/setattr: the flag is a property of a module subclass that type checkers do not see
    prev_fill = getattr(torch.utils.deterministic, "fill_uninitialized_memory")
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also NaN-fills every new tensor (a debugging aid that catches reads of
    # uninitialised memory, ~4 % of a CPU step); the kernels here never read before writing.
    setattr(torch.utils.deterministic, "fill_uninitialized_memory", False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_alg, warn_only=prev_warn)
        setattr(torch.utils.deterministic, "fill_uninitialized_memory", prev_fill)
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_det
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if set_cublas:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def build_model(model_config: ModelConfig, probe: np.ndarray, scale: float, seed: int, device: torch.device) -> torch.nn.Module:
    """PtychoPINN with weights drawn from a private generator state seeded by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PtychoPINN(model_config, probe=probe, intensity_scale=scale)
    return model.to(device)


def new_state(su: Setup, exact: bool) -> TrainingState:
    """A fresh `TrainingState`: the seeded model (float64 conv masters when `exact`), Adam over its
    trainable parameters, the epoch schedule, the fp16 grad scaler, the permutation RNG."""
    tc = su.tc
    model = build_model(su.model_config, su.probe, su.scale, tc.seed, su.device)
    if exact:
        master_weights.promote(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.learning_rate, eps=ADAM_EPS)
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=EpochSchedule(tc, optimizer),
        scaler=torch.amp.GradScaler(su.device.type) if tc.amp == "fp16" else None,
        np_rng=np.random.default_rng(tc.seed),
        stages=[config_to_dict(s) for s in tc.stages],
    )


def resume(su: Setup, state: TrainingState, main: bool) -> dict[str, Any]:
    """`state` as `su.out/checkpoint/` left it (metrics.jsonl trimmed to it on rank 0); returns
    the checkpoint's loop state (for `attach_outputs`)."""
    out = su.out
    assert out is not None  # check_inputs: resume needs out_dir
    loop = checkpoint.restore(out, state, su.model_config)
    checkpoint.check_resumable(out, state.stages, loop)
    dist_.barrier()  # every rank has read the checkpoint before rank 0 touches the folder
    if main:
        checkpoint.truncate_metrics(out, state.epochs_done)
        log.info("resuming from %s after epoch %d", out / CHECKPOINT_DIR, state.epochs_done)
    return loop


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Run:
    """What stays fixed through one run (single process or one rank): the inputs, the data, the
    model as the step calls it, and the fixed parts of the objective."""

    inputs: Setup
    info: DistInfo | None
    dataset: data.GroupDataset
    factor: float
    exact: bool
    params: list[torch.nn.Parameter]
    #: the model as the training step calls it (DistributedDataParallel and/or compiled)
    run_model: Any
    #: the model validation calls (compiled without DDP when distributed and compiled)
    eval_model: Any
    no_sync: Callable[[], Any] | None
    autocast: Callable[[], Any] | None
    #: `(N, N)` float32 ones on the central N/2 square for the real-space loss, or None
    centre_mask: torch.Tensor | None
    #: `(N, N)` bool, True = measured (`~Scan.bad_pixels`), or None
    valid: torch.Tensor | None
    labels_of: Labels | None
    monitor: str
    pin: bool
    progress: bool

    @property
    def tc(self) -> TrainConfig:
        return self.inputs.tc

    @property
    def model_config(self) -> ModelConfig:
        return self.inputs.model_config

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    @property
    def out(self) -> Path | None:
        """The model directory written, or None."""
        return self.inputs.out

    @property
    def main(self) -> bool:
        """Rank 0 (or the single process): the one that writes, logs and shows progress."""
        return self.info is None or self.info.is_main


def autocast_factory(amp: str, device: torch.device) -> Callable[[], Any] | None:
    if amp == "none":
        return None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def monitor_name(tc: TrainConfig, val_idx: np.ndarray) -> str:
    """The monitored loss ("val_loss" or "loss") for plateau, early stopping and --keep-best."""
    if tc.monitor == "auto":
        return "val_loss" if val_idx.size else "loss"
    return tc.monitor


def build_run(
    su: Setup, info: DistInfo | None, model: torch.nn.Module, ds: data.GroupDataset, factor: float, exact: bool, progress: bool
) -> Run:
    """The run around `model`: DDP and `torch.compile` wrapping, AMP, the masks, the labels."""
    tc, mc, device = su.tc, su.model_config, su.device
    run_model, no_sync = ddp.wrap(model, device, info)
    if tc.compile:
        run_model = torch.compile(run_model)
    eval_model: Any = torch.compile(model) if (tc.compile and info is not None) else run_model
    scan, groups = su.scan, su.groups
    return Run(
        inputs=su,
        info=info,
        dataset=ds,
        factor=factor,
        exact=exact,
        params=[p for p in model.parameters() if p.requires_grad],
        run_model=run_model,
        eval_model=eval_model,
        no_sync=no_sync,
        autocast=autocast_factory(tc.amp, device),
        centre_mask=center_mask(mc.N, device=device) if (tc.realspace_weight and not mc.probe_big) else None,
        valid=detector_valid(scan, device),  # ~Scan.bad_pixels: masked pixels leave the NLL/MAE
        labels_of=(lambda batch: labels(scan, groups, batch)) if su.use_labels else None,
        monitor=monitor_name(tc, su.val_idx),
        pin=device.type == "cuda",
        progress=progress and (info is None or info.is_main),
    )


def attach_outputs(state: TrainingState, run: Run, loop: dict[str, Any]) -> None:
    """The run's summary, `--keep-best` keeper and (rank 0's) metrics logger on `state`, resumed
    from the checkpoint's `loop` state."""
    su, tc = run.inputs, run.tc
    state.summary = summary(run)
    out = su.out
    if out is not None and tc.keep_best:
        state.keeper = BestKeeper(out, tc.keep_best, run.monitor, loop.get("best"))
        if su.resume and run.main:
            state.keeper.reconcile()
    if run.main:
        state.logger = loggers.make_logger(tc.logger, out, state.epochs_done, flat_params(tc, su.model_config), loop.get("logger"))


def summary(run: Run) -> dict[str, Any]:
    """The run's description, saved as the models' extra "training" (history etc. added at the end)."""
    su = run.inputs
    doc = {
        "normalization_factor": run.factor,
        "intensity_scale": su.scale,
        "nphotons": su.nphotons,
        "data_config": config_to_dict(su.data_config),
        "train_config": config_to_dict(su.tc),
        "scan": su.label,
        "n_groups": int(su.groups.n_groups),
        "n_train_groups": int(su.train_idx.size),
        "n_val_groups": int(su.val_idx.size),
        "exact_gradients": run.exact,
        "monitor": run.monitor,
    }
    if run.info is not None:
        doc["world_size"] = run.info.world_size
    return doc


def flat_params(tc: TrainConfig, mc: ModelConfig) -> dict[str, Any]:
    """Flat name -> value of the run's settings (MLflow params)."""
    flat = {f"train.{k}": v for k, v in config_to_dict(tc).items()}
    flat.update({f"model.{k}": v for k, v in config_to_dict(mc).items()})
    return flat


__all__ = [
    "ADAM_EPS",
    "Setup",
    "Run",
    "check_inputs",
    "dataset",
    "labels",
    "determinism",
    "build_model",
    "new_state",
    "resume",
    "build_run",
    "attach_outputs",
    "summary",
    "autocast_factory",
    "monitor_name",
    "flat_params",
]
