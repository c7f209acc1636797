"""Model inference (`predict_object`, TF `diffraction_to_obj`) in patterns/s.

Variants (same weights, same batch): torch eager float32 (the default: inference_mode, NCHW),
with autograd on, under no_grad, channels_last, one thread, torch.compile, bfloat16 autocast
(± channels_last, compiled), ONNX Runtime, and the TF/Keras reference (`tf_reference.py`), whose
output is checked against ours (rel L2). Each row also reports the achieved fraction of the
measured matmul FLOP/s (conv FLOP counted analytically, `flops.py`).
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ptychopinn.config import ModelConfig

from .common import TF_MISSING, Context, Row, rel_l2, run_tf_worker, skipped, tf_available
from .flops import conv_flops_per_pattern
from .model_setup import Setup, make_setup
from .timing import measure, stats_from_dict

GROUP = "inference"


def _configs(quick: bool) -> list[tuple[str, ModelConfig, int]]:
    """(key, config, batch in groups); every batch holds 64 patterns in full mode."""
    if quick:
        return [("n64_gs1", ModelConfig(N=64, gridsize=1), 8), ("n64_gs2", ModelConfig(N=64, gridsize=2), 2)]
    return [
        ("n64_gs1", ModelConfig(N=64, gridsize=1), 64),
        ("n64_gs2", ModelConfig(N=64, gridsize=2), 16),
        ("n128_gs1", ModelConfig(N=128, gridsize=1), 16),
    ]


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _grad_mode(mode: str):
    return {"inference": torch.inference_mode, "no_grad": torch.no_grad, "grad": contextlib.nullcontext}[mode]()


def _variant_fn(setup: Setup, *, mode: str = "inference", channels_last: bool = False, bf16: bool = False,
                compiled: bool = False) -> Callable[[], torch.Tensor]:
    model = setup.model
    x = setup.x
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    predict: Callable[..., torch.Tensor] = model.predict_object
    if compiled:
        predict = torch.compile(model.predict_object, dynamic=False)
    offsets = setup.offsets

    def fn() -> torch.Tensor:
        with _grad_mode(mode):
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return predict(x, offsets)
            return predict(x, offsets)

    return fn


def _onnx_fn(setup: Setup, ctx: Context) -> tuple[Callable[[], Any], np.ndarray, str]:
    """An ONNX Runtime session of `predict_object`, built with the project's exporter
    (`ptychopinn.interop.onnx.export_onnx` + `session.open_session`, as benchmarks/onnx_runner.py
    does); falls back to `torch.onnx.export` of the `ObjectGraph` wrapper if that is missing."""
    path = Path(tempfile.mkdtemp(dir=ctx.workdir, prefix="onnx_")) / "model.onnx"
    feeds = {"diffraction": setup.x.numpy(), "offsets": setup.offsets.numpy()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from ptychopinn.interop.onnx import export_onnx
            from ptychopinn.interop.onnx.session import open_session

            export_onnx(setup.model, path, verify=False)
            sess, _ = open_session(path, "cpu", threads=ctx.threads)
            how = "ptychopinn.interop.onnx.export_onnx + onnxruntime CPU"
        except ImportError:
            import onnxruntime as ort

            from ptychopinn.interop.onnx.wrapper import ObjectGraph

            torch.onnx.export(ObjectGraph(setup.model).eval(), (setup.x, setup.offsets), str(path),
                              input_names=["diffraction", "offsets"], output_names=["real", "imag"],
                              dynamic_axes={"diffraction": {0: "B"}, "offsets": {0: "B"}}, opset_version=17, dynamo=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = ctx.threads
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            how = "torch.onnx.export(ObjectGraph) + onnxruntime CPU"
    re, im = sess.run(None, feeds)[:2]
    return (lambda: sess.run(None, feeds)), re + 1j * im, how


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    q = ctx.quick
    reps, budget = (3, 2.0) if q else (7, 15.0)
    flops_f32, flops_bf16 = ctx.limits.get("flops_f32"), ctx.limits.get("flops_bf16")
    tf_tasks: list[dict[str, Any]] = []
    tf_arrays: dict[str, np.ndarray] = {}
    refs: dict[str, tuple[Setup, np.ndarray, str, int]] = {}
    for key, cfg, batch in _configs(q):
        setup = make_setup(cfg, batch)
        P = setup.patterns
        fl = conv_flops_per_pattern(cfg)
        base = f"inference/{key}"
        desc = f"predict_object N={cfg.N} gridsize={cfg.gridsize}, batch {batch} groups ({P} patterns)"
        with torch.inference_mode():
            ref_obj = setup.model.predict_object(setup.x, setup.offsets).numpy()
        baselines = [f"{base}/tf", f"{base}/eager_f32"]
        variants: list[tuple[str, str, dict[str, Any], int | None]] = [("eager_f32", "torch eager float32, inference_mode, NCHW", {}, None)]
        if key == "n64_gs1":
            variants += [
                ("eager_f32_grad", "torch eager float32 with autograd on", {"mode": "grad"}, None),
                ("eager_f32_no_grad", "torch eager float32 under no_grad", {"mode": "no_grad"}, None),
                ("eager_f32_channels_last", "torch eager float32 channels_last", {"channels_last": True}, None),
                ("eager_f32_1thread", "torch eager float32, 1 thread", {}, 1),
                ("eager_bf16_channels_last", "bfloat16 autocast, channels_last", {"bf16": True, "channels_last": True}, None),
            ]
        variants.append(("eager_bf16", "bfloat16 autocast (eager)", {"bf16": True}, None))
        variants += [("compiled_f32", "torch.compile float32", {"compiled": True}, None),
                     ("compiled_bf16", "torch.compile + bfloat16 autocast", {"compiled": True, "bf16": True}, None)]
        for name, vdesc, kw, nthreads in variants:
            rname = f"{base}/{name}"
            role = "candidate"
            if kw.get("compiled") and q:
                rows.append(skipped(rname, GROUP, f"{desc}: {vdesc}", "--quick (compilation takes minutes)", baselines=baselines))
                continue
            ctx.log(f"  {rname}")
            try:
                fn = _variant_fn(setup, **kw)
                with _threads(nthreads):
                    out = fn()
                    st = measure(fn, warmup=2 if kw.get("compiled") else 1, repeats=reps, budget_s=budget)
            except Exception as exc:  # noqa: BLE001
                rows.append(skipped(rname, GROUP, f"{desc}: {vdesc}", f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", baselines=baselines))
                continue
            finally:
                setup.model.to(memory_format=torch.contiguous_format)
            peak = flops_bf16 if kw.get("bf16") else flops_f32
            metrics: dict[str, Any] = {
                "patterns_per_s": P / st.median_s,
                "conv_gflop_per_pattern": fl / 1e9,
                "achieved_gflop_s": fl * P / st.median_s / 1e9,
                "fraction_of_matmul_peak": (fl * P / st.median_s / peak) if peak else None,
            }
            if name != "eager_f32":
                metrics["rel_l2_vs_eager_f32"] = rel_l2(out.detach().to(torch.complex64).numpy(), ref_obj)
            rows.append(Row(rname, GROUP, f"{desc}: {vdesc}", st, items=P, unit="patterns/s", role=role,
                            baselines=[b for b in baselines if b != rname], metrics=metrics))
        # ONNX Runtime
        rname = f"{base}/onnxruntime"
        try:
            ctx.log(f"  {rname}")
            fn, onnx_obj, how = _onnx_fn(setup, ctx)
            st = measure(fn, warmup=1, repeats=reps, budget_s=budget)
            rows.append(Row(rname, GROUP, f"{desc}: ONNX Runtime CPU ({how})", st, items=P, unit="patterns/s",
                            baselines=[f"{base}/eager_f32"],
                            metrics={"patterns_per_s": P / st.median_s, "rel_l2_vs_eager_f32": rel_l2(onnx_obj, ref_obj),
                                     "fraction_of_matmul_peak": (fl * P / st.median_s / flops_f32) if flops_f32 else None}))
        except Exception as exc:  # noqa: BLE001
            rows.append(skipped(rname, GROUP, f"{desc}: ONNX Runtime", f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}",
                                baselines=[f"{base}/eager_f32"]))
        # TF reference (run later, all configs in one subprocess)
        prefix = f"{key}_"
        tf_arrays.update(setup.tf_arrays(prefix))
        tf_tasks.append({"kind": "inference", "name": f"{base}/tf", **setup.tf_task(prefix), "warmup": 1,
                         "repeats": reps, "budget_s": budget, "forward_parity": key == "n64_gs1"})
        amp = None
        if key == "n64_gs1":
            with torch.inference_mode():
                amp = setup.model(setup.x, setup.offsets).amplitude.permute(0, 2, 3, 1).numpy()
        refs[f"{base}/tf"] = (setup, ref_obj, desc, P, amp)  # type: ignore[assignment]

    if not tf_available():
        rows += [skipped(n, GROUP, f"{r[2]}: TF reference", TF_MISSING, role="baseline") for n, r in refs.items()]
        return rows
    ctx.log("  inference: TensorFlow reference (subprocess)")
    try:
        out = run_tf_worker(ctx, tf_tasks, tf_arrays)
    except Exception as exc:  # noqa: BLE001
        rows += [skipped(n, GROUP, f"{r[2]}: TF reference", f"error: {exc}", role="baseline") for n, r in refs.items()]
        return rows
    for res in out["results"]:
        setup, ref_obj, desc, P, amp = refs[res["name"]]  # type: ignore[misc]
        d = f"{desc}: TF/Keras reference (benchmarks/tf_reference.py, tf.function)"
        if "error" in res:
            rows.append(skipped(res["name"], GROUP, d, "error: " + res["error"], role="baseline"))
            continue
        st = stats_from_dict(res["stats"])
        fl = conv_flops_per_pattern(setup.config)
        metrics = {"patterns_per_s": P / st.median_s,
                   "rel_l2_object_vs_ours": rel_l2(out["arrays"][res["name"] + "/object"], ref_obj),
                   "fraction_of_matmul_peak": (fl * P / st.median_s / flops_f32) if flops_f32 else None}
        if amp is not None and res["name"] + "/amplitude" in out["arrays"]:
            metrics["rel_l2_amplitude_vs_ours"] = rel_l2(out["arrays"][res["name"] + "/amplitude"], amp)
        rows.append(Row(res["name"], GROUP, d, st, items=P, unit="patterns/s", role="baseline", metrics=metrics))
    return rows
