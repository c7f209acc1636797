"""The benchmark suite: `python -m benchmarks [--quick] [--only NAME] [--json OUT] [--markdown MD]`.

Runs the case groups in order (limits first, so later cases can report their fraction of the
machine's measured limits), resolves each row's baseline, prints a table, checks the targets of
docs/benchmarks.md, and writes JSON (schema `ptychopinn.benchmarks/1`) and/or Markdown.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .common import Context, Row, atomic_write_text, skipped

SCHEMA = "ptychopinn.benchmarks/1"
#: group name -> module (in run order)
GROUPS: dict[str, str] = {
    "limits": "cases_limits",
    "kernels": "cases_kernels",
    "inference": "cases_inference",
    "training": "cases_training",
    "scale": "cases_scale",
    "quality": "cases_quality",
    "distributed": "cases_distributed",
    "live": "cases_live",
    "commands": "cases_commands",
}
REGENERATE = "python -m benchmarks --json benchmarks/results.json --markdown docs/benchmarks.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `python -m benchmarks` and `ptychopinn bench`."""
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI smoke test, < 2 min)")
    parser.add_argument("--only", action="append", metavar="NAME", default=None,
                        help=f"run only this group ({', '.join(GROUPS)}) or rows whose name starts with NAME; repeatable")
    parser.add_argument("--json", metavar="OUT", default=None, help="write the results (with the machine description) here")
    parser.add_argument("--markdown", metavar="MD", default=None, help="write a Markdown report (docs/benchmarks.md)")
    parser.add_argument("--threads", type=int, default=0, help="threads for torch / TF / ONNX Runtime (default: available cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--ptychi-python", metavar="PYTHON", default=os.environ.get("PTYCHOPINN_PTYCHI_PYTHON"),
                        help="the interpreter of a separate venv with pty-chi (`pip install ptychi`; it pulls its own torch): "
                             "adds pty-chi LSQML rows to the quality group (default: $PTYCHOPINN_PTYCHI_PYTHON)")


def _selected_groups(only: list[str] | None) -> list[str]:
    if not only:
        return list(GROUPS)
    groups = []
    for name in only:
        g = name.split("/")[0]
        # row prefixes map to the group that produces them
        g = {"translate": "kernels", "extract": "kernels", "stitch": "kernels", "stitch64": "kernels",
             "train_step": "training", "stitch_scale": "scale"}.get(g, g)
        if g not in GROUPS:
            raise SystemExit(f"benchmarks: unknown --only {name!r}; groups are {', '.join(GROUPS)}")
        if g not in groups:
            groups.append(g)
    # other groups need the machine limits for their fractions
    if "limits" not in groups and any(g in groups for g in ("kernels", "inference", "training", "scale")):
        groups.insert(0, "limits")
    return [g for g in GROUPS if g in groups]


def resolve_baselines(rows: list[Row]) -> None:
    """Set `baseline` (first measured candidate) and `ratio` = baseline median / row median."""
    by_name = {r.name: r for r in rows}
    for r in rows:
        for b in r.baselines:
            other = by_name.get(b)
            if other is not None and other.ok:
                r.baseline = b
                if r.ok and r.stats.median_s > 0:  # type: ignore[union-attr]
                    r.ratio = other.stats.median_s / r.stats.median_s  # type: ignore[union-attr]
                break
        else:
            if r.baselines and r.baseline is None:
                r.baseline = r.baselines[0]  # named, but not measured in this run


def run_suite(quick: bool = False, only: list[str] | None = None, threads: int = 0, verbose: bool = True,
              ptychi_python: str | None = None) -> dict[str, Any]:
    """Run the selected groups and return the JSON-ready report."""
    import torch

    from ptychopinn.io.host_memory import tune_host_allocator

    from .machine import describe
    from .targets import evaluate_targets

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    threads = threads or cores
    torch.set_num_threads(threads)
    # The torch rows run with the allocator settings of the `ptychopinn` command (the commands
    # rows call it in-process and would switch them on half-way otherwise): io/host_memory.py.
    host_allocator = "glibc mmap/trim threshold 1 GiB (as the CLI)" if tune_host_allocator() else "system default"
    groups = _selected_groups(only)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ptychopinn_bench_") as work:
        ctx = Context(quick=quick, threads=threads, workdir=Path(work), verbose=verbose, ptychi_python=ptychi_python)
        machine = describe(threads)
        machine["host_allocator"] = host_allocator
        for g in groups:
            ctx.log(f"[{g}]")
            mod = importlib.import_module(f"{__package__}.{GROUPS[g]}")
            tg = time.perf_counter()
            try:
                rows += mod.run(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken group must not hide the others
                msg = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                rows.append(skipped(f"{g}/error", g, f"group {g} failed", msg))
            ctx.log(f"[{g}] {time.perf_counter() - tg:.1f} s")
        limits = dict(ctx.limits)
    if only:
        keep = [r for r in rows if r.group == "limits" or any(r.name.startswith(o) or r.group == o for o in only)]
        rows = keep
    resolve_baselines(rows)
    report = {
        "schema": SCHEMA,
        "mode": "quick" if quick else "full",
        "started": started,
        "duration_s": time.perf_counter() - t0,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]) if sys.argv and "benchmarks" in sys.argv[0] else None,
        "machine": machine,
        "limits": limits,
        "cases": [r.as_dict() for r in rows],
    }
    report["targets"] = evaluate_targets(report)
    return report


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for c in report["cases"]:
        thr = f"{_fmt_num(c['throughput'])} {c['unit']}" if c["throughput"] is not None else "-"
        spread = f"±{100 * c['spread_rel'] / 2:.0f}%" if c.get("spread_rel") is not None else "-"
        ratio = f"{c['ratio']:.2f}x" if c["ratio"] is not None else "-"
        note = c["status"] if c["status"] != "ok" else _key_metric(c)
        out.append([c["name"], _fmt_time(c["median_s"]), spread, thr, c["baseline"] or "-", ratio, note])
    return out


def _key_metric(c: dict[str, Any]) -> str:
    m = c.get("metrics") or {}
    parts = []
    for k in ("fraction_of_matmul_peak", "fraction_of_bandwidth"):
        if m.get(k) is not None:
            parts.append(f"{k.replace('fraction_of_', '')} {100 * m[k]:.0f}%")
    for k, v in m.items():
        if k.startswith("rel_l2") and v is not None:
            parts.append(f"{k} {v:.1e}")
    if m.get("peak_rss_mb") is not None:
        parts.append(f"peak RSS {m['peak_rss_mb']:.0f} MB")
    return "; ".join(parts)


HEADERS = ["case", "median", "spread (IQR/2)", "throughput", "baseline", "speed-up", "notes"]


def format_table(report: dict[str, Any]) -> str:
    rows = table_rows(report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
    widths[-1] = len(HEADERS[-1])
    line = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(HEADERS), line(["-" * w for w in widths])] + [line(r) for r in rows]
    targets = report.get("targets") or []
    if targets:
        out += ["", "targets:"]
        for t in targets:
            state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            val = "-" if t["value"] is None else f"{t['value']:.3g}"
            out.append(f"  [{state:7s}] {t['name']}: {val} (need {t['comparison']} {t['threshold']:g}) {t['detail']}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    report = run_suite(quick=args.quick, only=args.only, threads=args.threads, verbose=not args.quiet,
                       ptychi_python=getattr(args, "ptychi_python", None))
    print(format_table(report))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        from .report import markdown

        atomic_write_text(Path(args.markdown), markdown(report))
        print(f"wrote {args.markdown}")
    return 0


__all__ = ["main", "run_suite", "run_from_args", "add_arguments", "format_table", "resolve_baselines", "GROUPS", "SCHEMA"]
