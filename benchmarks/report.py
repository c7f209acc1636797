"""Markdown report (docs/benchmarks.md) of one suite run."""
from __future__ import annotations

from typing import Any

from .suite import HEADERS, REGENERATE, table_rows

#: The explanatory part of docs/benchmarks.md (kept here so that regenerating keeps it).
ABOUT = """## What is measured

| group | rows | baseline |
|---|---|---|
| limits | `limits/memcpy` (256 MiB copy, GB/s read+write), `limits/matmul_f32`, `limits/matmul_bf16` (2048² `torch.mm`, GFLOP/s) | — (machine limits) |
| kernels | `translate/*` (1024 complex64 74×74 images), `extract/*` (128×4 patches of 64 from 78×78 canvases), `stitch/*` (TF `reassemble_position`, 5,000 patches, M=20), `stitch64/*` (`kernels.stitch`, 10,000 whole 64×64 patches; bytes/s vs bandwidth) | TF op (`ImageProjectiveTransformV3`, TF reassemble_position re-implemented with it), else the straightforward torch reference (`grid_sample`, full-canvas translate + crop, full-canvas translate-and-sum, four-corner `index_add_`) |
| inference | `predict_object`, N=64 gs1 (batch 64), N=64 gs2 (16 groups = 64 patterns), N=128 gs1 (16): eager float32 (inference_mode, NCHW), autograd on, no_grad, channels_last, 1 thread, `torch.compile`, bfloat16 autocast (± channels_last, compiled), ONNX Runtime | TF reference (`tf.function`), else eager float32 |
| training | one Adam step on the Poisson NLL, batch 16: eager float32, channels_last, bf16 autocast, compiled | TF reference (GradientTape + keras Adam, same weights and batch) |
| scale | 1e3 → 1e6 patches of 64×64, one subprocess per size (time, peak RSS, bytes/s): `benchmarks/stitch_scale.py` | TF-style full-canvas translate-and-sum (`benchmarks/scale_worker.py`) while TF's padded stack (n·S²·8 B) fits a 2 GB budget; beyond it the row reports the memory it would need |
| quality | train ours and TF 8 epochs on the same simulated scan (same initial weights, batch order, Adam), reconstruct a second scan; amplitude/phase PSNR and SSIM (full mode only). `quality/refine/<dose>/*` (issue 15, `benchmarks/cases_refine.py`): a 224² phase object at 1e9 and 1e4 photons, network trained 20 epochs on 1024 patterns, 256 test patterns: network alone (± patch phase sync), + refinement (default and the tuned recipes, float32/bf16 network), fine-tuning, and SSIM vs wall time of the iterative baselines | this project's solver from a flat object (100 epochs; `tuned_iterative` = the same settings as the tuned rows), pty-chi 2.2 LSQML (own venv, `--ptychi-python`) |
| commands | the user commands end to end on a simulated scan stored as int32 counts without `objectGuess` (512 positions, N=64 gs1; `--quick` 64): `commands/train/default` (`ptychopinn train`, 2 epochs, batch 16, in-process CLI: load, group, steps, validation, checkpoint), `commands/reconstruct/default` (`ptychopinn reconstruct`: load, group, infer, stitch, write), `commands/reconstruct/bf16` (the same with `--precision bf16`), `commands/reconstruct/onnxruntime` (`run_onnx`), `commands/train_step/{default,deterministic}` (one Adam step, fast path vs `--deterministic`) | TF `train` epochs on the same groups/batch (after tracing) and TF inference + `reassemble_position`; the default command for ONNX and `--deterministic` |

The torch rows run with the host-allocator settings of the `ptychopinn` command
(`ptychopinn.io.host_memory`: freed CPU memory is reused instead of faulting in fresh pages for
every activation; machine key `host_allocator`); TensorFlow and ONNX Runtime have their own arenas.

Every row reports the median and inter-quartile range of the timed repeats after warm-up, and
*speed-up* = baseline median / row median, both measured in the same run. TensorFlow always runs
in its own process (`benchmarks/tf_worker.py`) with the same thread count, so torch's and TF's
thread pools never compete. Without TensorFlow its rows read "skipped: tensorflow not installed".

The TF reference (`benchmarks/tf_reference.py`) is a Keras 3 functional re-implementation of the
legacy network (spec §3) holding our weights (`interop.keras_layout.export_keras_weights`) plus the
physics in TF ops (spec §4: `ImageProjectiveTransformV3` translation, per-sample reassembly with
the centre-mask normaliser, extract, probe, `fft2d` diffraction, K2 Poisson NLL). It covers the
full forward pass; not covered: `gaussian_smoothing_sigma ≠ 0`, the K2 batch-collapse bug, XLA.
The inference rows report its output's relative L2 error against ours (~3e-7 for the object and
~2e-7 for the amplitude in the trial runs).

Model FLOP are counted analytically from the conv shapes (`benchmarks/flops.py`: 1.61 GFLOP per
pattern at N=64 gs1, 0.42 at gs2, 3.08 at N=128; checked against forward hooks in the tests);
training counts 3× forward. Stitching bytes moved = patch reads (8 B per complex64 pixel) +
read-modify-write of the numerator (8 B) and weight sum (4 B) over each (h+1)×(w+1) window.

## Targets (from issues 7 and 17)

| target | check |
|---|---|
| inference float32 ≥ 1.3× TF | `inference/n64_gs1/*f32*` vs `inference/n64_gs1/tf` |
| bfloat16 inference ≥ 4× TF, error vs float32 reported | `inference/n64_gs1/*bf16*` (`rel_l2_vs_eager_f32`) |
| training step ≥ 1.5× TF | `training/n64_gs1/*` vs `training/n64_gs1/tf` |
| bfloat16 training step ≥ 2× TF (issue 17) | `training/n64_gs1/eager_bf16` vs `training/n64_gs1/tf` |
| stitching ≥ 200× TF's reassemble_position at 5,000 patches | `stitch/ours` vs `stitch/tf` |
| 1,000,000 patches of 64×64 in < 2 GB peak RSS | `stitch_scale/ours/1000000` |
| stitching ≥ 30 % of memory bandwidth at 1e4–1e6 patches | the worst of `stitch64/ours` (1e4) and `stitch_scale/ours/{1e4,1e5,1e6}` `fraction_of_bandwidth` |
| ONNX Runtime ≥ torch eager | `inference/n64_gs1/onnxruntime` |
| `ptychopinn train` end to end ≥ 1.5× TF (issue 17) | `commands/train/default` vs `commands/train/tf` |
| `ptychopinn reconstruct` end to end ≥ 1.5× TF inference + stitch (issue 17) | `commands/reconstruct/default` vs `commands/reconstruct/tf` |
| `--deterministic` step ≤ 1.3× the default step (issue 17) | `commands/train_step/deterministic` / `commands/train_step/default` |
| `ptychopinn reconstruct --precision bf16` end to end ≥ 4× TF inference + stitch (issue 17) | `commands/reconstruct/bf16` vs `commands/reconstruct/tf` |
| ONNX Runtime runner ≥ the default torch `reconstruct` (issue 17) | `commands/reconstruct/onnxruntime` vs `commands/reconstruct/default` |

The suite prints each target as MET / NOT MET / n/a; it never fails on them.
"""


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by the benchmark suite; regenerate with",
        "",
        "```",
        REGENERATE,
        "```",
        "",
        "(`ptychopinn bench` runs the same suite from a source checkout; `--quick` is the CI smoke test;",
        "`--only GROUP` runs one group: limits, kernels, inference, training, scale, quality, distributed, live, commands).",
        "",
        f"Mode: **{report['mode']}**, started {report['started']}, took {report['duration_s']:.0f} s.",
        *[f"Group(s) {', '.join(r['groups'])} replaced by a later run (`python -m benchmarks.merge_results`): started "
          f"{r.get('started')}, took {r.get('duration_s') or 0:.0f} s, `{r.get('command')}`." for r in report.get("merged_runs") or []],
        "",
        "## Machine",
        "",
        _md_table(["key", "value"], [[k, str(v)] for k, v in m.items()]),
        "",
        "## Results",
        "",
        _md_table(HEADERS, table_rows(report)),
        "",
        "## Targets",
        "",
    ]
    trows = []
    for t in report.get("targets") or []:
        state = {True: "met", False: "**not met**", None: "n/a"}[t["met"]]
        val = "-" if t["value"] is None else f"{t['value']:.3g}"
        trows.append([t["name"], t["description"], val, f"{t['comparison']} {t['threshold']:g}", state, t["detail"]])
    lines.append(_md_table(["target", "what", "value", "need", "state", "detail"], trows))
    lines += ["", ABOUT.rstrip(), "", "## Row descriptions", ""]
    lines += [f"- `{c['name']}`: {c['description']}" for c in report["cases"]]
    lines.append("")
    return "\n".join(lines)


__all__ = ["markdown"]
