"""`ptychopinn-onnx MODEL.onnx SCAN --out DIR`: whole-scan reconstruction without torch.

Reproduces `ptychopinn.reconstruct` (barycentric stitching) with ONNX Runtime and numpy:

1. group the scan as the core does at inference: `DataConfig(gridsize, neighbor_count,
   n_groups=None, seed)` from the model's metadata (`data.group_scan`);
2. normalise: f = `data.normalization_factor(diffraction, groups.indices)`, model input
   x = d · float32(f · s), s the model's intensity scale (metadata), offsets = groups.relative;
3. run the graph in batches of `batch_size` groups (the same batches as the core);
4. splat the central `crop × crop` of each object patch at its group centre into the canvas
   (`stitch_np.stitch`, the numpy twin of `kernels.stitch`), divide by the weight sum.

Memory: the canvas accumulators plus one batch (`--chunk K`: the scan stays on disk and is read
K groups at a time). Imports numpy, h5py (HDF5 scans), onnxruntime and, for gridsize > 1,
scipy (neighbour search); never torch or tensorflow.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ptychopinn.errors import ConfigError, DataError, PtychoPINNError
from ptychopinn.io.extras import is_missing_extra, missing_extra_message
from ptychopinn.io.outputs import write_reconstruction_dir
from ptychopinn.reconstruct import geometry

from . import stitch_np
from .metadata import OnnxModelInfo
from .session import open_session

log = logging.getLogger("ptychopinn")

EXIT_USAGE = 2
DEFAULT_BATCH = 64  # = reconstruct()'s default, so batches (and the batch-mean recentring) agree


@dataclass
class OnnxReconstruction:
    """object `(H, W)` complex64; weight `(H, W)` float32 (Σ stitching weights); origin `(x0, y0)`
    object-frame coordinates of canvas pixel (0, 0); centres `(B, 2)` float64 in canvas pixels;
    timings in seconds (`inference_s`: time inside ONNX Runtime)."""

    object: np.ndarray
    weight: np.ndarray
    origin: tuple[float, float]
    centres: np.ndarray
    n_groups: int
    n_patterns: int
    crop: int
    normalization_factor: float
    intensity_scale: float
    providers: list[str]
    total_s: float
    inference_s: float
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def patterns_per_second(self) -> float:
        """Diffraction patterns (groups × C) per second of the whole run."""
        return self.n_patterns / max(self.total_s, 1e-12)

    @property
    def inference_patterns_per_second(self) -> float:
        """Diffraction patterns per second inside ONNX Runtime."""
        return self.n_patterns / max(self.inference_s, 1e-12)


def _installed(package: str) -> bool:
    """True when `package` can be imported (an import blocker raising ImportError counts as absent)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _label(scan: Any) -> str:
    return str(scan.path) if getattr(scan, "path", None) else "<in-memory scan>"


def _group(scan: Any, info: OnnxModelInfo) -> Any:
    """`data.group_scan` with the core's inference DataConfig (read from the model metadata)."""
    from ptychopinn.config import DataConfig
    from ptychopinn.data import group_scan

    if info.gridsize > 1 and not _installed("scipy"):
        raise ConfigError(f"grouping at gridsize {info.gridsize} needs the missing package 'scipy' (pip install scipy)")
    cfg = DataConfig(gridsize=info.gridsize, neighbor_count=info.neighbor_count, n_groups=None, seed=info.grouping_seed)
    return group_scan(scan, cfg)


def _batches(scan: Any, groups: Any, scale: np.float32, batch_size: int, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (group numbers b, x (b, C, N, N) float32 = fill(d) · scale, offsets (b, C, 2) float32).

    Patterns are read `chunk` groups at a time with one sorted gather (as `GroupDataset.batch`);
    bad pixels are filled with `data.badpixels.BadPixelFill`, the function GroupDataset uses.
    """
    from ptychopinn.data.badpixels import BadPixelFill

    n = groups.n_groups
    N = scan.N
    bad = getattr(scan, "bad_pixels", None)
    fill = None if bad is None else BadPixelFill(bad)
    offsets_all = groups.relative.astype(np.float32)
    for cs in range(0, n, chunk):
        ce = min(cs + chunk, n)
        idx = groups.indices[cs:ce]
        uniq, inverse = np.unique(idx.reshape(-1), return_inverse=True)
        patterns = np.ascontiguousarray(scan.diffraction[uniq], dtype=np.float32)
        if fill is not None:
            fill(patterns, out=patterns)
        inverse = inverse.reshape(idx.shape)
        for s in range(cs, ce, batch_size):
            e = min(s + batch_size, ce)
            x = patterns[inverse[s - cs : e - cs].reshape(-1)].reshape((e - s,) + idx.shape[1:] + (N, N))
            x *= scale
            yield np.arange(s, e), np.ascontiguousarray(x), np.ascontiguousarray(offsets_all[s:e])
        del patterns


def run_onnx(
    model: str | os.PathLike,
    scan_or_path: Any,
    out_dir: str | os.PathLike | None = None,
    *,
    providers: Sequence[str] | str | None = None,
    batch_size: int = DEFAULT_BATCH,
    chunk: int | None = None,
    crop: int | None = None,
    threads: int | None = None,
    formats: Sequence[str] = ("npz", "h5"),
    images: bool = True,
    overwrite: bool = False,
    load: Any = None,
) -> OnnxReconstruction:
    """Reconstruct the whole object of a scan with an exported `.onnx` model.

    model: `.onnx` from `ptychopinn export-onnx`. scan_or_path: NPZ/HDF5 path or a `data.Scan`.
    out_dir: when given, `reconstruction.npz` / `.h5` (key `object` (H, W) complex64) and
    amplitude/phase PNGs (when matplotlib is installed) are written into a folder that appears
    complete or not at all. providers: ORT execution providers (default CPU). chunk: groups
    read from disk at a time; the scan then stays on disk (memory-mapped NPZ / HDF5).
    crop: stitched central patch side (default: the model's `stitch_crop`, = the core's).
    overwrite: an existing non-empty `out_dir` is refused (ConfigError, before any work) unless
    True; then it is replaced as a whole. Without ground truth in the scan nothing changes:
    the runner writes no metrics.
    load: `data.LoadOptions` for a scan path (diffraction units, pixel size, detector
    crop/bin; `crop_detector` crops to the model's N). Bad pixels are excluded from the
    normalisation and filled at the input exactly as in `ptychopinn.reconstruct`.
    """
    from ptychopinn.data import normalization_factor
    from ptychopinn.io.atomic import check_output

    t0 = time.perf_counter()
    if out_dir is not None:
        check_output(out_dir, overwrite=bool(overwrite), directory=True)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if chunk is not None and chunk < 1:
        raise ConfigError(f"chunk must be >= 1 groups, got {chunk}")
    session, info = open_session(model, providers, threads=threads)
    scan, label, crop = _checked_scan(scan_or_path, info, chunk, crop, load)
    groups = _group(scan, info)
    if groups.n_groups == 0:
        raise DataError(f"{label}: no groups to reconstruct")
    factor = float(normalization_factor(scan.diffraction, groups.indices, bad_pixels=getattr(scan, "bad_pixels", None)))
    scale = np.float32(factor * float(info.intensity_scale))  # GroupDataset: x *= float32(f · s)
    centres = np.asarray(groups.centres, dtype=np.float64)
    obj, den, origin, inference = _infer_and_stitch(session, info, scan, groups, centres, scale, crop, batch_size, chunk)
    rec = OnnxReconstruction(
        object=obj,
        weight=den,
        origin=(float(origin[0]), float(origin[1])),
        centres=centres - origin,
        n_groups=groups.n_groups,
        n_patterns=groups.n_groups * info.channels,
        crop=crop,
        normalization_factor=factor,
        intensity_scale=float(info.intensity_scale),
        providers=list(session.get_providers()),
        total_s=0.0,
        inference_s=inference,
    )
    if out_dir is not None:
        rec.paths = write_outputs(rec, Path(out_dir), model=Path(model), label=label, formats=formats, images=images, overwrite=overwrite)
    rec.total_s = time.perf_counter() - t0
    return rec


def _checked_scan(scan_or_path: Any, info: Any, chunk: int | None, crop: int | None, load: Any) -> tuple[Any, str, int]:
    """(scan, label, stitched crop): the scan loaded (memory-mapped with `chunk`) and checked against the model."""
    from ptychopinn.data import load_scan
    from ptychopinn.data.detector import size_hint

    if isinstance(scan_or_path, (str, os.PathLike)):
        scan = load_scan(scan_or_path, mmap=chunk is not None, options=None if load is None else load.for_size(info.N))
    elif hasattr(scan_or_path, "diffraction") and hasattr(scan_or_path, "xcoords"):
        if load is not None and not load.is_default:
            raise ConfigError("load options (--diffraction-units, --pixel-size, --crop-detector, --bin) apply to scan files; pass them to data.load_scan for an in-memory Scan")
        scan = scan_or_path
    else:
        raise DataError(f"expected a scan file path or a ptychopinn.data.Scan, got {type(scan_or_path).__name__}")
    label = _label(scan)
    N = info.N
    if scan.N != N:
        raise DataError(f"{label}: key 'diffraction' has {scan.N}x{scan.N} patterns, the model expects N={N}" + size_hint(scan.N, N))
    crop = info.stitch_crop if crop is None else int(crop)
    if not 1 <= crop <= N:
        raise ConfigError(f"crop must be in [1, {N}], got {crop}")
    return scan, label, crop


def _infer_and_stitch(session: Any, info: Any, scan: Any, groups: Any, centres: np.ndarray, scale: np.float32, crop: int,
                      batch_size: int, chunk: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """ONNX Runtime over every group, each central `crop` stitched as it comes:
    (object (H, W) complex64, weight sum (H, W) float32, origin [x, y] px, inference seconds)."""
    obj_shape = tuple(scan.object.shape) if scan.object is not None else None
    (H, W), origin = geometry.canvas_geometry(centres, crop, obj_shape)
    num, den = stitch_np.new_canvas((H, W), np.complex64)
    weights = geometry.patch_weights(scan.probe, crop, info.stitch_weight)
    step = batch_size if chunk is None else max(batch_size, (chunk // batch_size) * batch_size)
    inference = 0.0
    for b, x, offsets in _batches(scan, groups, scale, batch_size, step):
        t = time.perf_counter()
        real, imag = session.run(["object_real", "object_imag"], {"diffraction": x, "offsets": offsets})
        inference += time.perf_counter() - t
        patches = np.empty(real.shape, dtype=np.complex64)
        patches.real, patches.imag = real, imag
        cropped = np.ascontiguousarray(geometry.centre_crop(patches, crop))
        stitch_np.stitch(cropped, centres[b] - origin, (H, W), weights=weights, out=(num, den))
    covered = den > 0
    obj = num  # normalise in place: the canvas stays the only large array
    np.divide(num, den + np.float32(info.stitch_eps), out=obj)
    obj[~covered] = 0
    return obj, den, origin, inference


def write_outputs(
    rec: OnnxReconstruction, out_dir: Path, *, model: Path, label: str, formats: Sequence[str], images: bool, overwrite: bool = True
) -> dict[str, str]:
    """reconstruction.npz/.h5 (+ amplitude.png, phase.png of the covered region) into `out_dir`,
    replaced atomically (`io.outputs.write_reconstruction_dir`, the core's writer); returns
    {name: final path}. overwrite=False: a non-empty `out_dir` is left untouched (ConfigError)."""
    meta = {
        "stitch": "barycentric",
        "crop": rec.crop,
        "n_groups": rec.n_groups,
        "origin": list(rec.origin),
        "normalization_factor": rec.normalization_factor,
        "intensity_scale": rec.intensity_scale,
        "frame": "objectGuess" if rec.origin == (0.0, 0.0) else "positions - origin",
        "onnx_model": str(model),
        "scan": label,
        "providers": rec.providers,
    }
    box = geometry.covered_box(rec.weight)
    box = box if box is not None else (0, rec.object.shape[0], 0, rec.object.shape[1])
    return write_reconstruction_dir(out_dir, rec.object, meta, image_box=box, formats=tuple(formats), images=images,
                                    no_images_hint="; --no-images skips them", overwrite=overwrite)


# -- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptychopinn-onnx",
        description="Reconstruct a scan with an exported PtychoPINN ONNX model (no torch needed).",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="model exported by `ptychopinn export-onnx`")
    p.add_argument("scan", metavar="SCAN", help="scan file (.npz or .h5), same contract as `ptychopinn reconstruct`")
    p.add_argument("--out", "-o", required=True, metavar="DIR",
                   help="output folder (new or empty; an existing non-empty one needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder (atomically, as a whole)")
    p.add_argument("--providers", default=None, metavar="LIST",
                   help="comma-separated ONNX Runtime execution providers in priority order "
                        "(cpu, cuda, tensorrt or full names); default: CPU")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"groups per inference batch (default {DEFAULT_BATCH})")
    p.add_argument("--chunk", type=int, default=None, metavar="K",
                   help="out-of-core mode: keep the scan on disk and read K groups at a time")
    p.add_argument("--crop", type=int, default=None, help="stitched central patch side (default: the model's, N/2)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of ONNX Runtime (default: all cores)")
    p.add_argument("--format", default="npz,h5", help="output formats, comma-separated: npz, h5 (default both)")
    p.add_argument("--no-images", action="store_true", help="do not write amplitude/phase PNGs")
    # live reconstruction of a file being written (interop/onnx/follow.py, docs/beamline.md)
    p.add_argument("--follow", action="store_true",
                   help="follow an HDF5 scan that another process is writing (SWMR) until its root attribute "
                        "scan_complete is true or --idle-timeout passes without a new frame")
    p.add_argument("--update-every", type=float, default=2.0, metavar="S",
                   help="--follow: rewrite the outputs every S seconds (default 2; 0: after every batch)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="--follow: end after S seconds without a new frame, or when the file has not appeared (default 300)")
    p.add_argument("--zmq", default=None, metavar="URL",
                   help="--follow: receive frames from a ZeroMQ PUSH socket (e.g. tcp://127.0.0.1:5555) into SCAN "
                        "(a spool file) and follow it (needs pyzmq)")
    p.add_argument("--no-final-pass", action="store_true",
                   help="--follow: keep the live canvas (provisional normalisation from the first frames) instead of "
                        "re-running the frames with the whole scan's factor at the end")
    p.add_argument("--diffraction-units", default=None, metavar="UNITS",
                   help="counts or amplitude: what 'diffraction' holds (default: the file's declaration, else integers = counts)")
    p.add_argument("--pixel-size", default=None, metavar="M", help="positions are metres; metres per object pixel")
    p.add_argument("--crop-detector", action="store_true", help="crop frames larger than the model's N around the pattern centroid")
    p.add_argument("--bin", default=None, metavar="B", help="sum BxB detector pixel blocks (counts) before use")
    return p


def _fail(message: str) -> int:
    print(f"ptychopinn-onnx: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 with a one-line message on bad input)."""
    logging.basicConfig(level=logging.WARNING, format="ptychopinn-onnx: %(levelname)s: %(message)s")
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    try:
        if not formats or any(f not in ("npz", "h5") for f in formats):
            raise ConfigError(f"--format must list npz and/or h5, got {args.format!r}")
        from ptychopinn.data.options import load_options_from_flags
        from ptychopinn.messages import one_line_warnings

        one_line_warnings("ptychopinn-onnx")
        load = load_options_from_flags(args.diffraction_units, args.pixel_size, args.crop_detector, args.bin)
        if args.zmq is not None and not args.follow:
            raise ConfigError("--zmq needs --follow")
        if args.follow:
            return _follow_main(args, formats)
        rec = run_onnx(
            args.model,
            args.scan,
            args.out,
            load=load,
            providers=args.providers,
            batch_size=args.batch_size,
            chunk=args.chunk,
            crop=args.crop,
            threads=args.threads,
            formats=formats,
            images=not args.no_images,
            overwrite=args.overwrite,
        )
    except PtychoPINNError as exc:
        return _fail(str(exc).replace("overwrite=True", "--overwrite"))
    except ModuleNotFoundError as exc:
        if not is_missing_extra(exc):
            raise
        return _fail(missing_extra_message(exc))
    except (OSError, MemoryError) as exc:
        name = getattr(exc, "filename", None)
        return _fail(f"{name}: {exc.strerror or exc}" if name else f"{type(exc).__name__}: {exc}")  # type: ignore[union-attr]  # a filename: an OSError
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    print(
        f"reconstructed {rec.n_groups} groups ({rec.n_patterns} patterns) in {rec.total_s:.2f} s: "
        f"{rec.patterns_per_second:.1f} patterns/s end to end, {rec.inference_patterns_per_second:.1f} patterns/s "
        f"in ONNX Runtime [{rec.providers[0]}] -> {rec.paths.get('npz', rec.paths.get('h5', args.out))}"
    )
    return 0


def _follow_main(args: argparse.Namespace, formats: tuple[str, ...]) -> int:
    """`--follow`: live reconstruction (errors propagate to `main`'s one-line handler)."""
    from .follow import DEFAULT_IDLE_TIMEOUT, follow_onnx

    if args.chunk is not None:
        raise ConfigError("--chunk does not apply to --follow (the follower always reads one batch at a time)")
    if args.pixel_size is not None or args.crop_detector or args.bin is not None:
        raise ConfigError("--follow: --pixel-size, --crop-detector and --bin are not supported (they need the whole scan); "
                          "write positions in object pixels and frames of the model's N")
    idle = DEFAULT_IDLE_TIMEOUT if args.idle_timeout is None else args.idle_timeout
    overwrite = bool(getattr(args, "overwrite", False))  # --overwrite: from the CLI-honesty branch
    bridge = None
    if args.zmq is not None:
        from .zmq_bridge import start_bridge

        bridge = start_bridge(args.zmq, args.scan, timeout=idle, overwrite=overwrite)
    try:
        res = follow_onnx(
            args.model,
            args.scan,
            args.out,
            providers=args.providers,
            threads=args.threads,
            crop=args.crop,
            batch_size=args.batch_size,
            update_every=args.update_every,
            idle_timeout=idle,
            final_pass=not args.no_final_pass,
            diffraction_units=args.diffraction_units,
            overwrite=overwrite,
            formats=formats,
            images=not args.no_images,
        )
    finally:
        if bridge is not None:
            try:
                bridge.wait(timeout=10)
            except Exception:  # still receiving (no 'end' message): stop it, the spool stays valid
                bridge.terminate()
                bridge.wait()
    print(res.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
