"""One explicit configuration, passed around as frozen dataclasses.

There is no global mutable state: every function that needs a setting receives the config
object that holds it. Legacy TensorFlow `params.cfg` key names are mapped only in
`ptychopinn.interop.legacy`.

Units: positions and offsets in object pixels, photon counts per diffraction pattern.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from .errors import ConfigError

AmpActivation = Literal["sigmoid", "swish", "softplus", "relu"]
#: How the amplitude A and phase phi heads are combined into the object patch.
#: "polar": A·exp(iφ) (S1 and K2 eras, the physically meaningful form);
#: "additive": A + iφ (the K1-era bug MATH_POLAR_001, kept only to reproduce K1 bundles).
CombineMode = Literal["polar", "additive"]
NLLForm = Literal["mean", "full_sum"]
SUPPORTED_N = (64, 128, 256)
ATTENTION_KINDS = (None, "cbam", "eca")
SCHEDULERS = ("plateau", "exponential", "cosine")
LOGGERS = ("csv", "tensorboard", "mlflow", "none")
#: loss-weight names a training stage may set -> TrainConfig field
STAGE_WEIGHTS = {
    "nll": "nll_weight",
    "mae": "mae_weight",
    "realspace": "realspace_weight",
    "realspace_mae": "realspace_mae_weight",
    "tv": "tv_weight",
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and physics of one PtychoPINN network (spec §3–§4).

    Defaults follow the modern TensorFlow entry path (upstream ModelConfig dataclass).
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 2
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    amp_activation: AmpActivation = "sigmoid"
    gaussian_smoothing_sigma: float = 0.0
    #: the probe is normalised to mean(|mask·P|) = 1/probe_scale before training (spec §2.3)
    probe_scale: float = 4.0
    #: pixels between neighbouring patches assumed when sizing the in-model canvas
    offset: int = 4
    max_position_jitter: int = 10
    probe_trainable: bool = False
    #: TF never trained its log_scale (an untracked variable); we do when this is set.
    intensity_scale_trainable: bool = False
    #: amplitude-head output channels; None = C when object_big else 1 (K2). S1/K1 used 1.
    amp_head_channels: int | None = None
    combine: CombineMode = "polar"
    #: K2 subtracts the mean offset over the batch before in-model reassembly; S1/K1 did not.
    recentre_offsets: bool = True
    #: the encoder/decoder family (`ptychopinn.model.generators`): "cnn" (TF parity, the only one
    #: that converts to legacy TF bundles) or "fno" (spectral convolutions)
    generator: str = "cnn"
    #: attention after each CNN encoder block: None, "cbam" or "eca" (cnn generator only)
    attention: str | None = None

    def __post_init__(self) -> None:
        if self.N not in SUPPORTED_N:
            raise ConfigError(f"ModelConfig.N must be one of {SUPPORTED_N}, got {self.N}")
        if self.gridsize < 1:
            raise ConfigError(f"ModelConfig.gridsize must be >= 1, got {self.gridsize}")
        if self.n_filters_scale < 1:
            raise ConfigError(f"ModelConfig.n_filters_scale must be >= 1, got {self.n_filters_scale}")
        if self.amp_activation not in ("sigmoid", "swish", "softplus", "relu"):
            raise ConfigError(f"unknown amp_activation {self.amp_activation!r}")
        if self.combine not in ("polar", "additive"):
            raise ConfigError(f"unknown combine mode {self.combine!r}")
        if not isinstance(self.generator, str) or not self.generator:
            raise ConfigError(f"ModelConfig.generator must be a generator name (e.g. 'cnn', 'fno'), got {self.generator!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"ModelConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.attention is not None and self.generator != "cnn":
            raise ConfigError(f"ModelConfig.attention={self.attention!r} needs generator 'cnn', got {self.generator!r}")

    @property
    def channels(self) -> int:
        """C = gridsize², patterns per group."""
        return self.gridsize * self.gridsize

    @property
    def head_channels(self) -> int:
        """Output channels of the phase head (and, by default, of the amplitude head)."""
        return self.channels if self.object_big else 1

    @property
    def amp_channels(self) -> int:
        return self.amp_head_channels if self.amp_head_channels is not None else self.head_channels

    @property
    def padded_size(self) -> int:
        """P = N + (gridsize − 1)·offset + max_position_jitter (spec §4.1)."""
        return self.N + (self.gridsize - 1) * self.offset + self.max_position_jitter


@dataclass(frozen=True)
class DataConfig:
    """How scan positions are grouped and normalised (spec §1.3, §2)."""

    gridsize: int = 1
    #: K, nearest neighbours considered per seed position
    neighbor_count: int = 4
    #: number of groups; None = one group per scan position
    n_groups: int | None = None
    seed: int = 0
    nphotons: float = 1e9

    def __post_init__(self) -> None:
        C = self.gridsize * self.gridsize
        if self.gridsize < 1:
            raise ConfigError(f"DataConfig.gridsize must be >= 1, got {self.gridsize}")
        if C > 1 and self.neighbor_count < C:
            raise ConfigError(
                f"DataConfig.neighbor_count (K={self.neighbor_count}) must be >= gridsize² (C={C})"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (spec §4.7, §7)."""

    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    #: "pinn" trains on the Poisson NLL; "supervised" on MAE against ground-truth patches
    model_type: Literal["pinn", "supervised"] = "pinn"
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    realspace_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    tv_weight: float = 0.0
    nll_form: NLLForm = "mean"
    validation_fraction: float = 0.05
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-4
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    compile: bool = False
    amp: Literal["none", "bf16", "fp16"] = "none"
    num_workers: int = 0
    #: float64 master weights and weight gradients for the convolutions, so that the model
    #: does not depend on thread count or process count: "auto" (= on with `deterministic`,
    #: else off: the fast path is the default), "on" (also turns on deterministic kernels) or
    #: "off". A CPU training step takes about 3x as long with it.
    exact_gradients: Literal["auto", "on", "off"] = "auto"
    #: learning-rate schedule per stage: "plateau" (ReduceLROnPlateau on the monitored loss),
    #: "exponential" (× lr_gamma per epoch) or "cosine" (to min_lr_ratio·lr at the stage's end)
    scheduler: Literal["plateau", "exponential", "cosine"] = "plateau"
    #: linear warm-up epochs at the start of the run: lr·(e+1)/(warmup_epochs+1) in epoch e
    warmup_epochs: int = 0
    #: floor of the cosine and exponential schedules, as a fraction of the stage's learning rate
    min_lr_ratio: float = 0.0
    #: per-epoch factor of the exponential schedule
    lr_gamma: float = 0.95
    #: training stages, run in order; each sets its epochs, learning rate and loss weights.
    #: Empty: one stage of `epochs` epochs at `learning_rate`. Given, `epochs` becomes their sum.
    #: Also accepts the text form "10:1e-3:nll=1,mae=0;5:1e-4:mae=0.1" (see `parse_stages`).
    stages: tuple[Stage, ...] = ()
    #: stop when the monitored loss has not improved for this many epochs (0 = never)
    early_stop_patience: int = 0
    #: keep the K best epochs' models by the monitored loss under `out_dir/best/` (0 = none)
    keep_best: int = 0
    #: "auto" = val_loss when there is a validation split, else the training loss
    monitor: Literal["auto", "val_loss", "loss"] = "auto"
    #: micro-batches of `batch_size` groups per optimiser step (= a batch A× larger)
    accumulate_grad_batches: int = 1
    #: clip the global gradient L2 norm to this value before each step (0 = no clipping)
    clip_grad_norm: float = 0.0
    #: per-epoch metrics logger besides metrics.jsonl: csv (metrics.csv), tensorboard, mlflow, none
    logger: Literal["csv", "tensorboard", "mlflow", "none"] = "csv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", normalise_stages(self.stages))
        if self.stages:
            object.__setattr__(self, "epochs", sum(s.epochs for s in self.stages))
        self.check()

    def check(self) -> None:
        """ConfigError naming the first field out of range (run by `__post_init__`, so every
        TrainConfig — `dataclasses.replace` and `stage_config` included — is valid). The PINN
        rule is `train.losses.batch_loss`'s: some term must be on (NLL, MAE, or the real-space
        term with a TV or real-space MAE weight), so real-space-only objectives are accepted."""
        if self.epochs < 1:
            raise ConfigError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.model_type not in ("pinn", "supervised"):
            raise ConfigError(f"TrainConfig.model_type must be 'pinn' or 'supervised', got {self.model_type!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"TrainConfig.amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if self.exact_gradients not in ("auto", "on", "off"):
            raise ConfigError(f"TrainConfig.exact_gradients must be 'auto', 'on' or 'off', got {self.exact_gradients!r}")
        if self.nll_form not in ("mean", "full_sum"):
            raise ConfigError(f"TrainConfig.nll_form must be 'mean' or 'full_sum', got {self.nll_form!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"TrainConfig.validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"TrainConfig.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.logger not in LOGGERS:
            raise ConfigError(f"TrainConfig.logger must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        if self.monitor not in ("auto", "val_loss", "loss"):
            raise ConfigError(f"TrainConfig.monitor must be 'auto', 'val_loss' or 'loss', got {self.monitor!r}")
        for name, low in (("warmup_epochs", 0), ("early_stop_patience", 0), ("keep_best", 0), ("accumulate_grad_batches", 1),
                          ("plateau_patience", 0), ("num_workers", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= {low}, got {value!r}")
        first = self.stages[0].epochs if self.stages else self.epochs
        if self.warmup_epochs >= first:
            raise ConfigError(f"TrainConfig.warmup_epochs={self.warmup_epochs} must be < the first stage's epochs ({first})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ConfigError(f"TrainConfig.lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if not self.clip_grad_norm >= 0.0:
            raise ConfigError(f"TrainConfig.clip_grad_norm must be >= 0 (0 = off), got {self.clip_grad_norm}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(f"TrainConfig.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if not self.min_lr >= 0.0:
            raise ConfigError(f"TrainConfig.min_lr must be >= 0, got {self.min_lr}")
        for name in STAGE_WEIGHTS.values():
            if not getattr(self, name) >= 0.0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for i, stage in enumerate(self.stages or (None,)):
            w = {f: getattr(self, f) for f in STAGE_WEIGHTS.values()}
            if stage is not None:
                w.update({STAGE_WEIGHTS[k]: v for k, v in stage.weights})
            if self.model_type == "pinn" and not (w["nll_weight"] or w["mae_weight"] or (w["realspace_weight"] and (w["tv_weight"] or w["realspace_mae_weight"]))):  # as batch_loss
                where = f" (stage {i + 1})" if stage is not None else ""
                raise ConfigError(f"TrainConfig: every PINN loss weight (nll_weight, mae_weight, realspace) is zero{where}")

    def stage_config(self, index: int) -> "TrainConfig":
        """This config with stage `index`'s learning rate and loss weights, and no stages."""
        if not self.stages:
            return self
        stage = self.stages[index]
        changes: dict[str, Any] = {STAGE_WEIGHTS[k]: v for k, v in stage.weights}
        if stage.learning_rate is not None:
            changes["learning_rate"] = stage.learning_rate
        return dataclasses.replace(self, stages=(), epochs=stage.epochs, warmup_epochs=0, **changes)


@dataclass(frozen=True)
class Stage:
    """One training stage: `epochs`, its learning rate (None = TrainConfig.learning_rate) and
    loss-weight overrides `(("nll", 1.0), ("mae", 0.1))` (names: keys of `STAGE_WEIGHTS`)."""

    epochs: int
    learning_rate: float | None = None
    weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise ConfigError(f"Stage.epochs must be an integer >= 1, got {self.epochs!r}")
        if self.learning_rate is not None and not float(self.learning_rate) > 0:
            raise ConfigError(f"Stage.learning_rate must be > 0, got {self.learning_rate}")
        weights = []
        for pair in self.weights:
            name, value = pair
            if name not in STAGE_WEIGHTS:
                raise ConfigError(f"Stage: unknown loss weight {name!r} (expected one of {', '.join(STAGE_WEIGHTS)})")
            if not float(value) >= 0:
                raise ConfigError(f"Stage: loss weight {name}={value} must be >= 0")
            weights.append((str(name), float(value)))
        object.__setattr__(self, "weights", tuple(weights))
        if self.learning_rate is not None:
            object.__setattr__(self, "learning_rate", float(self.learning_rate))


def parse_stages(text: str) -> tuple[Stage, ...]:
    """Stages from "EPOCHS[:LR][:NAME=W,NAME=W...]" items separated by ";".

    "10:1e-3:nll=1,mae=0;5:1e-4:mae=0.1" = 10 epochs at 1e-3 with weights nll 1, mae 0, then 5 at
    1e-4 with mae 0.1 (unnamed weights keep the TrainConfig values); "20;10:1e-4" is also valid.
    An empty LR field ("5::mae=1") keeps TrainConfig.learning_rate.
    """
    stages = []
    for n, item in enumerate(str(text).split(";"), start=1):
        item = item.strip()
        if not item:
            continue
        fields = item.split(":")
        if len(fields) > 3:
            raise ConfigError(f"stage {n} {item!r}: expected EPOCHS[:LR][:NAME=W,...]")
        try:
            epochs = float(fields[0])
            if not epochs.is_integer():
                raise ValueError
            lr = float(fields[1]) if len(fields) > 1 and fields[1].strip() else None
            weights = []
            if len(fields) > 2 and fields[2].strip():
                for pair in fields[2].split(","):
                    name, value = pair.split("=")
                    weights.append((name.strip(), float(value)))
        except ValueError:
            raise ConfigError(f"stage {n} {item!r}: expected EPOCHS[:LR][:NAME=W,...] (e.g. 10:1e-3:nll=1,mae=0)") from None
        stages.append(Stage(int(epochs), lr, tuple(weights)))
    if not stages:
        raise ConfigError(f"stages {text!r}: no stage given")
    return tuple(stages)


def normalise_stages(value: Any) -> tuple[Stage, ...]:
    """Stages from a `parse_stages` string, Stage objects, or mappings (config files, JSON):
    {"epochs": 10, "lr": 1e-3, "nll": 1} or `config_to_dict`'s {"epochs", "learning_rate", "weights"}."""
    if value is None or value == "" or value == ():
        return ()
    if isinstance(value, str):
        return parse_stages(value)
    if isinstance(value, Mapping):
        value = [value]
    out = []
    for n, item in enumerate(value, start=1):
        if isinstance(item, Stage):
            out.append(item)
        elif isinstance(item, str):
            out.extend(parse_stages(item))
        elif isinstance(item, Mapping):
            d = dict(item)
            try:
                epochs = d.pop("epochs")
            except KeyError:
                raise ConfigError(f"stage {n}: key 'epochs' missing") from None
            lr = d.pop("learning_rate", d.pop("lr", None))
            weights = [tuple(p) for p in d.pop("weights", [])]
            weights += [(k, v) for k, v in d.items()]
            if isinstance(epochs, float) and epochs.is_integer():
                epochs = int(epochs)
            out.append(Stage(epochs, lr, tuple(weights)))
        else:
            raise ConfigError(f"stage {n}: expected a table or 'EPOCHS:LR:NAME=W' text, got {type(item).__name__}")
    return tuple(out)


@dataclass(frozen=True)
class SimulationConfig:
    """A synthetic scan (spec §4.1 default probe, §2.2 simulation scaling)."""

    N: int = 64
    object_kind: Literal["lines", "grf"] = "lines"
    object_size: int = 256
    scan: Literal["random", "grid"] = "random"
    n_positions: int = 1024
    #: grid step in pixels (grid scans)
    step: float = 4.0
    nphotons: float = 1e9
    probe_scale: float = 4.0
    seed: int = 0
    #: incoherent probe modes K (1 = the single default probe; K > 1: `physics.mixed_state_probe`)
    probe_modes: int = 1
    #: power of probe mode k+1 relative to mode k (K > 1 only)
    probe_mode_power: float = 0.5


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """Build `cls` from a mapping, refusing unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**dict(values))


def config_to_json(cfg: Any) -> str:
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=True)


__all__ = [
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "SimulationConfig",
    "Stage",
    "parse_stages",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
    "SUPPORTED_N",
]
