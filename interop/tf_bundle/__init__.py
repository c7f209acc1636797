"""Legacy TensorFlow bundles (`wts.h5.zip`, every era) read without TensorFlow or torch.

Names resolve lazily (PEP 562) so that importing this package imports nothing heavy.
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

#: public name → submodule (relative) that defines it
_LAZY: dict[str, str] = {
    "read_tf_bundle": ".reader",
    "TFBundle": ".reader",
    "KerasModelWeights": ".keras3",
    "SafeZip": ".safezip",
    "Limits": ".safezip",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
