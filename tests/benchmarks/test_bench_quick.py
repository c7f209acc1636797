"""The benchmark suite: `--quick` smoke run (JSON structure, no timing assertions) plus unit checks
of the pieces the numbers depend on (FLOP count, baseline resolution, statistics)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.common import Row
from benchmarks.flops import conv_flops_per_pattern
from benchmarks.suite import SCHEMA, resolve_baselines
from benchmarks.timing import Stats, measure, stats_of
from ptychopinn.config import ModelConfig

REPO = Path(__file__).resolve().parents[2]

EXPECTED = [
    "limits/memcpy", "limits/matmul_f32", "limits/matmul_bf16",
    "translate/ours", "translate/grid_sample", "translate/tf",
    "extract/ours", "extract/translate_crop", "extract/tf",
    "stitch/ours", "stitch/full_canvas", "stitch/tf", "stitch64/ours",
    "inference/n64_gs1/eager_f32", "inference/n64_gs1/eager_bf16", "inference/n64_gs1/eager_f32_channels_last",
    "inference/n64_gs1/eager_f32_1thread", "inference/n64_gs1/compiled_f32", "inference/n64_gs1/onnxruntime",
    "inference/n64_gs1/tf", "inference/n64_gs2/eager_f32",
    "training/n64_gs1/eager_f32", "training/n64_gs1/tf",
    "quality/ours", "quality/tf",
    "commands/train/default", "commands/train/tf", "commands/reconstruct/default", "commands/reconstruct/tf",
    "commands/reconstruct/onnxruntime", "commands/train_step/default", "commands/train_step/deterministic",
]
ROW_KEYS = {"name", "group", "description", "role", "status", "median_s", "spread_s", "min_s", "max_s", "repeats",
            "items", "unit", "throughput", "baseline", "ratio", "metrics"}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "case" in proc.stdout and "targets:" in proc.stdout  # the printed table
    return json.loads(out.read_text())


def test_quick_report_structure(quick_report: dict) -> None:
    r = quick_report
    assert r["schema"] == SCHEMA and r["mode"] == "quick"
    m = r["machine"]
    for key in ("cpu_model", "cpu_count", "cores_available", "torch", "torch_threads", "tensorflow", "onnxruntime", "memory_gb"):
        assert key in m
    assert m["torch"] == torch.__version__ and m["torch_threads"] >= 1
    rows = {c["name"]: c for c in r["cases"]}
    missing = [n for n in EXPECTED if n not in rows]
    assert not missing, missing
    for c in r["cases"]:
        assert ROW_KEYS <= set(c), c["name"]
        assert c["status"] == "ok" or c["status"].startswith("skipped: "), (c["name"], c["status"])
        if c["status"] == "ok":
            assert c["median_s"] > 0 and c["spread_s"] >= 0 and c["repeats"] >= 1, c["name"]
            assert c["min_s"] <= c["median_s"] <= c["max_s"]
    # the kernels, limits and default inference/training rows must actually run
    for name in ("limits/memcpy", "translate/ours", "extract/ours", "stitch/ours", "stitch64/ours",
                 "inference/n64_gs1/eager_f32", "training/n64_gs1/eager_f32", "stitch_scale/ours/500",
                 "commands/train/default", "commands/reconstruct/default", "commands/train_step/default",
                 "commands/train_step/deterministic"):
        assert rows[name]["status"] == "ok", (name, rows[name]["status"])
    # every measured candidate names a baseline; when one was measured, the first measured one is
    # used and ratio = its median / ours (TF-style stitching beyond its memory budget has none)
    for c in r["cases"]:
        if c["status"] == "ok" and c["role"] == "candidate" and c["baseline_candidates"]:
            measured = [b for b in c["baseline_candidates"] if rows.get(b, {}).get("status") == "ok"]
            assert c["baseline"] == (measured[0] if measured else c["baseline_candidates"][0]), c["name"]
            if measured:
                assert c["ratio"] == pytest.approx(rows[c["baseline"]]["median_s"] / c["median_s"])
            else:
                assert c["ratio"] is None
    # TF rows either ran or say why not
    for name in ("translate/tf", "inference/n64_gs1/tf", "training/n64_gs1/tf"):
        st = rows[name]["status"]
        assert st == "ok" or st.startswith("skipped: "), st
        if st == "ok" and name == "inference/n64_gs1/tf":  # same weights: outputs must agree
            assert rows[name]["metrics"]["rel_l2_object_vs_ours"] < 1e-4
    # numerical agreement of our kernels with the references
    assert rows["translate/ours"]["metrics"]["rel_l2_vs_grid_sample"] < 1e-5
    assert rows["stitch/ours"]["metrics"]["rel_l2_vs_full_canvas"] < 1e-4
    assert rows["stitch64/ours"]["metrics"]["rel_l2_vs_reference"] < 1e-5
    assert {t["name"] for t in r["targets"]} >= {"inference_f32_vs_tf", "train_step_vs_tf", "stitch_1e6_peak_rss",
                                                "train_command_vs_tf", "reconstruct_command_vs_tf",
                                                "deterministic_step_overhead", "onnx_runner_vs_default"}
    # the command rows count the work the command did: every training group once per epoch
    tr = rows["commands/train/default"]
    assert tr["items"] == tr["metrics"]["train_groups"] * tr["metrics"]["epochs"] > 0
    if rows["commands/train/tf"]["status"] == "ok":  # same groups and epochs on the TF side
        assert rows["commands/train/tf"]["items"] == tr["items"]
        assert len(rows["commands/train/tf"]["metrics"]["history"]) == tr["metrics"]["epochs"]
    if rows["commands/reconstruct/tf"]["status"] == "ok":
        assert rows["commands/reconstruct/tf"]["items"] == rows["commands/reconstruct/default"]["items"]
    det = {t["name"]: t for t in r["targets"]}["deterministic_step_overhead"]
    assert det["value"] == pytest.approx(rows["commands/train_step/deterministic"]["median_s"]
                                         / rows["commands/train_step/default"]["median_s"])


def _hook_flops(config: ModelConfig) -> float:
    """FLOP of every Conv2d in a real forward pass, counted from output shapes (oracle)."""
    from ptychopinn.model import PtychoPINN

    model = PtychoPINN(config).eval()
    total = []

    def hook(mod, inp, out):
        total.append(2 * out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1])

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(hook)
    C = config.channels
    with torch.inference_mode():
        model.predict_object(torch.rand(1, C, config.N, config.N), torch.zeros(1, C, 2))
    return sum(total) / C


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig(gridsize=2), ModelConfig(probe_big=False),
                                    ModelConfig(pad_object=False)], ids=["gs1", "gs2", "no_probe_big", "no_pad_object"])
def test_flop_count_matches_forward_hooks(config: ModelConfig) -> None:
    assert conv_flops_per_pattern(config) == _hook_flops(config)


def test_resolve_baselines_prefers_first_measured() -> None:
    st = lambda t: stats_of([t, t, t])  # noqa: E731
    rows = [
        Row("a/tf", "g", "", None, status="skipped: tensorflow not installed", role="baseline"),
        Row("a/ref", "g", "", st(2.0), role="baseline"),
        Row("a/ours", "g", "", st(0.5), baselines=["a/tf", "a/ref"]),
        Row("b/ours", "g", "", st(1.0), baselines=["b/tf"]),
    ]
    resolve_baselines(rows)
    assert rows[2].baseline == "a/ref" and rows[2].ratio == pytest.approx(4.0)
    assert rows[3].baseline == "b/tf" and rows[3].ratio is None  # named but not measured
    assert rows[1].ratio is None


def test_stats_quantiles_and_measure_loops() -> None:
    s = stats_of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.median_s, s.spread_s, s.min_s, s.max_s) == (3.0, 2.0, 1.0, 5.0)
    calls = []
    st = measure(lambda: calls.append(1), warmup=2, repeats=4, min_repeat_s=0.001)
    assert isinstance(st, Stats) and st.repeats == 4 and st.inner >= 1
    assert len(calls) == 2 + 4 * st.inner


def test_cli_bench_finds_the_checkout() -> None:
    from ptychopinn.cli import bench

    assert bench.find_checkout() == REPO
    with pytest.raises(SystemExit) as exc:
        from ptychopinn.cli import main

        main(["bench", "--help"])
    assert exc.value.code == 0


def _case_row(name: str, seconds: float, amp: float, phase: float) -> dict:
    return {"name": name, "status": "ok", "median_s": seconds, "metrics": {"amplitude_ssim": amp, "phase_ssim": phase}}


def test_refinement_targets_on_a_synthetic_report() -> None:
    """Issue 15's goals: the fastest network-based row with both SSIMs >= 0.95 against the
    100-epoch baselines' time (<= 1/4), and at low dose the SSIM gain over the best baseline row
    that took no longer (>= 0)."""
    from benchmarks.targets import evaluate_targets

    p = "quality/refine/"
    cases = [_case_row(p + "1e9/network", 1.0, 0.5, 0.7), _case_row(p + "1e9/refine10", 1.5, 0.96, 0.97),
             _case_row(p + "1e9/refine20", 2.0, 0.97, 0.98), _case_row(p + "1e9/refine5", 1.2, 0.90, 0.96),
             _case_row(p + "1e9/iterative100", 4.0, 0.99, 0.99), _case_row(p + "1e9/ptychi_lsqml_gaussian100", 16.0, 0.97, 0.97),
             _case_row(p + "1e4/refine10", 1.5, 0.70, 0.95), _case_row(p + "1e4/refine50", 3.0, 0.60, 0.96),
             _case_row(p + "1e4/iterative10", 0.3, 0.57, 0.91), _case_row(p + "1e4/iterative50", 1.6, 0.58, 0.95),
             {"name": p + "1e4/ptychi_lsqml_gaussian10", "status": "skipped: no interpreter", "median_s": None, "metrics": {}}]
    t = {x["name"]: x for x in evaluate_targets({"cases": cases})}
    hi = t["refine_high_dose_time_vs_iterative"]
    assert hi["value"] == pytest.approx(1.5 / 4.0) and hi["met"] is False and "refine10" in hi["detail"]
    assert t["refine_high_dose_time_vs_ptychi_lsqml_gaussian"]["value"] == pytest.approx(1.5 / 16.0)
    assert t["refine_high_dose_time_vs_ptychi_lsqml_gaussian"]["met"] is True
    lo = t["refine_low_dose_equal_time_vs_iterative"]
    # refine10 (1.5 s) only faces iterative10 (0.3 s): min(0.70 - 0.57, 0.95 - 0.91) = 0.04;
    # refine50 (3.0 s) faces both: min(0.60 - 0.58, 0.96 - 0.95) = 0.01
    assert lo["value"] == pytest.approx(0.04) and lo["met"] is True and "refine10" in lo["detail"]
    assert t["refine_low_dose_equal_time_vs_ptychi_lsqml"]["met"] is None  # skipped rows are not measured
    assert t["refine_low_dose_equal_time_vs_tuned_iterative"]["met"] is None  # no such rows
