"""Result rows, the run context, and the TensorFlow-worker call shared by every case module.

A case module exposes `run(ctx: Context) -> list[Row]`. A row is one measured variant. Rows name
their baseline(s) in preference order; after all cases ran, the suite sets `baseline` to the
first of them that was measured and `ratio = baseline median / row median` (a speed-up: > 1 is
faster than the baseline).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.io.atomic import atomic_write

from .timing import Stats

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One measured variant of a case (times are seconds per call)."""

    name: str
    group: str
    description: str
    stats: Stats | None = None
    #: work per call, in `unit`'s numerator (patterns, patches, bytes, FLOP …)
    items: float | None = None
    #: throughput unit, e.g. "patterns/s"; throughput = items / median_s × unit_scale
    unit: str | None = None
    unit_scale: float = 1.0
    #: "candidate" (compared with a baseline), "baseline", or "limit" (a machine limit)
    role: str = "candidate"
    baselines: list[str] = field(default_factory=list)
    status: str = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)
    # filled in by the suite
    baseline: str | None = None
    ratio: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.stats is not None

    @property
    def throughput(self) -> float | None:
        if not self.ok or self.items is None or self.stats.median_s <= 0:  # type: ignore[union-attr]
            return None
        return self.items / self.stats.median_s * self.unit_scale  # type: ignore[union-attr]

    def as_dict(self) -> dict[str, Any]:
        st = self.stats.as_dict() if self.stats is not None else {}
        return {
            "name": self.name,
            "group": self.group,
            "description": self.description,
            "role": self.role,
            "status": self.status,
            "median_s": st.get("median_s"),
            "spread_s": st.get("spread_s"),
            "spread_rel": st.get("spread_rel"),
            "min_s": st.get("min_s"),
            "max_s": st.get("max_s"),
            "repeats": st.get("repeats"),
            "warmup": st.get("warmup"),
            "inner": st.get("inner"),
            "items": self.items,
            "unit": self.unit,
            "throughput": self.throughput,
            "baseline_candidates": list(self.baselines),
            "baseline": self.baseline,
            "ratio": self.ratio,
            "metrics": _jsonable(self.metrics),
        }


def skipped(name: str, group: str, description: str, reason: str, **kw: Any) -> Row:
    return Row(name=name, group=group, description=description, status=f"skipped: {reason}", **kw)


@dataclass
class Context:
    """Settings of one suite run."""

    quick: bool
    threads: int
    workdir: Path
    device: str = "cpu"
    verbose: bool = True
    limits: dict[str, float] = field(default_factory=dict)  # "bandwidth_Bps", "flops_f32", "flops_bf16"
    ptychi_python: str | None = None  # interpreter of a separate venv with pty-chi (benchmarks/ptychi_worker.py)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)


def tf_available() -> bool:
    """True when `tensorflow` can be imported (checked without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


TF_MISSING = "tensorflow not installed"


def run_tf_worker(ctx: Context, tasks: list[dict[str, Any]], arrays: dict[str, np.ndarray], timeout_s: float = 1800) -> dict[str, Any]:
    """Run `tasks` in a fresh `python -m benchmarks.tf_worker` process (TF never shares a process
    with torch's thread pools). Returns {"results": [...], "arrays": {name: ndarray}, "tf_version"}.

    Raises RuntimeError with the worker's last stderr line on failure.
    """
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="tf_") as d:
        d = Path(d)
        np.savez(d / "in.npz", **arrays)
        (d / "tasks.json").write_text(json.dumps({"threads": ctx.threads, "tasks": tasks}))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.tf_worker", str(d)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        out_json = d / "out.json"
        if proc.returncode != 0 or not out_json.exists():
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            raise RuntimeError(f"tf worker failed (rc={proc.returncode}): {lines[-1] if lines else 'no output'}")
        out = json.loads(out_json.read_text())
        with np.load(d / "out.npz") as z:
            out["arrays"] = {k: z[k] for k in z.files}
    return out


def run_ptychi_worker(ctx: Context, arrays: dict[str, np.ndarray], timeout_s: float = 1800) -> dict[str, np.ndarray]:
    """Run `benchmarks/ptychi_worker.py` on `arrays` (its IN.npz keys) with `ctx.ptychi_python`, the
    interpreter of pty-chi's own venv (pty-chi pulls its own torch: never in this process).
    Returns the worker's OUT.npz arrays; RuntimeError with its last stderr line on failure."""
    if not ctx.ptychi_python:
        raise RuntimeError("no pty-chi interpreter given (--ptychi-python)")
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="ptychi_") as d:
        inp, out = Path(d) / "in.npz", Path(d) / "out.npz"
        np.savez(inp, **arrays)
        proc = subprocess.run([ctx.ptychi_python, str(REPO_ROOT / "benchmarks" / "ptychi_worker.py"), str(inp), str(out)],
                              cwd=d, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.exists():
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            raise RuntimeError(f"pty-chi worker failed (rc={proc.returncode}): {lines[-1] if lines else 'no output'}")
        with np.load(out) as z:
            return {k: z[k] for k in z.files}


def rel_l2(a: Any, b: Any) -> float:
    """‖a − b‖ / ‖b‖ in float64/complex128."""
    a = np.asarray(a)
    b = np.asarray(b)
    dt = np.complex128 if (np.iscomplexobj(a) or np.iscomplexobj(b)) else np.float64
    a = a.astype(dt)
    b = b.astype(dt)
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-300))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, permissions following the umask (`ptychopinn.io.atomic`)."""
    with atomic_write(Path(path), "w") as fh:
        fh.write(text)


__all__ = ["Row", "Context", "skipped", "tf_available", "run_tf_worker", "run_ptychi_worker", "rel_l2", "atomic_write_text", "TF_MISSING", "REPO_ROOT"]
