"""Model-loader registry: one `load_any_model(path)` for every model format ptychopinn can read.

The native format (`io.model_format`: a directory or .zip with config.json + model.safetensors)
is built in. Other formats register a `ModelLoader`, in code (`register_model_loader`) or through
the `ptychopinn.model_loaders` entry point group, loaded lazily on first use; `ptychopinn.interop`
registers the legacy TensorFlow `wts.h5.zip` bundle that way, so the core never imports interop.

`io.is_model_path` / `io.load_model` stay the native format's own check and loader; the dispatch
over all formats is `find_model_loader` / `is_loadable_model` / `load_any_model` here. Torch is
imported only by the loaders themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ModelFormatError
from .plugins import Registry

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "ptychopinn.model_loaders"


@dataclass(frozen=True)
class ModelLoader:
    """A model format: `is_path(path) -> bool` (cheap check), `load(path, device) -> (module, extra)`.

    `load` returns the `nn.Module` (a `PtychoPINN` or a wrapper exposing `.config` and
    `predict_object`) on `device` in eval mode, and a dict of saved extra info (training
    metadata; may be empty). `describe` names the format in error messages.
    """

    name: str
    is_path: Callable[[Path], bool]
    load: Callable[[Path, "torch.device"], tuple[Any, dict[str, Any]]]
    describe: str = ""


def _native_is_path(path: Path) -> bool:
    from .model_format import is_model_path

    return is_model_path(path)


def _native_load(path: Path, device: "torch.device") -> tuple[Any, dict[str, Any]]:
    from .model_format import load_model, read_model_info

    module = load_model(path, device=device)
    return module, dict(read_model_info(path).extra or {})


NATIVE = ModelLoader("native", _native_is_path, _native_load, "a directory or .zip with config.json and model.safetensors")
_REGISTRY: Registry[ModelLoader] = Registry(ENTRY_POINT_GROUP)
_REGISTRY.register(NATIVE.name, NATIVE)


def register_model_loader(name: str, is_path: Callable[[Path], bool], load: Callable[[Path, Any], tuple[Any, dict[str, Any]]],
                          *, describe: str = "", replace: bool = False) -> ModelLoader:
    """Register a model format under `name` (see `ModelLoader`); returns the loader."""
    loader = ModelLoader(name, is_path, load, describe)
    _REGISTRY.register(name, loader, replace=replace)
    return loader


def unregister_model_loader(name: str) -> None:
    """Remove a registered loader (the native one cannot be removed)."""
    if name == NATIVE.name:
        raise ValueError("the native model loader cannot be unregistered")
    _REGISTRY.unregister(name)


def model_loaders() -> list[ModelLoader]:
    """Every registered loader, native first."""
    return [obj for _, obj in _REGISTRY.items()]


def find_model_loader(path: str | os.PathLike) -> ModelLoader | None:
    """The first loader whose `is_path` accepts `path`, or None.

    Loaders registered in code (native first) are tried before the entry points are read, so a
    native model never imports a plugin.
    """
    p = Path(path)
    for discover in (False, True):
        for _, loader in _REGISTRY.items(discover=discover):
            if loader.is_path(p):
                return loader
    return None


def is_loadable_model(path: str | os.PathLike) -> bool:
    """True when some registered format (native or plugin) recognises `path`."""
    return find_model_loader(path) is not None


def load_any_model(path: str | os.PathLike, device: "torch.device") -> tuple[Any, dict[str, Any]]:
    """(module on `device`, saved extra info) from any registered model format.

    Raises ModelFormatError naming the path and the formats tried.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFormatError(f"{p}: model not found")
    loader = find_model_loader(p)
    if loader is None:
        formats = "; ".join(f"{lo.name}: {lo.describe}" if lo.describe else lo.name for lo in model_loaders())
        broken = _REGISTRY.broken()
        extra = f" (unavailable loaders: {'; '.join(f'{k} ({v})' for k, v in broken.items())})" if broken else ""
        raise ModelFormatError(f"{p}: not a ptychopinn model in any known format ({formats}){extra}")
    return loader.load(p, device)


__all__ = ["ModelLoader", "NATIVE", "ENTRY_POINT_GROUP", "register_model_loader", "unregister_model_loader", "model_loaders", "find_model_loader",
           "is_loadable_model", "load_any_model"]
