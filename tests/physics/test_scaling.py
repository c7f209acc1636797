"""Intensity scales (spec §2.2) and the torch-free import of physics.scaling."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ptychopinn.physics.scaling import intensity_scale, simulation_intensity_scale


def test_intensity_scale_closed_form():
    assert intensity_scale(1e9, 64) == pytest.approx(np.sqrt(1e9) / 32)
    assert intensity_scale(1e9, 64) == pytest.approx(988.2, abs=0.05)
    # mean per-pattern Σ (s·X)² = nphotons for normalised data (Σ X² = (N/2)²)
    assert (intensity_scale(1e6, 128) ** 2) * 64**2 == pytest.approx(1e6)
    with pytest.raises(ValueError):
        intensity_scale(0, 64)


def test_simulation_intensity_scale_sets_mean_photons(rng):
    y = rng.standard_normal((10, 2, 8, 8)) + 1j * rng.standard_normal((10, 2, 8, 8))
    s = simulation_intensity_scale(1e5, y)
    per_pattern = (np.abs(s * y) ** 2).reshape(10, -1).sum(1)
    assert per_pattern.mean() == pytest.approx(1e5, rel=1e-12)
    assert simulation_intensity_scale(1e5, np.abs(y)) == pytest.approx(s, rel=1e-12)
    with pytest.raises(ValueError):
        simulation_intensity_scale(1e5, np.zeros((3, 4, 4)))


def test_scaling_and_probe_import_no_torch():
    code = (
        "import sys, ptychopinn.physics.scaling, ptychopinn.physics.probe, ptychopinn.physics; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "ptychopinn.physics.intensity_scale(1e9, 64); ptychopinn.physics.probe_mask(8); "
        "assert 'torch' not in sys.modules, 'torch imported lazily by a numpy name'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_resolve():
    import ptychopinn.physics as physics

    for name in physics.__all__:
        assert callable(getattr(physics, name)), name
    with pytest.raises(AttributeError):
        physics.no_such_name  # noqa: B018
