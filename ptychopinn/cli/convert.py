"""`ptychopinn convert`: legacy TF `wts.h5.zip` → native model directory, or back with --to-legacy."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, ModelFormatError

HELP = "convert a legacy TensorFlow wts.h5.zip to a native model (or a native model back with --to-legacy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("source", nargs="?", metavar="SOURCE", help="legacy wts.h5.zip (or its folder); with --to-legacy a native model")
    a("-o", "--out", metavar="OUT", help="native model directory (or .zip); with --to-legacy the wts.h5.zip to write")
    a("--to-legacy", action="store_true", default=False, help="write a K2-era TensorFlow wts.h5.zip from a native model")
    a("--overwrite", action="store_true", default=False, help="replace an existing non-empty output (atomically)")


def _to_native(source: Path, out: Path) -> str:
    from ptychopinn.interop import load_tf_bundle

    from .. import io

    if io.is_model_path(source):
        raise ConfigError(f"{source}: is already a native model (use --to-legacy to write a TensorFlow bundle)")
    legacy = load_tf_bundle(source)
    io.save_model(legacy.model, out, extra={"converted_from": legacy.provenance()})
    return f"wrote {out} (native model from era-{legacy.era} bundle {source}, N={legacy.config.N}, gridsize={legacy.config.gridsize})"


def _to_legacy(source: Path, out: Path) -> str:
    from ptychopinn.interop import write_tf_bundle

    from .. import io
    from ..config import DataConfig, TrainConfig, config_from_dict

    if not io.is_model_path(source):
        raise ModelFormatError(f"{source}: not a native model (a directory or .zip with config.json and model.safetensors)")
    model = io.load_model(source)
    training = (io.read_model_info(source).extra or {}).get("training") or {}
    data_config = train_config = None
    try:
        if isinstance(training.get("data_config"), dict):
            data_config = config_from_dict(DataConfig, training["data_config"])
        if isinstance(training.get("train_config"), dict):
            train_config = config_from_dict(TrainConfig, training["train_config"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{source}: config.json extra.training is not valid ({exc})") from None
    write_tf_bundle(model, out, data_config=data_config, train_config=train_config)
    return f"wrote {out} (K2-era TensorFlow bundle, N={model.config.N}, gridsize={model.config.gridsize})"


def run(args: argparse.Namespace) -> int:
    if not args.source:
        raise ConfigError("convert: SOURCE is required (a wts.h5.zip, or a native model with --to-legacy)")
    if not args.out:
        raise ConfigError("convert: -o/--out is required")
    source, out = Path(str(args.source)), Path(str(args.out))
    if not source.exists():
        raise ConfigError(f"convert: {source} does not exist")
    if source.resolve() == out.resolve():
        raise ConfigError(f"convert: output {out} is the source itself")
    from ..io.atomic import check_output

    if args.to_legacy:
        if out.exists() and out.is_dir():
            raise ConfigError(f"--out: {out} is a directory; --to-legacy writes a .zip file")
        check_output(out, overwrite=bool(args.overwrite), directory=False, flag="--overwrite")
        print(_to_legacy(source, out))
    else:
        check_output(out, overwrite=bool(args.overwrite), directory=out.suffix.lower() != ".zip", flag="--overwrite")
        print(_to_native(source, out))
    return 0
