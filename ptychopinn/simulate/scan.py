"""Scan positions `[x, y]` in object pixels (x = column, y = row). NumPy only.

Every position p keeps its N×N patch (rows y − N/2 … y + N/2 − 1, columns likewise) and the
bilinear neighbours of fractional positions inside the object: N/2 ≤ p ≤ size − N/2 − 1.
"""
from __future__ import annotations

import numpy as np


def _bounds(object_size: int, N: int) -> tuple[float, float]:
    lo, hi = N / 2, object_size - N / 2 - 1
    if hi < lo:
        raise ValueError(f"object_size {object_size} is too small for N={N} patches (need >= N + 1)")
    return lo, hi


def random_scan(n: int, object_size: int, N: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n positions uniform in [N/2, object_size − N/2 − 1]², sub-pixel. Returns x, y `(n,)` float64."""
    if n < 1:
        raise ValueError(f"number of positions must be >= 1, got {n}")
    lo, hi = _bounds(object_size, N)
    xy = rng.uniform(lo, hi, (n, 2))
    return xy[:, 0].copy(), xy[:, 1].copy()


def grid_scan(object_size: int, N: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Raster grid from N/2 with spacing `step` px, row-major (y outer, x inner).

    Returns x, y `(n,)` float64, n = (number of steps per axis)².
    """
    if not step > 0:
        raise ValueError(f"grid step must be > 0, got {step}")
    lo, hi = _bounds(object_size, N)
    axis = lo + step * np.arange(int(np.floor((hi - lo) / step + 1e-9)) + 1, dtype=np.float64)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x.ravel(), y.ravel()


def make_scan_positions(
    kind: str, object_size: int, N: int, *, n_positions: int, step: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`random_scan` (n_positions) or `grid_scan` (step) by name."""
    if kind == "random":
        return random_scan(n_positions, object_size, N, rng)
    if kind == "grid":
        return grid_scan(object_size, N, step)
    raise ValueError(f"scan kind must be 'random' or 'grid', got {kind!r}")


__all__ = ["random_scan", "grid_scan", "make_scan_positions"]
