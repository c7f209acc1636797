"""Intensity scales (spec §2.2). NumPy only: this module never imports torch.

Units: `nphotons` is the mean photon count per diffraction pattern; amplitudes are
sqrt(photons) once multiplied by the scale.
"""
from __future__ import annotations

import math

import numpy as np


def intensity_scale(nphotons: float, N: int) -> float:
    """Training-time scale s = sqrt(nphotons) / (N/2) (spec §2.2, closed form, data-free).

    With normalised data (mean per-pattern Σ X² = (N/2)²) the model input s·X carries a mean of
    `nphotons` photons per pattern. ≈ 988.2 at N=64, nphotons=1e9.
    """
    if not nphotons > 0:
        raise ValueError(f"nphotons must be > 0, got {nphotons}")
    if N <= 0:
        raise ValueError(f"N must be > 0, got {N}")
    return math.sqrt(float(nphotons)) / (N / 2)


def photon_scale(nphotons: float, pattern_power: np.ndarray) -> float:
    """s = sqrt(nphotons / mean_b P_b) from per-pattern powers P_b = Σ |Y_b|² (float64).

    The streaming form of `simulation_intensity_scale`: callers that see the exit waves in
    chunks accumulate P_b and call this once.
    """
    if not nphotons > 0:
        raise ValueError(f"nphotons must be > 0, got {nphotons}")
    power = np.asarray(pattern_power, dtype=np.float64).reshape(-1)
    if power.size == 0:
        raise ValueError("pattern_power is empty; cannot set a photon scale")
    mean_power = float(power.mean())
    if not mean_power > 0:
        raise ValueError("the illuminated patterns carry no power; cannot set a photon scale")
    return math.sqrt(float(nphotons) / mean_power)


def simulation_intensity_scale(nphotons: float, illuminated_amplitudes: np.ndarray) -> float:
    """Simulation scale s = sqrt(nphotons / mean_b Σ |Y_b|²) (spec §2.2, `illuminate_and_diffract`).

    illuminated_amplitudes: `(M, ...)` real or complex, the illuminated exit waves P·O (or their
    moduli) of M patterns; the sum runs over every axis but the first (float64). Because the
    unitary-normalised diffraction conserves Σ|ψ|² (Parseval), scaling the exit waves by s gives
    diffraction patterns with a mean of `nphotons` photons each.
    """
    y = np.asarray(illuminated_amplitudes)
    if y.ndim < 2 or y.shape[0] == 0:
        raise ValueError(f"illuminated_amplitudes must be (M, ...) with M >= 1, got shape {y.shape}")
    power = (np.abs(y.astype(np.complex128 if np.iscomplexobj(y) else np.float64)) ** 2).reshape(y.shape[0], -1).sum(axis=1)
    return photon_scale(nphotons, power)


__all__ = ["intensity_scale", "simulation_intensity_scale", "photon_scale"]
