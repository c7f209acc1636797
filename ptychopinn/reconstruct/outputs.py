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

from ..io.outputs import write_reconstruction_dir
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
    """Write the run's files into `out_dir` (replaced atomically, `io.outputs.write_reconstruction_dir`);
    returns {name: final path}.

    overwrite=False: a non-empty `out_dir` is left untouched (ConfigError)."""
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
    frc: dict[str, Any] = {}
    if halves is not None:
        frc["frc_halves"] = halves.as_dict()
        meta["frc_halves"] = {k: frc["frc_halves"][k] for k in ("split", "half_bit", "one_seventh")}
    shown = None
    if rec.metrics is not None and rec.region is not None and truth is not None:
        r0, r1, c0, c1 = rec.region  # object frame; the canvas starts at `origin`
        oy, ox = int(round(rec.origin[1])), int(round(rec.origin[0]))
        box = (r0 - oy, r1 - oy, c0 - ox, c1 - ox)
        shown = truth[r0:r1, c0:c1]
        metrics = {**rec.metrics, **extra_json, **frc}
    else:
        box = _box(rec)
        metrics = {**extra_json, **frc}  # refinement / fine-tuning losses even without ground truth
    refinement = None
    if getattr(rec, "refined_probe", None) is not None:
        refinement = {"probe": rec.refined_probe, "positions": rec.refined_positions, "loss": np.asarray(rec.refinement["loss"], np.float64)}
    return write_reconstruction_dir(out_dir, rec.object, meta, image_box=box, truth=shown, metrics=metrics, refinement=refinement,
                                    frc_halves=halves, overwrite=overwrite)


__all__ = ["write_outputs"]
