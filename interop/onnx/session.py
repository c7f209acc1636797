"""Opening an exported model with ONNX Runtime: providers, metadata, input checks (no torch)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ptychopinn.errors import ConfigError, ModelFormatError

from .metadata import INPUTS, OUTPUTS, OnnxModelInfo, parse_props

#: short names accepted by `--providers`
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError('the ONNX runner needs onnxruntime, which is not installed: pip install "ptychopinn[onnx]"') from exc
    return onnxruntime


def resolve_providers(requested: Sequence[str] | str | None) -> list[str]:
    """Execution providers in priority order; CPU is appended as the fallback.

    requested: names (full ORT names or aliases cpu/cuda/tensorrt/…), a comma-separated
    string, or None for CPU only. ConfigError names any provider this onnxruntime lacks.
    """
    ort = _ort()
    if requested is None:
        names: list[str] = []
    elif isinstance(requested, str):
        names = [s.strip() for s in requested.split(",") if s.strip()]
    else:
        names = [str(s).strip() for s in requested if str(s).strip()]
    available = list(ort.get_available_providers())
    out: list[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ConfigError(f"execution provider {name!r} is not available in this onnxruntime (available: {', '.join(available)})")
        if full not in out:
            out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def open_session(path: str | os.PathLike, providers: Sequence[str] | str | None = None, *, threads: int | None = None) -> tuple[Any, OnnxModelInfo]:
    """(onnxruntime.InferenceSession, OnnxModelInfo) for an exported `.onnx` file.

    ModelFormatError (one line) when the file is missing, not ONNX, or not a ptychopinn export
    (metadata or input/output signature disagree).
    """
    ort = _ort()
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p}: ONNX model not found")
    chosen = resolve_providers(providers)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no provider chatter on stderr
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(p), sess_options=options, providers=chosen)
    except Exception as exc:  # InvalidProtobuf, InvalidGraph, Fail, …: all mean "not a usable model"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFormatError(f"{p}: not a valid ONNX model ({first})") from None
    info = parse_props(session.get_modelmeta().custom_metadata_map, p.name)
    ins = {i.name: i for i in session.get_inputs()}
    outs = [o.name for o in session.get_outputs()]
    if set(ins) != set(INPUTS) or sorted(outs) != sorted(OUTPUTS):
        raise ModelFormatError(f"{p.name}: graph inputs {sorted(ins)} / outputs {outs}, expected {list(INPUTS)} / {list(OUTPUTS)}")
    shape = list(ins["diffraction"].shape)
    expected = [info.channels, info.N, info.N]
    if len(shape) != 4 or shape[1:] != expected:
        raise ModelFormatError(f"{p.name}: input 'diffraction' has shape {shape}, metadata says (B, {info.channels}, {info.N}, {info.N})")
    return session, info


__all__ = ["open_session", "resolve_providers", "PROVIDER_ALIASES"]
