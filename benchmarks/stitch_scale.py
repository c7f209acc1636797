"""Stitching at scale: `kernels.stitch` on many random complex64 patches, streamed chunk by chunk.

    python benchmarks/stitch_scale.py --patches 200000 --size 64 --canvas 4096 --json out.json

Patches are generated one chunk at a time (never all in memory) and accumulated into one
canvas with `stitch(..., out=(num, den))`. Reports wall time, patches/s, bytes/s and the peak
resident memory (VmHWM). For comparison it also runs, in the same process, the approach of
TF's `reassemble_position`: every patch zero-padded to the FULL canvas and translated there,
then summed. Its cost grows with n × canvas², so it runs on a small problem
(`--baseline-patches` on a `--baseline-canvas`²) where both methods are timed on identical
inputs (and checked to agree); the report gives the speed ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from ptychopinn.kernels import normalize, stitch, translate


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux: VmHWM of /proc/self/status (reset by exec). `ru_maxrss` is not used there: the kernel
    carries it over from the parent across fork + exec, so a worker started by a large parent
    would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def _chunk(gen: torch.Generator, k: int, size: int, canvas: int, device):
    """k random complex64 patches (size, size) and positions [x, y] inside the canvas."""
    patches = torch.randn(k, size, size, dtype=torch.complex64, generator=gen).to(device)
    lo, hi = size / 2, canvas - size / 2
    positions = (torch.rand(k, 2, dtype=torch.float64, generator=gen) * (hi - lo) + lo).to(device)
    return patches, positions


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_stitch(n: int, size: int, canvas: int, chunk: int, seed: int, device) -> dict:
    """Stream n patches in chunks of `chunk` onto a canvas² complex64 canvas."""
    gen = torch.Generator().manual_seed(seed)
    num = torch.zeros(canvas, canvas, dtype=torch.complex64, device=device)
    den = torch.zeros(canvas, canvas, dtype=torch.float32, device=device)
    t_gen = t_stitch = 0.0
    t0 = time.perf_counter()
    for s in range(0, n, chunk):
        k = min(chunk, n - s)
        a = time.perf_counter()
        patches, positions = _chunk(gen, k, size, canvas, device)
        b = time.perf_counter()
        stitch(patches, positions, (canvas, canvas), out=(num, den))
        _sync(device)
        t_stitch += time.perf_counter() - b
        t_gen += b - a
    image = normalize(num, den, 1e-9)
    _sync(device)
    wall = time.perf_counter() - t0
    patch_bytes = n * size * size * 8
    # read-modify-write of numerator (8 B) and weight sum (4 B) for every splatted window pixel
    canvas_bytes = n * (size + 1) ** 2 * (8 + 4) * 2
    return {
        "patches": n,
        "size": size,
        "canvas": canvas,
        "chunk": chunk,
        "wall_s": wall,
        "stitch_s": t_stitch,
        "generate_s": t_gen,
        "patches_per_s": n / t_stitch,
        "patch_bytes_per_s": patch_bytes / t_stitch,
        "bytes_moved_per_s": (patch_bytes + canvas_bytes) / t_stitch,
        "covered_fraction": float((den > 0).float().mean()),
        "finite": bool(torch.isfinite(torch.view_as_real(image)).all()),
    }


def _full_canvas_translate_sum(patches, positions, canvas: int, batch: int):
    """TF-style: pad every patch to the full canvas, translate the whole canvas, sum."""
    n, size, _ = patches.shape
    lo = canvas // 2 - size // 2
    num = torch.zeros(canvas, canvas, dtype=torch.complex64, device=patches.device)
    den = torch.zeros(canvas, canvas, dtype=torch.float32, device=patches.device)
    ones = torch.zeros(canvas, canvas, dtype=torch.float32, device=patches.device)
    ones[lo : lo + size, lo : lo + size] = 1
    for s in range(0, n, batch):
        p = patches[s : s + batch]
        full = torch.zeros(p.shape[0], canvas, canvas, dtype=p.dtype, device=p.device)
        full[:, lo : lo + size, lo : lo + size] = p
        shifts = (positions[s : s + batch] - canvas // 2).to(torch.float32)
        num += translate(full, shifts).sum(0)
        den += translate(ones, shifts).sum(0)
    return num, den


def run_baseline(n: int, size: int, canvas: int, seed: int, device) -> dict:
    gen = torch.Generator().manual_seed(seed + 1)
    patches, positions = _chunk(gen, n, size, canvas, device)
    t = time.perf_counter()
    num_b, den_b = _full_canvas_translate_sum(patches, positions, canvas, batch=8)
    _sync(device)
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    num_s, den_s = stitch(patches, positions, (canvas, canvas))
    _sync(device)
    t_st = time.perf_counter() - t
    rel = float(torch.linalg.vector_norm(num_s - num_b) / torch.linalg.vector_norm(num_b))
    return {
        "patches": n,
        "size": size,
        "canvas": canvas,
        "full_canvas_translate_s": t_base,
        "stitch_s": t_st,
        "speedup": t_base / t_st,
        "rel_l2_numerator_difference": rel,
        "note": "full-canvas translate-and-sum costs O(n * canvas^2); stitch costs O(n * size^2 + canvas^2)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--canvas", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=2048, help="patches generated and stitched per call")
    ap.add_argument("--baseline-patches", type=int, default=500)
    ap.add_argument("--baseline-canvas", type=int, default=512)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the report here (atomically)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    report = {
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "stitch": run_stitch(args.patches, args.size, args.canvas, args.chunk, args.seed, args.device),
        "peak_rss_mb_after_stitch": _peak_rss_mb(),
    }
    if not args.no_baseline:
        report["baseline"] = run_baseline(args.baseline_patches, args.size, args.baseline_canvas, args.seed, args.device)
    report["peak_rss_mb"] = _peak_rss_mb()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
