"""The TensorFlow boundary (installed as `ptychopinn.interop`): legacy bundles, TF-exact
wrappers, legacy `params.cfg` keys, ONNX. Imports nothing heavy at package import time."""
from __future__ import annotations

import importlib
from typing import Any

#: public name → module (relative to this package) defining it, resolved on first access (PEP 562).
#: Add entries here (e.g. load_tf_bundle / write_tf_bundle) to export more names lazily.
_LAZY: dict[str, str] = {
    "read_tf_bundle": ".tf_bundle.reader",
    "TFBundle": ".tf_bundle.reader",
    "load_tf_bundle": ".bundle_model",
    "LegacyModel": ".bundle_model",
    "write_tf_bundle": ".tf_bundle.writer",
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
