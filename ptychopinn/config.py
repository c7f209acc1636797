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
    #: does not depend on thread count or process count: "auto" (on for CPU float32 training,
    #: off on GPUs), "on" or "off". A CPU training step takes about 3x as long.
    exact_gradients: Literal["auto", "on", "off"] = "auto"


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
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
    "SUPPORTED_N",
]
