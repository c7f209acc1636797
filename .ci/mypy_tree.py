"""Lay out the source as it is installed, for mypy: `build/mypy/ptychopinn/` with kernels/ and interop/
linked in as `ptychopinn.kernels` / `ptychopinn.interop` (setup.py's package_dir).

mypy cannot follow setuptools' editable import hook, and checking kernels/ or interop/ as top-level
packages would give their modules the wrong names. The tree holds only relative symlinks (rebuilt on
every run), so mypy reads the real files. Usage: `python .ci/mypy_tree.py && python -m mypy`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "mypy"
SUBPACKAGES = {"kernels": "kernels", "interop": "interop"}  # name inside ptychopinn -> folder at the root


def main() -> None:
    shutil.rmtree(TREE, ignore_errors=True)
    pkg = TREE / "ptychopinn"
    pkg.mkdir(parents=True)
    for entry in sorted((ROOT / "ptychopinn").iterdir()):
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(Path("..", "..", "..", "ptychopinn", entry.name))
    for name, folder in SUBPACKAGES.items():
        (pkg / name).symlink_to(Path("..", "..", "..", folder))


if __name__ == "__main__":
    main()
