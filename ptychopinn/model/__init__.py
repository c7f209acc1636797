"""The PtychoPINN network (spec §3–§4): `PtychoPINN`, `ModelOutput`, and its building blocks.

Names resolve lazily (PEP 562), so `ptychopinn.model.architecture` (the layer plan, used by
`ptychopinn.interop.keras_layout`) can be imported without torch.

    from ptychopinn.model import PtychoPINN
    model = PtychoPINN(ModelConfig(gridsize=2), probe=probe, intensity_scale=s)
    out = model(x, offsets)          # ModelOutput(object, amplitude, intensity)
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

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
    "get_generator": "generators",
    "register_generator": "generators",
    "available_generators": "generators",
    "GeneratorSpec": "generators",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
