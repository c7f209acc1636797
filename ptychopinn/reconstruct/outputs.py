"""Files of a reconstruction run, written into a folder that appears complete or not at all.

reconstruction.npz (`object` (H, W) complex64, amplitude, phase) and reconstruction.h5 (the full
canvas); amplitude.png / phase.png of the covered region (with colourbars); with ground truth
also metrics.json and error_map.png (same region, after alignment). After a physics refinement
or a fine-tune, metrics.json also holds "refine" / "finetune" (loss per epoch, seconds), with or
without ground truth, and refinement.npz the refined probe `(K, N, N)`, positions `(M, 2)`
`[x, y]` object px and the loss per epoch. With a half-set FRC (`rec.frc_halves`) metrics.json
gets an "frc_halves" entry (also without ground truth) and frc_halves.png is written.
metrics.json is strict JSON (non-finite numbers are null).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_directory, atomic_save_json
from .frc_halves import save_frc_plot
from .geometry import covered_box


def _box(rec: Any) -> tuple[int, int, int, int]:
    """Covered region (rows, cols) of the canvas, the whole canvas if nothing is covered."""
    box = covered_box(rec.weight)
    return box if box is not None else (0, rec.object.shape[0], 0, rec.object.shape[1])


def _extra_json(rec: Any) -> dict[str, Any]:
    """{"refine": summary, "finetune": summary} for the parts that ran (JSON-ready)."""
    out: dict[str, Any] = {}
    if getattr(rec, "refinement", None) is not None:
        out["refine"] = rec.refinement
    if getattr(rec, "finetune", None) is not None:
        out["finetune"] = rec.finetune
    return out


def write_outputs(rec: Any, out_dir: Path, truth: np.ndarray | None = None, *, overwrite: bool = True) -> dict[str, str]:
    """Write the run's files into `out_dir` (replaced atomically); returns {name: final path}.

    overwrite=False: a non-empty `out_dir` is left untouched (ConfigError)."""
    from ..io import save_images, save_reconstruction

    meta = {
        "stitch": rec.stitch,
        "crop": rec.crop,
        "weight": rec.weight_kind,
        "n_groups": rec.n_groups,
        "origin": list(rec.origin),
        "normalization_factor": rec.normalization_factor,
        "intensity_scale": rec.intensity_scale,
        "frame": "objectGuess" if rec.origin == (0.0, 0.0) else "positions - origin",
    }
    extra_json = _extra_json(rec)
    meta.update(extra_json)
    if rec.metrics is not None:
        meta["metrics"] = {part: {k: rec.metrics[part][k] for k in ("ssim", "psnr", "ms_ssim")} for part in ("amplitude", "phase")}
    halves = getattr(rec, "frc_halves", None)
    metrics: dict[str, Any] = {}
    if halves is not None:
        metrics["frc_halves"] = halves.as_dict()
        meta["frc_halves"] = {k: metrics["frc_halves"][k] for k in ("split", "half_bit", "one_seventh")}
    written: dict[str, Path] = {}
    with atomic_directory(out_dir, replace=overwrite) as tmp:
        for k, p in save_reconstruction(tmp, rec.object, metadata=meta).items():
            written[k] = p
        if rec.metrics is not None and rec.region is not None and truth is not None:
            r0, r1, c0, c1 = rec.region
            oy, ox = int(round(rec.origin[1])), int(round(rec.origin[0]))
            images = save_images(tmp, rec.object[r0 - oy : r1 - oy, c0 - ox : c1 - ox], truth=truth[r0:r1, c0:c1])
            metrics = {**rec.metrics, **extra_json, **metrics}
        else:
            r0, r1, c0, c1 = _box(rec)
            images = save_images(tmp, rec.object[r0:r1, c0:c1])
            metrics = {**extra_json, **metrics}  # refinement / fine-tuning losses even without ground truth
        if getattr(rec, "refined_probe", None) is not None:
            written["refinement"] = tmp / "refinement.npz"
            with open(written["refinement"], "wb") as fh:
                np.savez(fh, probe=rec.refined_probe, positions=rec.refined_positions, loss=np.asarray(rec.refinement["loss"], np.float64))
        written.update(images)
        if metrics:
            written["metrics"] = atomic_save_json(tmp / "metrics.json", metrics)
        if halves is not None:
            written["frc_halves"] = save_frc_plot(tmp / "frc_halves.png", halves)
    return {k: str(out_dir / Path(p).name) for k, p in written.items()}


__all__ = ["write_outputs"]
