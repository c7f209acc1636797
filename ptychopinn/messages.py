"""One-line user messages for command-line entry points (`ptychopinn`, `ptychopinn-onnx`).

Standard library only, so the torch-free ONNX runner and the CLI share it without either
importing the other.
"""
from __future__ import annotations

import warnings
from typing import Any


def one_line_warnings(prog: str = "ptychopinn") -> None:
    """Print Python warnings (e.g. the data-loading ones) as one line `PROG: warning: ...`.

    Process-wide (it replaces `warnings.formatwarning`, as `logging.basicConfig` configures the
    root logger): call it from a command's entry point only; a second call is a no-op.
    """
    if getattr(warnings.formatwarning, "_ptychopinn_cli", False):
        return

    def _format(message: Any, category: Any, filename: Any, lineno: Any, line: Any = None) -> str:
        return f"{prog}: warning: {' '.join(str(message).split())}\n"

    _format._ptychopinn_cli = True  # type: ignore[attr-defined]
    warnings.formatwarning = _format


__all__ = ["one_line_warnings"]
