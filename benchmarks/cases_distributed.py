"""Distributed runs: `ptychopinn reconstruct` and `ptychopinn train` under `torchrun` with 1, 2, ...
processes.

Each row is the wall time of the whole command (process start, grouping, sharded inference and
stitching or one training epoch, the all-reduces, rank 0 writing) on a simulated scan, gloo on
CPU (NCCL when the benchmark runs with CUDA). The 1-process torchrun run is the baseline;
`rel_l2_vs_1` checks that the stitched object (reconstruction) or the worst weight tensor
(training, float64 master weights on CPU) does not change with the process count. Full mode
only: on a two-core machine the rows show the cost of the path, not a speed-up.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from .common import REPO_ROOT, Context, Row, skipped
from .timing import stats_of

GROUP = "distributed"


def _torchrun(nproc: int, argv: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "ptychopinn", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ptychopinn: error:")] or proc.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit code {proc.returncode}")
    return seconds


def run(ctx: Context) -> list[Row]:
    procs = [1, 2] + ([4] if (os.cpu_count() or 1) >= 8 else [])
    desc = "ptychopinn reconstruct under torchrun, {p} process(es), {n} groups (wall time of the command)"
    if ctx.quick:
        return [skipped(f"distributed/{k}/{p}proc", GROUP, desc.format(p=p, n="-"), "full mode only")
                for k in ("reconstruct", "train") for p in procs]
    import torch

    from ptychopinn import io
    from ptychopinn.config import ModelConfig, SimulationConfig
    from ptychopinn.model import PtychoPINN
    from ptychopinn.simulate import simulate_to_file
    from ptychopinn.train.inputs import normalised_probe

    n = 512
    work = ctx.workdir / "distributed"
    work.mkdir(parents=True, exist_ok=True)
    scan = simulate_to_file(SimulationConfig(N=64, object_size=192, n_positions=n, nphotons=1e6, seed=1), work / "scan.npz")
    from ptychopinn.data import load_scan

    probe = normalised_probe(load_scan(scan))
    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(n_filters_scale=1), probe=probe, intensity_scale=1.0)
    io.save_model(model, work / "model")
    per_proc = max(1, (ctx.threads or os.cpu_count() or 1) // max(procs))
    rows: list[Row] = []
    rows += _rows(ctx, "reconstruct", procs, per_proc, n, desc,
                  lambda out: ["reconstruct", "--model", str(work / "model"), "--data", str(scan), "--out", str(out),
                               "--device", ctx.device, "--quiet"],
                  _object_of, repeats=2)
    train_desc = ("ptychopinn train under torchrun, {p} process(es), one epoch of {n} groups, global batch 16, "
                  "nfs 1 (wall time of the command)")
    rows += _rows(ctx, "train", procs, per_proc, n, train_desc,
                  lambda out: ["train", "--data", str(scan), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                               "--n-filters-scale", "1", "--seed", "0", "--device", ctx.device, "--quiet"],
                  _weights_of, repeats=1)
    return rows


def _object_of(out) -> dict[str, np.ndarray]:
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        return {"object": z["object"]}


def _weights_of(out) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(str(out / "model.safetensors")).items() if v.dtype.kind == "f"}


def _rows(ctx, kind, procs, per_proc, n, desc, argv_of, result_of, *, repeats: int) -> list[Row]:
    """One row per process count; `rel_l2_vs_1` = worst relative L2 of `result_of` vs 1 process."""
    rows: list[Row] = []
    reference = None
    work = ctx.workdir / "distributed"
    for p in procs:
        name = f"distributed/{kind}/{p}proc"
        d = desc.format(p=p, n=n)
        try:
            times = []
            for r in range(repeats):
                out = work / f"{kind}_{p}_{r}"
                ctx.log(f"  {name} (run {r + 1}/{repeats})")
                times.append(_torchrun(p, argv_of(out), per_proc))
            got = result_of(work / f"{kind}_{p}_0")
            if reference is None:
                reference = got
            err = max(float(np.linalg.norm(got[k] - reference[k]) / max(np.linalg.norm(reference[k]), 1e-30)) for k in reference)
            rows.append(Row(name, GROUP, d, stats_of(times), items=n, unit="groups/s",
                            baselines=[] if p == 1 else [f"distributed/{kind}/1proc"],
                            metrics={"processes": p, "threads_per_process": per_proc, "rel_l2_vs_1": err}))
        except Exception as exc:  # noqa: BLE001 - a failed row is reported, the suite goes on
            rows.append(skipped(name, GROUP, d, f"failed: {exc}"))
    return rows
