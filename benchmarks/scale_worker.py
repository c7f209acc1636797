"""TF-style stitching at scale, run as a subprocess for a clean peak RSS:

    python -m benchmarks.scale_worker --patches N --canvas S --json OUT

TF's `reassemble_position`/`shift_and_sum` algorithm (every 64×64 patch zero-padded to the whole
canvas and translated there, chunks of 32; `references.stitch_full_canvas` with M = 64), in torch
so that it runs without TensorFlow. Reports seconds and peak RSS (ru_maxrss).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .references import stitch_full_canvas
from .stitch_scale import _peak_rss_mb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, required=True)
    ap.add_argument("--canvas", type=int, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    patches = torch.randn(a.patches, a.size, a.size, dtype=torch.complex64, generator=gen)
    rng = np.random.default_rng(0)
    pos = rng.uniform(a.size / 2, a.canvas - a.size / 2, size=(a.patches, 2))
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = stitch_full_canvas(patches, pos, M=a.size)
    seconds = time.perf_counter() - t0
    a.json.write_text(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "canvas": int(out.shape[-1]),
                                  "finite": bool(torch.isfinite(torch.view_as_real(out)).all())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
