"""Keras-3 `model.keras` archives (eras K1/K2, spec §6.3) read with json + h5py only.

`config.json` lists the functional model's layers in `model.layers` order. `model.weights.h5` holds
one group per layer, `layers/<snake_case(class)>[_k]/vars/<i>`, where k counts earlier layers of the
same class in that order (so H5 paths are not Keras layer names). Keras operations serialised in
the config (`keras.src.ops.*`: GetItem, Silu, Add, ...) are not layers and have no group. Walking the
layers in order and taking each one's `vars` in numeric order gives `model.weights` order.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptychopinn.errors import ModelFormatError

from .safezip import SafeZip

#: Keras variable names of `vars/0, vars/1, ...` for the layer classes we know
_VAR_NAMES = {"Conv2D": ("kernel", "bias"), "Dense": ("kernel", "bias"), "Conv2DTranspose": ("kernel", "bias")}


@dataclass
class KerasModelWeights:
    """The weights of one legacy model, in Keras `model.weights` order, as numpy arrays.

    `weights`: [(name, array)], name = "<keras layer name>/<kernel|bias>" (S1: the layer names of
    keras_metadata.pb when they line up, else "layer_with_weights-i/<var>"); kernels `(3, 3, in,
    out)` float32, biases `(out,)`. `layers`: the functional config's layers in order, each a dict
    with name, class_name, registered_name, module, config (plain JSON data; S1 Lambda code is never
    executed). `combine_use_polar`: the CombineComplexLayer's `use_polar` (None = key absent or no
    such layer). `input_shape`: the diffraction input (N, N, C) when known. `extras`: variables that
    are not conv weights (S1: the autoencoder probe `(1, N, N, 1)` complex64).
    """

    name: str
    weights: list[tuple[str, np.ndarray]]
    layers: list[dict[str, Any]] = field(default_factory=list)
    combine_use_polar: bool | None = None
    input_shape: tuple[int, ...] | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    keras_version: str | None = None

    @property
    def kernels(self) -> list[np.ndarray]:
        """Conv kernels only (4-D), in order."""
        return [a for _, a in self.weights if a.ndim == 4]

    @property
    def n_parameters(self) -> int:
        return int(sum(a.size for _, a in self.weights))


def snake_case(name: str) -> str:
    """Keras' `to_snake_case` for class names: 'UpSampling2D' → 'up_sampling2d'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def _is_operation(layer: dict) -> bool:
    """Config entries for Keras ops (not Layers): they have no weights group."""
    return str(layer.get("module") or "").startswith(("keras.src.ops", "keras.ops"))


def _short_class(layer: dict) -> str:
    reg = layer.get("registered_name") or ""
    return reg.split(">")[-1] if reg else str(layer.get("class_name", ""))


def _datasets(group: Any) -> list[str]:
    import h5py

    found: list[str] = []
    group.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return found


def _input_shape(layers: list[dict]) -> tuple[int, ...] | None:
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            cfg = layer.get("config", {})
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if isinstance(shape, dict):
                shape = shape.get("items")
            if isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) for s in shape[1:]):
                return tuple(shape[1:])
    return None


def combine_use_polar(layers: list[dict]) -> bool | None:
    """`use_polar` of the CombineComplexLayer (None when the key or the layer is absent)."""
    for layer in layers:
        if _short_class(layer) == "CombineComplexLayer":
            value = layer.get("config", {}).get("use_polar")
            return None if value is None else bool(value)
    return None


def parse_config(data: bytes, where: str) -> dict:
    try:
        cfg = json.loads(data.decode("utf-8"))
        layers = cfg["config"]["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
            raise TypeError("layers is not a list of objects")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{where}: config.json is not a Keras functional config ({exc})") from None
    return cfg


def read_weights_h5(data: bytes, layers: list[dict], where: str) -> list[tuple[str, np.ndarray]]:
    """`model.weights.h5` bytes → [(layer_name/var, array)] in model.weights order."""
    import h5py

    out: list[tuple[str, np.ndarray]] = []
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        raise ModelFormatError(f"{where}: model.weights.h5 is not an HDF5 file ({exc})") from None
    with h5:
        if "layers" not in h5:
            raise ModelFormatError(f"{where}: model.weights.h5 has no 'layers' group")
        groups = h5["layers"]
        counts: dict[str, int] = {}
        claimed: set[str] = set()
        for layer in layers:
            if _is_operation(layer):
                continue
            base = snake_case(str(layer.get("class_name", "")))
            k = counts.get(base, 0)
            counts[base] = k + 1
            gname = base if k == 0 else f"{base}_{k}"
            claimed.add(gname)
            layer_name = str(layer.get("config", {}).get("name") or layer.get("name") or gname)
            if gname not in groups:
                if layer.get("class_name") in _VAR_NAMES:
                    raise ModelFormatError(f"{where}: model.weights.h5 lacks group layers/{gname} for layer {layer_name!r}")
                continue
            grp = groups[gname]
            nested = [d for d in _datasets(grp) if not d.startswith("vars/")]
            if nested:
                raise ModelFormatError(f"{where}: layers/{gname} has nested-layer weights {nested[:3]}; not supported")
            vars_ = grp["vars"] if "vars" in grp else {}
            try:
                keys = sorted(vars_, key=int)
            except ValueError:
                raise ModelFormatError(f"{where}: layers/{gname}/vars has non-numeric names {list(vars_)}") from None
            names = _VAR_NAMES.get(str(layer.get("class_name")), ())
            for i, key in enumerate(keys):
                var = names[i] if i < len(names) else str(key)
                arr = np.array(vars_[key][()])
                out.append((f"{layer_name}/{var}", arr))
        orphans = [g for g in groups if g not in claimed and _datasets(groups[g])]
        if orphans:
            raise ModelFormatError(f"{where}: model.weights.h5 groups {orphans[:3]} match no layer of config.json "
                                   "(layer order cannot be trusted)")
    return out


def read_model_keras(archive: SafeZip, name: str) -> KerasModelWeights:
    """Read `<name>/model.keras` (already opened as a nested SafeZip)."""
    where = archive.where
    for member in ("config.json", "model.weights.h5"):
        if member not in archive:
            raise ModelFormatError(f"{where}: missing {member} (not a Keras-3 model archive)")
    cfg = parse_config(archive.read("config.json"), where)
    layers = [
        {"name": str(layer.get("config", {}).get("name") or layer.get("name")),
         "class_name": layer.get("class_name"), "registered_name": layer.get("registered_name"),
         "module": layer.get("module"), "config": layer.get("config", {})}
        for layer in cfg["config"]["layers"]
    ]
    weights = read_weights_h5(archive.read("model.weights.h5"), cfg["config"]["layers"], where)
    version = None
    if "metadata.json" in archive:
        try:
            version = json.loads(archive.read("metadata.json")).get("keras_version")
        except (ValueError, AttributeError):
            version = None
    return KerasModelWeights(name=name, weights=weights, layers=layers,
                             combine_use_polar=combine_use_polar(layers),
                             input_shape=_input_shape(cfg["config"]["layers"]), keras_version=version)
