"""`ptychopinn export-onnx MODEL -o FILE.onnx`: export the inference graph for ONNX Runtime."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

HELP = "export a model's inference graph to one self-describing .onnx file (for ptychopinn-onnx)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="native model directory/.zip, or a legacy TensorFlow wts.h5.zip")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.onnx",
                        help="output file, in an existing folder (written atomically; an existing file needs --overwrite)")
    parser.add_argument("--overwrite", action="store_true", default=False, help="replace an existing output file")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch self-check")


def run(args: argparse.Namespace) -> int:
    from ptychopinn.interop.onnx import export_onnx

    from ..io.atomic import check_output

    if not Path(str(args.model)).exists():
        raise ConfigError(f"MODEL: {args.model} does not exist")
    check_output(args.output, overwrite=bool(args.overwrite), directory=False, flag="--overwrite")
    report = export_onnx(args.model, args.output, opset=args.opset, verify=not args.no_verify)
    info = report.info
    check = "" if report.verify_rel_error is None else f", ONNX Runtime vs torch rel. error {report.verify_rel_error:.1e}"
    print(
        f"wrote {report.path} (N={info.N}, gridsize={info.gridsize}, opset {report.opset}, "
        f"{len(report.op_types)} op types, no DFT{check})"
    )
    return 0
