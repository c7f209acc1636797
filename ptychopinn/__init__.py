"""ptychopinn: physics-informed neural ptychography in pure PyTorch.

Importing this package is cheap: numpy-free, torch-free. The heavy pieces load on first use,
so `import ptychopinn` works in the torch-free ONNX runner environment.

    import ptychopinn as pp
    scan = pp.load_scan("scan.npz")
    model = pp.train(scan, model_config=pp.ModelConfig(gridsize=2))
    rec = pp.reconstruct(model, scan)
"""
from __future__ import annotations

from ._lazy import lazy_exports
from .errors import ConfigError as ConfigError
from .errors import DataError as DataError
from .errors import ModelFormatError as ModelFormatError
from .errors import PtychoPINNError as PtychoPINNError

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

__getattr__, __dir__, _lazy_names = lazy_exports(__name__, _LAZY)
__all__ = sorted([*_lazy_names, "DataError", "ModelFormatError", "ConfigError", "PtychoPINNError", "__version__"])
