"""Live reconstruction: follow an HDF5 scan while another process writes it (SWMR), torch-free.

    ptychopinn-onnx MODEL.onnx LIVE.h5 --follow --out OUT_DIR [--update-every S] [--idle-timeout S]

The engine (`follow`) is independent of the network: it takes a `FollowModel` whose `predict`
maps model inputs to object patches, so the ONNX runner (`follow_onnx`, this module) and the torch
CLI (`ptychopinn reconstruct --follow`, predictor in `ptychopinn.reconstruct.follow`) share it.
Imports numpy, h5py and, for `follow_onnx`, onnxruntime; never torch.

Rules (docs/beamline.md):

- The file follows the scan contract with `diffraction (M, N, N)`, `xcoords`, `ycoords` growing
  along axis 0 and `probeGuess`; it is opened SWMR-read and the growing datasets are refreshed
  every poll. Frame i is used once its diffraction AND both coordinates exist (positions may lag).
  An optional `timestamp (M,)` float64 dataset (Unix seconds at the frame's flush, written by
  `ptychopinn simulate --stream`) gives the write→canvas latency; without it the latency is
  measured from the moment the follower read the frame.
- End: the root attribute `scan_complete` true (checked on a fresh SWMR handle, since an open
  reader does not see attribute changes), or `idle_timeout` seconds without a new frame.
- Frames are read with the batch runners' rules: units from `--diffraction-units`, the file's
  `diffraction_units` or the dtype (integer counts -> sqrt), `bad_pixels` excluded from f and
  filled at the input. Detector crop / binning / positions in metres need the whole scan and are
  refused. An existing non-empty output folder is refused unless `overwrite`.
- Gridsize 1 only: a group is one frame. Gridsize > 1 groups are drawn from a frame's nearest
  neighbours over the whole scan, which a stream cannot reproduce; such models are refused.
- Canvas: numerator and weight accumulators in an integer-origin frame that grows by re-padding
  (integer shifts leave every bilinear weight bit-identical); each output is the window
  `geometry.canvas_geometry` gives for the running min/max of the positions, i.e. the batch
  runner's canvas, so the result does not depend on batching or arrival times.
- Normalisation: the batch run scales every pattern by f(all patterns) and the network is not
  linear in its input, so no streaming rescale is exact. The live canvas uses a provisional f
  from the first `norm_frames` frames (or `norm_factor` when given); at the end, f over all frames
  is compared with it and, when float32(f·s) differs, one final pass re-reads the frames from the
  file (chunked: memory stays bounded) and re-stitches them with the final f. The final
  `reconstruction.npz` therefore equals the batch `ptychopinn-onnx MODEL LIVE.h5 --out DIR` on the
  finished file (to float32 summation order).
- Memory: one batch of frames, the canvas accumulators, and the timestamps of frames awaiting
  the next output write; the scan stays on disk.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ptychopinn.data.badpixels import BadPixelFill
from ptychopinn.data.detector import DetectorTransform
from ptychopinn.data.normalize import block_energy, factor_from_energy
from ptychopinn.data.sources import HDF5FileSource
from ptychopinn.data.validation import bad_pixel_mask, declared_units, resolve_units
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.io.outputs import has_matplotlib, write_reconstruction_dir
from ptychopinn.reconstruct import geometry

from . import stitch_np

log = logging.getLogger("ptychopinn")

#: default batch (frames per inference call) = the batch runner's
DEFAULT_BATCH = 64
#: default seconds without a new frame (and for the file to appear) before ending
DEFAULT_IDLE_TIMEOUT = 300.0
#: seconds between polls of the file when no frame is pending
DEFAULT_POLL = 0.02
GROWING = ("diffraction", "xcoords", "ycoords")

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FollowModel:
    """What the engine needs of a network.

    predict(x (B, 1, N, N) float32 = d · float32(f · s), offsets (B, 1, 2) float32 zeros)
    -> object patches (B, N, N) complex64. crop: stitched central side; weight: "probe" |
    "uniform"; eps: normaliser epsilon (canvas = num / (den + eps), 0 where den = 0).
    """

    predict: Predict
    N: int
    gridsize: int
    intensity_scale: float
    crop: int
    weight: str = "probe"
    eps: float = 1e-9
    label: str = "model"
    extra_meta: dict = field(default_factory=dict)


# -- reading a file that is being written ------------------------------------------------------
def _truthy(value: Any) -> bool:
    v = np.asarray(value).reshape(-1)
    if v.size != 1:
        return False
    item = v[0]
    if isinstance(item, (bytes, np.bytes_)):
        item = item.decode("utf-8", "replace")
    if isinstance(item, str):
        return item.strip().lower() in ("true", "1", "yes")
    return bool(item)


def as_amplitudes(raw: np.ndarray, counts: bool = False) -> np.ndarray:
    """Frames as stored -> float32 amplitudes with the rule `data.load_scan` applies in the batch
    run (`data.detector.DetectorTransform` without crop or binning: counts -> sqrt)."""
    return DetectorTransform(counts=counts)(raw)


def _text_value(value: Any) -> str:
    v = np.asarray(value).reshape(-1)
    item = v[0] if v.size == 1 else value
    return item.decode("utf-8", "replace") if isinstance(item, (bytes, np.bytes_)) else str(item)


def _file_metadata(f: Any) -> dict[str, Any]:
    import json

    raw = f["_metadata"][()] if "_metadata" in f else f.attrs.get("_metadata")
    if raw is None:
        return {}
    try:
        value = json.loads(_text_value(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def frame_rule(f: Any, label: str, N: int, option: str | None) -> tuple[bool, np.ndarray | None]:
    """(counts, bad_pixels (N, N) bool or None) with `data.load_scan`'s rules (`data.validation`):
    the explicit `--diffraction-units` > the file's `diffraction_units` (key, root attribute,
    `_metadata`) > the dtype (integers are counts), with the batch run's one-line warning when the
    flag contradicts the file; `bad_pixels` (N, N) bool, True = not measured. `f`: the open
    (SWMR) `h5py.File`."""
    src = HDF5FileSource(Path(f.filename), mmap=False, file=f, label=label)
    meta = _file_metadata(f)
    declared, where = declared_units(src, meta, label)
    if str(meta.get("position_units", "px")) != "px":  # as load_scan: "px" (default) or "m"
        raise DataError(f"{label}: _metadata.position_units = {meta['position_units']!r}; --follow needs positions in object pixels")
    units = resolve_units(label, f["diffraction"].dtype, declared, where, option)
    return units == "counts", bad_pixel_mask(src, label, N)


class LiveScan:
    """A scan file opened SWMR-read; `available()` refreshes the growing datasets.

    Waits up to `timeout` s for the file to exist and to open with the contract's datasets
    (a writer that has not yet switched to SWMR mode holds a lock). DataError names the file
    and key when the layout is wrong.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float, poll: float = DEFAULT_POLL, diffraction_units: str | None = None) -> None:
        self.units_option = diffraction_units
        self.path = Path(path)
        self.label = self.path.name
        self.poll = poll
        self.file: Any = None
        deadline = time.monotonic() + timeout
        last = "file not found"
        while True:
            try:
                self._open()
                break
            except _NotReady as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise DataError(f"{self.path}: not ready after {timeout:g} s ({last}); expected an HDF5 scan with "
                                "diffraction (M, N, N), xcoords, ycoords (M,) and probeGuess")
            time.sleep(poll)
        self._read_static()

    def _open(self) -> None:
        import h5py

        if not self.path.exists():
            raise _NotReady("file not found")
        self.close()
        try:
            # no file lock: a writer may close the file and reopen it ('a') to set scan_complete
            f = h5py.File(self.path, "r", swmr=True, libver="latest", locking=False)
        except (OSError, ValueError) as exc:  # a writer not yet in SWMR mode, or a truncated file
            raise _NotReady(f"cannot open it yet: {exc}") from None
        missing = [k for k in (*GROWING, "probeGuess") if k not in f]
        if missing:
            f.close()
            raise _NotReady(f"missing key {missing[0]!r}")
        self.file = f
        self.ds = {k: f[k] for k in GROWING}
        self.timestamp = f["timestamp"] if "timestamp" in f else None

    def _read_static(self) -> None:
        d = self.ds["diffraction"]
        if d.ndim != 3 or d.shape[1] != d.shape[2] or d.dtype.kind not in "fiu":
            raise DataError(f"{self.label}: key 'diffraction' has shape {d.shape} {d.dtype}, expected (M, N, N) float32 "
                            "amplitudes growing along axis 0")
        for k in ("xcoords", "ycoords"):
            ds = self.ds[k]
            if ds.ndim != 1 or ds.dtype.kind not in "fiu":
                raise DataError(f"{self.label}: key {k!r} has shape {ds.shape} {ds.dtype}, expected (M,) float64 positions")
        self.N = int(d.shape[1])
        probe = np.asarray(self.file["probeGuess"][()])
        if probe.ndim == 3 and probe.shape[-1] == 1:
            probe = probe[..., 0]
        if probe.shape != (self.N, self.N):
            raise DataError(f"{self.label}: key 'probeGuess' has shape {probe.shape}, expected (N, N) = ({self.N}, {self.N}) complex64")
        self.probe = probe.astype(np.complex64)
        obj = self.file["objectGuess"] if "objectGuess" in self.file else None
        self.object_shape: tuple[int, int] | None = (int(obj.shape[0]), int(obj.shape[1])) if obj is not None and obj.ndim >= 2 else None
        self.counts, self.bad_pixels = frame_rule(self.file, self.label, self.N, self.units_option)
        self.transform = DetectorTransform(counts=self.counts)

    def reopen(self) -> None:
        """A fresh handle (sees everything flushed so far, including attributes)."""
        self._open()

    def available(self) -> tuple[int, int]:
        """(frames with diffraction and both positions, frames with diffraction)."""
        if self.file is None:  # a reopen failed (file replaced or locked): try again
            self._open()
        lengths = {}
        for k, ds in self.ds.items():
            try:
                ds.refresh()
            except (OSError, RuntimeError, ValueError):  # not a SWMR file, or a refresh racing a flush
                pass
            lengths[k] = int(ds.shape[0])
        if self.timestamp is not None:
            try:
                self.timestamp.refresh()
            except (OSError, RuntimeError, ValueError):
                pass
        return min(lengths.values()), lengths["diffraction"]

    def complete(self) -> bool:
        """The root attribute `scan_complete`, read through a fresh handle (HDF5 shares one
        file object per process, so the old handle is closed first; the fresh one replaces it)."""
        try:
            self._open()
        except _NotReady:
            return False
        try:
            return "scan_complete" in self.file.attrs and _truthy(self.file.attrs["scan_complete"])
        except (OSError, ValueError):
            return False

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(frames (n, N, N) float32, positions (n, 2) float64 [x, y], timestamps (n,) or None)."""
        frames = self.transform(self.ds["diffraction"][start:stop])
        xy = np.stack([np.asarray(self.ds["xcoords"][start:stop], np.float64),
                       np.asarray(self.ds["ycoords"][start:stop], np.float64)], axis=1)
        ts = None
        if self.timestamp is not None and self.timestamp.shape[0] >= stop:
            ts = np.asarray(self.timestamp[start:stop], np.float64)
        if frames.shape[0] != stop - start or xy.shape[0] != stop - start:
            raise _NotReady("short read")
        return frames, xy, ts

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except Exception:  # closing a handle of a file that vanished
                pass
            self.file = None


class _NotReady(Exception):
    """The file or a frame is not readable yet (retry after a poll)."""


def _check_frames(label: str, frames: np.ndarray, start: int) -> None:
    finite = np.isfinite(frames)
    if not finite.all():
        row = start + int(np.argwhere(~finite)[0][0])
        raise DataError(f"{label}: key 'diffraction' has NaN/inf at pattern {row}, expected finite amplitudes >= 0")
    if (frames < 0).any():
        row = start + int(np.argwhere(frames < 0)[0][0])
        raise DataError(f"{label}: key 'diffraction' has negative values at pattern {row}, expected amplitudes (sqrt of counts) >= 0")


def _check_positions(label: str, xy: np.ndarray, start: int) -> None:
    if not np.isfinite(xy).all():
        row = start + int(np.argwhere(~np.isfinite(xy))[0][0])
        raise DataError(f"{label}: keys 'xcoords'/'ycoords' have NaN/inf at position {row}, expected finite object pixels")


# -- the growing canvas ------------------------------------------------------------------------
class GrowingCanvas:
    """Numerator / weight accumulators on an integer-origin canvas that grows with the scan.

    origin `[x0, y0]` (integers, object-frame pixels) of canvas pixel (0, 0). `add` re-pads when
    a patch would fall outside (with a margin, so growth is amortised); integer shifts keep
    every splat weight identical, so the sums equal a canvas sized for the whole scan upfront.
    """

    def __init__(self, crop: int, weights: np.ndarray | None) -> None:
        self.crop = int(crop)
        self.half = self.crop // 2
        self.weights = weights
        self.origin = np.zeros(2, np.int64)
        self.num: np.ndarray | None = None
        self.den: np.ndarray | None = None
        self.lo = np.full(2, np.inf)
        self.hi = np.full(2, -np.inf)
        self.n = 0
        self.regrows = 0

    def _needed(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[x, y] integer box [a, b) that `geometry.canvas_geometry` would allocate."""
        a = np.floor(lo) - self.half - 1
        b = np.ceil(hi) + (self.crop - self.half) + 1
        return a.astype(np.int64), b.astype(np.int64)

    def _ensure(self, a: np.ndarray, b: np.ndarray) -> None:
        if self.num is not None:
            h, w = self.num.shape
            if (a >= self.origin).all() and (b <= self.origin + np.array([w, h])).all():
                return
            a = np.minimum(a, self.origin)
            b = np.maximum(b, self.origin + np.array([w, h]))
        margin = np.maximum(self.crop, (b - a) // 4)  # amortised growth
        new_a, new_b = a - margin, b + margin
        W, H = (new_b - new_a).tolist()
        num, den = stitch_np.new_canvas((H, W), np.complex64)
        if self.num is not None:
            ox, oy = (self.origin - new_a).tolist()
            h, w = self.num.shape
            num[oy : oy + h, ox : ox + w] = self.num
            den[oy : oy + h, ox : ox + w] = self.den
            self.regrows += 1
        self.num, self.den, self.origin = num, den, new_a

    def add(self, patches: np.ndarray, centres: np.ndarray) -> None:
        """Splat `patches (n, crop, crop)` complex64 at `centres (n, 2)` `[x, y]` object pixels."""
        if patches.shape[0] == 0:
            return
        lo = np.minimum(self.lo, centres.min(axis=0))
        hi = np.maximum(self.hi, centres.max(axis=0))
        self._ensure(*self._needed(lo, hi))
        self.lo, self.hi = lo, hi
        assert self.num is not None and self.den is not None
        stitch_np.stitch(patches, centres - self.origin.astype(np.float64), self.num.shape, weights=self.weights, out=(self.num, self.den))
        self.n += patches.shape[0]

    def result(self, obj_shape: tuple[int, int] | None, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(object (H, W) complex64, weight (H, W) float32, origin [x0, y0] float64) on the batch
        runner's canvas (`geometry.canvas_geometry` of all positions so far)."""
        if self.num is None or self.den is None:  # set together (num is None iff den is None)
            raise DataError("no frame with a position was reconstructed")
        (H, W), wlo = geometry.canvas_geometry(np.stack([self.lo, self.hi]), self.crop, obj_shape)
        num = np.zeros((H, W), np.complex64)
        den = np.zeros((H, W), np.float32)
        ox, oy = (wlo.astype(np.int64) - self.origin).tolist()  # window start in canvas pixels
        h, w = self.num.shape
        r0, r1 = max(oy, 0), min(oy + H, h)
        c0, c1 = max(ox, 0), min(ox + W, w)
        if r1 > r0 and c1 > c0:
            num[r0 - oy : r1 - oy, c0 - ox : c1 - ox] = self.num[r0:r1, c0:c1]
            den[r0 - oy : r1 - oy, c0 - ox : c1 - ox] = self.den[r0:r1, c0:c1]
        covered = den > 0
        obj = num
        np.divide(num, den + np.float32(eps), out=obj)
        obj[~covered] = 0
        return obj, den, np.asarray(wlo, np.float64)


# -- latency statistics (bounded) --------------------------------------------------------------
class LatencyHistogram:
    """Log-binned histogram of latencies (10 µs .. 10⁴ s, 100 bins per decade): percentiles to
    ~2.3 % in constant memory."""

    LO, DECADES, PER = 1e-5, 9, 100

    def __init__(self) -> None:
        self.counts = np.zeros(self.DECADES * self.PER + 2, np.int64)
        self.n = 0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64)
        if v.size == 0:
            return
        k = np.floor(np.log10(np.maximum(v, self.LO * 0.5) / self.LO) * self.PER).astype(np.int64) + 1
        np.add.at(self.counts, np.clip(k, 0, self.counts.size - 1), 1)
        self.n += v.size

    def percentile(self, q: float) -> float | None:
        if self.n == 0:
            return None
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        if k == 0:
            return self.LO
        return self.LO * 10 ** ((k - 0.5) / self.PER)


@dataclass
class FollowStats:
    """Counters of one follow run (structural, for tests and the summary line).

    frames: frames reconstructed (each once); frames_seen: frames with diffraction at the end
    (more than `frames` when some lack positions); max_frames_in_memory: most frames held at
    once (≤ batch size); max_backlog: most frames written but not yet reconstructed; updates:
    output writes; final_pass: whether the frames were re-run with the final factor.
    """

    frames: int = 0
    frames_seen: int = 0
    batches: int = 0
    max_frames_in_memory: int = 0
    max_backlog: int = 0
    updates: int = 0
    regrows: int = 0
    final_pass: bool = False
    ended_by: str = ""
    latency_source: str = ""
    live_s: float = 0.0
    total_s: float = 0.0
    inference_s: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def frames_per_second(self) -> float:
        """Frames reconstructed per second of the live pass (first frame read → last stitched)."""
        return self.frames / max(self.live_s, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        p50, p95 = self.latency.percentile(50), self.latency.percentile(95)
        return {
            "frames": self.frames, "frames_seen": self.frames_seen, "batches": self.batches,
            "max_frames_in_memory": self.max_frames_in_memory, "max_backlog": self.max_backlog,
            "updates": self.updates, "regrows": self.regrows, "final_pass": self.final_pass,
            "ended_by": self.ended_by, "latency_source": self.latency_source,
            "live_s": self.live_s, "total_s": self.total_s, "inference_s": self.inference_s,
            "frames_per_second": self.frames_per_second,
            "latency_p50_s": p50, "latency_p95_s": p95,
        }


@dataclass
class FollowResult:
    """Final object `(H, W)` complex64, weight `(H, W)` float32, origin `[x0, y0]`, the factor f
    used, stats, and the paths written."""

    object: np.ndarray
    weight: np.ndarray
    origin: tuple[float, float]
    normalization_factor: float
    provisional_factor: float
    stats: FollowStats
    paths: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        s = self.stats
        p50, p95 = s.latency.percentile(50), s.latency.percentile(95)
        lat = "n/a" if p50 is None else f"p50 {p50 * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"  # type: ignore[operator]  # p95 is None only when p50 is
        where = self.paths.get("npz", self.paths.get("h5", ""))
        return (f"followed {s.frames} frames in {s.live_s:.2f} s ({s.frames_per_second:.1f} frames/s, peak backlog "
                f"{s.max_backlog}); latency {s.latency_source}: {lat}; ended by {s.ended_by}; "
                f"{'final pass with f=' + format(self.normalization_factor, '.6g') if s.final_pass else 'no final pass needed'}"
                f" -> {where}")


# -- outputs -----------------------------------------------------------------------------------
def write_follow_outputs(out_dir: Path, obj: np.ndarray, weight: np.ndarray, meta: dict[str, Any], *,
                         formats: Sequence[str], images: bool) -> dict[str, str]:
    """reconstruction.npz/.h5 (+ PNGs of the covered region, when matplotlib is installed: no
    warning at every update) into `out_dir`, replaced as a whole (`io.outputs.write_reconstruction_dir`,
    the one writer): a reader sees the previous complete update or this one, never a partial file."""
    box = geometry.covered_box(weight)
    box = box if box is not None else (0, obj.shape[0], 0, obj.shape[1])
    return write_reconstruction_dir(out_dir, obj, meta, image_box=box, formats=tuple(formats), images=images and has_matplotlib())


# -- the engine --------------------------------------------------------------------------------
def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace a user's file or non-empty folder without `overwrite`."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (choose another output folder)")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise ConfigError(f"{out}: output folder exists and is not empty (pass --overwrite to replace it)")


def _scale(factor: float, intensity_scale: float) -> np.float32:
    """The batch runners' input scale: float32(f · s) with f already rounded to float32."""
    return np.float32(float(np.float32(factor)) * float(intensity_scale))


def _factor(energy_sum: float, occurrences: int, N: int, label: str) -> float:
    """`data.normalization_factor` from running sums (f = sqrt((N/2)² / mean Σd²), as float32)."""
    try:
        return float(factor_from_energy(energy_sum, max(occurrences, 1), N))
    except DataError as exc:
        raise DataError(f"{label}: {exc}") from None


@dataclass(frozen=True)
class _FollowOptions:
    """`follow`'s run options (meanings in its docstring)."""

    batch_size: int
    update_every: float
    idle_timeout: float
    poll: float
    norm_frames: int
    norm_factor: float | None
    final_pass: bool
    formats: Sequence[str]
    images: bool
    on_update: Callable[[FollowStats], None] | None


def _check_follow_args(model: FollowModel, out_dir: str | os.PathLike | None, overwrite: bool, o: _FollowOptions) -> None:
    """`follow`'s ConfigErrors, first failing check first, before any wait for the file."""
    if out_dir is not None:
        _check_out_dir(Path(out_dir), overwrite)
    if o.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {o.batch_size}")
    if o.norm_frames < 1:
        raise ConfigError(f"norm_frames must be >= 1, got {o.norm_frames}")
    if o.update_every < 0 or o.idle_timeout <= 0 or o.poll <= 0:
        raise ConfigError(f"update_every must be >= 0 and idle_timeout, poll > 0 s, got {o.update_every}, {o.idle_timeout}, {o.poll}")
    if o.norm_factor is not None and not (np.isfinite(o.norm_factor) and o.norm_factor > 0):
        raise ConfigError(f"norm_factor must be a positive finite number, got {o.norm_factor}")
    if model.gridsize != 1:
        raise ConfigError(f"--follow reconstructs gridsize-1 models only (this model has gridsize {model.gridsize}: its groups "
                          "need each frame's neighbours over the whole scan); run the batch command on the finished file")


class _Follower:
    """One `follow` run on an open `LiveScan`: `step()` is one poll of the polling loop, `result()`
    the end (final pass, last write). Frames [0, cursor) are stitched into `canvas`, each once."""

    def __init__(self, model: FollowModel, scan: LiveScan, out: Path | None, o: _FollowOptions) -> None:
        self.model, self.scan, self.out, self.o = model, scan, out, o
        self.label = scan.label
        self.valid = None if scan.bad_pixels is None else ~scan.bad_pixels
        self.fill = None if scan.bad_pixels is None else BadPixelFill(scan.bad_pixels)
        if scan.N != model.N:
            raise DataError(f"{self.label}: key 'diffraction' has {scan.N}x{scan.N} patterns, the model expects N={model.N}")
        self.weights = geometry.patch_weights(scan.probe, model.crop, model.weight)
        self.canvas = GrowingCanvas(model.crop, self.weights)
        self.stats = FollowStats()
        self.offsets0 = np.zeros((o.batch_size, 1, 2), np.float32)
        self.cursor = 0  # frames [0, cursor) are stitched, each exactly once
        self.energy_sum = 0.0
        self.provisional: float | None = None if o.norm_factor is None else float(np.float32(o.norm_factor))
        self.scale: np.float32 | None = None if self.provisional is None else _scale(self.provisional, model.intensity_scale)
        self.pending_ts: list[np.ndarray] = []  # write (or read) times of frames stitched since the last output
        self.last_new, self.last_avail = time.monotonic(), 0
        self.last_publish = time.monotonic()
        self.last_complete_check = 0.0
        self.complete = False
        self.t_first: float | None = None
        self.stats.latency_source = "write->canvas" if scan.timestamp is not None else "read->canvas"

    # -- the polling loop ----------------------------------------------------------------------
    def step(self) -> bool:
        """One poll: refresh, fix the provisional f, stitch one batch or wait, publish when due.
        False when the scan has ended (`stats.ended_by` says how)."""
        try:
            avail, seen = self.scan.available()
        except (_NotReady, OSError, RuntimeError) as exc:  # the writer is mid-flush: retry
            log.debug("refresh failed (%s); retrying", exc)
            time.sleep(self.o.poll)
            return True
        self.stats.frames_seen = max(self.stats.frames_seen, seen)
        if avail > self.last_avail:
            self.last_new, self.last_avail = time.monotonic(), avail
        idle = time.monotonic() - self.last_new >= self.o.idle_timeout
        if self.scale is None and avail > 0 and (avail >= self.o.norm_frames or self.complete or idle):
            try:
                self._fix_provisional_factor(avail)
            except (_NotReady, OSError) as exc:  # a short read mid-flush: retry, as for the batches
                log.debug("reading the normalisation frames failed (%s); retrying", exc)
                time.sleep(self.o.poll)
                return True
        if self.scale is not None and avail > self.cursor:
            if not self._stitch_next_batch(avail):
                return True
        else:
            state = self._wait_or_finish(idle)
            if state == "end":
                return False
            if state == "complete":  # drain what the fresh handle sees before ending
                return True
        self._maybe_publish()
        return True

    def _fix_provisional_factor(self, avail: int) -> None:
        """The provisional f (and input scale) from the first `norm_frames` frames (all available
        ones when the scan ended or went idle first), read from the file in batches."""
        n0, bs = min(avail, self.o.norm_frames), self.o.batch_size
        e = 0.0
        for s in range(0, n0, bs):
            e += float(block_energy(self.scan.read(s, min(s + bs, n0))[0], self.valid).sum())
        self.provisional = _factor(e, n0, self.model.N, self.label)
        self.scale = _scale(self.provisional, self.model.intensity_scale)

    def _stitch_next_batch(self, avail: int) -> bool:
        """Read, check and stitch frames [cursor, cursor + batch); False (after a poll's sleep)
        when the read failed and must be retried."""
        assert self.scale is not None
        stats, start = self.stats, self.cursor
        stop = min(avail, start + self.o.batch_size)
        try:
            frames, xy, ts = self.scan.read(start, stop)
        except (_NotReady, OSError):
            time.sleep(self.o.poll)
            return False
        if self.t_first is None:
            self.t_first = time.perf_counter()
        stats.max_frames_in_memory = max(stats.max_frames_in_memory, frames.shape[0])
        stats.max_backlog = max(stats.max_backlog, avail - start)
        _check_frames(self.label, frames, start)
        _check_positions(self.label, xy, start)
        self.energy_sum += float(block_energy(frames, self.valid).sum())
        self._run_batch(frames, xy, self.scale)
        self.pending_ts.append(ts if ts is not None else np.full(frames.shape[0], time.time()))
        self.cursor = stop
        stats.frames = stop
        stats.batches += 1
        stats.live_s = time.perf_counter() - self.t_first
        self.last_new = time.monotonic()  # busy with a backlog is not idle
        return True

    def _wait_or_finish(self, idle: bool) -> Literal["end", "complete", "waited"]:
        """Nothing to stitch: "end" once `scan_complete` was seen and drained, or on idle timeout;
        "complete" when the attribute has just been seen (poll again at once); else sleep a poll."""
        now = time.monotonic()
        if self.complete:  # attribute seen and the fresh handle is drained
            self.stats.ended_by = "scan_complete"
            return "end"
        if idle or now - self.last_complete_check >= 5 * self.o.poll:
            self.last_complete_check = now
            if self.scan.complete():  # the fresh handle sees every frame flushed before the attribute
                self.complete = True
                return "complete"
        if idle:
            self.stats.ended_by = f"idle timeout ({self.o.idle_timeout:g} s without a new frame)"
            return "end"
        time.sleep(self.o.poll)
        return "waited"

    def _maybe_publish(self) -> None:
        """Write the live canvas (provisional f) when frames are pending and `update_every` s passed."""
        if self.pending_ts and (time.monotonic() - self.last_publish >= self.o.update_every):
            assert self.provisional is not None
            self._publish(self.provisional, final=False)
            self._add_latency()
            self.last_publish = time.monotonic()

    # -- stitching and writing -----------------------------------------------------------------
    def _run_batch(self, frames: np.ndarray, xy: np.ndarray, scale: np.float32) -> None:
        """predict(frames · scale) -> central crops splatted into `canvas` at `xy (n, 2)` [x, y]."""
        if self.fill is not None:  # as the batch runners: bad pixels filled at the input, not in f
            frames = self.fill(frames)
        x = frames[:, None] * scale
        t = time.perf_counter()
        patches = np.asarray(self.model.predict(np.ascontiguousarray(x), self.offsets0[: frames.shape[0]]), np.complex64)
        self.stats.inference_s += time.perf_counter() - t
        self.canvas.add(np.ascontiguousarray(geometry.centre_crop(patches, self.model.crop)), xy)

    def _add_latency(self) -> None:
        """Count the latency of every pending frame up to now (it is in the written canvas)."""
        self.stats.latency.add(time.time() - np.concatenate(self.pending_ts))
        self.pending_ts.clear()

    def _meta(self, f: float, final: bool) -> dict[str, Any]:
        m = self.model
        return {"stitch": "barycentric", "crop": m.crop, "n_groups": self.canvas.n, "normalization_factor": f,
                "intensity_scale": float(m.intensity_scale), "model": m.label, "scan": str(self.scan.path),
                "frame": "positions - origin", "follow": {"final": final, "scan_complete": self.complete, **self.stats.as_dict()},
                **m.extra_meta}

    def _publish(self, f: float, final: bool) -> dict[str, str]:
        """Write `canvas` with factor f into `out` (nothing without `out` or a frame); the paths."""
        cv, shape = self.canvas, self.scan.object_shape
        if self.out is None or cv.num is None:
            return {}
        obj, den, origin = cv.result(shape, self.model.eps)
        m = self._meta(f, final)
        m["origin"] = [float(origin[0]), float(origin[1])]
        if tuple(origin) == (0.0, 0.0) and shape is not None and obj.shape == shape:
            m["frame"] = "objectGuess"
        paths = write_follow_outputs(self.out, obj, den, m, formats=self.o.formats, images=self.o.images)
        self.stats.updates += 1
        if self.o.on_update is not None:
            self.o.on_update(self.stats)
        return paths

    # -- the end -------------------------------------------------------------------------------
    def _final_pass(self) -> float:
        """The final f. When float32(f · s) differs from the live scale and `final_pass`, every
        frame is re-read from the file and re-stitched with it into a fresh `canvas`."""
        assert self.provisional is not None and self.scale is not None
        o, cursor = self.o, self.cursor
        final_f = self.provisional if o.norm_factor is not None else _factor(self.energy_sum, cursor, self.model.N, self.label)
        if o.final_pass and _scale(final_f, self.model.intensity_scale) != self.scale:
            # the network is nonlinear in its input: re-run every frame with the final scale
            if self.pending_ts:  # show the complete provisional picture while the final pass runs
                self._publish(self.provisional, final=False)
                self._add_latency()
            self.stats.final_pass = True
            self.canvas = GrowingCanvas(self.model.crop, self.weights)  # frees the live accumulators
            fscale = _scale(final_f, self.model.intensity_scale)
            for s in range(0, cursor, o.batch_size):
                frames, xy, _ = self.scan.read(s, min(s + o.batch_size, cursor))
                self._run_batch(frames, xy, fscale)
        elif not o.final_pass:
            final_f = self.provisional
        return final_f

    def result(self, t0: float) -> FollowResult:
        """After the loop: the final pass when needed, the final write, the result (`t0`: the
        `time.perf_counter()` at the call of `follow`, for `stats.total_s`)."""
        stats, cursor, label = self.stats, self.cursor, self.label
        stats.regrows = self.canvas.regrows
        if cursor == 0:
            raise DataError(f"{label}: no frame with both diffraction and positions arrived ({stats.ended_by})")
        if seen_without_positions := stats.frames_seen - cursor:
            log.warning("%s: %d frames have no positions yet; reconstructed the %d that do", label, seen_without_positions, cursor)
        final_f = self._final_pass()
        assert self.provisional is not None
        obj, den, origin = self.canvas.result(self.scan.object_shape, self.model.eps)
        paths = self._publish(final_f, final=True)
        if self.pending_ts:
            self._add_latency()
        stats.total_s = time.perf_counter() - t0
        return FollowResult(object=obj, weight=den, origin=(float(origin[0]), float(origin[1])), normalization_factor=final_f,
                            provisional_factor=self.provisional, stats=stats, paths=paths)


def follow(
    model: FollowModel,
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    batch_size: int = DEFAULT_BATCH,
    update_every: float = 2.0,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    poll: float = DEFAULT_POLL,
    norm_frames: int = DEFAULT_BATCH,
    norm_factor: float | None = None,
    final_pass: bool = True,
    formats: Sequence[str] = ("npz", "h5"),
    images: bool = True,
    on_update: Callable[[FollowStats], None] | None = None,
    diffraction_units: str | None = None,
    overwrite: bool = False,
) -> FollowResult:
    """Reconstruct `path` while it is written; see the module docstring for the rules.

    batch_size: frames per `predict` call (the most frames held in memory). update_every: seconds
    between output rewrites (0: after every batch). idle_timeout: seconds without a new frame
    (or for the file to appear) before the run ends. norm_frames: frames that fix the provisional
    normalisation factor. norm_factor: a fixed f instead (no final pass). final_pass: re-run all
    frames with the final f when it differs from the provisional one (needed for equality with
    the batch run). diffraction_units: 'counts' | 'amplitude' | None (the file's declaration, else
    integer dtypes are counts), as `--diffraction-units`; `bad_pixels` in the file are excluded
    from f and filled at the input, as in the batch runners. overwrite: an existing non-empty
    `out_dir` is refused (ConfigError, before any wait) unless True; the follower then replaces it
    at every update.
    """
    t0 = time.perf_counter()
    opts = _FollowOptions(batch_size=batch_size, update_every=update_every, idle_timeout=idle_timeout, poll=poll,
                          norm_frames=norm_frames, norm_factor=norm_factor, final_pass=final_pass, formats=formats,
                          images=images, on_update=on_update)
    _check_follow_args(model, out_dir, overwrite, opts)
    scan = LiveScan(path, timeout=idle_timeout, poll=poll, diffraction_units=diffraction_units)
    try:  # the SWMR handle is closed on every exit, also when the set-up checks fail
        follower = _Follower(model, scan, None if out_dir is None else Path(out_dir), opts)
        while follower.step():
            pass
        return follower.result(t0)
    finally:
        scan.close()


# -- ONNX Runtime ------------------------------------------------------------------------------
def onnx_model(model: str | os.PathLike, *, providers: Sequence[str] | str | None = None, threads: int | None = None,
               crop: int | None = None) -> FollowModel:
    """A `FollowModel` backed by ONNX Runtime (numpy in and out)."""
    from .session import open_session

    session, info = open_session(model, providers, threads=threads)
    crop = info.stitch_crop if crop is None else int(crop)
    if not 1 <= crop <= info.N:
        raise ConfigError(f"crop must be in [1, {info.N}], got {crop}")

    def predict(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        real, imag = session.run(["object_real", "object_imag"], {"diffraction": x, "offsets": offsets})
        patches = np.empty(real.shape, dtype=np.complex64)
        patches.real, patches.imag = real, imag
        return patches

    return FollowModel(predict=predict, N=info.N, gridsize=info.gridsize, intensity_scale=float(info.intensity_scale), crop=crop,
                       weight=info.stitch_weight, eps=float(info.stitch_eps), label=str(model),
                       extra_meta={"onnx_model": str(model), "providers": list(session.get_providers())})


def follow_onnx(model: str | os.PathLike, path: str | os.PathLike, out_dir: str | os.PathLike | None, *,
                providers: Sequence[str] | str | None = None, threads: int | None = None, crop: int | None = None,
                **kwargs: Any) -> FollowResult:
    """`follow` with an exported `.onnx` model; keyword arguments as `follow`."""
    return follow(onnx_model(model, providers=providers, threads=threads, crop=crop), path, out_dir, **kwargs)


__all__ = ["FollowModel", "FollowResult", "FollowStats", "GrowingCanvas", "LiveScan", "LatencyHistogram",
           "follow", "follow_onnx", "onnx_model", "write_follow_outputs", "as_amplitudes"]
