"""The TensorFlow boundary (installed as `ptychopinn.interop`): legacy bundles, TF-exact
wrappers, legacy `params.cfg` keys, ONNX. Imports nothing heavy at package import time."""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

#: public name → module (relative to this package) defining it, resolved on first access (PEP 562).
#: Add entries here (e.g. load_tf_bundle / write_tf_bundle) to export more names lazily.
_LAZY: dict[str, str] = {
    "read_tf_bundle": ".tf_bundle.reader",
    "TFBundle": ".tf_bundle.reader",
    "load_tf_bundle": ".bundle_model",
    "LegacyModel": ".bundle_model",
    "write_tf_bundle": ".tf_bundle.writer",
    "export_onnx": ".onnx.export",
    "run_onnx": ".onnx.runner",
    "is_legacy_bundle": ".plugins",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
