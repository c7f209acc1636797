"""Synthetic ptychography scans: objects, scan paths and the noisy forward model.

    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_to_file
    simulate_to_file(SimulationConfig(N=64, n_positions=512, nphotons=1e6), "sim.npz")

Names resolve lazily: `objects` and `scan` need only numpy/scipy; `forward` needs torch.
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports, make_callable

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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
# `pp.simulate(config)` keeps working after `import ptychopinn.simulate` shadows the function.
make_callable(__name__, "simulate")
