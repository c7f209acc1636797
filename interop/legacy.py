"""Legacy TensorFlow `params.cfg` keys ↔ our configuration (spec §5). Pure Python: no torch.

The only place that knows the legacy key names. Mapping (ours → legacy): object_big →
`object.big`, probe_big → `probe.big`, probe_mask → `probe.mask`, probe_trainable →
`probe.trainable`, intensity_scale_trainable → `intensity_scale.trainable`, epochs → `nepochs`,
n_groups → `n_groups` (older bundles: `n_images`), positions_provided → `positions.provided`;
the other model keys (N, gridsize, n_filters_scale, pad_object, amp_activation,
gaussian_smoothing_sigma, offset, max_position_jitter) keep their names.

Era switches (spec §0, §8.3, §8.4): K1 combines A + iφ with a 1-channel amplitude head and no
offset re-centring; S0/S1 use A·e^{iφ} with a 1-channel amplitude head and no re-centring; K2 uses
A·e^{iφ}, the amplitude-head width stored in the weights, and re-centres offsets.

`intensity_scale.trainable` is True in many bundles but never had an effect (S1 baked s as a
constant; Keras 3 kept log_scale outside the tracked weights, §8.2), so imported models always get
`intensity_scale_trainable=False`. Likewise `probe.trainable` only mattered in S0/S1.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ptychopinn.errors import ConfigError

ERAS = ("S0", "S1", "K1", "K2")

#: legacy DEFAULT_CFG of params.py (spec §5.1): what TF assumed for a key a bundle lacks
DEFAULT_CFG: dict[str, Any] = {
    "N": 128, "offset": 4, "gridsize": 2, "outer_offset_train": None, "outer_offset_test": None,
    "batch_size": 16, "nepochs": 60, "n_filters_scale": 2, "output_prefix": "outputs",
    "big_gridsize": 10, "max_position_jitter": 10, "sim_jitter_scale": 0.0,
    "default_probe_scale": 0.7, "mae_weight": 0.0, "nll_weight": 1.0, "tv_weight": 0.0,
    "realspace_mae_weight": 0.0, "realspace_weight": 0.0, "nphotons": 1e9, "nimgs_train": 9,
    "nimgs_test": 3, "data_source": "generic", "probe.trainable": False,
    "intensity_scale.trainable": False, "positions.provided": False, "object.big": True,
    "probe.big": False, "probe_scale": 10.0, "set_phi": False, "probe.mask": True,
    "pad_object": True, "model_type": "pinn", "label": "", "size": 392,
    "amp_activation": "sigmoid", "h5_path": "wts.h5", "npseed": 42, "debug": True,
    "gaussian_smoothing_sigma": 0.0, "use_xla_translate": True,
}

#: ModelConfig field → legacy key, for the fields that exist in both
MODEL_KEYS: dict[str, str] = {
    "N": "N", "gridsize": "gridsize", "n_filters_scale": "n_filters_scale",
    "object_big": "object.big", "probe_big": "probe.big", "probe_mask": "probe.mask",
    "pad_object": "pad_object", "amp_activation": "amp_activation",
    "gaussian_smoothing_sigma": "gaussian_smoothing_sigma", "offset": "offset",
    "max_position_jitter": "max_position_jitter", "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
}
#: TrainConfig field → legacy key
TRAIN_KEYS: dict[str, str] = {
    "epochs": "nepochs", "batch_size": "batch_size", "model_type": "model_type",
    "nll_weight": "nll_weight", "mae_weight": "mae_weight", "realspace_weight": "realspace_weight",
    "realspace_mae_weight": "realspace_mae_weight", "tv_weight": "tv_weight",
}
#: DataConfig field → legacy key
DATA_KEYS: dict[str, str] = {
    "gridsize": "gridsize", "neighbor_count": "neighbor_count", "n_groups": "n_groups", "nphotons": "nphotons",
}

_BOOL = {"object.big", "probe.big", "probe.mask", "pad_object", "probe.trainable", "intensity_scale.trainable"}
_INT = {"N", "gridsize", "n_filters_scale", "offset", "max_position_jitter", "nepochs", "batch_size", "neighbor_count"}
_FLOAT = {"gaussian_smoothing_sigma", "nphotons", "nll_weight", "mae_weight", "realspace_weight",
          "realspace_mae_weight", "tv_weight"}


def _value(params: Mapping[str, Any], key: str, where: str) -> Any:
    """params[key] (DEFAULT_CFG when absent), coerced to the expected Python type."""
    value = params.get(key, DEFAULT_CFG.get(key))
    try:
        if key in _BOOL:
            if not isinstance(value, (bool, int, np.bool_)):
                raise TypeError
            return bool(value)
        if key in _INT:
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if key in _FLOAT:
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: key {key!r}: expected a {'bool' if key in _BOOL else 'number'}, got {value!r}") from None
    return value


def _check_era(era: str) -> None:
    if era not in ERAS:
        raise ConfigError(f"legacy params: era must be one of {ERAS}, got {era!r}")


def model_config_kwargs_from_params(params: Mapping[str, Any], era: str, *,
                                    amp_head_channels: int | None = None,
                                    where: str = "params.dill") -> dict[str, Any]:
    """Keyword arguments of `ptychopinn.config.ModelConfig` for a legacy bundle (plain dict).

    `params`: the legacy keys (params.dill); missing keys take the legacy DEFAULT_CFG value.
    `amp_head_channels`: the amplitude head's output channels read from its kernel (used for K2;
    S0/S1/K1 always had 1).
    """
    _check_era(era)
    kw: dict[str, Any] = {field: _value(params, key, where) for field, key in MODEL_KEYS.items()}
    amp = kw["amp_activation"]
    if amp not in ("sigmoid", "swish", "softplus", "relu"):
        raise ConfigError(f"{where}: key 'amp_activation': expected sigmoid/swish/softplus/relu, got {amp!r}")
    # Neither flag had an effect in Keras 3; S1 baked s into the graph (spec §8.2).
    kw["intensity_scale_trainable"] = False
    if era in ("K1", "K2"):
        kw["probe_trainable"] = False
    if era == "K1":
        kw.update(combine="additive", amp_head_channels=1, recentre_offsets=False)
    elif era in ("S0", "S1"):
        kw.update(combine="polar", amp_head_channels=1, recentre_offsets=False)
    else:
        kw.update(combine="polar", amp_head_channels=None if amp_head_channels is None else int(amp_head_channels),
                  recentre_offsets=True)
    return kw


def data_config_kwargs_from_params(params: Mapping[str, Any], where: str = "params.dill") -> dict[str, Any]:
    """Keyword arguments of `DataConfig` (gridsize, neighbor_count, n_groups, nphotons)."""
    n_groups = params.get("n_groups", params.get("n_images"))
    return {
        "gridsize": _value(params, "gridsize", where),
        "neighbor_count": int(params.get("neighbor_count", 4)),
        "n_groups": None if n_groups is None else int(n_groups),
        "nphotons": _value(params, "nphotons", where),
    }


def train_config_kwargs_from_params(params: Mapping[str, Any], era: str,
                                    where: str = "params.dill") -> dict[str, Any]:
    """Keyword arguments of `TrainConfig` (epochs, batch size, loss weights, NLL form of the era)."""
    _check_era(era)
    kw = {field: _value(params, key, where) for field, key in TRAIN_KEYS.items()}
    if kw["model_type"] not in ("pinn", "supervised"):
        raise ConfigError(f"{where}: key 'model_type': expected 'pinn' or 'supervised', got {kw['model_type']!r}")
    kw["nll_form"] = "full_sum" if era in ("S0", "S1") else "mean"
    return kw


def _probe_nn1(probe: Any, N: int) -> np.ndarray:
    """Probe as the legacy `(N, N, 1)` complex64 array (accepts (N, N), (N, N, 1), (1, N, N, 1))."""
    if hasattr(probe, "detach"):  # a torch tensor, without importing torch
        probe = probe.detach().cpu().numpy()
    arr = np.asarray(probe)
    if arr.size != N * N:
        raise ConfigError(f"probe: expected {N}x{N} values, got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(N, N, 1).astype(np.complex64))


def params_from_configs(model_config: Any, data_config: Any, train_config: Any,
                        intensity_scale: float, probe: Any) -> dict[str, Any]:
    """The full legacy params dict (spec §5.1 defaults + §5.2 mapped fields) for writing a bundle.

    `intensity_scale`: s in sqrt-photon units; `probe`: `(N, N)` complex (numpy or torch) → stored
    as `(N, N, 1)` complex64. Also returns `_version` '1.0'. None values are skipped, as upstream does.
    """
    params: dict[str, Any] = dict(DEFAULT_CFG)
    for field, key in MODEL_KEYS.items():
        params[key] = getattr(model_config, field)
    for field, key in DATA_KEYS.items():
        value = getattr(data_config, field)
        if value is not None:
            params[key] = value
    for field, key in TRAIN_KEYS.items():
        params[key] = getattr(train_config, field)
    if int(getattr(data_config, "gridsize", params["gridsize"])) != int(model_config.gridsize):
        raise ConfigError(f"params_from_configs: DataConfig.gridsize {data_config.gridsize} differs from "
                          f"ModelConfig.gridsize {model_config.gridsize}")
    # keys every dataclass-era bundle carries (spec §5.2)
    params.update({
        "positions.provided": True, "architecture": "cnn", "probe_mask_sigma": 1.0, "probe_scale": 4.0,
        "backend": "tensorflow",
    })
    params["intensity_scale"] = float(intensity_scale)
    params["probe"] = _probe_nn1(probe, int(model_config.N))
    params["_version"] = "1.0"
    return params


__all__ = [
    "ERAS", "DEFAULT_CFG", "MODEL_KEYS", "TRAIN_KEYS", "DATA_KEYS",
    "model_config_kwargs_from_params", "data_config_kwargs_from_params",
    "train_config_kwargs_from_params", "params_from_configs",
]
