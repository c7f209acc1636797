"""`read_tf_bundle`: every era of legacy TensorFlow `wts.h5.zip` bundles, read without TensorFlow.

Eras (spec §0): S0 = `wts.h5_<model>/` SavedModel folders, no zip; S1 = zip of SavedModels;
K1 / K2 = zip of Keras-3 `model.keras` archives (K2 when the CombineComplexLayer config has
`use_polar`). Only json, h5py, numpy and the restricted unpickler touch the data; no torch,
no TensorFlow, no code from the bundle is run, and `custom_objects.dill` is never unpickled.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ptychopinn.errors import ModelFormatError

from .keras3 import KerasModelWeights, read_model_keras
from .safezip import DEFAULT_LIMITS, Limits, SafeDir, SafeZip, check_member_name
from .savedmodel_meta import parse_keras_metadata
from .tensorbundle import read_layer_weights
from .unpickle import load_manifest, load_params

BUNDLE_NAME = "wts.h5.zip"
MODEL_ORDER = ("diffraction_to_obj", "autoencoder")


class _Source(Protocol):
    where: str

    def read(self, name: str) -> bytes: ...
    def names(self) -> list[str]: ...
    def nested(self, name: str) -> SafeZip: ...
    def __contains__(self, name: str) -> bool: ...
    def close(self) -> None: ...


class _S0Source:
    """S0 layout: `<prefix>_<model>/...` folders exposed as `<model>/...` members."""

    def __init__(self, prefix: Path, models: list[str], limits: Limits) -> None:
        self.where = str(prefix)
        self._dirs = {m: SafeDir(Path(f"{prefix}_{m}"), limits=limits) for m in models}

    def _split(self, name: str) -> tuple[SafeDir, str] | None:
        model, _, rest = name.partition("/")
        d = self._dirs.get(model)
        return (d, rest) if d is not None and rest else None

    def read(self, name: str) -> bytes:
        hit = self._split(name)
        if hit is None:
            raise ModelFormatError(f"{self.where}: {name!r} not found")
        return hit[0].read(hit[1])

    def nested(self, name: str) -> SafeZip:
        hit = self._split(name)
        if hit is None:
            raise ModelFormatError(f"{self.where}: {name!r} not found")
        return hit[0].nested(hit[1])

    def names(self) -> list[str]:
        return [f"{m}/{n}" for m, d in self._dirs.items() for n in d.names()]

    def __contains__(self, name: str) -> bool:
        hit = self._split(name)
        return hit is not None and hit[1] in hit[0]

    def close(self) -> None:
        pass


@dataclass
class TFBundle:
    """A legacy bundle as plain numpy/Python data.

    era: "S0" | "S1" | "K1" | "K2". params: the legacy keys of params.dill (probe as a numpy
    array). intensity_scale: s in sqrt-photon units; intensity_scale_source says where it came from
    ("<model>/params.dill", "<model>/model.h5" or "<model>/keras_metadata.pb"). probe: `(N, N)`
    complex64 or None; probe_source likewise. models: name → KerasModelWeights (Keras
    `model.weights` order). manifest: manifest.dill (S0: synthesised). source: the path read.
    model_config_hints: architecture facts (params first, else inferred from weights/configs;
    `inferred` lists the keys that were not in params).
    """

    era: str
    params: dict[str, Any]
    intensity_scale: float
    intensity_scale_source: str
    probe: np.ndarray | None
    probe_source: str | None
    models: dict[str, KerasModelWeights]
    manifest: dict[str, Any]
    source: Path
    model_config_hints: dict[str, Any] = field(default_factory=dict)

    def model_config_kwargs(self) -> dict[str, Any]:
        """`ModelConfig` keyword arguments for this bundle (see `ptychopinn.interop.legacy`)."""
        from ptychopinn.interop.legacy import model_config_kwargs_from_params

        h = self.model_config_hints
        merged = {key: h[name] for name, key in _HINT_KEYS.items() if h.get(name) is not None}
        return model_config_kwargs_from_params(merged, self.era, amp_head_channels=h.get("amp_head_channels"),
                                               where=f"{self.source}: params")


#: hint name → legacy params key
_HINT_KEYS = {
    "N": "N", "gridsize": "gridsize", "n_filters_scale": "n_filters_scale", "object_big": "object.big",
    "probe_big": "probe.big", "pad_object": "pad_object", "amp_activation": "amp_activation",
    "probe_mask": "probe.mask", "gaussian_smoothing_sigma": "gaussian_smoothing_sigma", "offset": "offset",
    "max_position_jitter": "max_position_jitter", "probe_trainable": "probe.trainable",
}


def _not_a_bundle(path: Any) -> ModelFormatError:
    return ModelFormatError(f"{path}: not a PtychoPINN bundle: expected manifest.dill and "
                            "<model>/model.keras or saved_model.pb")


def _s0_models(prefix: Path) -> list[str]:
    parent = prefix.parent if str(prefix.parent) else Path(".")
    if not parent.is_dir():
        return []
    stem = prefix.name + "_"
    return sorted(p.name[len(stem):] for p in parent.iterdir()
                  if p.is_dir() and p.name.startswith(stem) and len(p.name) > len(stem))


def _open_source(path: Path, limits: Limits) -> tuple[_Source, bool]:
    """(member source, is_s0) for a zip, its folder, an unzipped bundle folder or the `wts.h5` prefix."""
    if path.is_dir():
        if (path / BUNDLE_NAME).is_file():
            return SafeZip(path / BUNDLE_NAME, limits=limits), False
        models = _s0_models(path / "wts.h5")
        if models:
            return _S0Source(path / "wts.h5", models, limits), True
        if (path / "manifest.dill").is_file():
            return SafeDir(path, limits=limits), False
        raise _not_a_bundle(path)
    if path.is_file():
        return SafeZip(path, limits=limits), False
    zipped = Path(f"{path}.zip")
    if zipped.is_file():
        return SafeZip(zipped, limits=limits), False
    models = _s0_models(path)
    if models:
        return _S0Source(path, models, limits), True
    if not path.exists() and not path.parent.exists():
        raise ModelFormatError(f"{path}: no such file or folder")
    raise _not_a_bundle(path)


def _model_h5_scale(data: bytes, where: str) -> float | None:
    import io

    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            value = h5.attrs.get("intensity_scale")
    except OSError as exc:
        raise ModelFormatError(f"{where}: not an HDF5 file ({exc})") from None
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise ModelFormatError(f"{where}: attribute intensity_scale: expected one number, got {arr!r}")
    return float(arr.reshape(()))


def _read_savedmodel(src: _Source, model: str, verify: bool) -> tuple[KerasModelWeights, float | None]:
    """An S0/S1 SavedModel folder → (weights, baked intensity scale)."""
    where = f"{src.where}:{model}"
    index_name = f"{model}/variables/variables.index"
    if index_name not in src:
        raise ModelFormatError(f"{where}: SavedModel without variables/variables.index")
    index = src.read(index_name)
    shard_re = re.compile(rf"^{re.escape(model)}/variables/variables\.data-(\d+)-of-(\d+)$")
    found = sorted((int(m.group(1)), int(m.group(2)), n) for n in src.names() if (m := shard_re.match(n)))
    if not found or [i for i, _, _ in found] != list(range(found[0][1])) or len(found) != found[0][1]:
        raise ModelFormatError(f"{where}: variables.data-*-of-* shards missing or inconsistent")
    shards = [src.read(n) for _, _, n in found]
    weights, extras = read_layer_weights(index, shards, f"{where}/variables", verify=verify)
    meta = None
    if f"{model}/keras_metadata.pb" in src:
        meta = parse_keras_metadata(src.read(f"{model}/keras_metadata.pb"), f"{where}/keras_metadata.pb")
        convs = meta.layer_names("Conv2D")
        if len(convs) * 2 == len(weights) and all(n.endswith(("/kernel", "/bias")) for n, _ in weights):
            weights = [(f"{convs[i // 2]}/{n.rsplit('/', 1)[1]}", a) for i, (n, a) in enumerate(weights)]
    kw = KerasModelWeights(name=model, weights=weights, extras=extras,
                           layers=meta.layers if meta else [], input_shape=meta.input_shape if meta else None)
    return kw, (meta.baked_scale if meta else None)


def _probe_2d(arr: Any, N: int | None, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.number):
        raise ModelFormatError(f"{where}: probe: expected a numeric array, got dtype {a.dtype}")
    sq = a.reshape([d for d in a.shape if d != 1]) if a.ndim > 2 else a
    if sq.ndim != 2 or sq.shape[0] != sq.shape[1] or (N is not None and sq.shape[0] != N):
        raise ModelFormatError(f"{where}: probe: expected shape (N, N[, 1]) with N={N}, got {a.shape}")
    return np.ascontiguousarray(sq.astype(np.complex64))


def _conv_counts(N: int) -> int:
    """Conv layers of the pad_object model without probe.big (spec §3): encoder + 2 decoders + heads."""
    nb = int(round(math.log2(N))) - 3
    return 2 * nb + 4 * (nb - 1) + 2


def _hints(params: dict, model: KerasModelWeights | None) -> dict[str, Any]:
    """Architecture facts: params.dill first; else inferred from the weights and configs."""
    h: dict[str, Any] = {}
    inferred: list[str] = []
    kernels = model.kernels if model else []
    shape = model.input_shape if model else None
    layers = model.layers if model else []

    def take(name: str, key: str, guess: Any) -> None:
        if key in params and params[key] is not None:
            h[name] = params[key]
        else:
            h[name] = guess
            if guess is not None:
                inferred.append(name)

    take("N", "N", shape[0] if shape else None)
    C = shape[2] if shape else None
    take("gridsize", "gridsize", math.isqrt(C) if C and math.isqrt(C) ** 2 == C else None)
    N = h["N"]
    nfs_guess = None
    if kernels and N in (64, 128, 256) and kernels[0].shape[3] % (2048 // N) == 0:
        nfs_guess = kernels[0].shape[3] // (2048 // N)
    take("n_filters_scale", "n_filters_scale", nfs_guess)
    amp_ch = int(kernels[-2].shape[3]) if len(kernels) >= 2 else None
    phase_ch = int(kernels[-1].shape[3]) if len(kernels) >= 2 else None
    C = C or (h["gridsize"] ** 2 if h["gridsize"] else None)
    take("object_big", "object.big", (phase_ch == C or C == 1) if phase_ch and C else None)
    take("probe_big", "probe.big", (len(kernels) == _conv_counts(N) + 6) if kernels and N in (64, 128, 256) else None)
    head_in = int(kernels[-1].shape[2]) if kernels else None
    take("pad_object", "pad_object",
         (head_in == 32 * h["n_filters_scale"] - 4) if head_in and h["n_filters_scale"] else None)
    act = None
    for layer in layers:
        if layer.get("name") == "amp" and "activation_name" in layer.get("config", {}):
            act = layer["config"]["activation_name"]
    take("amp_activation", "amp_activation", act)
    take("probe_mask", "probe.mask", None)
    take("probe_trainable", "probe.trainable", None)
    take("gaussian_smoothing_sigma", "gaussian_smoothing_sigma", None)
    take("offset", "offset", None)
    padded = None
    for layer in layers:
        if str(layer.get("class_name")) == "ReassemblePatchesLayer" and "padded_size" in layer.get("config", {}):
            padded = int(layer["config"]["padded_size"])
    jitter_guess = None
    if padded is not None and N and h["gridsize"] and h["offset"] is not None:
        jitter_guess = padded - N - (h["gridsize"] - 1) * h["offset"]
    take("max_position_jitter", "max_position_jitter", jitter_guess)
    if padded is None and None not in (N, h["gridsize"], h["offset"], h["max_position_jitter"]):
        padded = N + (h["gridsize"] - 1) * h["offset"] + h["max_position_jitter"]
    h["padded_size"] = padded
    h["amp_head_channels"] = amp_ch
    h["phase_head_channels"] = phase_ch
    h["inferred"] = inferred
    return h


def read_tf_bundle(path: str | os.PathLike, *, verify_checksums: bool = True,
                   limits: Limits = DEFAULT_LIMITS) -> TFBundle:
    """Read a legacy TensorFlow PtychoPINN bundle of any era (S0, S1, K1, K2).

    `path`: the `wts.h5.zip`, the folder holding it, an unzipped bundle folder, the `wts.h5`
    prefix upstream uses, or (S0) the folder holding `wts.h5_<model>/`. Raises ModelFormatError
    (one line) for anything missing, corrupt, unsafe or unrecognised.
    """
    path = Path(path)
    src, is_s0 = _open_source(path, limits)
    try:
        return _read(src, path, is_s0, verify_checksums)
    finally:
        src.close()


def _read(src: _Source, path: Path, is_s0: bool, verify: bool) -> TFBundle:
    if "manifest.dill" in src:
        manifest = load_manifest(src.read("manifest.dill"), f"{src.where}:manifest.dill")
    elif is_s0:
        manifest = {"models": sorted({n.split("/", 1)[0] for n in src.names()}), "version": None}
    else:
        raise _not_a_bundle(path)
    names = list(manifest["models"])
    for m in names:
        if "/" in m or check_member_name(m, src.where) != m:
            raise ModelFormatError(f"{src.where}:manifest.dill: model name {m!r} is not a plain folder name")
    names.sort(key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))

    models: dict[str, KerasModelWeights] = {}
    params_by_model: dict[str, dict] = {}
    h5_scale: dict[str, float] = {}
    baked: dict[str, float] = {}
    kinds: set[str] = set()
    for m in names:
        if f"{m}/saved_model.pb" in src:
            kinds.add("savedmodel")
            models[m], scale = _read_savedmodel(src, m, verify)
            if scale is not None:
                baked[m] = scale
        elif f"{m}/model.keras" in src:
            kinds.add("keras")
            with src.nested(f"{m}/model.keras") as inner:
                models[m] = read_model_keras(inner, m)
        else:
            raise ModelFormatError(f"{src.where}: model {m!r} has neither {m}/model.keras nor {m}/saved_model.pb "
                                   "(not a PtychoPINN bundle)")
        if f"{m}/params.dill" in src:
            params_by_model[m] = load_params(src.read(f"{m}/params.dill"), f"{src.where}:{m}/params.dill")
        if f"{m}/model.h5" in src:
            s = _model_h5_scale(src.read(f"{m}/model.h5"), f"{src.where}:{m}/model.h5")
            if s is not None:
                h5_scale[m] = s
    if len(kinds) != 1:
        raise ModelFormatError(f"{src.where}: models mix SavedModel and Keras-3 formats")

    if "savedmodel" in kinds:
        era = "S0" if is_s0 else "S1"
    else:
        polar = [w.combine_use_polar for w in models.values() if w.combine_use_polar is not None]
        era = "K2" if polar else "K1"

    primary = names[0]
    params_owner = primary if primary in params_by_model else next(iter(params_by_model), None)
    params = params_by_model[params_owner] if params_owner is not None else {}

    scale, scale_src = None, None
    if params_owner is not None and params.get("intensity_scale") is not None:
        scale, scale_src = params["intensity_scale"], f"{params_owner}/params.dill"
    elif h5_scale:
        m = primary if primary in h5_scale else next(iter(h5_scale))
        scale, scale_src = h5_scale[m], f"{m}/model.h5"
    elif baked:
        m = primary if primary in baked else next(iter(baked))
        scale, scale_src = baked[m], f"{m}/keras_metadata.pb"
    if scale is None or scale_src is None:  # set together
        raise ModelFormatError(f"{src.where}: no intensity_scale in params.dill, model.h5 or keras_metadata.pb")
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{src.where}:{scale_src}: intensity_scale: expected a number, got {scale!r}") from None
    if not math.isfinite(scale) or scale <= 0:
        raise ModelFormatError(f"{src.where}:{scale_src}: intensity_scale: expected a positive number, got {scale}")

    hints = _hints(params, models[primary])
    N = hints.get("N")
    probe, probe_src = None, None
    if params.get("probe") is not None:
        probe = _probe_2d(params["probe"], N, f"{src.where}:{params_owner}/params.dill")
        probe_src = f"{params_owner}/params.dill"
    else:
        for m, w in models.items():
            for key, arr in w.extras.items():
                if np.iscomplexobj(arr) and arr.ndim == 4 and arr.shape[0] == 1 and arr.shape[3] == 1:
                    probe = _probe_2d(arr, N, f"{src.where}:{m}/variables")
                    probe_src = f"{m}/variables:{key}"
                    break
            if probe is not None:
                break

    return TFBundle(era=era, params=params, intensity_scale=scale, intensity_scale_source=scale_src,
                    probe=probe, probe_source=probe_src, models=models, manifest=manifest,
                    source=path, model_config_hints=hints)


__all__ = ["TFBundle", "KerasModelWeights", "read_tf_bundle"]
