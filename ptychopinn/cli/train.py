"""`ptychopinn train`: train a model on a scan file and write a native model directory."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..messages import one_line_warnings

HELP = "train a PtychoPINN model on a scan (NPZ/HDF5) and write a native model directory"

_BOOL = argparse.BooleanOptionalAction
#: exit code after Ctrl-C (128 + SIGINT, the shell convention)
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Values are converted in run(): bad values (also from --config files) give one-line errors.
    # None means "the config dataclass default".
    a = parser.add_argument
    a("--data", metavar="TRAIN.npz", help="training scan (NPZ or HDF5, scan contract)")
    a("--out", metavar="MODEL_DIR", help="output model directory (also holds checkpoint/ and metrics.jsonl)")
    a("--epochs", metavar="E", help="training epochs (default 50)")
    a("--gridsize", metavar="G", help="patterns per group side, C = G² (default 1)")
    a("--n-groups", metavar="K", help="number of groups (default: one per scan position)")
    a("--neighbor-count", metavar="K", help="nearest neighbours considered per group (default 4)")
    a("--batch-size", metavar="B", help="groups per batch (default 16); under torchrun the GLOBAL batch, split across processes")
    a("--nphotons", metavar="P", help="photons per pattern for the intensity scale (default 1e9, or the scan's _metadata nphotons; "
      "a flag that disagrees with the metadata is an error)")
    a("--n-filters-scale", metavar="F", help="width multiplier of the network (default 2)")
    a("--seed", metavar="S", help="seed of grouping, weights and shuffling (default 0)")
    a("--lr", metavar="LR", help="Adam learning rate (default 1e-3)")
    a("--validation-fraction", metavar="F", help="fraction of scan positions (a region) held out (default 0.05)")
    a("--model-type", metavar="TYPE", help="pinn (Poisson NLL, default) or supervised (MAE to objectGuess)")
    a("--nll-form", metavar="FORM", help="Poisson NLL form: mean (Keras 3, default) or full_sum (SavedModel era)")
    a("--mae-weight", metavar="W", help="weight of the diffraction-amplitude MAE term (default 0)")
    a("--nll-weight", metavar="W", help="weight of the Poisson NLL term (default 1)")
    a("--device", metavar="DEV", help="auto (default: CUDA when present), cpu, cuda, cuda:1, mps")
    a("--amp", metavar="MODE", help="mixed precision: none (default), bf16 or fp16 (GPU)")
    a("--precision", metavar="P", help="float32 (default) or bf16: the same as --amp none / --amp bf16 (the reconstruct flag's name)")
    a("--num-workers", metavar="W", help="DataLoader worker processes (default 0)")
    a("--exact-gradients", metavar="MODE",
      help="float64 master weights: the same model for any thread or process count; auto (default) = on only with --deterministic")
    a("--deterministic", action=_BOOL, default=None,
      help="reproducible training: seed everything, deterministic kernels, float64 master weights (bit-identical across threads and torchrun processes; slower)")
    a("--resume", action="store_true", default=False, help="continue from MODEL_DIR/checkpoint/")
    a("--compile", action=_BOOL, default=None, help="torch.compile the model")
    a("--probe-big", action=_BOOL, default=None, help="model the border outside the central N/2 (default on)")
    a("--object-big", action=_BOOL, default=None, help="one object patch per channel (default on)")
    a("--probe-mask", action=_BOOL, default=None, help="multiply the exit wave by the probe disc (default off)")
    a("--amp-activation", metavar="ACT", help="amplitude activation: sigmoid (default), swish, softplus, relu")
    a("--quiet", action="store_true", default=False, help="no progress bar and no per-epoch log lines")
    # training features (issue 14): schedules, stages, stopping, accumulation, loggers, generators
    a("--scheduler", metavar="KIND", help="learning-rate schedule: plateau (default), exponential or cosine")
    a("--warmup-epochs", metavar="W", help="linear warm-up epochs at the start (default 0)")
    a("--min-lr-ratio", metavar="R", help="floor of the cosine/exponential schedule as a fraction of the learning rate (default 0)")
    a("--lr-gamma", metavar="G", help="per-epoch factor of the exponential schedule (default 0.95)")
    a("--stages", metavar="SPEC",
      help="training stages 'EPOCHS[:LR][:NAME=W,...];...' e.g. '10:1e-3:nll=1,mae=0;5:1e-4:mae=0.1' (epochs = their sum)")
    a("--early-stop-patience", metavar="P", help="stop when the monitored loss has not improved for P epochs (default 0 = never)")
    a("--keep-best", metavar="K", help="keep the K best epochs' models under MODEL_DIR/best/ (default 0)")
    a("--monitor", metavar="NAME", help="monitored loss: auto (default: val_loss, or loss without validation), val_loss, loss")
    a("--accumulate-grad-batches", metavar="A", help="micro-batches per optimiser step, = a batch A times larger (default 1)")
    a("--clip-grad-norm", metavar="G", help="clip the global gradient norm to G (default 0 = off)")
    a("--logger", metavar="KIND", help="metrics logger: csv (default, MODEL_DIR/metrics.csv), tensorboard, mlflow, none")
    a("--generator", metavar="NAME", help="network family: cnn (default, TF parity) or fno (spectral convolutions)")
    a("--attention", metavar="KIND", help="attention after each CNN encoder block: none (default), cbam, eca")
    add_load_arguments(parser)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--diffraction-units, --pixel-size, --crop-detector, --bin (how the scan file is read)."""
    a = parser.add_argument
    a("--diffraction-units", metavar="UNITS",
      help="counts or amplitude: what 'diffraction' holds (default: the file's declaration, else integer dtypes = counts, floats = amplitudes); beats file metadata")
    a("--pixel-size", metavar="M", help="the positions are metres: metres per object pixel (default: pixels, or the file's metadata)")
    a("--crop-detector", action=_BOOL, default=None, help="crop frames larger than the model's N around the mean-pattern centroid")
    a("--bin", metavar="B", help="sum BxB blocks of detector pixels (counts) first, e.g. 128x128 frames --bin 2 for N=64")


def load_options(args: argparse.Namespace) -> Any:
    """`data.LoadOptions` from the parsed load flags (and one-line warnings for the run)."""
    from ..data.options import load_options_from_flags

    one_line_warnings()
    return load_options_from_flags(
        getattr(args, "diffraction_units", None), getattr(args, "pixel_size", None),
        bool(getattr(args, "crop_detector", False)), getattr(args, "bin", None),
    )


def number(flag: str, value: Any, kind: Callable[[Any], Any]) -> Any:
    """`value` as int/float, or a one-line ConfigError naming the flag."""
    try:
        if kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{flag}: expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def required_path(flag: str, value: Any, *, must_exist: bool = True) -> Path:
    """The path given to `--flag` (ConfigError when missing; DataError-style message when absent)."""
    if value in (None, ""):
        raise ConfigError(f"--{flag} is required")
    p = Path(str(value))
    if must_exist and not p.exists():
        raise ConfigError(f"--{flag}: {p} does not exist")
    return p


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """`cls(**values)` (None values dropped), turning ValueError into a one-line ConfigError."""
    kwargs = {k: v for k, v in values.items() if v is not None}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def setup_logging(quiet: bool) -> None:
    """INFO lines of the 'ptychopinn' logger on stderr (once); under `quiet` only warnings,
    and not the CPU-fallback notice ("ptychopinn.device")."""
    from ..io.device import CPU_FALLBACK_LOGGER

    logger = logging.getLogger("ptychopinn")
    if not any(getattr(h, "_ptychopinn_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ptychopinn: %(message)s"))
        handler._ptychopinn_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger(CPU_FALLBACK_LOGGER).setLevel(logging.ERROR if quiet else logging.NOTSET)


def check_nphotons_flag(data_path: Path, nphotons: float | None) -> None:
    """An explicit --nphotons that disagrees with the scan's `_metadata` nphotons is an error
    (explicit flags never silently lose against, nor silently override, scan metadata)."""
    if nphotons is None:
        return
    from ..data import load_scan
    from ..errors import PtychoPINNError

    try:
        with warnings.catch_warnings():  # the training run itself reports the scan's warnings
            warnings.simplefilter("ignore")
            meta = load_scan(data_path, check_values=False).metadata
    except PtychoPINNError:
        return  # the training run reports a bad scan file itself
    value = meta.get("nphotons") if isinstance(meta, dict) else None
    if value is None:
        return
    try:
        same = float(value) == float(nphotons)
    except (TypeError, ValueError):
        return  # the loader reports a malformed value itself
    if not same:
        raise ConfigError(
            f"--nphotons {nphotons:g} disagrees with {data_path}: key '_metadata.nphotons' = {float(value):g}; "
            "drop --nphotons to use the scan's value"
        )


def interrupted_message(out: Path) -> str:
    """The one line printed when training is interrupted (Ctrl-C)."""
    from ..train.checkpoint import CHECKPOINT_DIR
    from ..train.state import STATE_JSON

    ckpt = out / CHECKPOINT_DIR
    try:
        epoch = json.loads((ckpt / STATE_JSON).read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"ptychopinn: interrupted before the first checkpoint; nothing to resume in {out} (run the command again)"
    return f"ptychopinn: interrupted; the last checkpoint ({epoch} epochs) is {ckpt}; run the same command with --resume to continue"


def _opt(flag: str, value: Any, kind: Callable[[Any], Any]) -> Any:
    return None if value is None else number(flag, value, kind)


def configs_from_args(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(ModelConfig, DataConfig, TrainConfig) from the parsed flags."""
    from ..config import DataConfig, ModelConfig, TrainConfig

    gridsize = _opt("gridsize", args.gridsize, int)
    model = build_config(
        ModelConfig,
        {
            "gridsize": gridsize,
            "n_filters_scale": _opt("n-filters-scale", args.n_filters_scale, int),
            "probe_big": args.probe_big,
            "object_big": args.object_big,
            "probe_mask": args.probe_mask,
            "amp_activation": None if args.amp_activation is None else str(args.amp_activation),
            "generator": None if args.generator is None else str(args.generator),
            "attention": None if args.attention in (None, "none") else str(args.attention),
        },
    )
    data = build_config(
        DataConfig,
        {
            "gridsize": model.gridsize,
            "n_groups": _opt("n-groups", args.n_groups, int),
            "neighbor_count": _opt("neighbor-count", args.neighbor_count, int),
            "seed": _opt("seed", args.seed, int),
            "nphotons": _opt("nphotons", args.nphotons, float),
        },
    )
    train = build_config(
        TrainConfig,
        {
            "epochs": _opt("epochs", args.epochs, int),
            "batch_size": _opt("batch-size", args.batch_size, int),
            "learning_rate": _opt("lr", args.lr, float),
            "validation_fraction": _opt("validation-fraction", args.validation_fraction, float),
            "model_type": None if args.model_type is None else str(args.model_type),
            "nll_form": None if args.nll_form is None else str(args.nll_form),
            "mae_weight": _opt("mae-weight", args.mae_weight, float),
            "nll_weight": _opt("nll-weight", args.nll_weight, float),
            "seed": _opt("seed", args.seed, int),
            "deterministic": args.deterministic,
            "device": None if args.device is None else str(args.device),
            "compile": args.compile,
            "amp": _amp(args),
            "num_workers": _opt("num-workers", args.num_workers, int),
            "exact_gradients": None if args.exact_gradients is None else str(args.exact_gradients),
            "scheduler": None if args.scheduler is None else str(args.scheduler),
            "warmup_epochs": _opt("warmup-epochs", args.warmup_epochs, int),
            "min_lr_ratio": _opt("min-lr-ratio", args.min_lr_ratio, float),
            "lr_gamma": _opt("lr-gamma", args.lr_gamma, float),
            "stages": args.stages,
            "early_stop_patience": _opt("early-stop-patience", args.early_stop_patience, int),
            "keep_best": _opt("keep-best", args.keep_best, int),
            "monitor": None if args.monitor is None else str(args.monitor),
            "accumulate_grad_batches": _opt("accumulate-grad-batches", args.accumulate_grad_batches, int),
            "clip_grad_norm": _opt("clip-grad-norm", args.clip_grad_norm, float),
            "logger": None if args.logger is None else str(args.logger),
        },
    )
    if train.stages and args.epochs is not None and train.epochs != _opt("epochs", args.epochs, int):
        raise ConfigError(f"--epochs {args.epochs} differs from the stages' total of {train.epochs} epochs (give one of them)")
    return model, data, train


def run(args: argparse.Namespace) -> int:
    from ..train import train

    data_path = required_path("data", args.data)
    out = required_path("out", args.out, must_exist=False)
    model_cfg, data_cfg, train_cfg = configs_from_args(args)
    check_nphotons_flag(data_path, _opt("nphotons", args.nphotons, float))
    from ..distributed import session

    main = True
    try:
        # under torchrun: one process group for the run (NCCL on GPUs, gloo on CPU); rank 0 reports
        with session(train_cfg.device) as info:
            main = info is None or info.is_main
            setup_logging(args.quiet or not main)
            result = train(
                data_path, model_cfg, data_cfg, train_cfg, out_dir=out, resume=bool(args.resume), progress=not args.quiet and main,
                load=load_options(args),
            )
    except KeyboardInterrupt:
        if main:
            print(interrupted_message(out), file=sys.stderr)
        return EXIT_INTERRUPTED
    if not main:
        return 0
    last = result.history[-1] if result.history else {}
    val = last.get("val_loss")
    print(
        f"wrote model to {out} ({len(result.history)} epochs; final loss {last.get('loss', float('nan')):.6g}"
        + (f", val_loss {val:.6g}" if val is not None else "")
        + f"; metrics in {out / 'metrics.jsonl'})"
    )
    return 0


def _amp(args: argparse.Namespace) -> str | None:
    """--amp, or --precision spelled as an AMP mode (both given: they must agree)."""
    precision = getattr(args, "precision", None)
    if precision is None:
        return None if args.amp is None else str(args.amp)
    as_amp = {"float32": "none", "bf16": "bf16"}.get(str(precision))
    if as_amp is None:
        raise ConfigError(f"--precision: expected float32 or bf16, got {precision!r}")
    if args.amp is not None and str(args.amp) != as_amp:
        raise ConfigError(f"--precision {precision} contradicts --amp {args.amp}")
    return as_amp

