"""Optional extras: the one line a user sees when one is missing (standard library only).

    try:
        import onnx
    except ModuleNotFoundError as exc:
        raise SystemExit(missing_extra_message(exc))
"""
from __future__ import annotations

__all__ = ["EXTRAS", "missing_extra_message", "is_missing_extra"]

#: top-level module -> the pyproject extra that installs it
EXTRAS: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "matplotlib": "plot",
    "yaml": "yaml",
    "tensorflow": "tf",
}


def _top(exc: ImportError) -> str:
    return (getattr(exc, "name", None) or "").split(".")[0]


def is_missing_extra(exc: BaseException) -> bool:
    """True for a ModuleNotFoundError of a third-party package (not of ptychopinn itself)."""
    return isinstance(exc, ModuleNotFoundError) and _top(exc) not in ("", "ptychopinn", "kernels", "interop")


def missing_extra_message(exc: ImportError) -> str:
    """'onnx is not installed: pip install "ptychopinn[onnx]"' (or `pip install NAME` for a
    package that is not one of the extras)."""
    name = _top(exc)
    pip_name = {"yaml": "pyyaml"}.get(name, name)
    if name in EXTRAS:
        return f'the optional package {pip_name} is not installed: pip install "ptychopinn[{EXTRAS[name]}]"'
    return f"the package {pip_name} is not installed: pip install {pip_name}"
