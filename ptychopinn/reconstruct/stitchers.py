"""Global stitchers for `reconstruct(stitch=name)` other than the built-in barycentric splat.

A global stitcher is `fn(patches (n, N, N) complex64 numpy, centres (n, 2) float64 [x, y] px,
M: int) -> (S, S) complex canvas` that places the central `M × M` of each patch with canvas point
`(S/2, S/2)` at the float32 mean of the centres (TF `reassemble_position`, spec §4.6). Stitchers
come from `register_stitcher` or the `ptychopinn.stitchers` entry point group (read lazily);
`ptychopinn.interop` provides "tf" that way, so the core never imports interop.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from ..io.plugins import Registry

ENTRY_POINT_GROUP = "ptychopinn.stitchers"
GlobalStitcher = Callable[[Any, Any, int], Any]
_REGISTRY: Registry[GlobalStitcher] = Registry(ENTRY_POINT_GROUP)


def register_stitcher(name: str, fn: GlobalStitcher, *, replace: bool = False) -> None:
    """Register a global stitcher under `name` (see the module docstring for the contract)."""
    _REGISTRY.register(name, fn, replace=replace)


def get_stitcher(name: str) -> GlobalStitcher:
    """The stitcher registered as `name`; ConfigError naming why when there is none."""
    fn = _REGISTRY.get(name)
    if fn is None:
        why = _REGISTRY.broken().get(name)
        hint = f" (its entry point failed to load: {why})" if why else " (is ptychopinn installed with `pip install`, so its entry points exist?)"
        raise ConfigError(f"stitch={name!r}: no stitcher registered under that name in {ENTRY_POINT_GROUP}{hint}")
    return fn


__all__ = ["register_stitcher", "get_stitcher", "ENTRY_POINT_GROUP", "GlobalStitcher"]
