"""The PtychoPINN network (spec §3–§4): `PtychoPINN`, `ModelOutput`, and its building blocks.

Names resolve lazily (PEP 562), so `ptychopinn.model.architecture` (the layer plan, used by
`ptychopinn.interop.keras_layout`) can be imported without torch.

    from ptychopinn.model import PtychoPINN
    model = PtychoPINN(ModelConfig(gridsize=2), probe=probe, intensity_scale=s)
    out = model(x, offsets)          # ModelOutput(object, amplitude, intensity)
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "PtychoPINN": "network",
    "ModelOutput": "network",
    "Encoder": "layers",
    "Decoder": "layers",
    "ConvPoolBlock": "layers",
    "ConvUpBlock": "layers",
    "combine_complex": "functional",
    "amp_activation": "functional",
    "phase_activation": "functional",
    "ConvSpec": "architecture",
    "keras_conv_order": "architecture",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ptychopinn.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
