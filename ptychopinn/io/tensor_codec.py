"""State dicts ⇄ safetensors bytes, with complex tensors stored as `(..., 2)` real views.

safetensors has no complex dtype, so each complex tensor is written as `torch.view_as_real`
(last axis = [real, imag]) and its name is listed in the header metadata key `__complex__`
(a JSON list). Decoding validates the header itself before handing the bytes to safetensors,
so a corrupt, truncated or non-safetensors file gives one-line ModelFormatError.
"""
from __future__ import annotations

import json
from typing import Mapping

import torch
from safetensors.torch import load, save

from ..errors import ModelFormatError

__all__ = ["COMPLEX_KEY", "encode_state", "decode_state", "read_header"]

COMPLEX_KEY = "__complex__"
#: safetensors' own limit on the JSON header
_MAX_HEADER = 100 * 1024 * 1024


def encode_state(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise a state dict (any devices, real or complex tensors) to safetensors bytes."""
    tensors: dict[str, torch.Tensor] = {}
    complex_names: list[str] = []
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state entry {name!r} is a {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu")
        if t.is_complex():
            t = torch.view_as_real(t.resolve_conj())
            complex_names.append(name)
        tensors[name] = t.contiguous().clone()
    meta = {"format": "pt", **dict(metadata or {})}
    meta[COMPLEX_KEY] = json.dumps(sorted(complex_names))
    return save(tensors, metadata=meta)


def read_header(data: bytes, source: str) -> tuple[dict, dict[str, str]]:
    """(tensor header {name: {dtype, shape, data_offsets}}, metadata) of safetensors bytes."""
    if len(data) < 8:
        raise ModelFormatError(f"{source}: not a safetensors file (only {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _MAX_HEADER or 8 + n > len(data):
        raise ModelFormatError(
            f"{source}: not a safetensors file or truncated (header length {n}, file size {len(data)} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFormatError(f"{source}: corrupt safetensors header (not UTF-8 JSON)") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{source}: corrupt safetensors header (expected a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFormatError(f"{source}: safetensors __metadata__ must map strings to strings")
    end = 0
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise ModelFormatError(f"{source}: corrupt safetensors entry for tensor {name!r}")
        offsets = info["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ModelFormatError(f"{source}: corrupt data_offsets for tensor {name!r}")
        end = max(end, offsets[1])
    if 8 + n + end > len(data):
        raise ModelFormatError(
            f"{source}: truncated safetensors file ({len(data)} bytes, tensors need {8 + n + end})"
        )
    return header, metadata


def decode_state(data: bytes, source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors bytes into CPU tensors (complex ones restored) and the metadata.

    source: the file name used in error messages. Never unpickles anything.
    """
    header, metadata = read_header(data, source)
    try:
        complex_names = json.loads(metadata.get(COMPLEX_KEY, "[]"))
    except json.JSONDecodeError:
        raise ModelFormatError(f"{source}: metadata key {COMPLEX_KEY!r} is not a JSON list") from None
    if not isinstance(complex_names, list) or not all(isinstance(c, str) for c in complex_names):
        raise ModelFormatError(f"{source}: metadata key {COMPLEX_KEY!r} must be a JSON list of tensor names")
    try:
        tensors = load(data)
    except Exception as exc:  # SafetensorError and friends: one line, no traceback chain
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"{source}: corrupt safetensors data ({msg})") from None
    for name in complex_names:
        t = tensors.get(name)
        if t is None:
            raise ModelFormatError(f"{source}: {COMPLEX_KEY} names tensor {name!r}, which is not in the file")
        if t.dtype not in (torch.float32, torch.float64, torch.float16) or t.ndim < 1 or t.shape[-1] != 2:
            raise ModelFormatError(
                f"{source}: complex tensor {name!r} must be stored as float (..., 2), got {t.dtype} {tuple(t.shape)}"
            )
        if t.dtype == torch.float16:
            t = t.float()
        tensors[name] = torch.view_as_complex(t.contiguous().clone())
    return tensors, metadata
