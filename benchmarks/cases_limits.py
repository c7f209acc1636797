"""Machine limits: memory bandwidth (large copy) and matmul GFLOP/s (float32, bfloat16).

The results are stored in `ctx.limits` so later cases can report their achieved fraction.
"""
from __future__ import annotations

import torch

from .common import Context, Row
from .timing import measure

GROUP = "limits"


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    reps = 5 if ctx.quick else 11
    # Large copy: 256 MiB (64 MiB quick) float32, far beyond the caches. Bytes moved = read + write.
    n = (64 if ctx.quick else 256) * 2**20 // 4
    src = torch.rand(n)
    dst = torch.empty_like(src)
    st = measure(lambda: dst.copy_(src), warmup=2, repeats=reps)
    moved = 2 * n * 4
    src = dst = torch.empty(0)  # free the buffers before the matmuls
    ctx.limits["bandwidth_Bps"] = moved / st.median_s
    rows.append(Row("limits/memcpy", GROUP, f"copy {n * 4 / 2**20:.0f} MiB float32 (bytes read + written)", st,
                    items=moved / 1e9, unit="GB/s", role="limit"))
    # Square matmul, 2·n³ FLOP per call.
    m = 1024 if ctx.quick else 2048
    for dtype, key in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
        a = torch.rand(m, m).to(dtype)
        b = torch.rand(m, m).to(dtype)
        c = torch.empty(m, m, dtype=dtype)
        st = measure(lambda: torch.mm(a, b, out=c), warmup=2, repeats=reps)
        flop = 2.0 * m**3
        ctx.limits[f"flops_{key}"] = flop / st.median_s
        rows.append(Row(f"limits/matmul_{key}", GROUP, f"{m}x{m} @ {m}x{m} {dtype} (torch.mm, 2n^3 FLOP)", st,
                        items=flop / 1e9, unit="GFLOP/s", role="limit"))
    return rows
