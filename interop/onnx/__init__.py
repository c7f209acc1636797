"""ONNX export of the inference graph and a torch-free runner (`ptychopinn.interop.onnx`).

    ptychopinn export-onnx MODEL -o model.onnx             # torch + onnx
    ptychopinn-onnx model.onnx scan.npz --out rec/          # numpy + onnxruntime only

Names resolve lazily (PEP 562): importing this package, `.runner`, `.metadata`, `.session`,
or `.stitch_np` never imports torch; `export_onnx` (module `.export`) does.
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "export_onnx": ".export",
    "ExportReport": ".export",
    "run_onnx": ".runner",
    "OnnxReconstruction": ".runner",
    "open_session": ".session",
    "OnnxModelInfo": ".metadata",
    "parse_props": ".metadata",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
