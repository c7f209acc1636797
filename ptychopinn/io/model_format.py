"""The native model format: `config.json` + `model.safetensors`, as a directory or a `.zip`.

    <model>/config.json          {"format": "ptychopinn.model", "format_version": 1,
                                   "ptychopinn_version": ..., "model_config": {ModelConfig fields},
                                   "intensity_scale": s, "extra": {...}}
    <model>/model.safetensors    PtychoPINN.state_dict(); complex tensors as (..., 2) real views
                                 listed in the header metadata "__complex__"

A `.zip` holds the same two members (at its root or under one folder). Loading parses JSON and
safetensors only: nothing is unpickled and no code runs. Every problem is a one-line
ModelFormatError naming the file and the key or tensor. Layout details: docs/native-format.md.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .. import __version__
from ..config import ModelConfig, config_to_dict
from ..errors import ConfigError, ModelFormatError
from ..model import PtychoPINN
from .atomic import atomic_directory, atomic_write, strict_json_dumps
from .device import resolve_device
from .tensor_codec import decode_state, encode_state, read_header

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ModelInfo",
    "save_model",
    "load_model",
    "read_model_info",
    "is_model_path",
]

FORMAT_NAME = "ptychopinn.model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_REQUIRED_KEYS = ("format", "format_version", "model_config", "intensity_scale")
_OPTIONAL_KEYS = ("ptychopinn_version", "extra")
#: limits applied before reading anything into memory
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_WEIGHTS_BYTES = 16 * 1024**3
#: zip members expanding more than this (uncompressed / compressed) are refused
MAX_ZIP_RATIO = 200


@dataclass(frozen=True)
class ModelInfo:
    """What `config.json` (and the safetensors header) of a saved model say, weights not loaded."""

    config: ModelConfig
    intensity_scale: float
    format_version: int
    ptychopinn_version: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    #: tensor name -> (safetensors dtype, stored shape)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    complex_tensors: tuple[str, ...] = ()


# -- saving ------------------------------------------------------------------------------------
def _package_version() -> str:
    return __version__


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module itself when given a torch.compile wrapper."""
    return getattr(model, "_orig_mod", model)


def _config_document(model: torch.nn.Module, extra: dict | None) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"save_model: model.config must be a ModelConfig, got {type(config).__name__}")
    if hasattr(model, "intensity_scale"):
        scale = float(cast(Any, model).intensity_scale)  # a property of the model class, not a submodule
    else:
        scale = float(torch.exp(model.state_dict()["log_intensity_scale"].detach().double()).item())
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "ptychopinn_version": _package_version(),
        "model_config": config_to_dict(config),
        "intensity_scale": scale,
        "extra": dict(extra or {}),
    }
    try:
        json.dumps(doc["extra"], allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_model: key 'extra' must be JSON-serialisable ({exc})") from None
    return doc


def _refuse_foreign_directory(path: Path) -> None:
    """Replace only an empty directory or one holding exactly a saved model (never user data)."""
    if not path.is_dir() or not any(path.iterdir()):
        return
    cfg = path / CONFIG_NAME
    try:
        ok = cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise FileExistsError(f"{path}: directory exists and is not a ptychopinn model; refusing to replace it")
    others = sorted(p.name for p in path.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME))
    if others:
        raise FileExistsError(
            f"{path}: model directory also holds {', '.join(others[:3])}; refusing to replace it (save elsewhere)"
        )


def save_model(model: torch.nn.Module, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Save `model` (a PtychoPINN) to a model directory, or to a single `.zip` when `path` ends so.

    extra: JSON-serialisable information kept under "extra" (data normalisation, training
    summary, provenance). Writes atomically: an existing model at `path` is replaced only once
    the new one is complete. Returns the path.
    """
    model = _unwrap(model)
    target = Path(path)
    doc = _config_document(model, extra)
    config_bytes = (strict_json_dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")  # NaN/inf -> null
    weights = encode_state(model.state_dict(), metadata={"ptychopinn_format": FORMAT_NAME})
    if target.suffix.lower() == ".zip":
        if target.is_dir():
            raise FileExistsError(f"{target}: is a directory, expected a .zip file path")
        with atomic_write(target, "wb") as fh:
            with zipfile.ZipFile(fh, "w") as zf:
                zf.writestr(zipfile.ZipInfo(CONFIG_NAME, (1980, 1, 1, 0, 0, 0)), config_bytes, zipfile.ZIP_DEFLATED)
                zf.writestr(zipfile.ZipInfo(WEIGHTS_NAME, (1980, 1, 1, 0, 0, 0)), weights, zipfile.ZIP_STORED)
        return target
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a directory (use a .zip suffix for a single file)")
    _refuse_foreign_directory(target)
    with atomic_directory(target) as tmp:
        (tmp / CONFIG_NAME).write_bytes(config_bytes)
        (tmp / WEIGHTS_NAME).write_bytes(weights)
    return target


# -- reading -----------------------------------------------------------------------------------
def _read_limited(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ModelFormatError(f"{path}: {size} bytes exceeds the {limit}-byte limit")
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing (a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME})") from None
    except IsADirectoryError:
        raise ModelFormatError(f"{path}: expected a file, found a directory") from None


def _safe_member_name(name: str, source: Path) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise ModelFormatError(f"{source}: unsafe zip member name {name!r} (absolute path or '..')")


def _read_zip(path: Path) -> tuple[bytes, bytes]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: not a readable .zip ({exc})") from None
    info: zipfile.ZipInfo | None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for info in zf.infolist():
            _safe_member_name(info.filename, path)
        names = [i.filename for i in infos]
        prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
        strip = ""
        if len(prefixes) == 1 and all("/" in n for n in names):
            strip = prefixes.pop() + "/"
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            rel = info.filename[len(strip) :]
            if rel not in (CONFIG_NAME, WEIGHTS_NAME):
                raise ModelFormatError(
                    f"{path}: unexpected zip member {info.filename!r} (expected only {CONFIG_NAME} and {WEIGHTS_NAME})"
                )
            if rel in members:
                raise ModelFormatError(f"{path}: duplicate zip member {info.filename!r}")
            members[rel] = info
        out = []
        for rel, limit in ((CONFIG_NAME, MAX_CONFIG_BYTES), (WEIGHTS_NAME, MAX_WEIGHTS_BYTES)):
            info = members.get(rel)
            if info is None:
                raise ModelFormatError(f"{path}: zip member {strip + rel!r} is missing")
            if info.flag_bits & 0x1:
                raise ModelFormatError(f"{path}: zip member {info.filename!r} is encrypted")
            if info.file_size > limit:
                raise ModelFormatError(f"{path}: zip member {info.filename!r} is {info.file_size} bytes, over the limit {limit}")
            if info.file_size > 1024 and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
                raise ModelFormatError(f"{path}: zip member {info.filename!r} has a suspicious compression ratio")
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                raise ModelFormatError(f"{path}: zip member {info.filename!r} is corrupt ({exc})") from None
            if len(data) != info.file_size:
                raise ModelFormatError(f"{path}: zip member {info.filename!r} is truncated")
            out.append(data)
    return out[0], out[1]


def _read_files(path: str | os.PathLike) -> tuple[bytes, bytes, str, str]:
    """(config bytes, weights bytes, config source name, weights source name)."""
    p = Path(path)
    if p.is_dir():
        return (
            _read_limited(p / CONFIG_NAME, MAX_CONFIG_BYTES),
            _read_limited(p / WEIGHTS_NAME, MAX_WEIGHTS_BYTES),
            str(p / CONFIG_NAME),
            str(p / WEIGHTS_NAME),
        )
    if not p.exists():
        raise ModelFormatError(f"{p}: no such model directory or .zip")
    if not zipfile.is_zipfile(p):
        raise ModelFormatError(f"{p}: not a ptychopinn model (expected a directory or a .zip holding {CONFIG_NAME} and {WEIGHTS_NAME}), or the .zip is truncated")
    config_bytes, weights = _read_zip(p)
    return config_bytes, weights, f"{p}:{CONFIG_NAME}", f"{p}:{WEIGHTS_NAME}"


#: ModelConfig fields that are an optional string (the other None defaults are optional ints)
_OPTIONAL_STR_FIELDS = ("attention",)


def _check_field_type(name: str, value: Any, default: Any, source: str) -> None:
    if default is None and name in _OPTIONAL_STR_FIELDS:
        ok, expected = value is None or isinstance(value, str), "a string or null"
    elif default is None:  # optional int (amp_head_channels)
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        expected = "an integer or null"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ModelFormatError(f"{source}: key 'model_config.{name}' must be {expected}, got {value!r}")


def _parse_model_config(values: Any, source: str) -> ModelConfig:
    if not isinstance(values, dict):
        raise ModelFormatError(f"{source}: key 'model_config' must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ModelFormatError(f"{source}: unknown model_config key(s) {', '.join(unknown)} (expected ModelConfig fields)")
    for name, value in values.items():
        _check_field_type(name, value, fields[name].default, source)
    try:
        return ModelConfig(**values)
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"{source}: invalid model_config ({exc})") from None


def parse_config_document(data: bytes, source: str) -> dict[str, Any]:
    """Validate config.json bytes; returns the document with `model_config` as a ModelConfig."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{source}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{source}: expected a JSON object at the top level")
    if doc.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{source}: key 'format' must be {FORMAT_NAME!r}, got {doc.get('format')!r}")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{source}: key 'format_version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{source}: format_version {version} is newer than this ptychopinn reads ({FORMAT_VERSION}); upgrade ptychopinn"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in doc]
    if missing:
        raise ModelFormatError(f"{source}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(doc) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ModelFormatError(f"{source}: unknown key(s) {', '.join(unknown)} for format_version {version}")
    scale = doc["intensity_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ModelFormatError(f"{source}: key 'intensity_scale' must be a positive finite number, got {scale!r}")
    extra = doc.get("extra", {})
    if not isinstance(extra, dict):
        raise ModelFormatError(f"{source}: key 'extra' must be a JSON object")
    pv = doc.get("ptychopinn_version")
    if pv is not None and not isinstance(pv, str):
        raise ModelFormatError(f"{source}: key 'ptychopinn_version' must be a string")
    out = dict(doc)
    out["model_config"] = _parse_model_config(doc["model_config"], source)
    out["intensity_scale"] = float(scale)
    out["extra"] = extra
    return out


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Validate a saved model's config.json and safetensors header without building the model."""
    config_bytes, weights, csrc, wsrc = _read_files(path)
    doc = parse_config_document(config_bytes, csrc)
    header, metadata = read_header(weights, wsrc)
    try:
        complex_names = tuple(json.loads(metadata.get("__complex__", "[]")))
    except (json.JSONDecodeError, TypeError):
        complex_names = ()
    return ModelInfo(
        config=doc["model_config"],
        intensity_scale=doc["intensity_scale"],
        format_version=doc["format_version"],
        ptychopinn_version=doc.get("ptychopinn_version"),
        extra=doc["extra"],
        tensors={k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()},
        complex_tensors=complex_names,
    )


def is_model_path(path: str | os.PathLike) -> bool:
    """True when `path` is a directory or .zip that holds a native model (cheap check)."""
    p = Path(path)
    if p.is_dir():
        return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()
    if p.is_file() and zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = {n.rsplit("/", 1)[-1] for n in zf.namelist()}
            return {CONFIG_NAME, WEIGHTS_NAME} <= names
        except (zipfile.BadZipFile, OSError):
            return False
    return False


# -- loading -----------------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128, torch.float16: torch.complex32}


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ConfigError(f"load_model: key 'dtype' must be one of {', '.join(_DTYPES)}, got {dtype!r}")


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast real floating tensors to `dtype` and complex ones to the matching complex dtype.

    (`nn.Module.to(float64)` would discard the imaginary part of complex buffers.)
    """
    if not dtype.is_floating_point:
        raise ConfigError(f"load_model: key 'dtype' must be a real floating dtype, got {dtype}")
    complex_dtype = _COMPLEX_OF.get(dtype, torch.complex64)

    def convert(t: torch.Tensor) -> torch.Tensor:
        if t.is_complex():
            return t.to(complex_dtype)
        if t.is_floating_point():
            return t.to(dtype)
        return t

    return module._apply(convert)


def _check_tensors(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelFormatError(f"{source}: missing tensor(s) {', '.join(missing)}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ModelFormatError(f"{source}: unexpected tensor(s) {', '.join(unexpected)} for this model_config")
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise ModelFormatError(
                f"{source}: tensor {name!r} has shape {tuple(t.shape)}, model_config expects {tuple(ref.shape)}"
            )
        if t.is_complex() != ref.is_complex() or t.is_floating_point() != ref.is_floating_point():
            raise ModelFormatError(f"{source}: tensor {name!r} has dtype {t.dtype}, expected {ref.dtype}")
        # numpy's check is ~10x faster than torch.isfinite on CPU; decoded tensors live on the CPU
        if (t.is_floating_point() or t.is_complex()) and t.dtype != torch.bfloat16 and not np.isfinite(t.numpy()).all():
            raise ModelFormatError(f"{source}: tensor {name!r} holds NaN or inf")


def load_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> "PtychoPINN":
    """Load a native model (directory or .zip) into a ready `PtychoPINN` in eval mode.

    device: None → CPU; "auto" → CUDA when available (else CPU with a warning); or any device
    string `resolve_device` accepts. dtype: optional real floating dtype for the parameters
    (complex buffers follow: float64 → complex128). Probe and intensity scale are restored
    from the state dict. Raises ModelFormatError for anything missing, corrupt or unsafe.
    """

    target = torch.device("cpu") if device is None else resolve_device(device)
    dt = _as_dtype(dtype)
    config_bytes, weights, csrc, wsrc = _read_files(path)
    doc = parse_config_document(config_bytes, csrc)
    tensors, _ = decode_state(weights, wsrc)
    config: ModelConfig = doc["model_config"]
    probe = tensors.get("probe")
    N = config.N
    shape_ok = probe is not None and (
        tuple(probe.shape) == (N, N) or (probe.ndim == 3 and probe.shape[0] >= 2 and tuple(probe.shape[1:]) == (N, N))
    )
    if probe is not None and (not probe.is_complex() or not shape_ok):  # (K, N, N): K incoherent modes
        raise ModelFormatError(
            f"{wsrc}: tensor 'probe' must be ({N}, {N}) or (K >= 2, {N}, {N}) complex, got {tuple(probe.shape)} {probe.dtype}"
        )
    try:
        model = PtychoPINN(config, probe=probe, intensity_scale=doc["intensity_scale"])
    except (ConfigError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{csrc}: cannot build the model ({exc})") from None
    _check_tensors(model.state_dict(), tensors, wsrc)
    log_s = tensors.get("log_intensity_scale")
    if log_s is not None:
        stored = math.exp(float(log_s.double().item()))
        if not math.isclose(stored, doc["intensity_scale"], rel_tol=1e-5):
            raise ModelFormatError(
                f"{csrc}: key 'intensity_scale' ({doc['intensity_scale']}) disagrees with tensor "
                f"'log_intensity_scale' (exp = {stored})"
            )
    model.load_state_dict(tensors, strict=True)
    if dt is not None:
        cast_floating(model, dt)
    model.to(target)
    model.eval()
    return model
