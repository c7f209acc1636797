"""`ptychopinn bench`: run the benchmark suite of a source checkout (`python -m benchmarks`).

The suite lives in `benchmarks/` next to the package sources and is not installed with the
wheel; from an installed wheel this command fails with a one-line error saying so.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ..errors import ConfigError

HELP = "run the benchmark suite (source checkout only): kernels, inference, training, stitching scale vs TF"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Mirrors benchmarks.suite.add_arguments without importing the checkout at parse time.
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI smoke test, < 2 min)")
    parser.add_argument("--only", action="append", metavar="NAME", default=None,
                        help="run one group (limits, kernels, inference, training, scale, quality) or a row-name prefix; repeatable")
    parser.add_argument("--json", metavar="OUT", default=None, help="write results + machine description as JSON")
    parser.add_argument("--markdown", metavar="MD", default=None, help="write a Markdown report (e.g. docs/benchmarks.md)")
    parser.add_argument("--threads", type=int, default=0, help="threads for torch / TF / ONNX Runtime (default: available cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def find_checkout() -> Path:
    """The source checkout holding `benchmarks/suite.py` (the folder above the `ptychopinn` package)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "suite.py").is_file():
        raise ConfigError(
            f"{root / 'benchmarks'}: benchmark suite not found (it ships only with the source checkout; "
            "clone the repository and run `ptychopinn bench` or `python -m benchmarks` there)"
        )
    return root


def run(args: argparse.Namespace) -> int:
    root = find_checkout()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    suite = importlib.import_module("benchmarks.suite")
    return int(suite.run_from_args(args))
