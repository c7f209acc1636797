"""`ptychopinn reconstruct`: stitch the whole object of a scan with a trained model."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..interop.ptychodus.cli_support import add_product_arguments, plan_product, write_planned_product  # imports no ptychodus
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
    a("--phase-sync", default=0, metavar="K", help="K rounds of per-patch phase synchronisation before stitching (default 0: "
      "off; ~25 removes the network's per-pattern phase offsets, docs/usage.md)")
    a("--n-groups", default=None, metavar="K", help="groups to use (default: one per scan position)")
    a("--seed", default=None, metavar="S", help=f"grouping seed (default {INFERENCE_SEED}, the inference seed; native models)")
    a("--device", default="auto", metavar="DEV", help="auto (default), cpu, cuda, cuda:1, mps")
    a("--precision", default="float32", metavar="P",
      help="network precision: float32 (default) or bf16 (bfloat16 autocast: AMX/AVX512-BF16 CPUs, CUDA; stitching stays float32)")
    a("--quiet", action="store_true", default=False, help="no progress bar")
    # live reconstruction of an HDF5 scan being written (docs/beamline.md)
    a("--follow", action="store_true", default=False, help="follow an HDF5 scan that is being written (SWMR) until scan_complete or --idle-timeout")
    a("--update-every", default=2.0, metavar="S", help="--follow: rewrite the outputs every S seconds (default 2)")
    a("--idle-timeout", default=300.0, metavar="S", help="--follow: end after S seconds without a new frame (default 300)")
    a("--no-final-pass", action="store_true", default=False, help="--follow: keep the provisional normalisation (no final re-run)")
    a("--refine", default=0, metavar="E", help="epochs of physics refinement of the stitched object (default 0: none)")
    a("--refine-probe", action="store_true", default=False, help="refine the probe too (from the 2nd epoch)")
    a("--refine-positions", action="store_true", default=False, help="refine the scan positions too (sub-pixel)")
    a("--refine-loss", default="poisson", metavar="KIND", help="poisson (NLL of the counts, default) or amplitude (MSE)")
    a("--refine-batch", default=64, metavar="B", help="positions per refinement update (default 64)")
    a("--refine-momentum", default=0.0, metavar="ETA", help="object momentum per epoch in [0, 1) (default 0; 0.5 converges faster at high dose)")
    a("--refine-prior", default=0.0, metavar="RHO", help="weight of the pull towards the network's object (a learned prior; "
      "default 0: none; see docs/refinement.md)")
    a("--refine-prior-highpass", default=0.0, metavar="SIGMA", help="apply --refine-prior only to the detail finer than a "
      "SIGMA-pixel blur (default 0: all of it)")
    a("--refine-smooth", default=0.0, metavar="RHO", help="weight of a smoothness regulariser (default 0: none; ~3 at low "
      "dose, e.g. 1e4 photons per pattern)")
    a("--refine-smooth-sigma", default=2.0, metavar="SIGMA", help="--refine-smooth penalises the detail finer than a "
      "SIGMA-pixel blur (default 2)")
    a("--finetune", default=0, metavar="E", help="epochs of self-supervised fine-tuning of the network on this scan (default 0)")
    a("--save-finetuned", default=None, metavar="DIR", help="write the fine-tuned model there (native format; the input model is never changed)")
    add_load_arguments(parser)
    add_product_arguments(parser)  # ptychodus: --product, --product-in, --detector-distance, --photon-energy (+ --pixel-size if absent)


def run(args: argparse.Namespace) -> int:
    from ..interop import plugins
    from ..reconstruct import reconstruct

    plugins.register()  # legacy wts.h5.zip loader + stitch="tf", even without installed entry points
    model = required_path("model", args.model)
    data_path = required_path("data", args.data, must_exist=not getattr(args, "follow", False))  # --follow waits for it
    out = required_path("out", args.out, must_exist=False)
    if str(args.stitch) not in ("barycentric", "tf"):
        raise ConfigError(f"--stitch: expected barycentric or tf, got {args.stitch!r}")
    crop = None if args.crop is None else number("crop", args.crop, int)
    data_config = None
    if args.n_groups is not None or args.seed is not None:
        data_config = _grouping(model, args)
    batch_size = number("batch-size", args.batch_size, int)
    if getattr(args, "follow", False):
        return _follow(args, model, data_path, out, crop, batch_size)
    from ..io.atomic import check_output

    check_output(out, overwrite=bool(args.overwrite), directory=True, flag="--overwrite")
    product_plan = plan_product(args, data_path, model, load_options(args))  # None without --product/--product-in
    refine, finetune, save_finetuned = _refine_options(args)
    phase_sync = number("phase-sync", args.phase_sync, int)
    if phase_sync < 0:
        raise ConfigError(f"--phase-sync: expected an integer >= 0, got {args.phase_sync!r}")
    from ..distributed import session

    # under torchrun: groups sharded across processes, canvases summed, rank 0 writes
    with session(str(args.device)) as info:
        main = info is None or info.is_main
        setup_logging(args.quiet or not main)
        rec = reconstruct(
            model,
            data_path if product_plan is None else product_plan.scan,
            data_config=data_config,
            batch_size=batch_size,
            stitch=str(args.stitch),
            crop=crop,
            weight=str(args.weight),
            device=str(args.device),
            out_dir=out,
            progress=not args.quiet and main,
            refine=refine,
            finetune=finetune,
            save_finetuned=save_finetuned,
            overwrite=bool(args.overwrite),
            frc_halves=bool(args.frc_halves),
            load=load_options(args) if product_plan is None else None,  # a planned product: its scan is loaded already
            precision=str(args.precision),
            phase_sync=phase_sync,
        )
    if not main:
        return 0
    print(f"wrote {out / 'reconstruction.npz'} (object {rec.object.shape[0]}x{rec.object.shape[1]}, {rec.n_groups} groups)")
    if product_plan is not None and product_plan.path is not None:
        print(f"wrote ptychodus product {write_planned_product(product_plan, rec, model)}")
    if rec.metrics is not None:
        a, p = rec.metrics["amplitude"], rec.metrics["phase"]
        print(
            f"amplitude SSIM {a['ssim']:.4f} PSNR {a['psnr']:.2f} dB; phase SSIM {p['ssim']:.4f} PSNR {p['psnr']:.2f} dB"
            f" (metrics in {out / 'metrics.json'})"
        )
    if rec.refinement is not None:
        loss = rec.refinement["loss"]
        print(f"refined {len(loss)} epochs ({rec.refinement['loss_kind']} loss {loss[0]:.5g} -> {loss[-1]:.5g}, {rec.refinement['seconds']:.1f} s)")
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


def _follow(args: argparse.Namespace, model, data_path, out, crop, batch_size) -> int:
    """`--follow`: the torch predictor in the torch-free follow engine of the ONNX runner."""
    from ..interop.onnx.follow import FollowModel, follow  # the CLI may join core and interop
    from ..reconstruct.follow import torch_predictor

    if str(args.stitch) != "barycentric" or args.n_groups is not None:
        raise ConfigError("--follow: barycentric stitching of every frame only (no --stitch tf, no --n-groups)")
    if str(args.precision) != "float32":
        raise ConfigError("--follow: --precision float32 only (the live predictor runs the network in float32)")
    load = load_options(args)
    if load.pixel_size is not None or load.crop_detector or load.crop is not None or load.bin != 1:
        raise ConfigError("--follow: --pixel-size, --crop-detector and --bin are not supported (they need the whole scan)")
    setup_logging(args.quiet)
    res = follow(
        FollowModel(**torch_predictor(model, device=str(args.device), crop=crop, weight=str(args.weight))),
        data_path,
        out,
        batch_size=batch_size,
        update_every=number("update-every", args.update_every, float),
        idle_timeout=number("idle-timeout", args.idle_timeout, float),
        final_pass=not args.no_final_pass,
        diffraction_units=load.diffraction_units,
        overwrite=bool(getattr(args, "overwrite", False)),  # --overwrite: from the CLI-honesty branch
    )
    print(res.summary())
    return 0


def _refine_options(args: argparse.Namespace):
    """(RefineConfig | None, FinetuneConfig | None, save dir | None) from the flags."""
    from pathlib import Path

    from ..reconstruct.finetune import FinetuneConfig
    from ..reconstruct.refine import RefineConfig

    epochs = number("refine", args.refine, int)
    if epochs < 0:
        raise ConfigError(f"--refine: expected an integer >= 0, got {args.refine!r}")
    if str(args.refine_loss) not in ("poisson", "amplitude"):
        raise ConfigError(f"--refine-loss: expected poisson or amplitude, got {args.refine_loss!r}")
    rbatch = number("refine-batch", args.refine_batch, int)
    if rbatch < 1:
        raise ConfigError(f"--refine-batch: expected an integer >= 1, got {args.refine_batch!r}")
    if epochs == 0 and (args.refine_probe or args.refine_positions):
        raise ConfigError("--refine-probe/--refine-positions need --refine E with E >= 1")
    regs = {}
    for flag, field, positive in (("refine-prior", "prior_weight", False), ("refine-prior-highpass", "prior_highpass", False),
                                  ("refine-smooth", "smooth_weight", False), ("refine-smooth-sigma", "smooth_sigma", True)):
        raw = getattr(args, flag.replace("-", "_"))
        v = number(flag, raw, float)
        if not (v < float("inf") and (v > 0 if positive else v >= 0)):
            raise ConfigError(f"--{flag}: expected a number {'>' if positive else '>='} 0, got {raw!r}")
        regs[field] = v
    refine = None
    if epochs > 0:
        refine = RefineConfig(
            epochs=epochs, loss=str(args.refine_loss), batch_size=rbatch,  # type: ignore[arg-type]  # loss: one of argparse's choices (a Literal)
            probe=bool(args.refine_probe), positions=bool(args.refine_positions),
            momentum=number("refine-momentum", args.refine_momentum, float), **regs,
        )
    ft = number("finetune", args.finetune, int)
    if ft < 0:
        raise ConfigError(f"--finetune: expected an integer >= 0, got {args.finetune!r}")
    save = None
    if args.save_finetuned is not None:
        if ft == 0:
            raise ConfigError("--save-finetuned needs --finetune E with E >= 1")
        save = Path(args.save_finetuned)
        if save.exists() and (not save.is_dir() or any(save.iterdir())):
            raise ConfigError(f"--save-finetuned: {save} exists and is not empty; choose a new folder")
    finetune = FinetuneConfig(epochs=ft) if ft > 0 else None
    return refine, finetune, save


def _grouping(model, args: argparse.Namespace):
    """DataConfig for --n-groups/--seed: the model's gridsize and saved neighbor_count."""
    from ..data.inputs import inference_data_config
    from ..io import is_model_path, read_model_info

    if not is_model_path(model):
        raise ConfigError("--n-groups/--seed: only supported with native models (convert a legacy bundle first)")
    info = read_model_info(model)
    n_groups = None if args.n_groups is None else number("n-groups", args.n_groups, int)
    seed = None if args.seed is None else number("seed", args.seed, int)
    try:
        return inference_data_config(info.config.gridsize, info.extra, n_groups=n_groups, seed=seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
