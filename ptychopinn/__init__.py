"""ptychopinn: physics-informed neural ptychography in pure PyTorch.

Importing this package is cheap: numpy-free, torch-free. The heavy pieces load on first use,
so `import ptychopinn` works in the torch-free ONNX runner environment.

    import ptychopinn as pp
    scan = pp.load_scan("scan.npz")
    model = pp.train(scan, model_config=pp.ModelConfig(gridsize=2))
    rec = pp.reconstruct(model, scan)
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError, DataError, ModelFormatError, PtychoPINNError

__version__ = "0.1.0"

# public name -> "module:attribute", resolved on first access (PEP 562)
_LAZY = {
    "ModelConfig": "ptychopinn.config:ModelConfig",
    "DataConfig": "ptychopinn.config:DataConfig",
    "TrainConfig": "ptychopinn.config:TrainConfig",
    "SimulationConfig": "ptychopinn.config:SimulationConfig",
    "load_scan": "ptychopinn.data:load_scan",
    "save_scan": "ptychopinn.data:save_scan",
    "GroupDataset": "ptychopinn.data:GroupDataset",
    "group_scan": "ptychopinn.data:group_scan",
    "simulate": "ptychopinn.simulate:simulate",
    "PtychoPINN": "ptychopinn.model:PtychoPINN",
    "train": "ptychopinn.train:train",
    "reconstruct": "ptychopinn.reconstruct:reconstruct",
    "load_model": "ptychopinn.io:load_model",
    "save_model": "ptychopinn.io:save_model",
}

__all__ = sorted([*_LAZY, "DataError", "ModelFormatError", "ConfigError", "PtychoPINNError", "__version__"])


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ptychopinn' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
