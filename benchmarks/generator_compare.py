"""Generators side by side on a reduced demo: `python -m benchmarks.generator_compare [--out F.json]`.

One simulated lines-object scan (the demo's recipe, scaled down: N=64, gridsize 2, 256
positions, object 128 px, 1e9 photons), and for each generator variant (cnn, fno, cnn+cbam,
cnn+eca) the same training (n_filters_scale 1, batch 8, `--epochs` epochs, Adam 1e-3, the
default plateau schedule, float32 fast path) then a reconstruction of the scan against its
ground truth: SSIM of amplitude and phase, training seconds, parameter count. One JSON row per
variant; the table in docs/model.md ("Generators") comes from this script.

`--recipe phase`: the quality recipe of benchmarks/cases_refine.py instead (224² smooth phase
object, N=64, gridsize 1, random scan, 1e9 photons; train on `--n-positions` patterns, score on
256 held-back patterns of the same object).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "cnn": {},
    "fno": {"generator": "fno"},
    "cnn+cbam": {"attention": "cbam"},
    "cnn+eca": {"attention": "eca"},
}


def main(argv: list[str] | None = None) -> int:
    import torch

    from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig
    from ptychopinn.reconstruct import reconstruct
    from ptychopinn.simulate import simulate_to_file
    from ptychopinn.train import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--n-positions", type=int, default=256)
    p.add_argument("--only", nargs="*", default=list(VARIANTS))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--recipe", choices=("demo", "phase"), default="demo")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.recipe == "phase":
            from benchmarks.cases_refine import simulate_phase_object

            gs = 1
            scan = simulate_phase_object(224, args.n_positions, 1e9, seed=21)
            test = simulate_phase_object(224, 256, 1e9, seed=22)
        else:
            gs = 2
            sim = SimulationConfig(N=64, object_kind="lines", object_size=128, n_positions=args.n_positions, nphotons=1e9, seed=0)
            scan = test = simulate_to_file(sim, Path(tmp) / "scan.npz")
        for name in args.only:
            mc = ModelConfig(N=64, gridsize=gs, n_filters_scale=1, **VARIANTS[name])
            tc = TrainConfig(epochs=args.epochs, batch_size=8 if gs == 2 else 16, seed=0, device="cpu", logger="none")
            t0 = time.perf_counter()
            result = train(scan, mc, DataConfig(gridsize=gs, seed=0, nphotons=1e9), tc, progress=False)
            seconds = time.perf_counter() - t0
            rec = reconstruct(result.model, test, device="cpu")
            row = {
                "variant": name,
                "parameters": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
                "train_seconds": round(seconds, 1),
                "seconds_per_epoch": round(seconds / args.epochs, 2),
                "final_loss": result.history[-1]["loss"],
                "val_loss": result.history[-1]["val_loss"],
                "ssim_amplitude": round(rec.metrics["amplitude"]["ssim"], 4),
                "ssim_phase": round(rec.metrics["phase"]["ssim"], 4),
                "epochs": args.epochs,
                "n_positions": args.n_positions,
                "recipe": args.recipe,
                "threads": torch.get_num_threads(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
