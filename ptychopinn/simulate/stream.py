"""Play a scan into an HDF5 file at a given frame rate, as a detector's file writer does (SWMR).

    ptychopinn simulate --stream LIVE.h5 --rate 500 [--position-lag 8]      # simulate, then play
    python -m ptychopinn.simulate.stream SCAN.npz LIVE.h5 --rate 500         # replay a scan file

The file follows the scan contract (docs/data-contract.md) with the growing datasets a follower
(`ptychopinn-onnx ... --follow`, docs/beamline.md) reads:

- `diffraction (M, N, N)` float32 amplitudes (integer counts stay integers), `xcoords`, `ycoords (M,)` float64 and `timestamp (M,)` float64
  (Unix seconds when the frame was flushed) created empty, resizable along axis 0;
- `probeGuess (N, N)` complex64 (`bad_pixels (N, N)` bool when given, `objectGuess` when asked)
  written before the scan starts;
- root attribute `scan_complete` = False, set True after the last frame and positions are
  flushed (the attribute exists before SWMR mode starts: SWMR writers may change, not create it).

Frame i is due at `t0 + i / rate`; all due frames are appended in one resize and flushed, so high
rates cost one flush per poll, not per frame. Positions are written `position_lag` frames behind
the frames (a motor readout that arrives late) and caught up at the end. numpy + h5py only
(replaying needs no torch; `ptychopinn simulate --stream` simulates with torch first).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError, PtychoPINNError

__all__ = ["StreamReport", "LiveWriter", "stream_scan", "main"]


@dataclass
class StreamReport:
    """frames written, wall seconds, achieved frames/s, flushes."""

    path: Path
    frames: int
    seconds: float
    flushes: int

    @property
    def rate(self) -> float:
        return self.frames / max(self.seconds, 1e-12)


def _append(ds: Any, values: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize(n + values.shape[0], axis=0)
    ds[n:] = values


class LiveWriter:
    """An SWMR scan file being written: `append` frames and positions, `complete()`, `close()`.

    Creates `probeGuess`, the optional `bad_pixels` / `objectGuess`, the growing `diffraction`
    (dtype: integer counts stay integers, else float32), `xcoords`, `ycoords`, `timestamp` and
    the root attribute `scan_complete` = False, then switches to SWMR mode. Every `append` or
    `append_positions` call is one resize + write + flush per dataset.
    """

    def __init__(self, out: str | os.PathLike, probe: np.ndarray, *, frame_dtype: Any = np.float32, bad_pixels: Any = None,
                 object_guess: Any = None, diffraction_units: str | None = None, overwrite: bool = False) -> None:
        import h5py

        self.path = Path(out)
        if self.path.exists() and not overwrite:
            raise ConfigError(f"{self.path}: exists; pass --overwrite to replace it")
        probe = np.asarray(probe, np.complex64)
        if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
            raise DataError(f"stream: key 'probeGuess' has shape {probe.shape}, expected (N, N) complex64")
        N = probe.shape[0]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()
        kind = np.dtype(frame_dtype)
        self.dtype = kind if kind.kind in "iu" else np.dtype(np.float32)  # integer detector counts stay counts
        f = self.file = h5py.File(self.path, "w", libver="latest")
        f.create_dataset("probeGuess", data=probe)
        if bad_pixels is not None:
            f.create_dataset("bad_pixels", data=np.asarray(bad_pixels, bool))
        if object_guess is not None:
            f.create_dataset("objectGuess", data=np.asarray(object_guess, np.complex64))
        if diffraction_units is not None:
            f.attrs["diffraction_units"] = str(diffraction_units)
        self.d = f.create_dataset("diffraction", shape=(0, N, N), maxshape=(None, N, N), dtype=self.dtype, chunks=(1, N, N))
        self.t = f.create_dataset("timestamp", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        self.x = f.create_dataset("xcoords", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        self.y = f.create_dataset("ycoords", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        f.attrs["scan_complete"] = False
        f.swmr_mode = True
        self.N = N
        self.frames = 0
        self.positions = 0
        self.flushes = 0

    def append(self, frames: np.ndarray) -> None:
        """Append `frames (k, N, N)` and their flush time, then flush."""
        frames = np.asarray(frames, self.dtype)
        if frames.ndim != 3 or frames.shape[1:] != (self.N, self.N):
            raise DataError(f"stream: frames of shape {frames.shape}, expected (k, {self.N}, {self.N})")
        _append(self.d, frames)
        _append(self.t, np.full(frames.shape[0], time.time()))
        self.d.flush()
        self.t.flush()
        self.frames += frames.shape[0]
        self.flushes += 1

    def append_positions(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append positions `x, y (k,)` float64 object pixels, then flush."""
        x = np.asarray(x, np.float64).reshape(-1)
        y = np.asarray(y, np.float64).reshape(-1)
        if x.shape != y.shape:
            raise DataError(f"stream: xcoords/ycoords blocks of shapes {x.shape}/{y.shape}")
        _append(self.x, x)
        _append(self.y, y)
        self.x.flush()
        self.y.flush()
        self.positions += x.shape[0]

    def complete(self) -> None:
        """Set `scan_complete` (after everything else is flushed)."""
        self.file.attrs["scan_complete"] = True
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def stream_scan(
    arrays: Mapping[str, Any],
    out: str | os.PathLike,
    rate: float,
    *,
    position_lag: int = 0,
    include_object: bool = False,
    overwrite: bool = False,
    die_after: int | None = None,
    complete: bool = True,
    start_delay: float = 0.0,
) -> StreamReport:
    """Write `arrays` (scan-contract keys: diffraction (M, N, N), xcoords, ycoords (M,),
    probeGuess (N, N); diffraction may be a lazy array) into `out` as a live SWMR file.

    rate: frames per second (> 0; `inf` writes as fast as possible). die_after: SIGKILL this
    process after that many frames are flushed (a writer crash, for tests). complete: set
    `scan_complete` at the end. start_delay: seconds between creating the file (SWMR on) and the
    first frame.
    """
    out = Path(out)
    if not rate > 0:
        raise ConfigError(f"--rate must be > 0 frames/s, got {rate}")
    if position_lag < 0:
        raise ConfigError(f"--position-lag must be >= 0 frames, got {position_lag}")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; pass --overwrite to replace it")
    for key in ("diffraction", "xcoords", "ycoords", "probeGuess"):
        if key not in arrays:
            raise DataError(f"stream: missing key {key!r} (scan contract: diffraction, xcoords, ycoords, probeGuess)")
    diff = arrays["diffraction"]
    if len(diff.shape) != 3 or diff.shape[1] != diff.shape[2]:
        raise DataError(f"stream: key 'diffraction' has shape {tuple(diff.shape)}, expected (M, N, N)")
    M = int(diff.shape[0])
    x = np.asarray(arrays["xcoords"], np.float64).reshape(-1)
    y = np.asarray(arrays["ycoords"], np.float64).reshape(-1)
    if x.shape != (M,) or y.shape != (M,):
        raise DataError(f"stream: xcoords/ycoords have shapes {x.shape}/{y.shape}, expected ({M},)")
    w = LiveWriter(out, arrays["probeGuess"], frame_dtype=getattr(diff, "dtype", np.float32), bad_pixels=arrays.get("bad_pixels"),
                   object_guess=arrays.get("objectGuess") if include_object else None, overwrite=overwrite)
    try:
        if start_delay > 0:
            time.sleep(start_delay)
        t0 = time.perf_counter()
        while w.frames < M:
            now = time.perf_counter()
            due = M if not np.isfinite(rate) else min(M, int((now - t0) * rate) + 1)
            if die_after is not None:
                due = min(due, max(die_after, 1))
            if due > w.frames:
                w.append(diff[w.frames:due])
                target = max(w.positions, w.frames - position_lag)
                if target > w.positions:
                    w.append_positions(x[w.positions:target], y[w.positions:target])
                if die_after is not None and w.frames >= die_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no close, no scan_complete
            else:
                time.sleep(max(0.0, t0 + w.frames / rate - now))
        if w.positions < M:
            w.append_positions(x[w.positions:], y[w.positions:])
        if complete:
            w.complete()
        seconds = time.perf_counter() - t0
        flushes = w.flushes
    finally:
        w.close()
    return StreamReport(path=out, frames=M, seconds=seconds, flushes=flushes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ptychopinn.simulate.stream",
                                description="Replay a scan file into a live SWMR HDF5 file at a frame rate.")
    p.add_argument("scan", metavar="SCAN", help="scan to replay (.npz or .h5, scan contract)")
    p.add_argument("out", metavar="LIVE.h5", help="live file to write")
    p.add_argument("--rate", type=float, required=True, metavar="HZ", help="frames per second")
    p.add_argument("--position-lag", type=int, default=0, metavar="K", help="positions written K frames behind")
    p.add_argument("--with-object", action="store_true", help="also write objectGuess (default: none, as at a beamline)")
    p.add_argument("--no-complete", action="store_true", help="do not set scan_complete at the end")
    p.add_argument("--die-after", type=int, default=None, metavar="K", help="SIGKILL itself after K frames (crash test)")
    p.add_argument("--start-delay", type=float, default=0.0, metavar="S", help="seconds between creating the file and frame 0")
    p.add_argument("--overwrite", action="store_true", help="replace an existing LIVE.h5")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..data import load_scan

    try:
        scan = load_scan(args.scan)
        arrays = {"diffraction": scan.diffraction, "xcoords": scan.xcoords, "ycoords": scan.ycoords, "probeGuess": scan.probe}
        if scan.object is not None:
            arrays["objectGuess"] = scan.object
        rep = stream_scan(arrays, args.out, args.rate, position_lag=args.position_lag, include_object=args.with_object,
                          overwrite=args.overwrite, die_after=args.die_after, complete=not args.no_complete,
                          start_delay=args.start_delay)
    except PtychoPINNError as exc:
        print(f"ptychopinn: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"streamed {rep.frames} frames into {rep.path} in {rep.seconds:.2f} s ({rep.rate:.1f} frames/s, {rep.flushes} flushes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
