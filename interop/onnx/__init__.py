"""ONNX export of the inference graph and a torch-free runner (`ptychopinn.interop.onnx`).

    ptychopinn export-onnx MODEL -o model.onnx             # torch + onnx
    ptychopinn-onnx model.onnx scan.npz --out rec/          # numpy + onnxruntime only

Names resolve lazily (PEP 562): importing this package, `.runner`, `.metadata`, `.session`,
`.geometry` or `.stitch_np` never imports torch; `export_onnx` (module `.export`) does.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "export_onnx": ".export",
    "ExportReport": ".export",
    "run_onnx": ".runner",
    "OnnxReconstruction": ".runner",
    "open_session": ".session",
    "OnnxModelInfo": ".metadata",
    "parse_props": ".metadata",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
