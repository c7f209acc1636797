"""One training step (forward + Poisson NLL + backward + Adam), ours vs the TF reference, same
batch and same initial weights. The first step's loss is compared between the two."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ptychopinn.config import ModelConfig, TrainConfig
from ptychopinn.train import ADAM_EPS, master_weights
from ptychopinn.train.losses import batch_loss

from .common import TF_MISSING, Context, Row, run_tf_worker, skipped, tf_available
from .flops import conv_flops_per_pattern
from .model_setup import Setup, make_setup
from .timing import measure, stats_from_dict

GROUP = "training"


def _configs(quick: bool) -> list[tuple[str, ModelConfig, int]]:
    if quick:
        return [("n64_gs1", ModelConfig(N=64, gridsize=1), 4)]
    return [("n64_gs1", ModelConfig(N=64, gridsize=1), 16), ("n64_gs2", ModelConfig(N=64, gridsize=2), 16)]


def _step_fn(setup: Setup, *, channels_last: bool = False, bf16: bool = False, compiled: bool = False, exact: bool = False):
    """A closure doing one Adam step on a private copy of the model; returns (fn, first loss).

    exact: float64 master weights for the convolutions (`TrainConfig.exact_gradients`, the
    default of `ptychopinn train` on CPU).
    """
    model = copy.deepcopy(setup.model).train()
    if exact:
        master_weights.promote(model)
    x, offsets = setup.x, setup.offsets
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3, eps=ADAM_EPS)
    tc = TrainConfig()
    run_model: Any = torch.compile(model) if compiled else model
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else None

    def fn() -> torch.Tensor:
        loss, _ = batch_loss(run_model, x, offsets, None, setup.config, tc, autocast=autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    first = float(fn())
    return fn, first


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    q = ctx.quick
    reps, budget = (3, 2.0) if q else (7, 20.0)
    flops_f32, flops_bf16 = ctx.limits.get("flops_f32"), ctx.limits.get("flops_bf16")
    tasks: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    info: dict[str, tuple[Setup, str, float | None]] = {}
    for key, cfg, batch in _configs(q):
        setup = make_setup(cfg, batch, seed=1)
        P = setup.patterns
        fl = 3 * conv_flops_per_pattern(cfg)  # forward + backward ≈ 3× forward
        base = f"training/{key}"
        desc = f"one Adam step N={cfg.N} gridsize={cfg.gridsize}, batch {batch} groups ({P} patterns), Poisson NLL"
        variants = [("eager_f32", "torch eager float32", {})]
        if key == "n64_gs1":
            variants += [("eager_f32_channels_last", "torch eager float32 channels_last", {"channels_last": True}),
                         ("eager_bf16", "bfloat16 autocast forward", {"bf16": True}),
                         ("eager_exact", "float64 master weights (exact_gradients: `train --deterministic`)", {"exact": True})]
        variants.append(("compiled_f32", "torch.compile float32", {"compiled": True}))
        first_f32 = None
        for name, vdesc, kw in variants:
            rname = f"{base}/{name}"
            baselines = [f"{base}/tf"] + ([f"{base}/eager_f32"] if name != "eager_f32" else [])
            if kw.get("compiled") and q:
                rows.append(skipped(rname, GROUP, f"{desc}: {vdesc}", "--quick (compilation takes minutes)", baselines=baselines))
                continue
            ctx.log(f"  {rname}")
            try:
                fn, first = _step_fn(setup, **kw)
                st = measure(fn, warmup=2 if kw.get("compiled") else 1, repeats=reps, budget_s=budget, min_repeat_s=0.0)
            except Exception as exc:  # noqa: BLE001
                rows.append(skipped(rname, GROUP, f"{desc}: {vdesc}", f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", baselines=baselines))
                continue
            if name == "eager_f32":
                first_f32 = first
            peak = flops_bf16 if kw.get("bf16") else flops_f32
            rows.append(Row(rname, GROUP, f"{desc}: {vdesc}", st, items=P, unit="patterns/s", baselines=baselines,
                            metrics={"first_loss": first, "patterns_per_s": P / st.median_s,
                                     "fraction_of_matmul_peak": (fl * P / st.median_s / peak) if peak else None}))
        prefix = f"t{key}_"
        arrays.update(setup.tf_arrays(prefix))
        tasks.append({"kind": "train_step", "name": f"{base}/tf", **setup.tf_task(prefix), "warmup": 1, "repeats": reps,
                      "budget_s": budget, "min_repeat_s": 0.0})
        info[f"{base}/tf"] = (setup, desc, first_f32)

    if not tf_available():
        rows += [skipped(n, GROUP, f"{d}: TF reference", TF_MISSING, role="baseline") for n, (_, d, _) in info.items()]
        return rows
    ctx.log("  training: TensorFlow reference (subprocess)")
    try:
        out = run_tf_worker(ctx, tasks, arrays)
    except Exception as exc:  # noqa: BLE001
        rows += [skipped(n, GROUP, f"{d}: TF reference", f"error: {exc}", role="baseline") for n, (_, d, _) in info.items()]
        return rows
    for res in out["results"]:
        setup, desc, first_f32 = info[res["name"]]
        d = f"{desc}: TF/Keras reference (tf.function GradientTape + keras Adam)"
        if "error" in res:
            rows.append(skipped(res["name"], GROUP, d, "error: " + res["error"], role="baseline"))
            continue
        st = stats_from_dict(res["stats"])
        P = setup.patterns
        metrics = {"first_loss": res["first_loss"], "patterns_per_s": P / st.median_s}
        if first_f32 is not None:
            metrics["first_loss_rel_diff_vs_ours"] = abs(res["first_loss"] - first_f32) / max(abs(first_f32), 1e-30)
        rows.append(Row(res["name"], GROUP, d, st, items=P, unit="patterns/s", role="baseline", metrics=metrics))
    return rows
