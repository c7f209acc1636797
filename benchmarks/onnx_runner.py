"""Inference throughput: ONNX Runtime session vs torch eager `predict_object` (N = 64, gs 1 and 2).

    python benchmarks/onnx_runner.py                      # CPU, batch 64, JSON on stdout
    python benchmarks/onnx_runner.py --threads 1 --repeats 3 --out bench_onnx.json
    python benchmarks/onnx_runner.py --providers cuda --device cuda   # where both are installed

Both sides run the same (untrained, randomly initialised: speed does not depend on the weights)
model on the same random batch, after one warm-up call, with the same thread count. Reported:
diffraction patterns per second (batch × C × repeats / seconds) and onnx/torch ratio. Figures
from a shared or busy machine are indicative only.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _bench(fn: Any, repeats: int, sync: Any = None) -> float:
    """Seconds for `repeats` calls of fn() after one warm-up call (sync() after each when given)."""
    fn()
    if sync is not None:
        sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
        if sync is not None:
            sync()
    return time.perf_counter() - t


def run(gridsizes: list[int], batch: int, repeats: int, threads: int | None, providers: str | None, device: str, n_filters_scale: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from ptychopinn.config import ModelConfig
    from ptychopinn.interop.onnx import export_onnx
    from ptychopinn.interop.onnx.session import resolve_providers
    from ptychopinn.model import PtychoPINN

    if threads is not None:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()
    dev = torch.device(device)
    chosen = resolve_providers(providers)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for gs in gridsizes:
            torch.manual_seed(gs)
            cfg = ModelConfig(N=64, gridsize=gs, n_filters_scale=n_filters_scale)
            model = PtychoPINN(cfg).eval()
            path = Path(tmp) / f"gs{gs}.onnx"
            export_onnx(model, path, verify=False)
            C = cfg.channels
            rng = np.random.default_rng(0)
            x = (rng.random((batch, C, 64, 64), dtype=np.float32) * 30).astype(np.float32)
            off = rng.normal(size=(batch, C, 2)).astype(np.float32)
            off -= off.mean(axis=1, keepdims=True)

            model = model.to(dev)
            xt, ot = torch.from_numpy(x).to(dev), torch.from_numpy(off).to(dev)
            sync = torch.cuda.synchronize if dev.type == "cuda" else None

            def torch_call() -> None:
                with torch.inference_mode():
                    model.predict_object(xt, ot)

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads_used
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
            feeds = {"diffraction": x, "offsets": off}

            def ort_call() -> None:
                sess.run(None, feeds)

            t_torch = _bench(torch_call, repeats, sync)
            t_ort = _bench(ort_call, repeats)
            n = batch * C * repeats
            results.append(
                {
                    "N": 64,
                    "gridsize": gs,
                    "batch_groups": batch,
                    "patterns_per_call": batch * C,
                    "repeats": repeats,
                    "torch_eager_patterns_per_s": n / t_torch,
                    "onnxruntime_patterns_per_s": n / t_ort,
                    "ratio_onnx_over_torch": t_torch / t_ort,
                }
            )
            print(f"gridsize {gs}: torch {n / t_torch:.1f} patterns/s, onnxruntime {n / t_ort:.1f} patterns/s, ratio {t_torch / t_ort:.2f}", file=sys.stderr)
    return {
        "benchmark": "onnx_runner",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
        "settings": {"threads": threads_used, "torch_device": str(dev), "providers": sess.get_providers(), "n_filters_scale": n_filters_scale},
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gridsizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=64, help="groups per call (default 64, reconstruct's batch)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads (default: torch's)")
    p.add_argument("--providers", default=None, help="ORT providers, e.g. cuda,cpu (default cpu)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--n-filters-scale", type=int, default=2, help="model width (ModelConfig default 2)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    report = run(args.gridsizes, args.batch, args.repeats, args.threads, args.providers, args.device, args.n_filters_scale)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
