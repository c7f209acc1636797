"""Live reconstruction (`ptychopinn-onnx --follow`, docs/beamline.md): what frame rate the
follower keeps up with, and the latency from a frame's write to its appearance in the written canvas.

Rows (N = 64, gridsize 1, default ModelConfig (quick: n_filters_scale 1), ONNX Runtime CPU,
`threads` intra-op threads):

- `live/batch`: the batch runner (`run_onnx`) on the finished file: frames/s (the baseline).
- `live/capacity`: the follower on the same finished file (every frame already written, so the
  follower is backlogged from the start): frames/s of the live pass = the highest sustained rate
  it can keep up with. The final pass (same cost as `live/batch`) is excluded (fixed factor).
- `live/rate_<R>`: a writer process (`python -m ptychopinn.simulate.stream`) plays the scan at R
  frames/s while the follower (in this process) rewrites `reconstruction.npz` after every batch
  (`update_every=0`, no PNGs). Metrics: latency write→written canvas p50/p95 (from the writer's
  `timestamp` dataset), peak backlog, frames/s achieved, `kept_up` (peak backlog ≤ 2 batches).
  Rates are fractions of the measured capacity (quick: 0.5×; full: 0.25×, 0.5×, 0.9×, 1.5×), so
  the last full row shows the behaviour when it cannot keep up: nothing is dropped, the backlog
  (on disk, not in memory) and the latency grow linearly, and the follower catches up after the
  scan ends.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from .common import REPO_ROOT, Context, Row, skipped
from .timing import stats_of

GROUP = "live"
BATCH = 64


def _writer(scan, live, rate: float, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "ptychopinn.simulate.stream", str(scan), str(live), "--rate", f"{rate:g}", "--start-delay", "0.2"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(ctx: Context) -> list[Row]:
    desc_b = "ptychopinn-onnx batch run on the finished file, {M} frames (frames/s)"
    desc_c = "--follow on a file already written ({M} frames, backlogged): sustained frames/s of the live pass"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return [skipped("live/batch", GROUP, desc_b.format(M="-"), "onnxruntime not installed"),
                skipped("live/capacity", GROUP, desc_c.format(M="-"), "onnxruntime not installed")]
    import torch

    from ptychopinn import data, io
    from ptychopinn.config import ModelConfig
    from ptychopinn.interop.onnx import export_onnx, run_onnx
    from ptychopinn.interop.onnx.follow import follow_onnx
    from ptychopinn.model import PtychoPINN
    from ptychopinn.simulate.stream import stream_scan

    M = 96 if ctx.quick else 384
    repeats = 1 if ctx.quick else 3
    threads = ctx.threads or 1
    work = ctx.workdir / "live"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    nfs = 1 if ctx.quick else 2  # quick: a smoke test of the path; full: the default ModelConfig
    io.save_model(PtychoPINN(ModelConfig(N=64, gridsize=1, n_filters_scale=nfs), intensity_scale=91.0), work / "model")
    export_onnx(work / "model", work / "model.onnx", verify=False)
    rng = np.random.default_rng(0)
    side = int(np.sqrt(M)) + 1
    gx, gy = np.meshgrid(np.arange(side) * 3.0, np.arange(side) * 3.0)  # a raster: the canvas grows row by row
    arrays = dict(diffraction=(rng.random((M, 64, 64)) ** 2 * 5).astype(np.float32),
                  xcoords=40 + gx.reshape(-1)[:M] + rng.uniform(0, 0.5, M), ycoords=40 + gy.reshape(-1)[:M] + rng.uniform(0, 0.5, M),
                  probeGuess=(rng.random((64, 64)) + 1j * rng.random((64, 64))).astype(np.complex64))
    scan = work / "scan.h5"
    data.save_scan_h5(scan, **arrays)
    finished = work / "finished.h5"
    stream_scan(arrays, finished, float("inf"))
    factor = float(data.normalization_factor(arrays["diffraction"]))
    del arrays

    rows: list[Row] = []
    times = []
    for r in range(repeats + 1):  # first call warms ORT up
        ctx.log(f"  live/batch ({r}/{repeats})")
        t = time.perf_counter()
        run_onnx(work / "model.onnx", finished, None, threads=threads)
        times.append(time.perf_counter() - t)
    rows.append(Row("live/batch", GROUP, desc_b.format(M=M), stats_of(times[1:]), items=M, unit="frames/s", role="baseline",
                    metrics={"threads": threads, "n_filters_scale": nfs}))

    live_s, inf_s = [], []
    for r in range(repeats):
        ctx.log(f"  live/capacity ({r + 1}/{repeats})")
        res = follow_onnx(work / "model.onnx", finished, None, threads=threads, norm_factor=factor, idle_timeout=30)
        assert res.stats.frames == M
        live_s.append(res.stats.live_s)
        inf_s.append(res.stats.inference_s)
    capacity = M / float(np.median(live_s))
    rows.append(Row("live/capacity", GROUP, desc_c.format(M=M), stats_of(live_s), items=M, unit="frames/s", baselines=["live/batch"],
                    metrics={"threads": threads, "batch": BATCH, "inference_fraction": float(np.median(inf_s) / np.median(live_s))}))

    fractions = (0.5,) if ctx.quick else (0.25, 0.5, 0.9, 1.5)
    for frac in fractions:
        rate = max(1.0, round(capacity * frac))
        name = f"live/rate_{frac:g}x"
        d = (f"writer at {frac:g}x capacity ({rate:g} frames/s, {M} frames) and the follower concurrently; "
             "outputs rewritten after every batch")
        try:
            live = work / f"live_{frac:g}.h5"
            out = work / f"out_{frac:g}"
            ctx.log(f"  {name} ({rate:g} frames/s)")
            w = _writer(scan, live, rate, threads)
            # fixed factor: the steady-state pipeline latency (without it the first picture waits for
            # the 64 frames that fix the provisional factor: 64 / rate seconds)
            res = follow_onnx(work / "model.onnx", live, out, threads=threads, update_every=0.0, idle_timeout=30, images=False,
                              formats=("npz",), norm_factor=factor)
            _, err = w.communicate(timeout=600)
            if w.returncode != 0:
                raise RuntimeError(f"writer failed: {err.strip().splitlines()[-1] if err.strip() else w.returncode}")
            s = res.stats
            p50, p95 = s.latency.percentile(50), s.latency.percentile(95)
            rows.append(Row(name, GROUP, d, stats_of([s.live_s]), items=s.frames, unit="frames/s", baselines=["live/capacity"],
                            metrics={"writer_rate": rate, "fraction_of_capacity": frac, "latency_p50_s": p50, "latency_p95_s": p95,
                                     "max_backlog": s.max_backlog, "kept_up": s.max_backlog <= 2 * BATCH, "frames": s.frames,
                                     "updates": s.updates, "ended_by": s.ended_by}))
        except Exception as exc:  # noqa: BLE001 - a failed row is reported, the suite goes on
            rows.append(skipped(name, GROUP, d, f"failed: {exc}"))
    return rows
