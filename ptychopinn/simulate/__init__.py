"""Synthetic ptychography scans: objects, scan paths and the noisy forward model.

    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_to_file
    simulate_to_file(SimulationConfig(N=64, n_positions=512, nphotons=1e6), "sim.npz")

Names resolve lazily: `objects` and `scan` need only numpy/scipy; `forward` needs torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY: dict[str, str] = {
    "lines_object": "objects",
    "grf_object": "objects",
    "make_object": "objects",
    "random_scan": "scan",
    "grid_scan": "scan",
    "make_scan_positions": "scan",
    "simulate": "forward",
    "simulate_to_file": "forward",
    "validate_simulation_config": "forward",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ptychopinn.simulate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


class _CallableModule(types.ModuleType):
    """`ptychopinn.simulate` is both this package and the function `ptychopinn.simulate(config)`.

    Once the package is imported, Python binds the name on `ptychopinn` to the package, shadowing
    the lazily exported function; calling the package therefore runs `forward.simulate`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, "simulate")(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
