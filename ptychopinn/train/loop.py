"""`train`: a plain PyTorch training loop for PtychoPINN with exact resume (spec §4.7, §7).

Adam (Keras ε = 1e-7) + ReduceLROnPlateau on the validation loss; the validation groups are a
region of the scan (`data.split_by_region`), so no diffraction pattern is on both sides.
Every epoch appends one JSON line to `out_dir/metrics.jsonl` and atomically replaces
`out_dir/checkpoint/` (model + optimiser/scheduler/RNG state, no pickle). The final model is a
native model directory at `out_dir` (`io.save_model`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import physics
from ..config import DataConfig, ModelConfig, TrainConfig, config_to_dict
from ..errors import ConfigError, DataError, ModelFormatError
from . import state as st
from .inputs import as_scan, normalised_probe, resolve_nphotons, scan_label
from .losses import batch_loss, needs_labels

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


def _loader(dataset: Any, order: np.ndarray, batch_size: int, num_workers: int, pin: bool) -> torch.utils.data.DataLoader:
    """Batches of `dataset` in the given group order (no shuffling inside: order is the RNG's)."""
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return torch.utils.data.DataLoader(
        _BatchView(dataset), batch_size=None, sampler=batches, num_workers=num_workers, pin_memory=pin
    )


def _validate(tc: TrainConfig) -> None:
    if tc.epochs < 1:
        raise ConfigError(f"TrainConfig.epochs must be >= 1, got {tc.epochs}")
    if tc.batch_size < 1:
        raise ConfigError(f"TrainConfig.batch_size must be >= 1, got {tc.batch_size}")
    if not tc.learning_rate > 0:
        raise ConfigError(f"TrainConfig.learning_rate must be > 0, got {tc.learning_rate}")
    if tc.model_type not in ("pinn", "supervised"):
        raise ConfigError(f"TrainConfig.model_type must be 'pinn' or 'supervised', got {tc.model_type!r}")
    if tc.amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"TrainConfig.amp must be 'none', 'bf16' or 'fp16', got {tc.amp!r}")
    if tc.nll_form not in ("mean", "full_sum"):
        raise ConfigError(f"TrainConfig.nll_form must be 'mean' or 'full_sum', got {tc.nll_form!r}")
    if not 0.0 <= tc.validation_fraction < 1.0:
        raise ConfigError(f"TrainConfig.validation_fraction must be in [0, 1), got {tc.validation_fraction}")
    if tc.model_type == "pinn" and not (tc.nll_weight or tc.mae_weight or (tc.realspace_weight and tc.tv_weight)):
        raise ConfigError("TrainConfig: every PINN loss weight (nll_weight, mae_weight, realspace) is zero")


@contextlib.contextmanager
def _determinism(enabled: bool, seed: int) -> Iterator[None]:
    """Seed torch/numpy/python and force deterministic kernels for the block (restored after)."""
    if not enabled:
        yield
        return
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


def _autocast_factory(amp: str, device: torch.device) -> Callable[[], Any] | None:
    if amp == "none":
        return None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _build_model(model_config: ModelConfig, probe: np.ndarray, scale: float, seed: int, device: torch.device) -> torch.nn.Module:
    """PtychoPINN with weights drawn from a private generator state seeded by `seed`."""
    from ..model import PtychoPINN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PtychoPINN(model_config, probe=probe, intensity_scale=scale)
    return model.to(device)


def _save_native(model: torch.nn.Module, path: Path, extra: dict[str, Any]) -> None:
    from .. import io

    io.save_model(model, path, extra=extra)


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
) -> None:
    """Atomically replace `out_dir/checkpoint/` with the state after `epoch` epochs."""
    from ..io.atomic import atomic_directory

    tensors, opt_info = st.optimizer_state(optimizer)
    rng_t, rng_info = st.rng_state(np_rng)
    tensors.update(rng_t)
    info: dict[str, Any] = {
        "epoch": epoch,
        "optimizer": opt_info,
        "scheduler": scheduler.state_dict(),
        "history": history,
        "rng": rng_info,
    }
    if scaler is not None:
        info["grad_scaler"] = {k: v for k, v in scaler.state_dict().items()}
    with atomic_directory(out_dir / CHECKPOINT_DIR) as tmp:
        _save_native(model, tmp, extra)
        st.write_state(tmp, tensors, info)


def _append_metrics(out_dir: Path, row: dict[str, Any]) -> None:
    with open(out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, allow_nan=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_metrics(out_dir: Path, epochs_done: int) -> None:
    """Keep the first `epochs_done` lines of metrics.jsonl (a crash may have left one more)."""
    path = out_dir / METRICS_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()[:epochs_done]
    from ..io.atomic import atomic_write

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
) -> tuple[int, list[dict[str, Any]]]:
    """Load `out_dir/checkpoint/` into the live objects; returns (epochs done, history)."""
    ckpt = out_dir / CHECKPOINT_DIR
    if not ckpt.is_dir():
        raise ConfigError(f"{ckpt}: no checkpoint to resume from (train without resume first)")
    cfg_path = ckpt / "config.json"
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{cfg_path}: cannot read the checkpoint's model config ({exc})") from exc
    if saved.get("model_config") != config_to_dict(model_config):
        raise ConfigError(f"{cfg_path}: key 'model_config' differs from the requested ModelConfig; cannot resume")
    _load_weights(model, ckpt / "model.safetensors")
    tensors, info = st.read_state(ckpt)
    st.load_optimizer_state(optimizer, tensors, info["optimizer"])
    scheduler.load_state_dict(info["scheduler"])
    if scaler is not None and "grad_scaler" in info:
        scaler.load_state_dict(info["grad_scaler"])
    st.restore_rng_state(np_rng, tensors, info["rng"])
    return int(info["epoch"]), list(info.get("history", []))


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy the native `model.safetensors` weights into `model` in place (strict)."""
    from ..io.tensor_codec import decode_state

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


def _evaluate(
    model: torch.nn.Module,
    loader: Any,
    device: torch.device,
    model_config: ModelConfig,
    tc: TrainConfig,
    centre_mask: torch.Tensor | None,
    autocast: Any,
    labels_of: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None,
) -> float:
    """Mean loss over the batches of `loader` (weighted by batch size), no gradients."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad():
        for batch in loader:
            x = batch["x"].to(device, non_blocking=True)
            offsets = batch["offsets"].to(device, non_blocking=True)
            labels = labels_of(batch).to(device) if labels_of is not None else None
            loss, _ = batch_loss(model, x, offsets, labels, model_config, tc, centre_mask=centre_mask, autocast=autocast)
            total += loss.double() * x.shape[0]
            count += x.shape[0]
    return float(total) / max(count, 1)


def _labels(scan: Any, groups: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Ground-truth object patches `(B, N, N)` complex64 at the batch's group centres.

    Cut from `scan.object` (bilinear, `data.object_patches`); gridsize-1 scans without an object
    use their per-pattern `Y`.
    """
    from ..data import object_patches

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
) -> TrainResult:
    """Train a PtychoPINN on one scan; returns a `TrainResult` (model, history, f, s, ...).

    scan_or_path: a `data.Scan` or an NPZ/HDF5 scan path. Defaults: ModelConfig(),
    DataConfig(gridsize=model_config.gridsize), TrainConfig(). With `out_dir`, writes
    metrics.jsonl, checkpoint/ (every epoch) and the final native model (model.safetensors +
    config.json) there; nothing is created before the inputs are validated. `resume=True`
    continues from `out_dir/checkpoint/` exactly (same weights as an uninterrupted run when
    `deterministic`).
    """
    from .. import data
    from ..io.device import resolve_device

    model_config = model_config or ModelConfig()
    data_config = data_config or DataConfig(gridsize=model_config.gridsize)
    tc = train_config or TrainConfig()
    _validate(tc)
    if data_config.gridsize != model_config.gridsize:
        raise ConfigError(
            f"DataConfig.gridsize={data_config.gridsize} differs from ModelConfig.gridsize={model_config.gridsize}"
        )
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir (the folder holding checkpoint/)")
    if out is not None and not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: output folder exists and is not empty (pass resume=True or choose a new folder)")

    scan = as_scan(scan_or_path)
    label = scan_label(scan)
    if scan.N != model_config.N:
        raise DataError(f"{label}: key 'diffraction' has patterns of {scan.N}x{scan.N}, expected N={model_config.N} (ModelConfig.N)")
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
    if tc.validation_fraction > 0 and val_idx.size == 0:
        log.warning("validation split produced no groups; the LR schedule follows the training loss")
    factor = float(data.normalization_factor(scan.diffraction, groups.indices))
    nphotons = resolve_nphotons(scan, data_config)
    scale = physics.intensity_scale(nphotons, model_config.N)
    probe = normalised_probe(scan, getattr(model_config, "probe_scale", 4.0))
    device = resolve_device(tc.device)
    if tc.amp == "fp16" and device.type == "cpu":
        raise ConfigError("TrainConfig.amp='fp16' needs a GPU; use amp='bf16' on CPU")

    dataset = data.GroupDataset(scan, groups, factor * scale, start_offsets=True)
    pin = device.type == "cuda"
    labels_of = (lambda batch: _labels(scan, groups, batch)) if use_labels else None

    with _determinism(tc.deterministic, tc.seed):
        model = _build_model(model_config, probe, scale, tc.seed, device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=tc.learning_rate, eps=ADAM_EPS)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience, min_lr=tc.min_lr
        )
        scaler = torch.amp.GradScaler(device.type) if tc.amp == "fp16" else None
        np_rng = np.random.default_rng(tc.seed)
        history: list[dict[str, Any]] = []
        start_epoch = 0
        if resume:
            start_epoch, history = _restore_checkpoint(out, model, optimizer, scheduler, scaler, np_rng, model_config)  # type: ignore[arg-type]
            _truncate_metrics(out, start_epoch)  # type: ignore[arg-type]
            log.info("resuming from %s after epoch %d", out / CHECKPOINT_DIR, start_epoch)  # type: ignore[operator]
        run_model: Any = torch.compile(model) if tc.compile else model
        autocast = _autocast_factory(tc.amp, device)
        centre_mask = _centre_mask(model_config, device) if (tc.realspace_weight and not model_config.probe_big) else None

        summary = {
            "normalization_factor": factor,
            "intensity_scale": scale,
            "nphotons": nphotons,
            "data_config": config_to_dict(data_config),
            "train_config": config_to_dict(tc),
            "scan": label,
            "n_groups": int(groups.n_groups),
            "n_train_groups": int(train_idx.size),
            "n_val_groups": int(val_idx.size),
        }
        C = model_config.channels
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.perf_counter()
            model.train()
            order = np_rng.permutation(train_idx)
            loader = _loader(dataset, order, tc.batch_size, tc.num_workers, pin)
            bar = _progress(progress, len(loader), f"epoch {epoch + 1}/{tc.epochs}")
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            parts_sum: dict[str, torch.Tensor] = {}
            seen = 0
            for step, batch in enumerate(loader):
                x = batch["x"].to(device, non_blocking=True)
                offsets = batch["offsets"].to(device, non_blocking=True)
                labels = labels_of(batch).to(device) if labels_of is not None else None
                loss, parts = batch_loss(
                    run_model, x, offsets, labels, model_config, tc, centre_mask=centre_mask, autocast=autocast
                )
                if not torch.isfinite(loss):
                    raise DataError(f"{label}: loss became {float(loss)} at epoch {epoch + 1}, step {step + 1} (check the data scale)")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                b = x.shape[0]
                loss_sum += loss.detach().double() * b
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0) + v.double() * b
                seen += b
                if bar is not None:
                    rate = seen * C / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{float(loss.detach()):.5g}", patterns_s=f"{rate:.0f}")
                    bar.update(1)
            if bar is not None:
                bar.close()
            train_loss = float(loss_sum) / seen
            val_loss = None
            if val_idx.size:
                model.eval()
                val_loader = _loader(dataset, val_idx, tc.batch_size, tc.num_workers, pin)
                val_loss = _evaluate(run_model, val_loader, device, model_config, tc, centre_mask, autocast, labels_of)
            scheduler.step(val_loss if val_loss is not None else train_loss)
            seconds = time.perf_counter() - t0
            row = {
                "epoch": epoch + 1,
                "loss": train_loss,
                "val_loss": val_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "parts": {k: float(v) / seen for k, v in parts_sum.items()},
                "patterns_per_s": seen * C / max(seconds, 1e-9),
                "seconds": seconds,
            }
            history.append(row)
            log.info(
                "epoch %d/%d loss %.6g val_loss %s lr %.3g (%.1f patterns/s)",
                epoch + 1, tc.epochs, train_loss, "n/a" if val_loss is None else f"{val_loss:.6g}", row["lr"], row["patterns_per_s"],
            )
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                _append_metrics(out, row)
                _write_checkpoint(out, model, optimizer, scheduler, scaler, np_rng, epoch + 1, history, {"training": summary})

    model.eval()
    summary["history"] = history
    if out is not None:
        _write_final(out, model, {"training": summary})
    return TrainResult(
        model=model,
        history=history,
        normalization_factor=factor,
        intensity_scale=scale,
        nphotons=nphotons,
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


def _write_final(out: Path, model: torch.nn.Module, extra: dict[str, Any]) -> None:
    """The native model files at `out/` (each file replaced atomically; checkpoint/ is kept)."""
    import shutil

    staged = out / ".final-model.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        _save_native(model, staged, extra)
        for f in sorted(staged.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _centre_mask(model_config: ModelConfig, device: torch.device) -> torch.Tensor:
    """(N, N) float32 ones on the central N/2 square (spec §4.5)."""
    N = model_config.N
    m = torch.zeros(N, N, device=device)
    m[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = 1
    return m


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


__all__ = ["train", "TrainResult", "CHECKPOINT_DIR", "METRICS_FILE", "ADAM_EPS"]
