"""Legacy TensorFlow bundles (`wts.h5.zip`, every era) read without TensorFlow or torch.

Names resolve lazily (PEP 562) so that importing this package imports nothing heavy.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name → submodule (relative) that defines it
_LAZY: dict[str, str] = {
    "read_tf_bundle": ".reader",
    "TFBundle": ".reader",
    "KerasModelWeights": ".keras3",
    "SafeZip": ".safezip",
    "Limits": ".safezip",
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
