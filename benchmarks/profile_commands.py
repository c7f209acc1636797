"""Profiles of the two user commands: `python -m benchmarks.profile_commands [--positions M] [--epochs E]`.

Builds the `commands` benchmark scan (simulated, int32 counts, no objectGuess), then runs
`ptychopinn train` and `ptychopinn reconstruct` in-process, each once under cProfile (Python
functions and C calls by own time) and once under `torch.profiler` (torch ops by self CPU
time), and prints the top rows of each as Markdown tables (docs/benchmarks.md, issue 17).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ptychopinn.cli import main as cli_main

from .cases_commands import BATCH, SEED, make_scan


def _quiet(argv: list[str]) -> Callable[[], None]:
    def call() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(argv)
        if rc != 0:
            raise RuntimeError(f"ptychopinn {argv[0]} exited {rc}")
    return call


def cprofile_rows(fn: Callable[[], None], top: int) -> tuple[float, list[list[str]]]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof)
    items = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, ncalls, tottime, cumtime, _) in items:
        where = name if file == "~" else f"{Path(file).name}:{line}({name})"
        rows.append([f"`{where}`", str(ncalls), f"{tottime:.2f}", f"{100 * tottime / wall:.0f}%", f"{cumtime:.2f}"])
    return wall, rows


def torch_profile_rows(fn: Callable[[], None], top: int) -> tuple[float, list[list[str]]]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=acts) as prof:
        fn()
    wall = time.perf_counter() - t0
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    rows = [[f"`{e.key}`", str(e.count), f"{e.self_cpu_time_total / 1e6:.2f}", f"{100 * e.self_cpu_time_total / 1e6 / wall:.0f}%"]
            for e in ev]
    return wall, rows


def _md(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ptychopinn_prof_") as d:
        work = Path(d)
        scan = make_scan(work / "scan.npz", args.positions, 192)
        n = [0]

        def out(kind: str) -> str:
            n[0] += 1
            return str(work / f"{kind}{n[0]}")

        train_argv = lambda: ["train", "--data", str(scan), "--out", out("model"), "--epochs", str(args.epochs),  # noqa: E731
                              "--batch-size", str(BATCH), "--seed", str(SEED), "--quiet"]
        _quiet(train_argv())()  # warm-up (and the model reconstruct uses)
        model = str(work / "model1")
        recon_argv = lambda: ["reconstruct", "--model", model, "--data", str(scan), "--out", out("rec"), "--quiet"]  # noqa: E731
        _quiet(recon_argv())()
        sections: list[str] = []
        for title, argv_of in ((f"`ptychopinn train` ({args.positions} positions, {args.epochs} epoch(s), batch {BATCH})", train_argv),
                               (f"`ptychopinn reconstruct` ({args.positions} positions, batch 64)", recon_argv)):
            wall, rows = cprofile_rows(_quiet(argv_of()), args.top)
            sections.append(f"{title}, cProfile, {wall:.1f} s under the profiler, top {args.top} by own time:\n\n"
                            + _md(["function", "calls", "own s", "% of wall", "cumulative s"], rows))
            wall, rows = torch_profile_rows(_quiet(argv_of()), args.top)
            sections.append(f"{title}, torch.profiler, {wall:.1f} s under the profiler, top {args.top} ops by self CPU time:\n\n"
                            + _md(["op", "calls", "self CPU s", "% of wall"], rows))
    print("\n\n".join(sections))
    return 0


__all__ = ["main", "cprofile_rows", "torch_profile_rows"]


if __name__ == "__main__":
    raise SystemExit(main())
