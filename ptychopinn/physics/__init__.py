"""Ptychography physics: probe, illumination, far-field diffraction, losses, intensity scale.

Names resolve lazily (PEP 562), so `import ptychopinn.physics.scaling` (numpy only) and
`import ptychopinn.physics.probe` do not import torch.

    from ptychopinn import physics
    amp = physics.diffract(psi)                  # (..., N, N) complex -> (..., N, N) real
    loss = physics.poisson_nll(amp**2, counts)   # scalar
    A = physics.PtychographyOperator(modes)      # modes (K, N, N): Σₖ |F(Pₖ·O)|², see operator.py

Spec references: legacy-tf-model.md §2 (scales), §4.1 (probe), §4.3 steps 6–10, §4.7 (losses).
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "probe_mask": "probe",
    "default_probe": "probe",
    "normalize_probe": "probe",
    "mixed_state_probe": "probe",
    "illuminate": "illumination",
    "gaussian_smooth3": "illumination",
    "diffract": "diffraction",
    "far_field_intensity": "diffraction",
    "pad_and_diffract": "diffraction",
    "amplitude_from_intensity": "diffraction",
    "gaussian_smooth3_adjoint": "illumination",
    "PtychographyOperator": "operator",
    "probe_modes": "operator",
    "mixed_state_exit_waves": "operator",
    "mixed_state_exit_waves_adjoint": "operator",
    "intensity_from_exit_waves": "operator",
    "mixed_state_intensity": "operator",
    "ptychography_intensity": "operator",
    "batch_mean": "losses",
    "poisson_nll": "losses",
    "poisson_nll_elementwise": "losses",
    "mae": "losses",
    "complex_mae": "losses",
    "total_variation": "losses",
    "realspace_loss": "losses",
    "intensity_scale": "scaling",
    "simulation_intensity_scale": "scaling",
    "photon_scale": "scaling",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
