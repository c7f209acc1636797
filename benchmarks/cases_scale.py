"""Stitching at scale: 1e3 → 1e6 patches of 64×64 complex64, each size in a fresh subprocess
(clean peak RSS). Ours = `benchmarks/stitch_scale.py` (streamed `kernels.stitch`); TF-style =
`benchmarks/scale_worker.py` (full-canvas translate-and-sum), run only while TF's memory need —
the stack of all patches zero-padded to the canvas, n·S²·8 bytes, as TF's `shift_and_sum`
materialises it — fits the memory budget; beyond it the row reports the estimate instead."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from .common import REPO_ROOT, Context, Row, skipped
from .timing import stats_of

GROUP = "scale"
SIZE = 64
#: memory budget for the TF-style method (bytes); the target for ours is the same 2 GB
TF_STYLE_BUDGET = 2 * 1024**3


def _canvas(n: int) -> int:
    """Canvas side for a scan of n positions at ~4 px spacing: 4·sqrt(n) + patch size."""
    return int(math.ceil(4 * math.sqrt(n))) + SIZE


def _run(cmd: list[str], timeout: float) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit code {proc.returncode}")


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    sizes = [500, 5_000] if ctx.quick else [1_000, 10_000, 100_000, 1_000_000]
    script = REPO_ROOT / "benchmarks" / "stitch_scale.py"
    bw = ctx.limits.get("bandwidth_Bps")
    for n in sizes:
        S = _canvas(n)
        desc = f"stitch {n:,} complex64 64x64 patches onto a {S}x{S} canvas (subprocess)"
        name = f"stitch_scale/ours/{n}"
        base = f"stitch_scale/tf_style/{n}"
        if not script.exists():
            rows.append(skipped(name, GROUP, desc, "benchmarks/stitch_scale.py not found", baselines=[base]))
        else:
            reps = 1 if (ctx.quick or n > 100_000) else 3
            times, rss, res = [], [], {}
            try:
                for r in range(reps):
                    out = ctx.workdir / f"scale_{n}_{r}.json"
                    ctx.log(f"  {name} (run {r + 1}/{reps})")
                    _run([sys.executable, str(script), "--patches", str(n), "--size", str(SIZE), "--canvas", str(S),
                          "--no-baseline", "--threads", str(ctx.threads), "--json", str(out)], timeout=1800)
                    res = json.loads(out.read_text())
                    times.append(res["stitch"]["stitch_s"])
                    rss.append(res["peak_rss_mb"])
                st = stats_of(times, warmup=0)
                moved = res["stitch"]["bytes_moved_per_s"] * res["stitch"]["stitch_s"]
                rows.append(Row(name, GROUP, desc + " via benchmarks/stitch_scale.py (streamed kernels.stitch; patch generation not timed)",
                                st, items=n, unit="patches/s", baselines=[base],
                                metrics={"peak_rss_mb": max(rss), "canvas": S, "bytes_moved_per_s": moved / st.median_s,
                                         "fraction_of_bandwidth": (moved / st.median_s / bw) if bw else None}))
            except Exception as exc:  # noqa: BLE001
                rows.append(skipped(name, GROUP, desc, f"error: {exc}", baselines=[base]))
        need = n * S * S * 8
        bdesc = f"{desc}: TF-style full-canvas translate-and-sum (scale_worker.py)"
        if need > TF_STYLE_BUDGET:
            rows.append(skipped(base, GROUP, bdesc, f"out of memory budget: TF's padded stack needs {need / 1024**3:,.1f} GB "
                                f"> {TF_STYLE_BUDGET / 1024**3:.0f} GB", role="baseline",
                                metrics={"estimated_memory_gb": need / 1024**3}))
            continue
        try:
            out = ctx.workdir / f"tfstyle_{n}.json"
            ctx.log(f"  {base}")
            _run([sys.executable, "-m", "benchmarks.scale_worker", "--patches", str(n), "--canvas", str(S),
                  "--threads", str(ctx.threads), "--json", str(out)], timeout=3600)
            res = json.loads(out.read_text())
            rows.append(Row(base, GROUP, bdesc + " (1 run)", stats_of([res["seconds"]]), items=n, unit="patches/s", role="baseline",
                            metrics={"peak_rss_mb": res["peak_rss_mb"], "canvas": res["canvas"], "estimated_memory_gb": need / 1024**3}))
        except Exception as exc:  # noqa: BLE001
            rows.append(skipped(base, GROUP, bdesc, f"error: {exc}", role="baseline"))
    return rows
