"""Kernel cases: translate, extract, stitch — ours vs straightforward torch references vs TF ops."""
from __future__ import annotations

import math

import numpy as np
import torch

from ptychopinn import kernels
from ptychopinn.interop.tf_compat import reassemble_position

from . import references as ref
from .common import TF_MISSING, Context, Row, rel_l2, run_tf_worker, skipped, tf_available
from .timing import Stats, measure, stats_from_dict

GROUP = "kernels"


def _bytes_stitch(n: int, h: int, w: int) -> float:
    """Bytes moved by a bilinear splat: patches read (complex64) + read-modify-write of the
    numerator (8 B) and weight sum (4 B) over each (h+1)×(w+1) window (as benchmarks/stitch_scale.py).
    The data the splat must touch; index tensors and in-cache window buffers are not counted."""
    return n * h * w * 8 + n * (h + 1) * (w + 1) * (8 + 4) * 2


def _rand_complex(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.complex64, generator=gen)


def _scan_offsets(rng: np.random.Generator, n: int, step: float = 4.0) -> np.ndarray:
    """`(n, 2)` float64 random scan positions covering a square of side step·sqrt(n) px."""
    side = step * math.sqrt(n)
    return rng.uniform(0, side, size=(n, 2))


def run(ctx: Context) -> list[Row]:
    q = ctx.quick
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    budget = 2.0 if q else 10.0
    reps = 3 if q else 7

    def timed(fn) -> Stats:
        with torch.inference_mode():
            return measure(fn, warmup=1, repeats=reps, budget_s=budget)

    # ---- translate: n complex64 images P×P (P = 74, the gridsize-1 canvas) ----
    n_t, P = (32, 74) if q else (1024, 74)
    imgs = _rand_complex(gen, n_t, P, P)
    shifts = torch.from_numpy(rng.uniform(-5, 5, size=(n_t, 2)).astype(np.float32))
    desc_t = f"translate {n_t} complex64 {P}x{P} images by random sub-pixel shifts"
    with torch.inference_mode():
        ours_t = kernels.translate(imgs, shifts)
        gs_t = ref.translate_grid_sample(imgs, shifts)
    rows.append(Row("translate/grid_sample", GROUP, desc_t + " (F.grid_sample reference)", timed(lambda: ref.translate_grid_sample(imgs, shifts)),
                    items=n_t, unit="images/s", role="baseline"))
    rows.append(Row("translate/ours", GROUP, desc_t + " (kernels.translate)", timed(lambda: kernels.translate(imgs, shifts)),
                    items=n_t, unit="images/s", baselines=["translate/tf", "translate/grid_sample"],
                    metrics={"rel_l2_vs_grid_sample": rel_l2(ours_t.numpy(), gs_t.numpy())}))

    # ---- extract: B canvases P×P (gridsize 2: P = 78), C = 4 patches of 64 each ----
    B_e, C_e, Pe, size = (8, 4, 78, 64) if q else (128, 4, 78, 64)
    canvas = _rand_complex(gen, B_e, Pe, Pe)
    pos = torch.from_numpy(rng.uniform(-4, 4, size=(B_e, C_e, 2)).astype(np.float32))
    desc_e = f"extract {B_e}x{C_e} patches {size}x{size} from complex64 {Pe}x{Pe} canvases"
    with torch.inference_mode():
        ours_e = kernels.extract_patches(canvas, pos, size)
        ref_e = ref.extract_full_translate(canvas, pos, size)
    rows.append(Row("extract/translate_crop", GROUP, desc_e + " (full-canvas grid_sample translate + crop)",
                    timed(lambda: ref.extract_full_translate(canvas, pos, size)), items=B_e * C_e, unit="patches/s", role="baseline"))
    rows.append(Row("extract/ours", GROUP, desc_e + " (kernels.extract_patches)", timed(lambda: kernels.extract_patches(canvas, pos, size)),
                    items=B_e * C_e, unit="patches/s", baselines=["extract/tf", "extract/translate_crop"],
                    metrics={"rel_l2_vs_reference": rel_l2(ours_e.numpy(), ref_e.numpy())}))

    # ---- stitch (TF reassemble_position, M = 20 crops of 64×64 patches) ----
    n_s = 100 if q else 5000
    patches = _rand_complex(gen, n_s, 64, 64)
    offs = _scan_offsets(rng, n_s)
    desc_s = f"reassemble_position: {n_s} complex64 64x64 patches, M=20 crops, random scan (4 px density)"
    with torch.inference_mode():
        ours_s = reassemble_position(patches, torch.from_numpy(offs), M=20)
        ref_s = ref.stitch_full_canvas(patches, offs, M=20)
    canvas_side = int(ours_s.shape[-1])
    rows.append(Row("stitch/full_canvas", GROUP, desc_s + " (TF's algorithm in torch: pad to full canvas, translate, sum)",
                    timed(lambda: ref.stitch_full_canvas(patches, offs, M=20)), items=n_s, unit="patches/s", role="baseline",
                    metrics={"canvas": canvas_side}))
    st = timed(lambda: reassemble_position(patches, torch.from_numpy(offs), M=20))
    rows.append(Row("stitch/ours", GROUP, desc_s + " (interop.tf_compat.reassemble_position on kernels.stitch)", st,
                    items=n_s, unit="patches/s", baselines=["stitch/tf", "stitch/full_canvas"],
                    metrics={"rel_l2_vs_full_canvas": rel_l2(ours_s.numpy(), ref_s.numpy()), "canvas": canvas_side}))

    # ---- raw kernels.stitch on whole 64×64 patches: bytes/s vs memory bandwidth ----
    n_r = 300 if q else 10000
    side = int(4 * math.sqrt(n_r)) + 64
    pr = _rand_complex(gen, n_r, 64, 64)
    posr = torch.from_numpy(rng.uniform(32, side - 32, size=(n_r, 2)))
    desc_r = f"kernels.stitch {n_r} complex64 64x64 patches onto a {side}x{side} canvas"
    with torch.inference_mode():
        a_num, a_den = kernels.stitch(pr, posr, (side, side))
        b_num, b_den = ref.stitch_four_corners(pr, posr, (side, side))
    nbytes = _bytes_stitch(n_r, 64, 64)
    rows.append(Row("stitch64/four_corner_index_add", GROUP, desc_r + " (reference: 4 masked index_add_ per chunk)",
                    timed(lambda: ref.stitch_four_corners(pr, posr, (side, side))), items=n_r, unit="patches/s", role="baseline"))
    st64 = timed(lambda: kernels.stitch(pr, posr, (side, side)))
    bw = ctx.limits.get("bandwidth_Bps")
    rows.append(Row("stitch64/ours", GROUP, desc_r + " (kernels.stitch)", st64, items=n_r, unit="patches/s",
                    baselines=["stitch64/four_corner_index_add"],
                    metrics={"rel_l2_vs_reference": rel_l2(a_num.numpy(), b_num.numpy()),
                             "bytes_moved_per_s": nbytes / st64.median_s,
                             "fraction_of_bandwidth": (nbytes / st64.median_s / bw) if bw else None}))

    # ---- TensorFlow ops (subprocess) ----
    names = ("translate/tf", "extract/tf", "stitch/tf")
    descs = (desc_t + " (tf.raw_ops.ImageProjectiveTransformV3)", desc_e + " (TF extract_patches_position from the same op)",
             desc_s + " (TF reassemble_position re-implemented with the same op)")
    items = (n_t, B_e * C_e, n_s)
    units = ("images/s", "patches/s", "patches/s")
    if not tf_available():
        rows += [skipped(nm, GROUP, d, TF_MISSING, role="baseline") for nm, d in zip(names, descs)]
        return rows
    ctx.log("  kernels: TensorFlow ops (subprocess)")
    common = {"warmup": 1, "repeats": reps, "budget_s": budget}
    tasks = [
        {"kind": "translate", "name": names[0], "images": "imgs", "shifts": "shifts", **common},
        {"kind": "extract", "name": names[1], "canvas": "canvas", "positions": "pos", "size": size, **common},
        {"kind": "stitch", "name": names[2], "patches": "patches", "offsets": "offs", "M": 20, **common},
    ]
    arrays = {"imgs": imgs.numpy(), "shifts": shifts.numpy(), "canvas": canvas.numpy(), "pos": pos.numpy(),
              "patches": patches.numpy(), "offs": offs}
    try:
        out = run_tf_worker(ctx, tasks, arrays)
    except Exception as exc:  # noqa: BLE001 - report, do not abort the suite
        rows += [skipped(nm, GROUP, d, f"error: {exc}", role="baseline") for nm, d in zip(names, descs)]
        return rows
    ours_out = {names[0]: ours_t.numpy(), names[1]: ours_e.numpy().reshape(-1, size, size), names[2]: ours_s.numpy()}
    for nm, d, it, unit, res in zip(names, descs, items, units, out["results"]):
        if "error" in res:
            rows.append(skipped(nm, GROUP, d, "error: " + res["error"], role="baseline"))
            continue
        metrics = {"rel_l2_ours_vs_tf": rel_l2(ours_out[nm], out["arrays"][nm])}
        rows.append(Row(nm, GROUP, d, stats_from_dict(res["stats"]), items=it, unit=unit, role="baseline", metrics=metrics))
    return rows

