"""`ptychopinn reconstruct`: stitch the whole object of a scan with a trained model."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..reconstruct.geometry import INFERENCE_SEED
from .train import add_load_arguments, load_options, number, required_path, setup_logging

HELP = "reconstruct the object of a scan with a trained model (native dir/zip or legacy wts.h5.zip)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", metavar="MODEL", help="native model directory or .zip, or a legacy TensorFlow wts.h5.zip")
    a("--data", metavar="SCAN.npz", help="scan to reconstruct (NPZ or HDF5, scan contract)")
    a("--out", metavar="OUT_DIR", help="output folder (new or empty; an existing non-empty one needs --overwrite)")
    a("--overwrite", action="store_true", default=False, help="replace an existing non-empty OUT_DIR (atomically, as a whole)")
    a("--frc-halves", action="store_true", default=False,
      help="also reconstruct two interleaved halves of the positions and write their FRC (resolution without ground truth) "
           "to metrics.json and frc_halves.png")
    a("--batch-size", default=64, metavar="B", help="groups per inference batch (default 64)")
    a("--stitch", default="barycentric", metavar="MODE", help="barycentric (default) or tf (TF reassemble_position, M=20)")
    a("--crop", default=None, metavar="M", help="central patch side stitched (default N/2; tf mode 20)")
    a("--weight", default="probe", metavar="KIND", help="patch weights: probe (|probe|², default) or uniform")
    a("--n-groups", default=None, metavar="K", help="groups to use (default: one per scan position)")
    a("--seed", default=None, metavar="S", help=f"grouping seed (default {INFERENCE_SEED}, the inference seed; native models)")
    a("--device", default="auto", metavar="DEV", help="auto (default), cpu, cuda, cuda:1, mps")
    a("--quiet", action="store_true", default=False, help="no progress bar")
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..reconstruct import reconstruct

    model = required_path("model", args.model)
    data_path = required_path("data", args.data)
    out = required_path("out", args.out, must_exist=False)
    if str(args.stitch) not in ("barycentric", "tf"):
        raise ConfigError(f"--stitch: expected barycentric or tf, got {args.stitch!r}")
    crop = None if args.crop is None else number("crop", args.crop, int)
    data_config = None
    if args.n_groups is not None or args.seed is not None:
        data_config = _grouping(model, args)
    batch_size = number("batch-size", args.batch_size, int)
    from ..io.atomic import check_output

    check_output(out, overwrite=bool(args.overwrite), directory=True, flag="--overwrite")
    from ..distributed import session

    # under torchrun: groups sharded across processes, canvases summed, rank 0 writes
    with session(str(args.device)) as info:
        main = info is None or info.is_main
        setup_logging(args.quiet or not main)
        rec = reconstruct(
            model,
            data_path,
            data_config=data_config,
            batch_size=batch_size,
            stitch=str(args.stitch),  # type: ignore[arg-type]
            crop=crop,
            weight=str(args.weight),  # type: ignore[arg-type]
            device=str(args.device),
            out_dir=out,
            progress=not args.quiet and main,
            overwrite=bool(args.overwrite),
            frc_halves=bool(args.frc_halves),
            load=load_options(args),
        )
    if not main:
        return 0
    print(f"wrote {out / 'reconstruction.npz'} (object {rec.object.shape[0]}x{rec.object.shape[1]}, {rec.n_groups} groups)")
    if rec.metrics is not None:
        a, p = rec.metrics["amplitude"], rec.metrics["phase"]
        print(
            f"amplitude SSIM {a['ssim']:.4f} PSNR {a['psnr']:.2f} dB; phase SSIM {p['ssim']:.4f} PSNR {p['psnr']:.2f} dB"
            f" (metrics in {out / 'metrics.json'})"
        )
    if rec.frc_halves is not None:
        h = rec.frc_halves
        parts = []
        for name, c in (("1/2-bit", h.half_bit_crossing), ("1/7", h.one_seventh_crossing)):
            if not c.crossed:
                parts.append(f"{name} not crossed up to {c.frequency:.3f} px^-1")
            elif c.frequency <= 0:
                parts.append(f"{name} never reached (nothing resolved)")
            else:
                parts.append(f"{name} {c.frequency:.3f} px^-1 ({c.resolution_px:.1f} px)")
        print(f"half-set FRC: {', '.join(parts)} (curve in {out / 'metrics.json'}, plot {out / 'frc_halves.png'})")
    return 0


def _grouping(model, args: argparse.Namespace):
    """DataConfig for --n-groups/--seed: the model's gridsize and saved neighbor_count."""
    from ..config import DataConfig
    from ..io import is_model_path, read_model_info

    if not is_model_path(model):
        raise ConfigError("--n-groups/--seed: only supported with native models (convert a legacy bundle first)")
    info = read_model_info(model)
    saved = ((info.extra or {}).get("training") or {}).get("data_config") or {}
    K = int(saved.get("neighbor_count", DataConfig().neighbor_count))
    n_groups = None if args.n_groups is None else number("n-groups", args.n_groups, int)
    seed = INFERENCE_SEED if args.seed is None else number("seed", args.seed, int)
    try:
        return DataConfig(gridsize=info.config.gridsize, neighbor_count=K, n_groups=n_groups, seed=seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
