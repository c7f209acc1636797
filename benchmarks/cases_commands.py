"""The two user commands end to end (`ptychopinn train`, `ptychopinn reconstruct`), the ONNX
Runtime runner, and the default vs `--deterministic` training step (issue 17).

Data: a simulated scan (`ptychopinn simulate`, N=64, gridsize 1) rewritten as a beamline file
would hold it: integer detector counts, no `objectGuess`. Every torch row calls the CLI entry
point in-process (`ptychopinn.cli.main([...])`, the same code path as the shell command minus
interpreter start-up and `import torch`), so it times loading, grouping, normalisation, the
steps, validation, checkpoint and output writing.

The TF references run in `benchmarks/tf_worker.py` on the same groups, batch, weights and
probe, and time only TF's compute (training: the Adam-step loop over the same epochs, after
tracing; reconstruct: inference in batches + TF `reassemble_position`); they load nothing, write
nothing and have no validation pass, so the ratios are conservative for us.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptychopinn import data, physics
from ptychopinn.cli import main as cli_main
from ptychopinn.config import DataConfig, ModelConfig, TrainConfig
from ptychopinn.model import PtychoPINN
from ptychopinn.train.inputs import normalised_probe, resolve_nphotons
from ptychopinn.train.setup import determinism

from .cases_training import _step_fn
from .common import TF_MISSING, Context, Row, run_tf_worker, skipped, tf_available
from .model_setup import Setup, make_setup
from .timing import measure, stats_from_dict, stats_of

GROUP = "commands"
N = 64
BATCH = 16  # `ptychopinn train` default --batch-size
RECON_BATCH = 64  # `ptychopinn reconstruct` default --batch-size
SEED = 0

TRAIN_PATH = ("default path: eager (no torch.compile), float32, exact gradients off "
              "(`--exact-gradients auto` = off without `--deterministic`), no AMP, single process")
RECON_PATH = ("default path: eager `predict_object` under inference_mode, float32, NCHW, batch 64, "
              "barycentric stitching (crop N/2, |probe|² weights)")


def sizes(quick: bool) -> dict[str, int]:
    """Scan positions, object side, training epochs, timed repeats (train command, reconstruct
    commands, training steps) and the batch of the default-vs-deterministic step rows."""
    if quick:
        return {"positions": 64, "object": 128, "epochs": 1, "train_repeats": 1, "repeats": 2, "step_repeats": 2, "step_batch": 8}
    return {"positions": 512, "object": 192, "epochs": 2, "train_repeats": 1, "repeats": 3, "step_repeats": 5, "step_batch": BATCH}


def make_scan(path: Path, positions: int, object_size: int) -> Path:
    """A simulated scan saved as measured data: int32 counts, no objectGuess."""
    raw = path.with_name(path.stem + "_sim.npz")
    _cli(["simulate", "--out", str(raw), "--N", str(N), "--n-positions", str(positions),
          "--object-size", str(object_size), "--seed", str(SEED), "--overwrite"])
    with np.load(raw) as z:
        arrays = {k: z[k] for k in z.files if k != "objectGuess"}
    arrays["diffraction"] = np.rint(arrays["diffraction"].astype(np.float64) ** 2).astype(np.int32)
    np.savez(path, **arrays)
    raw.unlink()
    return path


def _fresh(ctx: Context, prefix: str) -> Path:
    """A path that does not exist yet (the commands refuse non-empty output folders)."""
    d = Path(tempfile.mkdtemp(dir=ctx.workdir, prefix=prefix))
    d.rmdir()
    return d


def _cli(argv: list[str]) -> None:
    """`ptychopinn ARGV` in-process; its stdout ("wrote ...") is swallowed, errors raise."""
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(argv)
    if rc != 0:
        raise RuntimeError(f"ptychopinn {' '.join(argv[:1])} exited {rc}")


def _timed_command(ctx: Context, argv_of: Any, warmup: int, repeats: int) -> tuple[Any, Path]:
    """Run `argv_of(out)` with a new `out` per call; returns (Stats, last out)."""
    last: list[Path] = []

    def call() -> None:
        out = _fresh(ctx, "cmd_")
        _cli(argv_of(out))
        if last:
            shutil.rmtree(last.pop(), ignore_errors=True)
        last.append(out)

    st = measure(call, warmup=warmup, repeats=repeats, min_repeat_s=0.0)
    return st, last[0]


def _epoch_seconds(model_dir: Path) -> list[float]:
    """Per-epoch seconds (steps + validation) that `ptychopinn train` logged in metrics.jsonl."""
    path = model_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [float(json.loads(ln)["seconds"]) for ln in path.read_text().splitlines() if ln.strip()]


def _train_groups(scan_path: Path) -> tuple[Any, Any, np.ndarray, float, float]:
    """What `ptychopinn train` feeds the model: (scan, groups, train indices, f·s, s)."""
    scan = data.load_scan(scan_path)
    dc = DataConfig(gridsize=1, seed=SEED)
    groups = data.group_scan(scan, dc)
    train_idx, _ = data.split_by_region(groups, TrainConfig().validation_fraction)
    scale = float(physics.intensity_scale(resolve_nphotons(scan, dc), N))
    factor = float(data.normalization_factor(scan.diffraction, groups.indices, bad_pixels=scan.bad_pixels))
    return scan, groups, train_idx, factor * scale, scale


def _tf_setup(scan: Any, groups: Any, idx: np.ndarray, fs: float, scale: float) -> Setup:
    """A seeded default-width model + the scan's groups `idx` as one `Setup` (TF layouts via
    `Setup.tf_arrays`)."""
    cfg = ModelConfig(N=N, gridsize=1)
    torch.manual_seed(SEED)
    probe = normalised_probe(scan, cfg.probe_scale)
    model = PtychoPINN(cfg, probe=probe, intensity_scale=scale).eval()
    ds = data.GroupDataset(scan, groups, fs, start_offsets=True)
    b = ds.batch(np.asarray(idx))
    return Setup(cfg, model, probe, scale, b["x"].float().contiguous(), b["offsets"].float())


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    sz = sizes(ctx.quick)
    scan_path = make_scan(ctx.workdir / "commands_scan.npz", sz["positions"], sz["object"])
    epochs = sz["epochs"]
    scan, groups, train_idx, fs, scale = _train_groups(scan_path)
    n_train, n_all = int(train_idx.size), int(groups.n_groups)
    data_desc = (f"simulated scan of {sz['positions']} positions saved as int32 counts without objectGuess, "
                 f"N={N}, gridsize 1, default width")

    # ---- (a) train end to end
    tname = "commands/train/default"
    tdesc = (f"`ptychopinn train --data D --out M --epochs {epochs} --batch-size {BATCH} --seed {SEED} --quiet` in-process "
             f"({data_desc}; {n_train} training groups × {epochs} epochs; load, group, steps, validation, "
             f"checkpoint + model writing); {TRAIN_PATH}")
    model_dir: Path | None = None
    ctx.log(f"  {tname}")
    try:
        def train_argv(out: Path) -> list[str]:
            return ["train", "--data", str(scan_path), "--out", str(out), "--epochs", str(epochs),
                    "--batch-size", str(BATCH), "--seed", str(SEED), "--quiet"]

        st, model_dir = _timed_command(ctx, train_argv, warmup=0, repeats=sz["train_repeats"])
        epoch_s = _epoch_seconds(model_dir)
        rows.append(Row(tname, GROUP, tdesc, st, items=n_train * epochs, unit="groups/s", baselines=["commands/train/tf"],
                        metrics={"patterns_per_s": n_train * epochs / st.median_s, "epochs": epochs,
                                 "train_groups": n_train, "batch_size": BATCH,
                                 "command_s_per_epoch": st.median_s / epochs,
                                 # the last run's own per-epoch times (steps + validation, metrics.jsonl)
                                 "epoch_seconds": epoch_s,
                                 "outside_epochs_s": (st.samples[-1] - sum(epoch_s)) if epoch_s and st.samples else None}))
    except Exception as exc:  # noqa: BLE001
        rows.append(skipped(tname, GROUP, tdesc, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                            baselines=["commands/train/tf"]))

    # ---- (b) reconstruct end to end
    rname = "commands/reconstruct/default"
    rdesc = (f"`ptychopinn reconstruct --model M --data D --out O --quiet` in-process ({data_desc}; {n_all} groups; "
             f"load, group, normalise, infer, stitch, write NPZ/HDF5/PNG); {RECON_PATH}")
    if model_dir is None:
        rows.append(skipped(rname, GROUP, rdesc, "no trained model (commands/train/default failed)", baselines=["commands/reconstruct/tf"]))
    else:
        ctx.log(f"  {rname}")
        try:
            st, default_out = _timed_command(ctx, lambda out: ["reconstruct", "--model", str(model_dir), "--data", str(scan_path),
                                                               "--out", str(out), "--quiet"], warmup=1, repeats=sz["repeats"] - ctx.quick)
            rows.append(Row(rname, GROUP, rdesc, st, items=n_all, unit="patterns/s", baselines=["commands/reconstruct/tf"],
                            metrics={"patterns_per_s": n_all / st.median_s}))
        except Exception as exc:  # noqa: BLE001
            default_out = None
            rows.append(skipped(rname, GROUP, rdesc, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                                baselines=["commands/reconstruct/tf"]))
        # the same command with the network in bfloat16 (stitching and writing unchanged)
        bname = "commands/reconstruct/bf16"
        bdesc = f"`ptychopinn reconstruct --precision bf16` (bfloat16 autocast network; otherwise as {rname})"
        ctx.log(f"  {bname}")
        try:
            st, bf16_out = _timed_command(ctx, lambda out: ["reconstruct", "--model", str(model_dir), "--data", str(scan_path),
                                                            "--out", str(out), "--quiet", "--precision", "bf16"],
                                          warmup=1, repeats=sz["repeats"] - ctx.quick)
            metrics: dict[str, Any] = {"patterns_per_s": n_all / st.median_s}
            if default_out is not None:
                with np.load(default_out / "reconstruction.npz") as a, np.load(bf16_out / "reconstruction.npz") as b:
                    ref, got = a["object"], b["object"]
                metrics["rel_l2_vs_default"] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            rows.append(Row(bname, GROUP, bdesc, st, items=n_all, unit="patterns/s", baselines=["commands/reconstruct/tf"],
                            metrics=metrics))
        except Exception as exc:  # noqa: BLE001
            rows.append(skipped(bname, GROUP, bdesc, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                                baselines=["commands/reconstruct/tf"]))

    # ---- (c) ONNX Runtime runner end to end, vs the default torch command
    oname = "commands/reconstruct/onnxruntime"
    odesc = (f"`ptychopinn.interop.onnx.runner.run_onnx(model.onnx, D, out_dir)` ({data_desc}; {n_all} groups; load, "
             "group, normalise, ONNX Runtime CPU inference, NumPy stitching, write), model from `ptychopinn export-onnx`; "
             "baseline: the default torch `reconstruct` command")
    if model_dir is not None:
        ctx.log(f"  {oname}")
        try:
            from ptychopinn.interop.onnx.runner import run_onnx

            onnx_path = ctx.workdir / "commands_model.onnx"
            _cli(["export-onnx", str(model_dir), "-o", str(onnx_path), "--overwrite"])

            def onnx_call() -> None:
                out = _fresh(ctx, "onnx_")
                run_onnx(onnx_path, scan_path, out, threads=ctx.threads)
                shutil.rmtree(out, ignore_errors=True)

            st = measure(onnx_call, warmup=1, repeats=sz["repeats"] - ctx.quick, min_repeat_s=0.0)
            rows.append(Row(oname, GROUP, odesc, st, items=n_all, unit="patterns/s", baselines=[rname],
                            metrics={"patterns_per_s": n_all / st.median_s}))
        except Exception as exc:  # noqa: BLE001
            rows.append(skipped(oname, GROUP, odesc, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", baselines=[rname]))
    else:
        rows.append(skipped(oname, GROUP, odesc, "no trained model", baselines=[rname]))

    # ---- default vs --deterministic training step (same batch, same weights)
    sname = "commands/train_step"
    cfg = ModelConfig(N=N, gridsize=1)
    sb = sz["step_batch"]
    step_setup = make_setup(cfg, sb, seed=1)
    sdesc = f"one Adam step N={N} gridsize 1, batch {sb} groups, Poisson NLL"
    reps = sz["step_repeats"]
    for name, vdesc, det in (("default", f"`ptychopinn train` default ({TRAIN_PATH})", False),
                             ("deterministic", "`ptychopinn train --deterministic`: float64 master weights + deterministic kernels, seeded", True)):
        row_name = f"{sname}/{name}"
        bl = [f"{sname}/default"] if det else []
        ctx.log(f"  {row_name}")
        try:
            with determinism(det, SEED):
                fn, first = _step_fn(step_setup, exact=det)
                st = measure(fn, warmup=1, repeats=reps, min_repeat_s=0.0)
            rows.append(Row(row_name, GROUP, f"{sdesc}: {vdesc}", st, items=sb, unit="groups/s", baselines=bl,
                            metrics={"first_loss": first}))
        except Exception as exc:  # noqa: BLE001
            rows.append(skipped(row_name, GROUP, f"{sdesc}: {vdesc}", f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", baselines=bl))

    # ---- TF references (one worker process for both)
    tf_rows = {
        "commands/train/tf": (f"TF/Keras reference training on the same {n_train} training groups, batch {BATCH}, {epochs} epochs "
                              "(benchmarks/tf_worker.py `train`: tf.function GradientTape + keras Adam, seeded shuffling, last "
                              "partial batch kept; timed after tracing; no data loading, validation or checkpoint writing)",
                              n_train * epochs, "groups/s"),
        "commands/reconstruct/tf": (f"TF/Keras reference inference (tf.function `diffraction_to_obj`, batch {RECON_BATCH}) over the "
                                    f"same {n_all} groups + TF `reassemble_position` (M=20) of the object patches (timed after "
                                    "tracing; no loading or writing)", n_all, "patterns/s"),
    }
    if not tf_available():
        rows += [skipped(n, GROUP, d, TF_MISSING, role="baseline") for n, (d, _, _) in tf_rows.items()]
        return rows
    tr = _tf_setup(scan, groups, train_idx, fs, scale)
    rec = _tf_setup(scan, groups, np.arange(n_all), fs, scale)
    arrays = {**tr.tf_arrays("ctr_"), **rec.tf_arrays("crec_"), "crec_centres": np.asarray(groups.centres, np.float32).reshape(-1, 2)}
    tasks = [
        {"kind": "train", "name": "commands/train/tf", **tr.tf_task("ctr_"), "epochs": epochs, "batch_size": BATCH,
         "seed": SEED, "keep_last": True, "trace_first": True},
        {"kind": "reconstruct", "name": "commands/reconstruct/tf", **rec.tf_task("crec_"), "centres": "crec_centres",
         "batch_size": RECON_BATCH, "M": 20, "warmup": 0, "repeats": sz["repeats"], "min_repeat_s": 0.0},
    ]
    ctx.log("  commands: TensorFlow reference (subprocess)")
    try:
        out = run_tf_worker(ctx, tasks, arrays)
    except Exception as exc:  # noqa: BLE001
        rows += [skipped(n, GROUP, d, f"error: {exc}", role="baseline") for n, (d, _, _) in tf_rows.items()]
        return rows
    for res in out["results"]:
        d, items, unit = tf_rows[res["name"]]
        if "error" in res:
            rows.append(skipped(res["name"], GROUP, d, "error: " + res["error"], role="baseline"))
            continue
        if res["name"] == "commands/train/tf":
            st = stats_of([res["seconds"]])
            metrics = {"tracing_s": res.get("warmup_s"), "history": res.get("history"), "patterns_per_s": items / res["seconds"]}
        else:
            st = stats_from_dict(res["stats"])
            metrics = {"patterns_per_s": items / st.median_s}
        rows.append(Row(res["name"], GROUP, d, st, items=items, unit=unit, role="baseline", metrics=metrics))
    return rows


__all__ = ["run", "make_scan", "sizes", "GROUP", "TRAIN_PATH", "RECON_PATH"]
