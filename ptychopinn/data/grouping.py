"""Grouping of scan positions into gridsize² neighbour sets, and a leak-free spatial split.

`group_scan` follows the legacy rule (spec §1.3) with a private `np.random.default_rng(seed)`
instead of the global numpy state, and no Python loop over seeds. Groups hold indices and
coordinates only, never pattern copies. numpy, scipy only; no torch.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError

__all__ = ["Groups", "group_scan", "split_by_region"]


@dataclass(frozen=True)
class Groups:
    """B groups of C = gridsize² scan positions.

    indices: (B, C) int64 scan-position indices; channel c of group b is position indices[b, c].
    coords: (B, C, 2) float64 `[x, y]` object pixels; centres: (B, 2) = mean over C;
    relative: (B, C, 2) = −(coords − centres) — the model's in-group offsets
    (legacy `local_offset_sign = −1`, spec §1.3, §8.7). The `_start` triplet is the same from
    `xcoords_start`/`ycoords_start` (training offsets in the legacy code, spec §8.9).
    """

    indices: np.ndarray
    coords: np.ndarray
    centres: np.ndarray
    relative: np.ndarray
    coords_start: np.ndarray
    centres_start: np.ndarray
    relative_start: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.indices.shape[0])

    @property
    def channels(self) -> int:
        """C = gridsize²."""
        return int(self.indices.shape[1])

    def __len__(self) -> int:
        return self.n_groups

    def subset(self, which: Any) -> "Groups":
        """The groups selected by `which` (an index array, slice or boolean mask over B)."""
        return Groups(*(np.asarray(getattr(self, f))[which] for f in self.__dataclass_fields__))


def _coords_of(scan_or_coords: Any) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) positions and (M, 2) start positions, float64 `[x, y]`."""
    if hasattr(scan_or_coords, "xcoords") and hasattr(scan_or_coords, "ycoords"):
        s = scan_or_coords
        xy = np.stack([np.asarray(s.xcoords, np.float64), np.asarray(s.ycoords, np.float64)], -1)
        xs = getattr(s, "xcoords_start", None)
        ys = getattr(s, "ycoords_start", None)
        start = xy if xs is None or ys is None else np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], -1)
    elif isinstance(scan_or_coords, tuple) and len(scan_or_coords) == 2:
        xy = np.stack([np.asarray(scan_or_coords[0], np.float64), np.asarray(scan_or_coords[1], np.float64)], -1)
        start = xy
    else:
        xy = np.asarray(scan_or_coords, dtype=np.float64)
        start = xy
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0 or start.shape != xy.shape:
        raise DataError(f"scan positions have shape {xy.shape}, expected (M, 2) [x, y] with M >= 1")
    if not (np.isfinite(xy).all() and np.isfinite(start).all()):
        raise DataError("scan positions contain NaN/inf, expected finite [x, y] object-pixel coordinates")
    return xy, start


def _seeds(M: int, C: int, n_groups: int | None, rng: np.random.Generator) -> np.ndarray:
    if n_groups is None:
        return np.arange(M, dtype=np.int64)
    if n_groups < 1:
        raise ConfigError(f"DataConfig.n_groups={n_groups}, expected a positive number of groups or None")
    if n_groups <= M:
        # a uniform random subset covers the scan area evenly (never "the first n"); sorted so
        # that groups come in scan order
        return np.sort(rng.choice(M, size=n_groups, replace=False)).astype(np.int64)
    if C == 1:
        raise ConfigError(
            f"DataConfig.n_groups={n_groups} exceeds the {M} scan positions; at gridsize 1 each group "
            "is one position, so at most M groups exist"
        )
    # oversampling: every position once, then extra seeds with replacement; their groups differ
    # by the random neighbour draw (identical sets, in another channel order, when K == C)
    extra = rng.integers(0, M, size=n_groups - M)
    return np.concatenate([np.arange(M), np.sort(extra)]).astype(np.int64)


def _neighbour_groups(xy: np.ndarray, seeds: np.ndarray, K: int, C: int, rng: np.random.Generator) -> np.ndarray:
    """(B, C) indices: C distinct random picks among each seed's K nearest other positions."""
    from scipy.spatial import cKDTree

    M = xy.shape[0]
    B = seeds.shape[0]
    k = min(K + 1, M)
    _, nn = cKDTree(xy).query(xy[seeds], k=k)
    nn = np.asarray(nn, dtype=np.int64).reshape(B, k)
    # drop the seed itself (not always column 0 when positions coincide); when it is absent,
    # drop the farthest candidate instead
    is_seed = nn == seeds[:, None]
    no_seed = ~is_seed.any(axis=1)
    is_seed[no_seed, -1] = True
    first_seed = np.argmax(is_seed, axis=1)
    drop = np.zeros_like(is_seed)
    drop[np.arange(B), first_seed] = True
    order = np.argsort(drop, axis=1, kind="stable")  # kept candidates first, in distance order
    neighbours = np.take_along_axis(nn, order, axis=1)[:, : k - 1]  # (B, min(K, M-1))
    pool = neighbours
    if pool.shape[1] < C:  # fewer than C neighbours (tiny scans): add the seed itself
        pool = np.concatenate([neighbours, seeds[:, None]], axis=1)
    if pool.shape[1] >= C:
        pick = np.argsort(rng.random(pool.shape), axis=1)[:, :C]  # C distinct, random order
    else:  # still short: everything once, then random repeats
        extra = rng.integers(0, pool.shape[1], size=(B, C - pool.shape[1]))
        pick = np.concatenate([np.broadcast_to(np.arange(pool.shape[1]), (B, pool.shape[1])), extra], axis=1)
        pick = np.take_along_axis(pick, np.argsort(rng.random(pick.shape), axis=1), axis=1)
    return np.take_along_axis(pool, pick, axis=1)


def group_scan(scan_or_coords: Any, config: DataConfig, *, N: int | None = None) -> Groups:
    """Group scan positions (spec §1.3) deterministically for `config.seed`.

    scan_or_coords: a `Scan`, an `(M, 2)` array `[x, y]`, or a tuple `(x, y)` of `(M,)` arrays.
    Seeds: all M positions in order when `n_groups` is None; a sorted random subset without
    replacement when `n_groups <= M`; when `n_groups > M` (gridsize > 1 only) every position
    plus extra seeds drawn with replacement. gridsize 1: each group is its seed. gridsize > 1:
    C distinct positions drawn at random among the seed's K = `neighbor_count` nearest *other*
    positions (the seed is not in its own group); with fewer than C neighbours the seed is added,
    and the draw repeats positions if still short.

    N: the detector (patch) size, default `scan.N` for a `Scan`. When an in-group offset exceeds
    N/2 the patterns of a group no longer overlap (a scan too sparse for this gridsize): a one-line
    warning, since the model's in-group reassembly then produces meaningless amplitudes.
    """
    xy, start = _coords_of(scan_or_coords)
    M = xy.shape[0]
    C = config.gridsize * config.gridsize
    K = config.neighbor_count
    if C > 1 and K < C:
        raise ConfigError(f"DataConfig.neighbor_count (K={K}) must be >= gridsize² (C={C})")
    rng = np.random.default_rng(config.seed)
    seeds = _seeds(M, C, config.n_groups, rng)
    if C == 1:
        indices = seeds[:, None]
    else:
        if M < C:
            warnings.warn(
                f"only {M} scan positions for groups of C={C}: groups repeat positions", stacklevel=2
            )
        indices = _neighbour_groups(xy, seeds, K, C, rng)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    coords = xy[indices]
    centres = coords.mean(axis=1)
    if N is None and hasattr(scan_or_coords, "diffraction"):
        N = int(scan_or_coords.diffraction.shape[-1])
    if C > 1 and N is not None:
        reach = float(np.abs(coords - centres[:, None, :]).max())
        if reach > N / 2:
            warnings.warn(
                f"group offsets reach {reach:.1f} px, more than N/2 = {N / 2:g}: the scan is too sparse for "
                f"gridsize {config.gridsize} (the patterns of a group do not overlap); use gridsize 1 or a denser scan",
                stacklevel=2,
            )
    coords_s = start[indices]
    centres_s = coords_s.mean(axis=1)
    return Groups(
        indices=indices,
        coords=coords,
        centres=centres,
        relative=-(coords - centres[:, None, :]),
        coords_start=coords_s,
        centres_start=centres_s,
        relative_start=-(coords_s - centres_s[:, None, :]),
    )


def split_by_region(groups: Groups, fraction: float, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leak-free train/validation split of group indices by scan region.

    Scan *positions* are assigned first: the `ceil(fraction · U)` positions (of the U distinct
    positions used by `groups`) farthest along `axis` (0 = x, 1 = y; None = the axis with the
    larger extent) form the validation strip, the rest the training region. A group goes to the
    side holding all of its members; groups straddling the boundary are dropped. So no scan
    position (hence no diffraction pattern) appears on both sides.
    Returns `(train_idx, val_idx)`, sorted int64 indices into the groups.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation fraction {fraction} must be in [0, 1)")
    B = groups.n_groups
    if fraction == 0.0 or B == 0:
        return np.arange(B, dtype=np.int64), np.empty(0, dtype=np.int64)
    flat_idx = groups.indices.reshape(-1)
    flat_xy = groups.coords.reshape(-1, 2)
    uniq, first = np.unique(flat_idx, return_index=True)
    pos_xy = flat_xy[first]
    if axis is None:
        extent = pos_xy.max(axis=0) - pos_xy.min(axis=0)
        axis = int(np.argmax(extent))
    if axis not in (0, 1):
        raise ConfigError(f"split axis {axis} must be 0 (x), 1 (y) or None")
    n_val = int(np.ceil(fraction * uniq.size))
    order = np.argsort(pos_xy[:, axis], kind="stable")
    in_val = np.zeros(uniq.size, dtype=bool)
    in_val[order[uniq.size - n_val :]] = True
    member_val = in_val[np.searchsorted(uniq, groups.indices)]  # (B, C)
    val = np.flatnonzero(member_val.all(axis=1)).astype(np.int64)
    train = np.flatnonzero((~member_val).all(axis=1)).astype(np.int64)
    return train, val
