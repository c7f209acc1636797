"""Dataset normalisation factor (spec §2.1), computed without copying the grouped patterns.

    f = sqrt((N/2)² / mean_{b,c} Σ_{h,w} d[indices[b, c]]²)

The mean runs over every (group, channel) occurrence, so a pattern used by several groups counts
once per use. Each distinct pattern is read once (in sorted chunks, friendly to memory maps and
HDF5) and weighted by its number of occurrences; sums are float64 and f is returned as float32
(as the legacy code did before multiplying in float32). numpy only; no torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from .lazy import CHUNK_BYTES

__all__ = ["normalization_factor", "pattern_energy"]


def pattern_energy(diffraction: Any, rows: np.ndarray, *, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """(len(rows),) float64 Σ_{h,w} d² of the patterns `rows` (sorted rows read fastest)."""
    rows = np.asarray(rows, dtype=np.int64)
    N = int(diffraction.shape[-1])
    step = max(1, chunk_bytes // max(1, N * N * 4))
    out = np.empty(rows.size, dtype=np.float64)
    for start in range(0, rows.size, step):
        block = np.asarray(diffraction[rows[start : start + step]], dtype=np.float64)
        out[start : start + step] = np.einsum("bhw,bhw->b", block, block)
    return out


def normalization_factor(diffraction: Any, indices: Any = None) -> np.float32:
    """f such that the mean per-occurrence Σ (f·d)² equals (N/2)².

    diffraction: (M, N, N) amplitudes (array or lazy array). indices: (B, C) (or any shape)
    integer pattern indices of the grouped set; None means every pattern once.
    """
    M = int(diffraction.shape[0])
    N = int(diffraction.shape[-1])
    if indices is None:
        rows, counts = np.arange(M, dtype=np.int64), None
    else:
        flat = np.asarray(indices).reshape(-1)
        if flat.size == 0 or flat.dtype.kind not in "iu":
            raise DataError(f"normalisation indices have shape {np.shape(indices)} {flat.dtype}, expected a non-empty integer array")
        if flat.min() < 0 or flat.max() >= M:
            raise DataError(f"normalisation indices out of range [0, {M})")
        rows, counts = np.unique(flat, return_counts=True)
    energy = pattern_energy(diffraction, rows)
    total = float(energy.sum()) if counts is None else float(energy @ counts)
    occurrences = rows.size if counts is None else int(counts.sum())
    mean = total / occurrences
    if not np.isfinite(mean) or mean <= 0.0:
        raise DataError(f"diffraction has mean pattern energy {mean}, expected a positive finite value")
    return np.float32(np.sqrt((N / 2) ** 2 / mean))
