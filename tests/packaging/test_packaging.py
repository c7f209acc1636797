"""Packaging: one import name, light package root, split source layout installs correctly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# What importing the light modules (parametrized below) must not pull.
HEAVY = ["torch", "tensorflow", "onnx", "onnxruntime", "matplotlib"]


def _imported_after(module: str) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["ptychopinn", "ptychopinn.config", "ptychopinn.errors", "ptychopinn.interop"])
def test_light_imports_pull_no_heavy_dependency(module: str) -> None:
    assert _imported_after(module) == []


def test_lazy_public_names_resolve() -> None:
    import ptychopinn as pp

    assert pp.ModelConfig().N == 64
    assert issubclass(pp.DataError, ValueError)
    with pytest.raises(AttributeError):
        getattr(pp, "no_such_name")


@pytest.mark.slow
def test_wheel_installs_only_the_ptychopinn_import_name(tmp_path: Path) -> None:
    """Build the wheel, check its top-level names, install it into a fresh venv and import."""
    # Build from a copy of the sources: an in-tree build leaves a `build/` folder whose stale
    # files would leak into later wheels.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for folder in ("ptychopinn", "kernels", "interop"):
        shutil.copytree(REPO_ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("ptychopinn-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"ptychopinn"}, top
    assert "ptychopinn/kernels/__init__.py" in names
    assert "ptychopinn/interop/__init__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    # system site packages give the venv torch/numpy without a download; the wheel is installed
    # into the venv itself, which takes precedence over the editable install of the checkout.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True, capture_output=True)
    code = (
        "import ptychopinn, ptychopinn.kernels, ptychopinn.interop, os\n"
        "print(os.path.dirname(ptychopinn.kernels.__file__))\n"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    kernel_dir = Path(out.stdout.strip().splitlines()[-1])
    assert kernel_dir.parts[-2:] == ("ptychopinn", "kernels")
    assert str(venv) in str(kernel_dir)
