"""Half-set FRC: the resolution of a reconstruction without ground truth.

The scan positions are split into two interleaved halves along the scan order — positions
0, 2, 4, … (half A) and 1, 3, 5, … (half B) — so both halves cover the whole scanned region at
half the density. Each half is grouped and reconstructed on its own with the same model, the
same stitching and the same canvas frame (object pixels), and the Fourier ring correlation of
the two objects is computed on the bounding box of the pixels both cover (stitching weight ≥ 0.1
of its maximum in each half):

1. B is aligned to A by the least-squares complex scalar (global amplitude scale and phase);
2. apodization, so that the cut edges of the region do not correlate: each image minus its
   (masked) mean is multiplied by the common soft mask sqrt(w_A · w_B) (each half's stitching
   weight normalised to max 1: smooth, and 0 where either half has no patch) and by a 2-D Hann
   window over the region;
3. `metrics.frc` of the complex images, with the ½-bit threshold curve (van Heel & Schatz 2005,
   computed from the ring pixel counts) and the fixed 1/7 threshold; the first downward
   crossing of each (after the curve first reaches it: `crossing`) gives a resolution in
   pixels⁻¹ (cycles/pixel) and in pixels (full period).

Two halves that agree give FRC ≈ 1 at every frequency; where the halves only share noise-free
structure up to some frequency the curve falls to ≈ 0 beyond it. The halves see half the data
(and, at gridsize > 1, groups of neighbours twice as far apart), and errors both halves share
do not lower the FRC: it is an estimate of the resolution of the full reconstruction, not a
bound (docs/metrics.md).
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.inputs import as_scan, inference_data_config, scan_label
from ..errors import ConfigError, DataError
from ..io.device import resolve_device
from ..io.outputs import save_frc_plot  # re-exported: the plot is written by the one output writer (io.outputs)
from ..metrics.frc import ONE_SEVENTH, FRCCrossing, frc, frc_resolution, half_bit_threshold, ring_counts
from .core import load_any_model, reconstruct
from .geometry import covered_box

log = logging.getLogger("ptychopinn")

#: how the positions are split (documented in docs/metrics.md)
SPLIT = "interleaved: even / odd positions in scan order"
#: smallest side (pixels) of the common region on which an FRC is computed
MIN_REGION = 16
#: a half covers a pixel when its stitching weight is ≥ this fraction of its maximum
COVER_FRACTION = 0.1

__all__ = ["HalfSetFRC", "half_set_frc", "split_interleaved", "subset_scan", "frc_of_images", "crossing", "save_frc_plot", "SPLIT"]


@dataclass
class HalfSetFRC:
    """The half-set FRC of one scan.

    frequencies: (K,) cycles/pixel; curve: (K,) FRC between the halves; half_bit: (K,) the ½-bit
    threshold curve; region: (row0, row1, col0, col1) in object-frame pixels of the compared
    region; halves: the two compared images (complex128, as stitched, before alignment and apodization);
    mask: (H, W) the soft mask sqrt(w_A · w_B) used in the apodization (0 where a half has no patch);
    truth_curve: (K,) FRC of the full reconstruction against the ground truth on the same region
    (None without truth).
    """

    frequencies: np.ndarray
    curve: np.ndarray
    half_bit: np.ndarray
    half_bit_crossing: FRCCrossing
    one_seventh_crossing: FRCCrossing
    region: tuple[int, int, int, int]
    n_positions: tuple[int, int]
    n_groups: tuple[int, int]
    halves: tuple[np.ndarray, np.ndarray]
    mask: np.ndarray
    truth_curve: np.ndarray | None = None
    truth_one_seventh_crossing: FRCCrossing | None = None

    def as_dict(self) -> dict[str, Any]:
        """The `metrics.json` entry `frc_halves` (JSON-ready; infinite values are written as null)."""

        def crossing(c: FRCCrossing) -> dict[str, Any]:
            return {"frequency_per_px": c.frequency, "resolution_px": c.resolution_px, "crossed": bool(c.crossed)}

        out: dict[str, Any] = {
            "split": SPLIT,
            "n_positions": list(self.n_positions),
            "n_groups": list(self.n_groups),
            "region": {"rows": [self.region[0], self.region[1]], "cols": [self.region[2], self.region[3]], "frame": "object pixels"},
            "apodization": "masked mean removed, soft mask sqrt(w_A w_B), 2-D Hann window",
            "half_bit": crossing(self.half_bit_crossing),
            "one_seventh": crossing(self.one_seventh_crossing),
            "frequencies_per_px": self.frequencies.tolist(),
            "curve": self.curve.tolist(),
            "half_bit_threshold": self.half_bit.tolist(),
        }
        if self.truth_curve is not None and self.truth_one_seventh_crossing is not None:
            out["truth_curve"] = self.truth_curve.tolist()
            out["truth_one_seventh"] = crossing(self.truth_one_seventh_crossing)
        return out


def split_interleaved(n_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows of half A, rows of half B): even and odd positions in scan order, (⌈M/2⌉,), (⌊M/2⌋,) int64."""
    rows = np.arange(int(n_positions), dtype=np.int64)
    return rows[0::2], rows[1::2]


class _Rows:
    """Read-only view of rows `rows` of a (possibly lazy) `(M, ...)` array; gathers on indexing."""

    def __init__(self, base: Any, rows: np.ndarray) -> None:
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (int(self.rows.size), *tuple(int(s) for s in base.shape[1:]))
        self.dtype = getattr(base, "dtype", None)
        self.ndim = len(self.shape)
        self.row_nbytes = int(getattr(base, "row_nbytes", 0) or 0)  # bytes read per row (chunked passes)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            rest = (slice(None), *key[1:])  # mypy reads `a[(x, *y)]` as 3.11-only `a[x, *y]`
            return np.asarray(self.base[self.rows[key[0]]])[rest]
        return np.asarray(self.base[self.rows[key]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = np.asarray(self.base[self.rows])
        return a if dtype is None else a.astype(dtype)


def subset_scan(scan: Any, rows: np.ndarray) -> Any:
    """The scan restricted to positions `rows` (increasing): patterns are read on demand from
    the original (no copy); probe, object, metadata and the other scan-wide fields are kept."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(np.diff(rows) <= 0):
        raise ValueError("subset_scan: rows must be strictly increasing")
    idx = None if scan.scan_index is None else np.asarray(scan.scan_index)[rows]
    return dataclasses.replace(
        scan,
        diffraction=_Rows(scan.diffraction, rows),
        xcoords=np.asarray(scan.xcoords)[rows],
        ycoords=np.asarray(scan.ycoords)[rows],
        xcoords_start=np.asarray(scan.xcoords_start)[rows],
        ycoords_start=np.asarray(scan.ycoords_start)[rows],
        scan_index=idx,
        Y=None,
    )


def _apodize(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    total = mask.sum()
    mean = (image * mask).sum() / total if total > 0 else image.mean()
    H, W = image.shape
    return (image - mean) * mask * np.outer(np.hanning(H), np.hanning(W))


def _align_to(b: np.ndarray, a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """α·b with α = argmin Σ m·|α·b − a|² (global amplitude scale and phase offset)."""
    den = float((m * np.abs(b) ** 2).sum())
    alpha = (m * np.conj(b) * a).sum() / den if den > 0 else 1.0
    return alpha * b


def frc_of_images(
    a: np.ndarray, b: np.ndarray, *, mask: np.ndarray | None = None, apodize: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequencies (K,) cycles/pixel, FRC curve (K,), ½-bit threshold (K,)) of two (H, W) images,
    B aligned to A by the least-squares complex scalar, both apodized: (masked) mean removed,
    times `mask` (H, W) in [0, 1] (default ones) and a 2-D Hann window."""
    a = np.asarray(a, dtype=np.complex128)
    b = np.asarray(b, dtype=np.complex128)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"frc_of_images takes two 2-D images of one shape, got {a.shape} and {b.shape}")
    m = np.ones(a.shape) if mask is None else np.asarray(mask, dtype=np.float64)
    b = _align_to(b, a, m)
    if apodize:
        a, b = _apodize(a, m), _apodize(b, m)
    freqs, curve = frc(a, b)
    return freqs, curve, half_bit_threshold(ring_counts(a.shape))


def crossing(curve: np.ndarray, threshold: float | np.ndarray, frequencies: np.ndarray) -> FRCCrossing:
    """First downward crossing of `threshold` by `curve`, after the first ring (≥ 1) where the
    curve is at or above it — rings below the threshold before that (the ½-bit curve is high at
    the smallest rings, which hold few pixels) are not a crossing. That first ring must lie in
    the low-frequency start window (the first max(2, ⌈K/5⌉) rings after DC): a curve that only
    touches the threshold at high frequency (noise) resolves nothing. A curve never at or above
    the threshold there gives frequency 0 (resolution ∞, written as null): nothing is resolved."""
    c = np.asarray(curve, dtype=np.float64)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), c.shape)
    window = max(2, -(-c.size // 5))
    above = np.nonzero(c[1 : 1 + window] >= t[1 : 1 + window])[0]
    if above.size == 0:
        return FRCCrossing(0.0, float("inf"), True)
    k0 = int(above[0]) + 1
    return frc_resolution(c[k0 - 1 :], t[k0 - 1 :], frequencies=np.asarray(frequencies)[k0 - 1 :])


def _object_frame_box(rec: Any) -> tuple[int, int, int, int]:
    box = covered_box(rec.weight, COVER_FRACTION)
    if box is None:
        raise DataError("half-set FRC: a half reconstruction covers no pixel")
    ox, oy = int(round(rec.origin[0])), int(round(rec.origin[1]))
    r0, r1, c0, c1 = box
    return r0 + oy, r1 + oy, c0 + ox, c1 + ox


def _cut(rec: Any, region: tuple[int, int, int, int], what: str = "object") -> np.ndarray:
    ox, oy = int(round(rec.origin[0])), int(round(rec.origin[1]))
    r0, r1, c0, c1 = region
    return getattr(rec, what)[r0 - oy : r1 - oy, c0 - ox : c1 - ox]


def _soft_mask(rec_a: Any, rec_b: Any, region: tuple[int, int, int, int]) -> np.ndarray:
    """sqrt(w_A · w_B) on `region`, each weight normalised to max 1."""
    wa = _cut(rec_a, region, "weight").astype(np.float64)
    wb = _cut(rec_b, region, "weight").astype(np.float64)
    return np.sqrt(wa / max(float(rec_a.weight.max()), 1e-30) * (wb / max(float(rec_b.weight.max()), 1e-30)))


def half_set_frc(
    model: Any,
    scan_or_path: Any,
    *,
    data_config: Any = None,
    batch_size: int = 64,
    crop: int | None = None,
    weight: str = "probe",
    device: Any = "auto",
    full: Any = None,
    load: Any = None,
    extra: dict[str, Any] | None = None,
) -> HalfSetFRC:
    """Half-set FRC of a scan (no ground truth needed); see the module docstring for the method.

    model, scan_or_path, data_config, batch_size, crop, weight, device: as `reconstruct`
    (barycentric stitching). data_config.n_groups, when set, is halved for each half. full: the
    `Reconstruction` of the whole scan; with it and a scan `objectGuess`, the FRC of the full
    reconstruction against the truth on the same region is added (`truth_curve`). load:
    `data.LoadOptions` for a scan path (as `reconstruct`). extra: the model's saved extra info
    (`io.load_any_model`'s second value, e.g. the training `neighbor_count`) when `model` is a
    module already loaded from a path (`reconstruct(frc_halves=True)` passes its own, so the model
    is read once); default: the module's `extra_info`, or what the loader returns for a path.
    """
    if weight not in ("probe", "uniform"):
        raise ConfigError(f"weight must be 'probe' or 'uniform', got {weight!r}")
    dev = resolve_device(device)
    net, saved = load_any_model(model, dev)
    extra = saved if extra is None else extra
    scan = as_scan(scan_or_path, load, int(net.config.N))
    label = scan_label(scan)
    dcfg = inference_data_config(net.config.gridsize, extra, data_config)
    if dcfg.n_groups is not None:
        dcfg = dataclasses.replace(dcfg, n_groups=max(1, dcfg.n_groups // 2))
    M = scan.n_positions
    if M < 2 * max(1, dcfg.gridsize**2):
        raise DataError(f"{label}: {M} scan positions are too few for a half-set FRC (each half needs a group)")
    rows_a, rows_b = split_interleaved(M)
    halves = []
    with warnings.catch_warnings(record=True) as caught:  # e.g. "too sparse for gridsize 2": said once, below
        warnings.simplefilter("always")
        for rows in (rows_a, rows_b):
            halves.append(
                reconstruct(net, subset_scan(scan, rows), data_config=dcfg, batch_size=batch_size, stitch="barycentric",
                            crop=crop, weight=weight, device=dev)  # type: ignore[arg-type]  # weight: a str, one of reconstruct's PatchWeight literals
            )
    for message in dict.fromkeys(str(w.message) for w in caught):
        log.warning("half-set FRC, a half (every other position): %s", message)
    rec_a, rec_b = halves
    ba, bb = _object_frame_box(rec_a), _object_frame_box(rec_b)
    region = (max(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), min(ba[3], bb[3]))
    if region[1] - region[0] < MIN_REGION or region[3] - region[2] < MIN_REGION:
        raise DataError(
            f"{label}: the two half reconstructions overlap on {max(region[1] - region[0], 0)}x{max(region[3] - region[2], 0)} px; "
            f"a half-set FRC needs at least {MIN_REGION}x{MIN_REGION}"
        )
    a, b = _cut(rec_a, region), _cut(rec_b, region)
    mask = _soft_mask(rec_a, rec_b, region)
    freqs, curve, half_bit = frc_of_images(a, b, mask=mask)
    result = HalfSetFRC(
        frequencies=freqs,
        curve=curve,
        half_bit=half_bit,
        half_bit_crossing=crossing(curve, half_bit, freqs),
        one_seventh_crossing=crossing(curve, ONE_SEVENTH, freqs),
        region=tuple(int(v) for v in region),  # type: ignore[arg-type]  # four ints (the region box)
        n_positions=(int(rows_a.size), int(rows_b.size)),
        n_groups=(int(rec_a.n_groups), int(rec_b.n_groups)),
        halves=(np.asarray(a, dtype=np.complex128), np.asarray(b, dtype=np.complex128)),
        mask=mask,
    )
    truth = getattr(scan, "object", None)
    if full is not None and truth is not None:
        r0, r1, c0, c1 = region
        t = np.asarray(truth)
        if r0 >= 0 and c0 >= 0 and r1 <= t.shape[0] and c1 <= t.shape[1]:
            _, tcurve, _ = frc_of_images(t[r0:r1, c0:c1], _cut(full, region), mask=mask)
            result.truth_curve = tcurve
            result.truth_one_seventh_crossing = crossing(tcurve, ONE_SEVENTH, freqs)
    log.debug(  # the CLI prints its own summary line
        "half-set FRC: 1/2-bit %s, 1/7 %s (%s)",
        _fmt(result.half_bit_crossing),
        _fmt(result.one_seventh_crossing),
        SPLIT,
    )
    return result


def _fmt(c: FRCCrossing) -> str:
    if not c.crossed:
        return f"not crossed up to {c.frequency:.3f} px^-1"
    if c.frequency <= 0:
        return "never reached"
    return f"{c.frequency:.3f} px^-1 ({c.resolution_px:.1f} px)"
