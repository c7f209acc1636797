"""`ptychopinn demo`: simulate → train → reconstruct on the built-in lines object, in minutes on CPU.

Writes DIR/scan.npz, DIR/model/ (native model, metrics.jsonl) and DIR/reconstruction/
(reconstruction.npz/.h5, amplitude/phase/error-map PNGs, metrics.json). Everything is built in a
temporary sibling folder and renamed to DIR at the end, so a failed run leaves no DIR.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..errors import ConfigError
from .train import number, required_path, setup_logging

HELP = "simulate a small scan, train on it and reconstruct it (a few minutes on a CPU)"

# Defaults chosen by measurement (docs/usage.md, "The demo"): an epoch of 384 gridsize-2 groups
# takes about 6 s on 2 idle CPU cores, so 45 epochs take about 5 minutes.
DEFAULTS = {
    "epochs": 45,
    "n_positions": 384,
    "object_size": 128,
    "nphotons": 1e9,
    "n_filters_scale": 1,
    "batch_size": 8,
    "gridsize": 2,
    "seed": 0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    d = DEFAULTS
    a("--out", metavar="DIR", help="output folder (must not exist)")
    a("--epochs", default=d["epochs"], metavar="E", help=f"training epochs (default {d['epochs']})")
    a("--n-positions", default=d["n_positions"], metavar="M", help=f"scan positions (default {d['n_positions']})")
    a("--object-size", default=d["object_size"], metavar="PX", help=f"object side in pixels (default {d['object_size']})")
    a("--nphotons", default=d["nphotons"], metavar="P", help=f"photons per pattern (default {d['nphotons']:g})")
    a("--n-filters-scale", default=d["n_filters_scale"], metavar="F", help=f"network width (default {d['n_filters_scale']})")
    a("--batch-size", default=d["batch_size"], metavar="B", help=f"groups per batch (default {d['batch_size']})")
    a("--gridsize", default=d["gridsize"], metavar="G", help=f"group side (default {d['gridsize']})")
    a("--seed", default=d["seed"], metavar="S", help="seed of simulation and training (default 0)")
    a("--device", default="auto", metavar="DEV", help="auto (default), cpu, cuda, ...")
    a("--quiet", action="store_true", default=False, help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from ..config import DataConfig, ModelConfig, SimulationConfig, TrainConfig
    from ..io.atomic import folder_mode, strict_json_dumps
    from ..reconstruct import reconstruct
    from ..simulate import simulate_to_file
    from ..train import train

    out = required_path("out", args.out, must_exist=False)
    if out.exists():
        raise ConfigError(f"--out: {out} already exists (choose a new folder)")
    gridsize = number("gridsize", args.gridsize, int)
    seed = number("seed", args.seed, int)
    try:
        sim = SimulationConfig(
            N=64,
            object_kind="lines",
            object_size=number("object-size", args.object_size, int),
            n_positions=number("n-positions", args.n_positions, int),
            nphotons=number("nphotons", args.nphotons, float),
            seed=seed,
        )
        model_cfg = ModelConfig(N=64, gridsize=gridsize, n_filters_scale=number("n-filters-scale", args.n_filters_scale, int))
        data_cfg = DataConfig(gridsize=gridsize, seed=seed, nphotons=sim.nphotons)
        train_cfg = TrainConfig(
            epochs=number("epochs", args.epochs, int),
            batch_size=number("batch-size", args.batch_size, int),
            seed=seed,
            device=str(args.device),
            # the demo is about a picture in minutes: float32 weights (exactness across thread
            # counts and processes, `train --deterministic`, makes each step ~3x slower)
            exact_gradients="off",
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    setup_logging(args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    t0 = time.perf_counter()
    try:
        scan_path = simulate_to_file(sim, tmp / "scan.npz")
        print(f"simulated {sim.n_positions} patterns of a {sim.object_size}x{sim.object_size} lines object ({time.perf_counter() - t0:.0f} s)")
        result = train(scan_path, model_cfg, data_cfg, train_cfg, out_dir=tmp / "model", progress=not args.quiet)
        print(f"trained {train_cfg.epochs} epochs, final loss {result.history[-1]['loss']:.6g} ({time.perf_counter() - t0:.0f} s)")
        rec = reconstruct(result.model, scan_path, device=str(args.device), out_dir=tmp / "reconstruction")
        (tmp / "summary.json").write_text(
            strict_json_dumps(
                {
                    "simulation": sim.__dict__,
                    "seconds": time.perf_counter() - t0,
                    "metrics": {k: {m: rec.metrics[k][m] for m in ("ssim", "psnr", "ms_ssim")} for k in ("amplitude", "phase")}
                    if rec.metrics
                    else None,
                },
                indent=2,
            )
        )
        os.chmod(tmp, folder_mode())  # mkdtemp creates 0o700; the run folder follows the umask
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rdir = out / "reconstruction"
    print(f"pictures: {rdir / 'amplitude.png'}, {rdir / 'phase.png'}, {rdir / 'error_map.png'}")
    if rec.metrics is not None:
        a, p = rec.metrics["amplitude"], rec.metrics["phase"]
        print(f"amplitude SSIM {a['ssim']:.3f} PSNR {a['psnr']:.2f} dB | phase SSIM {p['ssim']:.3f} PSNR {p['psnr']:.2f} dB")
        print(f"metrics: {rdir / 'metrics.json'}  (total {time.perf_counter() - t0:.0f} s)")
    return 0
