"""Timing probe for `ptychopinn.kernels` (run `python -m benchmarks.kernel_probe`).

Median wall time of repeated calls on fixed shapes, 2 threads. `--impl DIR` times a kernels
package from another folder (e.g. a saved copy of an older version) instead; the model case
then runs with that package patched into `ptychopinn.model.network`. The machine may be
shared, so compare implementations in the same run (`--impl` twice is allowed).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch


def _load(impl: str | None):
    if impl is None:
        import ptychopinn.kernels as k

        return k
    name = f"_kernels_under_test_{abs(hash(impl))}"
    spec = importlib.util.spec_from_file_location(name, Path(impl) / "__init__.py", submodule_search_locations=[impl])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _interleaved(fns: list, reps: int) -> list[tuple[float, float]]:
    """(median, min) seconds per callable, calls interleaved so every candidate sees the same load."""
    for fn in fns:
        fn()
    ts: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            ts[i].append(time.perf_counter() - t)
    return [(sorted(t)[len(t) // 2], min(t)) for t in ts]


def _median(fn, reps: int) -> float:
    return _interleaved([fn], reps)[0][0]


def _copy_bandwidth(nbytes: int = 256 << 20) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    t = _median(lambda: dst.copy_(src), 5)
    return 2 * nbytes / t  # read + write


def cases(impls: list, reps: int, stitch_n: int, stitch_canvas: int) -> dict[str, list[tuple[float, float]]]:
    """Per case, the (median, min) seconds of each kernels package in `impls`."""
    g = torch.Generator().manual_seed(0)
    res: dict[str, list[tuple[float, float]]] = {}
    img = torch.randn(64, 78, 78, dtype=torch.complex64, generator=g)
    sh = (torch.rand(64, 2, generator=g) - 0.5) * 10
    res["translate (64,78,78) c64"] = _interleaved([lambda k=k: k.translate(img, sh) for k in impls], reps)
    canvas = torch.randn(16, 78, 78, dtype=torch.complex64, generator=g)
    pos = (torch.rand(16, 4, 2, generator=g) - 0.5) * 8
    res["extract (16,4,78->64)"] = _interleaved([lambda k=k: k.extract_patches(canvas, pos, 64) for k in impls], reps)
    patches = torch.randn(16, 4, 64, 64, dtype=torch.complex64, generator=g)
    res["reassemble (16,4,64->78)"] = _interleaved(
        [lambda k=k: k.reassemble_patches(patches, pos, 78) for k in impls], reps
    )

    from ptychopinn.config import ModelConfig
    from ptychopinn.model import network

    model = network.PtychoPINN(ModelConfig(N=64, gridsize=2)).eval()
    x = torch.rand(16, 4, 64, 64, generator=g)
    saved = network.kernels

    def predict(k):
        network.kernels = k
        try:
            with torch.no_grad():
                model.predict_object(x, pos)
        finally:
            network.kernels = saved

    res["model predict_object N64 gs2 B16"] = _interleaved([lambda k=k: predict(k) for k in impls], reps)

    n, side, p = stitch_n, stitch_canvas, 64
    sp = torch.randn(n, p, p, dtype=torch.complex64, generator=g)
    spos = torch.rand(n, 2, dtype=torch.float64, generator=g) * (side - p) + p / 2
    res[f"stitch {n}x{p}^2 c64 -> {side}^2"] = _interleaved(
        [lambda k=k: k.stitch(sp, spos, (side, side)) for k in impls], max(3, reps // 3)
    )
    res["_stitch_bytes"] = [(float(sp.numel() * sp.element_size()), 0.0)]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--impl", action="append", default=None, help="kernels folder to time (repeatable)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stitch-n", type=int, default=20000)
    ap.add_argument("--stitch-canvas", type=int, default=2048)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    bw = _copy_bandwidth()
    names = a.impl or [None]
    res = cases([_load(i) for i in names], a.reps, a.stitch_n, a.stitch_canvas)
    nbytes = res.pop("_stitch_bytes")[0][0]
    print(f"copy bandwidth (read+write): {bw / 1e9:.2f} GB/s; times: median / min over interleaved repeats")
    for j, impl in enumerate(names):
        print(f"== {impl or 'ptychopinn.kernels'}")
        for key, per in res.items():
            med, mn = per[j]
            print(f"  {key:36s} {med * 1e3:10.1f} ms / {mn * 1e3:8.1f} ms")
        st = [v for key, v in res.items() if key.startswith("stitch")][0][j]
        print(f"  {'stitch patch bytes/s (median)':36s} {nbytes / st[0] / 1e9:10.3f} GB/s = {nbytes / st[0] / bw:.1%} of copy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
