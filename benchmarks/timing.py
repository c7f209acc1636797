"""Timing helpers shared by the torch side and the TensorFlow worker (no torch or TF import).

`measure(fn)` runs warm-up calls, then timed repeats, each repeat looping `fn` enough times to
last at least `min_repeat_s`; the result is seconds per call (median, quartiles, min, max).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Stats:
    """Seconds per call over `repeats` timed repeats (after `warmup` untimed calls)."""

    median_s: float
    spread_s: float  # inter-quartile range (p75 − p25) of the repeats
    min_s: float
    max_s: float
    repeats: int
    warmup: int
    inner: int  # calls per timed repeat
    samples: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "spread_s": self.spread_s,
            "spread_rel": self.spread_s / self.median_s if self.median_s > 0 else None,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "inner": self.inner,
        }


def stats_from_dict(d: dict[str, Any]) -> Stats:
    """Inverse of `Stats.as_dict` (samples are not kept)."""
    return Stats(median_s=d["median_s"], spread_s=d["spread_s"], min_s=d["min_s"], max_s=d["max_s"],
                 repeats=d["repeats"], warmup=d["warmup"], inner=d["inner"])


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stats_of(samples: list[float], warmup: int = 0, inner: int = 1) -> Stats:
    """Stats of per-call times `samples` (seconds)."""
    return Stats(
        median_s=statistics.median(samples),
        spread_s=_quantile(samples, 0.75) - _quantile(samples, 0.25),
        min_s=min(samples),
        max_s=max(samples),
        repeats=len(samples),
        warmup=warmup,
        inner=inner,
        samples=list(samples),
    )


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_repeat_s: float = 0.05,
    budget_s: float | None = None,
    sync: Callable[[], None] | None = None,
) -> Stats:
    """Time `fn()` (seconds per call).

    warmup: untimed calls first (compilation, caches, allocator). repeats: timed repeats (at
    least 3 are kept even when `budget_s` is exceeded). Short calls are looped `inner` times per
    repeat so one repeat lasts ≥ `min_repeat_s`. budget_s: stop adding repeats once the timed
    total passes it. sync: called before reading the clock (e.g. `torch.cuda.synchronize`).
    """
    sync = sync or (lambda: None)
    t_first = None
    for i in range(max(warmup, 0)):
        t0 = time.perf_counter()
        fn()
        sync()
        t_first = time.perf_counter() - t0
    if t_first is None:  # calibrate on the first timed call instead
        t_first = 0.0
    inner = 1
    if 0 < t_first < min_repeat_s:
        inner = max(1, int(min_repeat_s / t_first))
    samples: list[float] = []
    spent = 0.0
    for r in range(max(repeats, 1)):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        dt = time.perf_counter() - t0
        samples.append(dt / inner)
        spent += dt
        if budget_s is not None and spent > budget_s and r + 1 >= 3:
            break
    return stats_of(samples, warmup=warmup, inner=inner)


__all__ = ["Stats", "measure", "stats_of", "stats_from_dict"]
