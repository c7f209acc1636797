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

__all__ = ["StreamReport", "stream_scan", "main"]


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
    import h5py

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
    M, N = int(diff.shape[0]), int(diff.shape[1])
    x = np.asarray(arrays["xcoords"], np.float64).reshape(-1)
    y = np.asarray(arrays["ycoords"], np.float64).reshape(-1)
    if x.shape != (M,) or y.shape != (M,):
        raise DataError(f"stream: xcoords/ycoords have shapes {x.shape}/{y.shape}, expected ({M},)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    f = h5py.File(out, "w", libver="latest")
    try:
        f.create_dataset("probeGuess", data=np.asarray(arrays["probeGuess"], np.complex64))
        if include_object and "objectGuess" in arrays:
            f.create_dataset("objectGuess", data=np.asarray(arrays["objectGuess"], np.complex64))
        if arrays.get("bad_pixels") is not None:
            f.create_dataset("bad_pixels", data=np.asarray(arrays["bad_pixels"], bool))
        kind = np.dtype(getattr(diff, "dtype", np.float32))
        dtype = kind if kind.kind in "iu" else np.dtype(np.float32)  # integer detector counts stay counts
        d = f.create_dataset("diffraction", shape=(0, N, N), maxshape=(None, N, N), dtype=dtype, chunks=(1, N, N))
        t = f.create_dataset("timestamp", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        dx = f.create_dataset("xcoords", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        dy = f.create_dataset("ycoords", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        f.attrs["scan_complete"] = False
        f.swmr_mode = True
        if start_delay > 0:
            time.sleep(start_delay)
        t0 = time.perf_counter()
        written = positions = flushes = 0
        while written < M:
            now = time.perf_counter()
            due = M if not np.isfinite(rate) else min(M, int((now - t0) * rate) + 1)
            if die_after is not None:
                due = min(due, max(die_after, 1))
            if due > written:
                _append(d, np.asarray(diff[written:due], dtype))
                _append(t, np.full(due - written, time.time()))
                d.flush()
                t.flush()
                written = due
                target = max(positions, written - position_lag)
                if target > positions:
                    _append(dx, x[positions:target])
                    _append(dy, y[positions:target])
                    dx.flush()
                    dy.flush()
                    positions = target
                flushes += 1
                if die_after is not None and written >= die_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no close, no scan_complete
            else:
                time.sleep(max(0.0, t0 + written / rate - now))
        if positions < M:
            _append(dx, x[positions:])
            _append(dy, y[positions:])
            dx.flush()
            dy.flush()
        if complete:
            f.attrs["scan_complete"] = True
        f.flush()
        seconds = time.perf_counter() - t0
    finally:
        f.close()
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
