"""Tiny synthetic scans for the data tests."""
from __future__ import annotations

import numpy as np


def tiny_arrays(M: int = 12, N: int = 8, *, seed: int = 0, with_object: bool = True) -> dict[str, np.ndarray]:
    """Contract arrays of a small random scan (amplitudes >= 0, positions inside a 40x40 object)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "diffraction": rng.random((M, N, N)).astype(np.float32) * 3,
        "xcoords": rng.uniform(10, 30, M),
        "ycoords": rng.uniform(10, 30, M),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
    }
    if with_object:
        arrays["objectGuess"] = (rng.random((40, 40)) * np.exp(1j * rng.random((40, 40)))).astype(np.complex64)
    return arrays
