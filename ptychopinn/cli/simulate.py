"""`ptychopinn simulate`: write a synthetic scan (NPZ, scan contract) from a SimulationConfig."""
from __future__ import annotations

import argparse
from pathlib import Path

from .train import number

HELP = "simulate a synthetic ptychography scan (Poisson-noisy diffraction) into an NPZ file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Values are converted in run() so that bad values (also from --config files) give a
    # one-line ConfigError instead of argparse's multi-line usage error.
    parser.add_argument("--out", default=None, metavar="FILE.npz", help="output NPZ path (required unless --stream; an existing file needs --overwrite)")
    parser.add_argument("--overwrite", action="store_true", default=False, help="replace an existing output file (atomically)")
    parser.add_argument("--N", default=64, metavar="N", help="diffraction pattern size: 64, 128 or 256 (default 64)")
    parser.add_argument("--object", dest="object", default="lines", metavar="KIND", help="synthetic object: lines or grf (default lines)")
    parser.add_argument("--object-size", default=256, metavar="PX", help="object side length in pixels (default 256)")
    parser.add_argument("--scan", default="random", metavar="KIND", help="scan path: random or grid (default random)")
    parser.add_argument("--n-positions", default=1024, metavar="M", help="positions of a random scan (default 1024)")
    parser.add_argument("--step", default=4.0, metavar="PX", help="grid scan step in pixels (default 4)")
    parser.add_argument("--nphotons", default=1e9, metavar="COUNT", help="mean photons per pattern (default 1e9)")
    parser.add_argument("--probe-scale", default=4.0, metavar="S", help="probe normalisation probe_scale (default 4)")
    parser.add_argument("--seed", default=0, metavar="SEED", help="random seed (default 0)")
    parser.add_argument("--probe-modes", default=1, metavar="K", help="incoherent probe modes, probeGuess (K, N, N) when K > 1 (default 1)")
    # live playback into an SWMR HDF5 file (ptychopinn/simulate/stream.py, docs/beamline.md)
    parser.add_argument("--stream", default=None, metavar="OUT.h5", help="play the scan into a live SWMR HDF5 file instead")
    parser.add_argument("--rate", default=100.0, metavar="HZ", help="--stream: frames per second (default 100)")
    parser.add_argument("--position-lag", default=0, metavar="K", help="--stream: write positions K frames behind the frames")


def run(args: argparse.Namespace) -> int:
    from ..config import SimulationConfig
    from ..io.atomic import check_output
    from ..simulate.forward import simulate_to_file

    config = SimulationConfig(
        N=number("N", args.N, int),
        object_kind=str(args.object),  # type: ignore[arg-type]
        object_size=number("object-size", args.object_size, int),
        scan=str(args.scan),  # type: ignore[arg-type]
        n_positions=number("n-positions", args.n_positions, int),
        step=number("step", args.step, float),
        nphotons=number("nphotons", args.nphotons, float),
        probe_scale=number("probe-scale", args.probe_scale, float),
        seed=number("seed", args.seed, int),
        probe_modes=number("probe-modes", args.probe_modes, int),
    )
    if args.stream is not None:
        return _stream(args, config)
    if args.out is None:
        from ..errors import ConfigError

        raise ConfigError("--out is required (or --stream OUT.h5)")
    out = Path(str(args.out))
    if out.exists():
        check_output(out, overwrite=bool(args.overwrite), directory=False, flag="--overwrite")
    path = simulate_to_file(config, out)
    print(f"wrote {path}")
    return 0


def _stream(args: argparse.Namespace, config) -> int:
    from ..simulate.forward import simulate
    from ..simulate.stream import stream_scan

    arrays = simulate(config)
    rep = stream_scan(arrays, args.stream, number("rate", args.rate, float), position_lag=number("position-lag", args.position_lag, int),
                      overwrite=bool(getattr(args, "overwrite", False)))  # --overwrite: added by the CLI-honesty branch
    print(f"streamed {rep.frames} frames into {rep.path} in {rep.seconds:.2f} s ({rep.rate:.1f} frames/s)")
    return 0
