"""Training state on disk without pickle: tensors in safetensors, scalars in JSON.

`training_state.safetensors` holds the optimiser's per-parameter tensors (Adam moments and
steps), the torch CPU (and CUDA) generator states as uint8 tensors and the AMP grad-scaler
tensors; `training_state.json` holds everything else: epoch, optimiser hyper-parameters,
scheduler state, the numpy `Generator` and python `random` states, and the history.
Loading parses only JSON and safetensors — never `torch.load`.
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelFormatError

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
STATE_FORMAT = "ptychopinn.training_state"
STATE_VERSION = 1


# -- JSON helpers ---------------------------------------------------------------------------
def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON value of a scalar/list/dict (non-finite floats as strings, tuples as lists)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{where}: unexpected tensor of shape {tuple(value.shape)} in JSON state")
        value = value.item()
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"{where}: cannot store {type(value).__name__} in training_state.json")


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


# -- optimiser ------------------------------------------------------------------------------
def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into safetensors tensors and a JSON dict."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = _jsonable(value, f"optimizer.{pid}.{name}")
    groups = [_jsonable(dict(g), "optimizer.param_groups") for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    """Inverse of `optimizer_state` (tensors are moved to the parameters' device by torch)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(_unjson(values))
    groups = _unjson(info["param_groups"])
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- random number generators ---------------------------------------------------------------
def rng_state(np_rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch CPU/CUDA generator states (uint8 tensors), numpy Generator and python random (JSON)."""
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.torch_cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    info = {
        "numpy_generator": _jsonable(np_rng.bit_generator.state, "rng.numpy"),
        "python_random": [version, list(internal), gauss],
    }
    return tensors, info


def restore_rng_state(np_rng: np.random.Generator, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (CUDA states only when that many devices exist)."""
    torch.set_rng_state(tensors["rng.torch_cpu"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.torch_cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) <= torch.cuda.device_count():
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s.to(torch.uint8), i)
    np_rng.bit_generator.state = _unjson(info["numpy_generator"])
    version, internal, gauss = info["python_random"]
    random.setstate((version, tuple(internal), gauss))


# -- files ----------------------------------------------------------------------------------
def write_state(folder: str | os.PathLike[str], tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write the two state files into `folder` (the caller makes the folder write atomic)."""
    folder = Path(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / STATE_TENSORS))
    payload = {"format": STATE_FORMAT, "format_version": STATE_VERSION, **_jsonable(info, "state")}
    (folder / STATE_JSON).write_text(json.dumps(payload, indent=1, allow_nan=False), encoding="utf-8")


def read_state(folder: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (tensors, info) back; ModelFormatError naming the file when missing or malformed."""
    folder = Path(folder)
    tpath, jpath = folder / STATE_TENSORS, folder / STATE_JSON
    for p in (tpath, jpath):
        if not p.is_file():
            raise ModelFormatError(f"{p}: training state file not found (cannot resume)")
    try:
        info = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{jpath}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != STATE_FORMAT:
        raise ModelFormatError(f"{jpath}: key 'format' must be {STATE_FORMAT!r}")
    if info.get("format_version") != STATE_VERSION:
        raise ModelFormatError(f"{jpath}: key 'format_version' must be {STATE_VERSION}, got {info.get('format_version')!r}")
    try:
        tensors = load_file(str(tpath))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFormatError(f"{tpath}: not a valid safetensors file ({exc})") from exc
    if "rng.torch_cpu" not in tensors:
        raise ModelFormatError(f"{tpath}: key 'rng.torch_cpu' missing")
    return tensors, _unjson(info)


__all__ = [
    "STATE_TENSORS",
    "STATE_JSON",
    "optimizer_state",
    "load_optimizer_state",
    "rng_state",
    "restore_rng_state",
    "write_state",
    "read_state",
]
