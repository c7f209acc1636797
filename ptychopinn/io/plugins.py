"""Named plugin registries filled by code and by package entry points (stdlib only).

A `Registry` maps names to objects (model loaders, stitchers). Entries come from
`register(name, obj)` calls and, on first lookup, from the entry points of `group`
(`importlib.metadata`; e.g. `[project.entry-points."ptychopinn.model_loaders"]` in a
pyproject.toml): each entry point names an object, loaded lazily. This is how the core reaches
`ptychopinn.interop` (legacy TF bundles, the TF-compatible stitcher) without importing it:
interop declares entry points, the core looks names up. An entry point whose import fails (an
optional extra missing) is skipped; `broken()` says why, for error messages.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """name → object, filled by `register` and (once, lazily) by the entry points of `group`."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._discovered = False

    def register(self, name: str, obj: T, *, replace: bool = False) -> None:
        """Add `obj` under `name`; another object under an existing name is an error unless `replace`
        (registering an equal object again is a no-op)."""
        if not replace and name in self._items and self._items[name] != obj:
            raise ValueError(f"{self.group}: {name!r} is already registered")
        self._items[name] = obj

    def unregister(self, name: str) -> None:
        """Remove `name` (tests, or a plugin replaced at run time); missing names are ignored."""
        self._items.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in entry_points(group=self.group):
            if ep.name in self._items:  # registered in code first: that one wins
                continue
            try:
                self._items[ep.name] = ep.load()
            except ImportError as exc:  # an optional extra is missing: the plugin is unavailable
                self._broken[ep.name] = f"{ep.value}: {exc}"

    def get(self, name: str) -> T | None:
        self._discover()
        return self._items.get(name)

    def items(self, *, discover: bool = True) -> list[tuple[str, T]]:
        """(name, object) in registration order (code first, then entry points); `discover=False`
        lists only what is registered so far, without reading entry points."""
        if discover:
            self._discover()
        return list(self._items.items())

    def broken(self) -> dict[str, str]:
        """Entry points that failed to load: name → 'module:attr: error'."""
        self._discover()
        return dict(self._broken)
