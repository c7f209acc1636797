"""The scan data contract: the `Scan` container, `load_scan` (NPZ / HDF5) and `make_scan` (arrays).

Keys, shapes and dtypes (M positions, N×N detector, H×W object; see docs/data-contract.md):

    diffraction | diff3d   (M, N, N) amplitudes (sqrt counts) or counts → float32 amplitudes   required
    diffraction_units      'amplitude' | 'counts' (0-d string; also HDF5 attribute / _metadata) optional
    xcoords, ycoords       (M,) object pixels                  → float64   required
    probeGuess             (N, N) or (K, N, N) modes           → complex64 required
    bad_pixels             (N, N) bool, True = not measured                optional
    xcoords_start, ycoords_start (M,)                          → float64   optional (= xcoords/ycoords)
    scan_index             (M,) integer                        → int64     optional (= zeros)
    objectGuess            (H, W) ground truth                 → complex64 optional
    initial_object         (H, W) an initial guess, not truth  → complex64 optional
    Y                      (M, N, N) ground-truth patches      → complex64 optional (kept only if first axis is M)
    _metadata              JSON text (0-d or 1-element str/bytes array; HDF5 dataset or attribute)

The ptychodus training exports (`save_ptychopinn_training_data` NPZ, `save_training_data` HDF5)
are read as they are. Nothing is ever unpickled. Every violation raises `DataError` with one line
naming the file, the key and what was expected. numpy, h5py only; no torch.

Modules: `sources` (what is stored under each key), `validation` and `positions` (the checks,
one named function per rule), `options` (`LoadOptions`), `detector` (counts, crop, binning),
`writers` (`save_scan`, `save_scan_h5`). `_assemble` below is the order in which the rules run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, DataError
from .detector import DetectorTransform, crop_window, resample_object, transform_mask
from .lazy import LazyArray
from .npz import NpzReader
from .options import LoadOptions
from .positions import check_span, read_positions, scale_to_window, to_object_pixels
from .sources import HDF5FileSource, MemorySource, NpzSource, Source, ptychodus_view, sniff, source_format
from .validation import (
    ValueStats,
    bad_pixel_mask,
    check_nphotons,
    declared_units,
    dominant_mode,
    read_objects,
    read_patches,
    read_probe_modes,
    read_scan_index,
    resolve_units,
    scan_values,
    shape_error,
    stack_layout,
)

__all__ = ["Scan", "load_scan", "make_scan"]

#: legacy/alias keyword → canonical file key, for `make_scan` / `save_scan`
_ALIASES = {"probe": "probeGuess", "object": "objectGuess", "diff3d": "diffraction", "metadata": "_metadata"}


@dataclass
class Scan:
    """One ptychographic scan, validated against the data contract.

    diffraction: (M, N, N) float32 amplitudes, sqrt(counts); a `LazyArray` (memory-mapped NPZ
        member or HDF5 dataset) when read from a file, gathered by index on demand.
    xcoords, ycoords, xcoords_start, ycoords_start: (M,) float64 positions in object pixels
        (x = column, y = row).
    probe: (N, N) complex64, the dominant mode (max Σ|P|²) of `probeGuess`.
    object: (H, W) complex64 ground truth or None (metrics are computed only against it).
    scan_index: (M,) int64. Y: (M, N, N) complex64 ground-truth patches or None.
    metadata: parsed `_metadata` JSON plus physical metadata of foreign formats (docs).
    diffraction_units: what the file held, 'amplitude' or 'counts' (reads are amplitudes anyway).
    bad_pixels: (N, N) bool, True = not measured, or None (no pixel flagged).
    probe_modes: (K, N, N) complex64 when the file holds K >= 2 probe modes, else None.
    initial_object: (H, W) complex64 initial guess (e.g. a ptychodus export's object) or None.
    """

    diffraction: Any
    xcoords: np.ndarray
    ycoords: np.ndarray
    xcoords_start: np.ndarray
    ycoords_start: np.ndarray
    probe: np.ndarray
    object: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    Y: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    diffraction_units: str = "amplitude"
    bad_pixels: np.ndarray | None = None
    probe_modes: np.ndarray | None = None
    initial_object: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray | None:
        """(N, N) bool, True = measured (`~bad_pixels`), or None when every pixel is measured."""
        return None if self.bad_pixels is None else ~self.bad_pixels

    @property
    def N(self) -> int:
        """Detector (patch) size in pixels."""
        return int(self.diffraction.shape[-1])

    @property
    def n_positions(self) -> int:
        """M, the number of scan positions."""
        return int(self.xcoords.shape[0])

    @property
    def coords(self) -> np.ndarray:
        """(M, 2) float64 positions `[x, y]`."""
        return np.stack([self.xcoords, self.ycoords], axis=-1)

    @property
    def coords_start(self) -> np.ndarray:
        """(M, 2) float64 start positions `[x, y]`."""
        return np.stack([self.xcoords_start, self.ycoords_start], axis=-1)

    def __repr__(self) -> str:
        obj = None if self.object is None else self.object.shape
        extra = f", units={self.diffraction_units!r}" if self.diffraction_units != "amplitude" else ""
        if self.bad_pixels is not None:
            extra += f", bad_pixels={int(self.bad_pixels.sum())}"
        if self.probe_modes is not None:
            extra += f", probe_modes={self.probe_modes.shape[0]}"
        return (
            f"Scan(M={self.n_positions}, N={self.N}, object={obj}, Y={self.Y is not None}{extra}, "
            f"path={str(self.path) if self.path else None!r})"
        )



# ----------------------------------------------------------------------------------------------
# assembly: a source → a validated Scan, one named step per rule
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """Where the raw patterns are: key, stored dtype, legacy `(N, N, M)` / trailing-axis flags, frame size S."""

    key: str
    dtype: np.dtype
    legacy: bool
    squeeze: bool
    S: int


@dataclass
class _Detector:
    """The diffraction as read: (M, N, N) float32 amplitudes (lazy), the crop window, the mask."""

    diffraction: Any
    N: int
    window: tuple[int, int, int] | None
    bad: np.ndarray | None
    stats: ValueStats | None


def _diffraction_layout(src: Source, label: str, M: int) -> _Layout:
    """`diffraction` (or legacy `diff3d`): (M, N, N) real, or the legacy (N, N, M) layout."""
    keys = src.keys()
    dkey = "diffraction" if "diffraction" in keys else "diff3d" if "diff3d" in keys else None
    if dkey is None:
        raise DataError(f"{label}: missing key 'diffraction' (or legacy 'diff3d'), expected (M, N, N) = ({M}, N, N) float32 amplitudes or integer counts")
    dshape, ddtype = src.info(dkey)
    dspec = f"(M, N, N) = ({M}, N, N) float32 amplitudes or integer counts (or legacy (N, N, M))"
    if ddtype.kind not in "fiu":
        raise shape_error(label, dkey, dshape, ddtype, dspec)
    legacy, squeeze, (_, S, _) = stack_layout(label, dkey, dshape, ddtype, M, dspec)
    return _Layout(dkey, ddtype, legacy, squeeze, S)


def _check_detector_options(opts: LoadOptions, label: str, layout: _Layout) -> None:
    """`bin` >= 1, `crop` >= 1, and frames divisible by `bin` unless cropped."""
    B = int(opts.bin)
    if B < 1:
        raise ConfigError(f"--bin: expected a positive integer, got {opts.bin!r}")
    if opts.crop is not None and int(opts.crop) < 1:
        raise ConfigError(f"--crop-detector: expected a positive size, got {opts.crop!r}")
    if opts.crop is None and layout.S % B:
        raise DataError(f"{label}: key {layout.key!r} has {layout.S}x{layout.S} frames, not divisible by --bin {B}; add --crop-detector")


def _read_diffraction(
    src: Source, label: str, layout: _Layout, *, counts: bool, bad_raw: np.ndarray | None, opts: LoadOptions,
    meta: dict[str, Any], check_values: bool,
) -> _Detector:
    """The patterns through the detector transform (counts → sqrt, crop, bin), lazily.

    One chunked pass checks the values (`check_values`) and, for a crop, finds the window around
    the centroid of the mean pattern (recorded in `meta['detector_crop']`). In-memory input is
    transformed once; files stay on disk (memmap / HDF5) and are transformed per read.
    """
    B = int(opts.bin)
    raw = src.lazy(layout.key)
    raw_view = LazyArray(raw, np.float32, legacy=layout.legacy, squeeze=layout.squeeze)
    stats = None
    if check_values or opts.crop is not None:
        stats = scan_values(
            label, layout.key, raw_view, counts=counts, bad=bad_raw, check=check_values, mean_pattern=opts.crop is not None,
            energy="nphotons" in meta,
        )
    window = None
    if opts.crop is not None:
        assert stats is not None and stats.mean_pattern is not None
        window, (cy, cx) = crop_window(stats.mean_pattern, int(opts.crop), B, label=label)
        meta["detector_crop"] = {"row0": window[0], "col0": window[1], "size": window[2], "centroid": [cy, cx], "frame": layout.S}
    if B > 1:
        meta["detector_bin"] = B
    transform = DetectorTransform(counts=counts, window=window, bin=B)
    diffraction: Any = LazyArray(
        raw, np.float32, legacy=layout.legacy, squeeze=layout.squeeze, transform=None if transform.identity else transform
    )
    if isinstance(raw, np.ndarray) and not isinstance(raw, np.memmap):
        diffraction = np.ascontiguousarray(diffraction[:])  # already in memory: fix layout once
    return _Detector(diffraction, transform.out_size(layout.S), window, transform_mask(bad_raw, window, B), stats)


def _assemble(src: Source, *, check_values: bool, path: Path | None, options: LoadOptions | None = None) -> Scan:
    """Validate `src` against the contract, rule by rule in a fixed order (so the first error
    reported does not depend on the container), and build the `Scan`."""
    opts = options or LoadOptions()
    if opts.crop_detector and opts.crop is None:
        raise ConfigError("--crop-detector needs the model's N: resolve LoadOptions.for_size(N) first (or pass crop=N)")
    fmt = source_format(src)
    src = ptychodus_view(src, fmt)
    label = src.label
    pos = read_positions(src, label)
    M = pos.M
    layout = _diffraction_layout(src, label, M)
    S = layout.S

    meta = src.metadata()
    if fmt != "ptychopinn":
        meta.setdefault("source_format", fmt)
    declared, where = declared_units(src, meta, label, fmt)
    counts = resolve_units(label, layout.dtype, declared, where, opts.diffraction_units) == "counts"
    bad_raw = bad_pixel_mask(src, label, S)
    _check_detector_options(opts, label, layout)
    det = _read_diffraction(src, label, layout, counts=counts, bad_raw=bad_raw, opts=opts, meta=meta, check_values=check_values)
    check_nphotons(label, layout.key, det.stats, meta.get("nphotons"), counts)
    probe, probe_modes = dominant_mode(read_probe_modes(src, label, S, det.N, det.window, int(opts.bin)))

    to_object_pixels(pos, meta, label, opts.pixel_size, fmt)
    factor = (S if det.window is None else det.window[2]) / S  # a smaller detector window: larger object pixels
    if factor != 1:
        scale_to_window(pos, meta, label, factor)
    check_span(pos, label)

    obj, init = read_objects(src, label, fmt)
    if factor != 1:
        obj = None if obj is None else resample_object(obj, factor)
        init = None if init is None else resample_object(init, factor)
    return Scan(
        diffraction=det.diffraction,
        xcoords=pos.x,
        ycoords=pos.y,
        xcoords_start=pos.x_start,
        ycoords_start=pos.y_start,
        probe=probe,
        object=obj,
        scan_index=read_scan_index(src, label, M),
        Y=read_patches(src, label, M, S, det.N),
        metadata=meta,
        path=path,
        diffraction_units="counts" if counts else "amplitude",
        bad_pixels=det.bad,
        probe_modes=probe_modes,
        initial_object=init,
    )


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def load_scan(
    path: str | os.PathLike[str],
    *,
    mmap: bool = True,
    check_values: bool = True,
    diffraction_units: str | None = None,
    pixel_size: float | None = None,
    crop: int | None = None,
    bin: int = 1,
    options: LoadOptions | None = None,
) -> Scan:
    """Read and validate a scan file (`.npz` or `.h5`/`.hdf5`, recognised by content).

    Also reads the ptychodus training exports as they are (NPZ of
    `save_ptychopinn_training_data`, HDF5 of `save_training_data`).
    diffraction_units, pixel_size, crop, bin: see `LoadOptions` (or pass `options=`); an
    explicit option beats the file's metadata (with a one-line warning when they disagree).

    mmap: when True, `diffraction` (and `Y`) stay on disk: uncompressed NPZ members are
        memory-mapped, HDF5 datasets read on access; compressed NPZ members are read fully.
        When False everything is read into memory.
    check_values: scan the diffraction once, chunk by chunk (one sequential read of the
        file), for NaN/inf and negative amplitudes.
    """
    path = Path(path)
    if options is None:
        options = LoadOptions(diffraction_units, pixel_size, crop, bin)
    kind = sniff(path)
    if kind == "npz":
        reader = NpzReader(path)
        try:
            return _assemble(NpzSource(reader, mmap), check_values=check_values, path=path, options=options)
        finally:
            reader.close()  # memory maps stay valid after the zip handle closes
    src = HDF5FileSource(path, mmap)
    try:
        return _assemble(src, check_values=check_values, path=path, options=options)
    except (OSError, KeyError) as exc:
        raise DataError(f"{path.name}: HDF5 content cannot be read ({exc})") from None
    finally:
        src.close()


def _canonical(scan: Scan | None, arrays: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scan is not None:
        out.update(
            diffraction=scan.diffraction,
            diffraction_units="amplitude",  # a Scan's diffraction always reads as amplitudes
            xcoords=scan.xcoords,
            ycoords=scan.ycoords,
            xcoords_start=scan.xcoords_start,
            ycoords_start=scan.ycoords_start,
            probeGuess=scan.probe_modes if scan.probe_modes is not None else scan.probe,
            objectGuess=scan.object,
            initial_object=scan.initial_object,
            bad_pixels=scan.bad_pixels,
            scan_index=scan.scan_index,
            Y=scan.Y,
            _metadata=dict(scan.metadata),
        )
        if ("diffraction" in arrays or "diff3d" in arrays) and "diffraction_units" not in arrays:
            out.pop("diffraction_units")  # new data: units from its dtype / declaration
    for key, value in arrays.items():
        canon = _ALIASES.get(key, key)
        if canon != key and key in arrays and canon in arrays:
            raise DataError(f"both {key!r} and {canon!r} were given; pass only one")
        out[canon] = value
    return {k: v for k, v in out.items() if v is not None}


def make_scan(
    scan: Scan | None = None, /, *, check_values: bool = True, options: LoadOptions | None = None, **arrays: Any
) -> Scan:
    """A validated in-memory `Scan` from arrays named as in the file contract.

    Also accepts the aliases `probe`, `object`, `metadata` (a dict) and `diff3d`, and the keys
    `diffraction_units` ('counts' | 'amplitude'), `bad_pixels`, `initial_object`.
    """
    return _assemble(
        MemorySource(_canonical(scan, arrays), "<arrays>"), check_values=check_values, path=None, options=options
    )

