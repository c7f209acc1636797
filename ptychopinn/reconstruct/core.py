"""`reconstruct`: batched inference over a whole scan and stitching into one complex object.

Each batch of groups goes through `model.predict_object` under `torch.inference_mode`; the
central `crop × crop` of every object patch is splatted straight into a canvas accumulator with
`kernels.stitch(out=...)` at the group centre, so memory is bounded by the canvas plus one batch.
The canvas is the object frame (same shape as `objectGuess`) when the scan has an object and all
group centres lie inside it; otherwise it is sized from the positions so that no patch is lost.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .. import data
from .. import distributed as dist_
from ..config import DataConfig
from ..data import GroupDataset, normalization_factor
from ..data.detector import size_hint
from ..data.inputs import as_scan, inference_data_config, scan_label
from ..distributed import all_reduce_sum, contiguous_shard
from ..errors import ConfigError, DataError, PtychoPINNError
from ..io.atomic import check_output
from ..io.device import resolve_device
from ..io.loaders import find_model_loader
from ..io.loaders import load_any_model as _load_path
from ..kernels import normalize
from ..kernels import stitch as kstitch
from ..metrics import evaluate
from .finetune import finetune as run_finetune
from .geometry import INFERENCE_SEED, TF_CROP, canvas_geometry, centre_crop, covered_box, default_crop, patch_weights
from .outputs import write_outputs
from .phase_sync import MAX_BYTES, fits, synchronise_phases
from .refine import refine_stitched
from .stitchers import get_stitcher

log = logging.getLogger("ptychopinn")

StitchMode = Literal["barycentric", "tf"]
PatchWeight = Literal["probe", "uniform"]


@dataclass
class Reconstruction:
    """The stitched object and what produced it.

    object: `(H, W)` complex64, the reconstruction (zero where no patch landed);
    weight: `(H, W)` float32, Σ of stitching weights (coverage; 0 outside the scan);
    origin: `(x0, y0)` object-frame coordinates of canvas pixel (0, 0) (0, 0 in the object frame);
    metrics: `metrics.evaluate` report against `scan.object` (covered region), or None;
    centres: `(B, 2)` float64 group centres `[x, y]` in canvas pixels.
    """

    object: np.ndarray
    weight: np.ndarray
    origin: tuple[float, float]
    metrics: dict[str, Any] | None
    centres: np.ndarray
    n_groups: int
    crop: int
    stitch: str
    weight_kind: str
    normalization_factor: float
    intensity_scale: float
    region: tuple[int, int, int, int] | None = None
    paths: dict[str, str] = field(default_factory=dict)
    #: physics refinement summary (`reconstruct.refine`: loss per epoch, seconds, ...) or None
    refinement: dict[str, Any] | None = None
    #: refined probe `(K, N, N)` complex64 and scan positions `(M, 2)` `[x, y]` object px, or None
    refined_probe: np.ndarray | None = None
    refined_positions: np.ndarray | None = None
    #: fine-tuning summary (`reconstruct.finetune`: loss per epoch, seconds) or None
    finetune: dict[str, Any] | None = None
    #: `frc_halves.HalfSetFRC` when reconstructed with `frc_halves=True`, else None
    frc_halves: Any = None

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.object)

    @property
    def phase(self) -> np.ndarray:
        return np.angle(self.object)


# -- model resolution -----------------------------------------------------------------------
def is_legacy_bundle(path: Path) -> bool:
    """True when `path` is a legacy TensorFlow `wts.h5.zip` (the `tf_bundle` loader that
    `ptychopinn.interop` registers recognises it); False when that loader is unavailable."""
    loader = find_model_loader(path)
    return loader is not None and loader.name == "tf_bundle"


def load_any_model(model: Any, device: torch.device) -> tuple[Any, dict[str, Any]]:  # Any: a PtychoPINN, not importable here (layer table)
    """(module on `device`, saved extra info) from a module or any registered model format.

    Paths dispatch through `io.loaders` (native directory/zip built in; the legacy TF bundle via
    interop's entry point). A module passed in is moved with `.to(device)` (in place, as
    `nn.Module.to` does): the returned module is the caller's object.
    """
    if isinstance(model, torch.nn.Module):
        return model.to(device), dict(getattr(model, "extra_info", None) or {})
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"model must be a PtychoPINN, a model directory/zip or a wts.h5.zip, got {type(model).__name__}")
    return _load_path(model, device)


#: network precisions of `reconstruct(precision=...)` / `ptychopinn reconstruct --precision`
PRECISIONS = ("float32", "bf16")

# -- canvas geometry ------------------------------------------------------------------------

# -- main entry -----------------------------------------------------------------------------
def reconstruct(
    model: Any,
    scan_or_path: Any,
    *,
    data_config: DataConfig | None = None,
    batch_size: int = 64,
    stitch: StitchMode = "barycentric",
    crop: int | None = None,
    weight: PatchWeight = "probe",
    device: str | torch.device = "auto",
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    refine: Any = None,
    finetune: Any = None,
    save_finetuned: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    frc_halves: bool = False,
    load: Any = None,
    precision: str = "float32",
    phase_sync: int = 0,
) -> Reconstruction:
    """Reconstruct the whole object of a scan with a trained model.

    model: a `PtychoPINN`, a native model directory/zip (`io.load_model`) or a legacy TF
    `wts.h5.zip` (via `ptychopinn.interop`). scan_or_path: a `Scan` or an NPZ/HDF5 path.
    data_config: grouping (default: the model's gridsize, one group per position, seed 45).
    stitch: "barycentric" (bilinear splat of the central `crop` pixels, default N/2, weighted
    by the scan probe's |P|² when `weight="probe"` (default) or uniformly) or "tf" (TF
    `reassemble_position(M=20)`, exact legacy numbers; holds all patches; `weight` ignored).
    out_dir: when given, writes reconstruction.npz/.h5, PNGs and (with ground truth)
    metrics.json + error map, atomically (the folder appears complete or not at all).
    overwrite: an existing non-empty `out_dir` is refused (ConfigError, before any work, and
    nothing in it is touched) unless True; then it is replaced as a whole, atomically. An
    existing empty folder is filled.
    frc_halves: also compute the half-set FRC (`frc_halves.half_set_frc`: two interleaved
    halves of the positions, each reconstructed alone; no ground truth needed) into
    `rec.frc_halves`, `metrics.json` ("frc_halves") and `frc_halves.png`. Barycentric only.
    The halves are network reconstructions by `model` as given: with `refine`/`finetune` they
    measure the network before refinement and fine-tuning, not the refined object.

    Distributed (a `torch.distributed` default group is initialised, e.g. under `torchrun`):
    each rank predicts and stitches a contiguous block of groups into its own numerator/weight
    canvases, which are summed over ranks (all_reduce); every rank returns the same object,
    rank 0 alone computes metrics and writes `out_dir`. Barycentric stitching only.

    phase_sync: rounds of per-patch phase synchronisation before the final stitch (0 = off;
    `reconstruct.phase_sync`: each patch's arbitrary constant phase is aligned with its
    neighbours'; holds the cropped patches, skipped with a warning above 2 GiB). Barycentric only.
    refine: a `reconstruct.refine.RefineConfig`: after stitching, that many epochs of physics
    refinement of the object (probe, positions) against the measured patterns (docs/refinement.md);
    epochs 0 or None leave the network's object exactly as is. Under torchrun the positions are
    sharded over ranks and the gradients all-reduced.
    finetune: a `reconstruct.finetune.FinetuneConfig`: first adapt a copy of the network to this
    scan with the unsupervised PINN loss (one process only); save_finetuned: write that copy.
    load: `data.LoadOptions` for a scan path (diffraction units, pixel size, detector crop/bin).
    precision: "float32" (default) or "bf16": the network runs under bfloat16 autocast (AMX /
    AVX512-BF16 on CPUs that have it, tensor cores on CUDA); its object patches are returned as
    complex64 and stitched, refined and written in float32 as always.
    Bad pixels (`scan.bad_pixels`) are excluded from the normalisation and filled at the input.
    """
    _check_options(precision, refine, finetune, save_finetuned, phase_sync)
    if phase_sync and stitch == "tf":
        raise ConfigError("phase_sync needs stitch='barycentric' (the tf stitcher reproduces the legacy numbers)")
    info = dist_.current()
    scan, net, groups, crop, dev, extra = _prepare_agreed(
        info, out_dir, overwrite, frc_halves, stitch, model, scan_or_path, data_config, batch_size, crop, weight, device, load
    )
    if info is None:
        factor = float(_normalization_factor(scan.diffraction, groups.indices, scan.bad_pixels))
    else:  # each rank reads only its share of the patterns
        factor = float(dist_.normalization_factor(scan.diffraction, groups.indices, dev, bad_pixels=scan.bad_pixels))
    scale = float(net.intensity_scale)
    dataset = GroupDataset(scan, groups, factor * scale)
    main = info is None or info.is_main
    tuned = None
    network = net  # the network as loaded (fine-tuning works on a copy): the half-set FRC reuses it
    if finetune is not None and finetune.epochs > 0:
        if info is not None:
            raise ConfigError("finetune runs in one process only; run reconstruct --finetune without torchrun")
        net, tuned = run_finetune(net, dataset, finetune, extra=extra, device=dev, save_dir=save_finetuned)

    obj_shape = tuple(scan.object.shape) if scan.object is not None else None
    if stitch == "tf":
        canvas, weight_sum, origin, centres = _run_tf(net, dataset, groups, batch_size, crop, dev, precision)
    else:
        w_np = patch_weights(_stitch_probe(scan, net, warn=main and weight == "probe"), crop, weight)
        w = None if w_np is None else torch.from_numpy(w_np)
        canvas, weight_sum, origin, centres = _run_barycentric(
            net, dataset, groups, batch_size, crop, w, dev, obj_shape, progress and main, info, precision, phase_sync
        )

    refined = None
    if refine is not None and refine.epochs > 0:
        refined = refine_stitched(canvas, weight_sum, origin, scan, refine, dev, progress and main)
        canvas = refined.pop("object")
    metrics, region = (None, None) if scan.object is None or not main else _metrics(canvas, weight_sum, origin, np.asarray(scan.object))
    rec = Reconstruction(
        object=canvas, weight=weight_sum, origin=(float(origin[0]), float(origin[1])), metrics=metrics, centres=centres,
        n_groups=int(groups.n_groups), crop=crop, stitch=stitch, weight_kind="uniform" if stitch == "tf" else weight,
        normalization_factor=factor, intensity_scale=scale, region=region, finetune=tuned,
    )
    if refined is not None:
        rec.refined_probe = refined.pop("probe")
        rec.refined_positions = refined.pop("positions")
        rec.refinement = refined
    if frc_halves:
        from .frc_halves import half_set_frc  # lazy: frc_halves builds on this module (reconstructs each half)

        rec.frc_halves = half_set_frc(network, scan, data_config=data_config, batch_size=batch_size, crop=crop, weight=weight, device=dev,
                                      full=rec, extra=extra)  # the loaded network: the model is not read twice
    if out_dir is not None:
        _write_agreed(rec, Path(out_dir), None if scan.object is None else np.asarray(scan.object), overwrite, info)
    return rec


def _check_options(precision: str, refine: Any, finetune: Any, save_finetuned: Any, phase_sync: int = 0) -> None:
    """Bad option values fail before any work (ConfigError, one line)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not isinstance(phase_sync, (int, np.integer)) or isinstance(phase_sync, bool) or phase_sync < 0:
        raise ConfigError(f"phase_sync: expected an integer >= 0 (rounds), got {phase_sync!r}")
    for opt in (refine, finetune):
        if opt is not None:
            opt.validate()
    if save_finetuned is not None and (finetune is None or finetune.epochs == 0):
        raise ConfigError("save_finetuned needs finetune=FinetuneConfig(epochs >= 1)")


def _prepare_agreed(info: Any, out_dir: Any, overwrite: bool, frc_halves: bool, stitch: str, model: Any, scan_or_path: Any,
                    data_config: Any, batch_size: int, crop: int | None, weight: str, device: Any, load: Any) -> Any:
    """`_prepare` after the output/request checks; under torchrun every rank raises when any
    rank's inputs are bad (no rank is left waiting in a collective)."""
    error: BaseException | None = None
    prepared: Any = None
    try:
        _check_request(out_dir, overwrite, frc_halves, stitch)
        prepared = _prepare(model, scan_or_path, data_config, batch_size, stitch, crop, weight, device, info, load)
    except PtychoPINNError as exc:
        error = exc
    if info is not None:
        dist_.agree(error)
    elif error is not None:
        raise error
    return prepared


def _write_agreed(rec: Reconstruction, out_dir: Path, truth: np.ndarray | None, overwrite: bool, info: Any) -> None:
    """Write `rec`'s files (rank 0 under torchrun, then a barrier that carries its error to every rank)."""
    if info is None:
        rec.paths = write_outputs(rec, out_dir, truth=truth, overwrite=overwrite)
        return
    write_error: BaseException | None = None
    if info.is_main:
        try:
            rec.paths = write_outputs(rec, out_dir, truth=truth, overwrite=overwrite)
        except (PtychoPINNError, OSError) as exc:
            write_error = exc if isinstance(exc, PtychoPINNError) else ConfigError(f"{out_dir}: writing the reconstruction failed: {exc}")
    dist_.agree(write_error)  # also a barrier: the files exist when any rank returns


def _stitch_probe(scan: Any, net: Any, *, warn: bool) -> np.ndarray:
    """The probe whose |P|² weights the stitched patches, `(N, N)`.

    Scan.probe (the dominant mode) for a single-mode model, with a one-line warning when the
    scan holds K ≥ 2 modes (`Scan.probe_modes`); sqrt(Σₖ |Pₖ|²) of the scan's modes for a
    multi-mode model (its total illumination).
    """
    modes = getattr(scan, "probe_modes", None)
    if modes is None:
        return scan.probe
    if int(getattr(net, "n_modes", 1)) <= 1:
        if warn:
            log.warning(
                "%s: the scan holds %d probe modes, the model one; the dominant mode weights the stitched patches",
                scan_label(scan), len(modes),
            )
        return scan.probe
    return np.sqrt((np.abs(np.asarray(modes)) ** 2).sum(axis=0))


def _check_request(out_dir: Any, overwrite: bool, frc_halves: bool, stitch: str) -> None:
    """Refuse, before any work, what could only fail at the end: a non-empty `out_dir` without
    `overwrite`, and `frc_halves` with the tf stitcher or (when writing its plot) without matplotlib."""
    if out_dir is not None:
        check_output(out_dir, overwrite=bool(overwrite), directory=True)
    if frc_halves and stitch != "barycentric":
        raise ConfigError("frc_halves=True needs stitch='barycentric' (the halves share its canvas frame)")
    if frc_halves and out_dir is not None:
        try:
            import matplotlib  # noqa: F401  lazy: optional extra (only the plot needs it)
        except ImportError:
            raise ConfigError('frc_halves=True writes frc_halves.png, which needs matplotlib (pip install "ptychopinn[plot]")') from None


def _normalization_factor(diffraction: Any, indices: np.ndarray, bad_pixels: Any = None) -> Any:
    """`data.normalization_factor` (single process; bad pixels excluded)."""
    return normalization_factor(diffraction, indices, bad_pixels=bad_pixels)


def _prepare(model, scan_or_path, data_config, batch_size, stitch, crop, weight, device, info, load=None):
    """Validated (scan, module, groups, crop, device, model extra info); identical answers on every rank."""

    if weight not in ("probe", "uniform"):
        raise ConfigError(f"weight must be 'probe' or 'uniform', got {weight!r}")
    if stitch not in ("barycentric", "tf"):
        raise ConfigError(f"stitch must be 'barycentric' or 'tf', got {stitch!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if info is not None and stitch == "tf":
        raise ConfigError("stitch='tf' (legacy reassemble_position) runs in one process only; use stitch='barycentric' under torchrun")
    dev = resolve_device(device) if info is None else dist_.rank_device(device, info.local_rank)
    net, extra = load_any_model(model, dev)
    cfg = net.config
    N = int(cfg.N)
    scan = as_scan(scan_or_path, load, N)
    label = scan_label(scan)
    if scan.N != N:
        raise DataError(f"{label}: key 'diffraction' has {scan.N}x{scan.N} patterns, the model expects N={N}" + size_hint(scan.N, N))
    if crop is None:
        crop = TF_CROP if stitch == "tf" else default_crop(N)
    if not 1 <= int(crop) <= N:
        raise ConfigError(f"crop must be in [1, {N}], got {crop}")
    crop = int(crop)
    dcfg = inference_data_config(net.config.gridsize, extra, data_config)
    groups = data.group_scan(scan, dcfg)
    if groups.n_groups == 0:
        raise DataError(f"{label}: no groups to reconstruct")
    if info is not None and info.world_size > groups.n_groups:
        raise DataError(f"{label}: {groups.n_groups} groups for {info.world_size} processes; use fewer processes")
    return scan, net, groups, crop, dev, extra


def _predict(net: Any, dataset: Any, n: int, batch_size: int, dev: torch.device, start: int = 0, precision: str = "float32"):
    """Yield (batch dict, object patches (b, N, N) complex64 on `dev`) over groups [start, n) in order.

    precision "bf16": the network alone runs under bfloat16 autocast (not the caller's stitching)."""
    net.eval()
    with torch.inference_mode():
        for s in range(start, n, batch_size):
            batch = dataset.batch(np.arange(s, min(s + batch_size, n)))
            x = batch["x"].to(dev)
            offsets = batch["offsets"].to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                patches = net.predict_object(x, offsets)
            yield batch, patches.to(torch.complex64)


def _run_barycentric(net, dataset, groups, batch_size, crop, weights, dev, obj_shape, progress, info=None, precision="float32",
                     phase_sync=0):
    """Stitch every group (distributed: this rank's contiguous block, then canvases summed);
    with `phase_sync` rounds, the cropped patches are held and phase-synchronised first."""

    centres_all = np.asarray(groups.centres, dtype=np.float64)
    (H, W), origin = canvas_geometry(centres_all, crop, obj_shape)
    num = torch.zeros(H, W, dtype=torch.complex64, device=dev)
    den = torch.zeros(H, W, dtype=torch.float32, device=dev)
    start, stop = 0, groups.n_groups
    if info is not None:
        start, stop = contiguous_shard(groups.n_groups, info.rank, info.world_size)
    w = None if weights is None else weights.to(dev)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # lazy: only with a progress bar (tqdm.auto probes for notebooks on import)

        bar = tqdm(total=stop - start, desc="reconstruct", unit="group", leave=False)
    held: tuple[torch.Tensor, torch.Tensor] | None = None  # this rank's cropped patches and positions
    if phase_sync > 0:
        world = 1 if info is None else info.world_size
        if fits(-(-groups.n_groups // world), crop):  # the same decision on every rank
            held = (torch.zeros(stop - start, crop, crop, dtype=torch.complex64, device=dev),
                    torch.zeros(stop - start, 2, dtype=torch.float64, device=dev))
        elif info is None or info.is_main:
            log.warning("phase_sync skipped: %d patches of %dx%d would hold more than %.0f GiB", groups.n_groups, crop, crop,
                        MAX_BYTES / 2**30)
    for batch, patches in _predict(net, dataset, stop, batch_size, dev, start, precision):
        b = batch["index"].numpy()
        pos = torch.from_numpy(centres_all[b] - origin).to(dev)
        crops = centre_crop(patches, crop).contiguous()
        if held is not None:  # _predict yields the groups in order: a contiguous block
            i0 = int(b[0]) - start
            held[0][i0 : i0 + len(b)] = crops
            held[1][i0 : i0 + len(b)] = pos
        else:
            kstitch(crops, pos, (H, W), weights=w, out=(num, den))
        if bar is not None:
            bar.update(len(b))
    if bar is not None:
        bar.close()
    if held is not None:
        P, Q = held
        u = synchronise_phases(P, Q, (H, W), int(phase_sync), weights=w, distributed=info)
        kstitch((P * u[:, None, None]).contiguous(), Q, (H, W), weights=w, out=(num, den))
    if info is not None:  # Σ over ranks of the numerator and weight canvases
        all_reduce_sum(torch.view_as_real(num))
        all_reduce_sum(den)
    obj = torch.where(den > 0, normalize(num, den, 1e-9), torch.zeros((), dtype=num.dtype, device=dev))
    return obj.cpu().numpy().astype(np.complex64), den.cpu().numpy().astype(np.float32), origin, centres_all - origin


def _run_tf(net, dataset, groups, batch_size, crop, dev, precision="float32"):
    """TF `reassemble_position(M=crop)` (holds all patches, as TF did)."""
    reassemble_position = get_stitcher("tf")  # interop's TF-compatible stitcher, via its entry point
    n = groups.n_groups
    patches = torch.cat([p.cpu() for _, p in _predict(net, dataset, n, batch_size, dev, precision=precision)])
    centres = np.asarray(groups.centres, dtype=np.float64)
    canvas = reassemble_position(patches.numpy(), centres, M=crop)
    S = canvas.shape[0]
    # canvas point (S/2, S/2) is the float32 mean of the centres (spec §4.6)
    mean = centres.astype(np.float32).astype(np.float64).mean(axis=0)
    origin = mean - S // 2
    ones = torch.ones(n, crop, crop)
    _, den = kstitch(ones, torch.from_numpy(centres - origin), (S, S))
    return np.asarray(canvas, dtype=np.complex64), den.numpy().astype(np.float32), origin, centres - origin


def _metrics(canvas: np.ndarray, weight: np.ndarray, origin: np.ndarray, truth: np.ndarray):
    """metrics.evaluate on the covered bounding box, truth cut in the same frame (integer origin)."""
    box = covered_box(weight)
    if box is None:
        return None, None
    r0, r1, c0, c1 = box
    ox, oy = int(round(origin[0])), int(round(origin[1]))
    # truth rows/cols matching the canvas box, clipped to the truth
    tr0, tr1 = max(r0 + oy, 0), min(r1 + oy, truth.shape[0])
    tc0, tc1 = max(c0 + ox, 0), min(c1 + ox, truth.shape[1])
    if tr1 - tr0 < 16 or tc1 - tc0 < 16:
        log.warning("reconstruction and ground truth overlap by less than 16 px; no metrics")
        return None, None
    rec = canvas[tr0 - oy : tr1 - oy, tc0 - ox : tc1 - ox]
    ref = truth[tr0:tr1, tc0:tc1]
    report = evaluate(rec, ref)
    report["region"] = {"rows": [tr0, tr1], "cols": [tc0, tc1], "frame": "objectGuess"}
    return report, (tr0, tr1, tc0, tc1)


__all__ = ["reconstruct", "Reconstruction", "default_crop", "patch_weights", "is_legacy_bundle", "load_any_model", "INFERENCE_SEED", "TF_CROP"]
