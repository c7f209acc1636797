"""`--keep-best K`: the K best epochs' models by the monitored loss, under `<model dir>/best/`.

Each kept epoch is a native model directory named `epoch0007-val_loss1.234568e-03` (loadable
with `io.load_model`); `best/index.json` lists them best first. The list is part of the training
checkpoint, so `--resume` keeps exactly the models of the epochs it resumes from: a directory
written by an interrupted epoch is removed, and one dropped from the list is deleted only after
the checkpoint that no longer lists it was written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

BEST_DIR = "best"
INDEX_FILE = "index.json"


def entry_name(epoch: int, monitor: str, value: float) -> str:
    return f"epoch{epoch:04d}-{monitor}{value:.6e}"


class BestKeeper:
    """Ranks epochs by `value` (lower is better; ties: the earlier epoch first)."""

    def __init__(self, out_dir: Path, k: int, monitor: str, entries: list[dict[str, Any]] | None = None) -> None:
        self.folder = out_dir / BEST_DIR
        self.k = k
        self.monitor = monitor
        self.entries: list[dict[str, Any]] = list(entries or [])
        self._dropped: list[str] = []

    def reconcile(self) -> None:
        """Delete the folders of `best/` that the checkpoint does not list (resume)."""
        if not self.folder.is_dir():
            return
        keep = {e["name"] for e in self.entries}
        for p in self.folder.iterdir():
            if p.is_dir() and p.name not in keep:
                shutil.rmtree(p)
        self._write_index()

    def consider(self, epoch: int, value: float, save: Callable[[Path], None]) -> bool:
        """Save this epoch's model (`save(path)`) if it ranks in the top K; returns whether it did."""
        if self.k <= 0 or value != value:  # NaN never ranks
            return False
        ranked = sorted(self.entries + [{"epoch": epoch, "value": value, "name": ""}], key=lambda e: (e["value"], e["epoch"]))
        if all(e["epoch"] != epoch for e in ranked[: self.k]):
            return False
        name = entry_name(epoch, self.monitor, value)
        self.folder.mkdir(parents=True, exist_ok=True)
        save(self.folder / name)
        ranked = [dict(e, name=name) if e["epoch"] == epoch else e for e in ranked]
        self._dropped += [e["name"] for e in ranked[self.k :]]
        self.entries = ranked[: self.k]
        return True

    def commit(self) -> None:
        """After the checkpoint was written: delete the dropped folders, rewrite index.json."""
        for name in self._dropped:
            shutil.rmtree(self.folder / name, ignore_errors=True)
        self._dropped = []
        if self.entries:
            self._write_index()

    def _write_index(self) -> None:
        from ..io.atomic import atomic_write

        if not self.folder.is_dir():
            return
        doc = {"monitor": self.monitor, "models": [dict(e) for e in self.entries]}
        with atomic_write(self.folder / INDEX_FILE, "w") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")

    def state(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entries]


__all__ = ["BestKeeper", "BEST_DIR", "INDEX_FILE", "entry_name"]
