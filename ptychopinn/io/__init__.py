"""Persistence: the native model format, atomic writes, device selection, output files.

Names resolve lazily (PEP 562): `import ptychopinn.io.atomic` or `ptychopinn.io.outputs` does
not import torch; `save_model` / `load_model` / `resolve_device` do, on first use.

    from ptychopinn.io import save_model, load_model
    save_model(model, "runs/exp1/model")            # directory, or "model.zip"
    model = load_model("runs/exp1/model", device="auto")
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "save_model": "model_format",
    "load_model": "model_format",
    "read_model_info": "model_format",
    "is_model_path": "model_format",
    "ModelInfo": "model_format",
    "FORMAT_NAME": "model_format",
    "FORMAT_VERSION": "model_format",
    "register_model_loader": "loaders",
    "find_model_loader": "loaders",
    "is_loadable_model": "loaders",
    "load_any_model": "loaders",
    "model_loaders": "loaders",
    "ModelLoader": "loaders",
    "resolve_device": "device",
    "atomic_write": "atomic",
    "atomic_path": "atomic",
    "atomic_directory": "atomic",
    "atomic_save_npz": "atomic",
    "atomic_save_json": "atomic",
    "save_reconstruction": "outputs",
    "load_reconstruction": "outputs",
    "save_images": "outputs",
    "encode_state": "tensor_codec",
    "decode_state": "tensor_codec",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
