"""Merge the rows of one partial suite run into benchmarks/results.json without losing the others:
`python -m benchmarks.merge_results PART.json [--into benchmarks/results.json]`.

Rows of the groups PART.json measured replace those groups' rows in the target file (other
groups' rows stay as they were); the targets are re-evaluated over the merged rows (every
target's ratio still compares rows of one run: each target's rows belong to one group), and
`merged_runs` records where each replaced group came from (start time, command, mode, load).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import atomic_write_text
from .targets import evaluate_targets


def merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    groups = sorted({c["group"] for c in part["cases"]} - {"limits"})
    kept = [c for c in base["cases"] if c["group"] not in groups]
    out = dict(base)
    out["cases"] = kept + [c for c in part["cases"] if c["group"] in groups]
    runs = [r for r in base.get("merged_runs", []) if not set(r["groups"]) & set(groups)]
    runs.append({"groups": groups, "started": part.get("started"), "command": part.get("command"), "mode": part.get("mode"),
                 "duration_s": part.get("duration_s"),
                 "load_average_at_start": (part.get("machine") or {}).get("load_average_at_start")})
    out["merged_runs"] = runs
    out["targets"] = evaluate_targets(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", type=Path)
    p.add_argument("--into", type=Path, default=Path(__file__).with_name("results.json"))
    args = p.parse_args(argv)
    merged = merge(json.loads(args.into.read_text()), json.loads(args.part.read_text()))
    atomic_write_text(args.into, json.dumps(merged, indent=1) + "\n")
    print(f"merged {args.part} into {args.into} ({len(merged['cases'])} rows)")
    return 0


__all__ = ["merge", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
