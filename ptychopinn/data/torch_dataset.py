"""`GroupDataset`: a map-style torch Dataset over grouped scan positions.

Items are gathered by index from the (possibly memory-mapped or HDF5-backed) scan on demand;
nothing is copied up front. The only module of `ptychopinn.data` that imports torch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .badpixels import BadPixelFill
from .grouping import Groups
from .labels import object_patches
from .scan import Scan

__all__ = ["GroupDataset"]


class GroupDataset(Dataset):
    """Dataset of groups: item b is a dict of CPU tensors

    x: (C, N, N) float32 = scale · fill(diffraction[indices[b]]) — model input in sqrt-photon
        units when `scale = f · s` (normalisation factor × intensity scale, spec §2); `fill`
        replaces the scan's bad pixels by the mean of their measured 4-neighbours
        (`badpixels.BadPixelFill`; identity without a mask);
    offsets: (C, 2) float32 `[x, y]` in-group offsets `groups.relative[b]`
        (`groups.relative_start[b]` when `start_offsets`);
    centre: (2,) float32 group centre `[x, y]` (object pixels);
    index: () int64, the group number b;
    labels: (C, N, N) complex64 ground-truth patches, only when `labels=True` — cut from
        `scan.object` at the true positions (see `ptychopinn.data.labels` for the legacy
        mirrored-label quirk, spec §8.7), else `scan.Y[indices[b]]`.

    The default `DataLoader` collate stacks these into `(B, C, N, N)`, `(B, C, 2)`, `(B, 2)`, `(B,)`.
    `__getitems__` reads a whole batch with one sorted gather.

    Bad pixels: `self.valid` is the `(N, N)` bool tensor `~scan.bad_pixels` (True = measured), or
    None when the scan has no mask; `batch()` dicts carry it as `"valid"` (the same `(N, N)`
    tensor for the whole batch, absent without a mask) so the loss can exclude those pixels.
    Per-item dicts (`__getitem__`) hold per-group tensors only.
    """

    def __init__(
        self,
        scan: Scan,
        groups: Groups,
        scale: float,
        *,
        labels: bool = False,
        start_offsets: bool = False,
    ) -> None:
        M = scan.n_positions
        if groups.indices.size and (groups.indices.min() < 0 or groups.indices.max() >= M):
            raise DataError(f"group indices reach {int(groups.indices.max())}, expected < M = {M} scan positions")
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise DataError(f"dataset scale {scale}, expected a positive finite factor f·s")
        if labels and scan.object is None and scan.Y is None:
            where = scan.path.name if scan.path else "scan"
            raise DataError(
                f"{where}: labels requested (supervised training) but the scan has neither "
                "'objectGuess' (H, W) nor 'Y' (M, N, N)"
            )
        self.scan = scan
        self.groups = groups
        self.scale = scale
        self.labels = labels
        self._offsets = (groups.relative_start if start_offsets else groups.relative).astype(np.float32)
        self._centres = groups.centres.astype(np.float32)
        bad = getattr(scan, "bad_pixels", None)
        self.bad_pixels = None if bad is None else np.asarray(bad, dtype=bool)
        self._fill = None if self.bad_pixels is None else BadPixelFill(self.bad_pixels)
        self.valid = None if self.bad_pixels is None else torch.from_numpy(~self.bad_pixels)

    def __len__(self) -> int:
        return self.groups.n_groups

    def batch(self, which: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Batched tensors for groups `which`: x (B, C, N, N), offsets (B, C, 2), centre (B, 2), index (B,)."""
        b = np.asarray(which, dtype=np.int64).reshape(-1)
        idx = self.groups.indices[b]  # (B, C)
        N = self.scan.N
        flat = idx.reshape(-1)
        uniq, inverse = np.unique(flat, return_inverse=True)  # sorted reads (memmap / HDF5 friendly)
        patterns = np.asarray(self.scan.diffraction[uniq], dtype=np.float32)
        if self._fill is not None:
            patterns = np.ascontiguousarray(patterns)
            self._fill(patterns, out=patterns)  # in place: the gather is a fresh array
        x = patterns[inverse.reshape(-1)].reshape(idx.shape + (N, N))
        x *= np.float32(self.scale)
        out = {
            "x": torch.from_numpy(np.ascontiguousarray(x)),
            "offsets": torch.from_numpy(np.ascontiguousarray(self._offsets[b])),
            "centre": torch.from_numpy(np.ascontiguousarray(self._centres[b])),
            "index": torch.from_numpy(b.copy()),
        }
        if self.labels:
            out["labels"] = torch.from_numpy(self._labels(b, idx))
        if self.valid is not None:
            out["valid"] = self.valid
        return out

    def _labels(self, b: np.ndarray, idx: np.ndarray) -> np.ndarray:
        N = self.scan.N
        if self.scan.object is not None:
            return object_patches(self.scan.object, self.groups.coords[b], N)
        flat = idx.reshape(-1)
        return np.asarray(self.scan.Y[flat], dtype=np.complex64).reshape(idx.shape + (N, N))

    def __getitem__(self, b: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= int(b) < n:
            raise IndexError(f"group {b} out of range for {n} groups")
        item = self.batch([int(b) % n])
        item.pop("valid", None)  # shared by all groups: `self.valid`
        return {k: v[0] for k, v in item.items()}

    def __getitems__(self, which: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.batch(which)
        batch.pop("valid", None)
        return [{k: v[i] for k, v in batch.items()} for i in range(len(which))]

    def __repr__(self) -> str:
        return f"GroupDataset(groups={len(self)}, C={self.groups.channels}, N={self.scan.N}, scale={self.scale:.6g}, labels={self.labels})"


def collate(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack item dicts (what `torch.utils.data.default_collate` also does)."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
