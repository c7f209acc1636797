"""benchmarks.common.atomic_write_text: atomic, permissions follow the umask (via ptychopinn.io.atomic)."""
from __future__ import annotations

import os

from benchmarks.common import atomic_write_text


def test_atomic_write_text_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "report.json"
        atomic_write_text(target, "{}\n")
        assert target.read_text() == "{}\n"
        assert target.stat().st_mode & 0o777 == 0o644  # mkstemp alone would give 0o600
        assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temporary left
    finally:
        os.umask(old)
