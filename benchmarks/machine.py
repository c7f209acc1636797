"""Machine description recorded with every benchmark run (CPU, cores, memory, library versions)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any


def _cpuinfo() -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or None, flags


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(threads: int, device: str = "cpu") -> dict[str, Any]:
    """A JSON-ready description of this machine and the software versions in use."""
    import torch

    model, flags = _cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16") if f in flags]
    tf_version = _version("tensorflow") or _version("tensorflow-cpu")
    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cores_available": affinity,
        "cpu_isa": isa,
        "memory_gb": _mem_total_gb(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "tensorflow": tf_version,
        "tf_threads": threads if tf_version else None,
        "onnxruntime": _version("onnxruntime"),
        "ort_threads": threads if _version("onnxruntime") else None,
        "numpy": _version("numpy"),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


__all__ = ["describe"]
