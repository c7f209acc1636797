"""Quality parity (full mode only): train ours and the TF reference on the same simulated scan —
same initial weights, same epochs, batch, Adam settings and batch order — then reconstruct a
second simulated scan with each trained network through the same path (`ptychopinn.reconstruct`,
the TF-trained weights loaded with `load_keras_weights`; the TF forward matches ours to ~1e-7)
and report amplitude/phase PSNR and SSIM of both. Then `cases_refine`: physics refinement,
fine-tuning and an iterative baseline on a phase object at two doses (also in --quick, shrunk)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ptychopinn import data, physics
from ptychopinn.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig
from ptychopinn.interop.keras_layout import export_keras_weights, load_keras_weights
from ptychopinn.model import PtychoPINN
from ptychopinn.reconstruct import reconstruct
from ptychopinn.simulate import simulate
from ptychopinn.train import ADAM_EPS
from ptychopinn.train.losses import batch_loss

from .common import TF_MISSING, Context, Row, run_tf_worker, skipped, tf_available
from .timing import stats_of

GROUP = "quality"
EPOCHS, BATCH, POSITIONS = 8, 16, 512


def _inputs(scan: Any, N: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Gridsize-1 model inputs x = f·s·d `(M, 1, N, N)` and zero offsets `(M, 1, 2)`."""
    groups = data.group_scan(scan, DataConfig(gridsize=1))
    f = float(data.normalization_factor(scan.diffraction, groups.indices))
    d = np.asarray(scan.diffraction[groups.indices[:, 0]], np.float32)
    return (d * f * scale)[:, None].astype(np.float32), np.zeros((d.shape[0], 1, 2), np.float32)


def _metrics(model: PtychoPINN, scan: Any) -> dict[str, float]:
    rec = reconstruct(model, scan, device="cpu")
    m = rec.metrics or {}
    out = {}
    for part in ("amplitude", "phase"):
        if part in m:
            out[f"{part}_psnr"] = float(m[part]["psnr"])
            out[f"{part}_ssim"] = float(m[part]["ssim"])
    return out


def run(ctx: Context) -> list[Row]:
    """The TF parity rows, then the refinement / fine-tuning / iterative-baseline rows (`cases_refine`)."""
    from . import cases_refine

    return _parity(ctx) + cases_refine.run(ctx)


def _parity(ctx: Context) -> list[Row]:
    desc = f"train {EPOCHS} epochs (batch {BATCH}, {POSITIONS} positions, N=64 gs1), reconstruct a second scan; PSNR/SSIM"
    if ctx.quick:
        return [skipped("quality/ours", GROUP, desc, "--quick (full mode only)", baselines=["quality/tf"]),
                skipped("quality/tf", GROUP, desc, "--quick (full mode only)", role="baseline")]
    cfg = ModelConfig(N=64, gridsize=1)
    train_scan = data.make_scan(**simulate(SimulationConfig(N=64, n_positions=POSITIONS, object_size=192, seed=11)))
    test_scan = data.make_scan(**simulate(SimulationConfig(N=64, n_positions=POSITIONS, object_size=192, seed=12)))
    scale = float(physics.intensity_scale(1e9, 64))
    probe = physics.normalize_probe(np.asarray(train_scan.probe), cfg.probe_scale).astype(np.complex64)
    X, P = _inputs(train_scan, 64, scale)
    torch.manual_seed(0)
    model = PtychoPINN(cfg, probe=probe, intensity_scale=scale)
    init = export_keras_weights(model)

    # ours: the same loop the TF worker runs (same permutation per epoch)
    ctx.log("  quality/ours (training)")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, eps=ADAM_EPS)
    tc = TrainConfig(batch_size=BATCH)
    rng = np.random.default_rng(0)
    model.train()
    t0 = time.perf_counter()
    history = []
    for _ in range(EPOCHS):
        order = rng.permutation(X.shape[0])
        losses = []
        for s in range(0, X.shape[0] - BATCH + 1, BATCH):
            b = order[s : s + BATCH]
            loss, _ = batch_loss(model, torch.from_numpy(X[b]), torch.from_numpy(P[b]), None, cfg, tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
    ours_s = time.perf_counter() - t0
    model.eval()
    rows = [Row("quality/ours", GROUP, desc + " (ours, torch eager float32)", stats_of([ours_s]), items=EPOCHS * X.shape[0],
                unit="patterns/s", baselines=["quality/tf"],
                metrics={**_metrics(model, test_scan), "final_loss": history[-1], "train_seconds": ours_s})]
    if not tf_available():
        rows.append(skipped("quality/tf", GROUP, desc, TF_MISSING, role="baseline"))
        return rows
    ctx.log("  quality/tf (training, subprocess)")
    arrays: dict[str, np.ndarray] = {f"w{i}": a for i, a in enumerate(init)}
    arrays.update({"probe": probe, "x": X.transpose(0, 2, 3, 1).copy(), "pos": P.transpose(0, 2, 1)[:, None].copy()})
    from ptychopinn.config import config_to_dict

    task = {"kind": "train", "name": "quality/tf", "config": config_to_dict(cfg), "weights": "w", "probe": "probe",
            "intensity_scale": scale, "x": "x", "positions": "pos", "epochs": EPOCHS, "batch_size": BATCH, "seed": 0}
    try:
        out = run_tf_worker(ctx, [task], arrays, timeout_s=3600)
        res = out["results"][0]
        if "error" in res:
            raise RuntimeError(res["error"])
    except Exception as exc:  # noqa: BLE001
        rows.append(skipped("quality/tf", GROUP, desc, f"error: {exc}", role="baseline"))
        return rows
    tf_model = PtychoPINN(cfg, probe=probe, intensity_scale=scale)
    n_w = len(init)
    load_keras_weights(tf_model, [out["arrays"][f"quality/tf/w{i}"] for i in range(n_w)], source="TF-trained weights")
    tf_model.eval()
    rows.append(Row("quality/tf", GROUP, desc + " (TF/Keras reference; weights evaluated through ptychopinn.reconstruct)",
                    stats_of([res["seconds"]]), items=EPOCHS * X.shape[0], unit="patterns/s", role="baseline",
                    metrics={**_metrics(tf_model, test_scan), "final_loss": res["history"][-1], "train_seconds": res["seconds"]}))
    return rows
