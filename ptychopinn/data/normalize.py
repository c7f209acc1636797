"""Dataset normalisation factor (spec §2.1), computed without copying the grouped patterns.

    f = sqrt((N/2)² / mean_{b,c} Σ_{(h,w) measured} d[indices[b, c]]²)

"Measured" = every pixel when the scan has no bad-pixel mask (then this is exactly the legacy
formula, bit for bit: the same float64 einsum over the whole pattern), else the pixels where
`bad_pixels` is False — a flagged hot pixel never changes f. The target (N/2)² is not rescaled
by the measured fraction: masked pixels are few (hot pixels, gaps) and their fill at the network
input is an interpolation of their neighbours, not extra energy.

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

__all__ = ["normalization_factor", "pattern_energy", "block_energy", "pattern_occurrences", "factor_from_energy"]


def pattern_energy(
    diffraction: Any, rows: np.ndarray, *, chunk_bytes: int = CHUNK_BYTES, bad_pixels: np.ndarray | None = None
) -> np.ndarray:
    """(len(rows),) float64 Σ d² over the measured pixels of the patterns `rows` (sorted rows read fastest).

    bad_pixels: `(N, N)` bool, True = not measured (excluded); None = every pixel.
    """
    rows = np.asarray(rows, dtype=np.int64)
    N = int(diffraction.shape[-1])
    step = max(1, chunk_bytes // max(1, int(getattr(diffraction, "row_nbytes", 0)) or N * N * 4))
    out = np.empty(rows.size, dtype=np.float64)
    valid = None if bad_pixels is None else ~_mask(bad_pixels, N)
    for start in range(0, rows.size, step):
        out[start : start + step] = block_energy(diffraction[rows[start : start + step]], valid)
    return out


def block_energy(block: Any, valid: np.ndarray | None = None) -> np.ndarray:
    """(b,) float64 Σ d² of each pattern of `block` (b, N, N) over the pixels where `valid`
    `(N, N)` bool is True (None: every pixel)."""
    block = np.asarray(block, dtype=np.float64)
    if valid is None:
        return np.einsum("bhw,bhw->b", block, block)
    sel = block[:, valid]  # (b, n_measured)
    return np.einsum("bp,bp->b", sel, sel)


def _mask(bad_pixels: np.ndarray, N: int) -> np.ndarray:
    bad = np.asarray(bad_pixels)
    if bad.shape != (N, N) or bad.dtype != bool:
        raise DataError(f"bad_pixels has shape {bad.shape} {bad.dtype}, expected (N, N) = ({N}, {N}) bool")
    return bad


def pattern_occurrences(diffraction: Any, indices: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(sorted distinct pattern rows, their occurrence counts) of `indices`, validated.

    indices: (B, C) (or any shape) integer pattern indices; None means every pattern once (counts
    None). Shared by `normalization_factor` and `distributed.normalization_factor` (which shards
    the rows).
    """
    M = int(diffraction.shape[0])
    if indices is None:
        return np.arange(M, dtype=np.int64), None
    flat = np.asarray(indices).reshape(-1)
    if flat.size == 0 or flat.dtype.kind not in "iu":
        raise DataError(f"normalisation indices have shape {np.shape(indices)} {flat.dtype}, expected a non-empty integer array")
    if flat.min() < 0 or flat.max() >= M:
        raise DataError(f"normalisation indices out of range [0, {M})")
    rows, counts = np.unique(flat, return_counts=True)
    return rows, counts


def factor_from_energy(total: float, occurrences: float, N: int) -> np.float32:
    """f = sqrt((N/2)² / mean) with mean = total / occurrences (float64), as float32."""
    mean = total / occurrences
    if not np.isfinite(mean) or mean <= 0.0:
        raise DataError(f"diffraction has mean pattern energy {mean}, expected a positive finite value")
    return np.float32(np.sqrt((N / 2) ** 2 / mean))


def normalization_factor(diffraction: Any, indices: Any = None, *, bad_pixels: np.ndarray | None = None) -> np.float32:
    """f such that the mean per-occurrence Σ_measured (f·d)² equals (N/2)².

    diffraction: (M, N, N) amplitudes (array or lazy array). indices: (B, C) (or any shape)
    integer pattern indices of the grouped set; None means every pattern once.
    bad_pixels: `(N, N)` bool (True = not measured) excluded from the sums (`Scan.bad_pixels`).
    """
    N = int(diffraction.shape[-1])
    rows, counts = pattern_occurrences(diffraction, indices)
    energy = pattern_energy(diffraction, rows, bad_pixels=bad_pixels)
    total = float(energy.sum()) if counts is None else float(energy @ counts)
    occurrences = rows.size if counts is None else int(counts.sum())
    return factor_from_energy(total, occurrences, N)
