"""Host-memory allocator settings for the command-line processes (glibc `mallopt`).

PyTorch has no caching allocator for CPU tensors: every activation of every batch is a fresh
`malloc`. glibc serves allocations above its mmap threshold (dynamic, at most 32 MiB) with a
new `mmap` and returns them to the kernel on `free`, so each batch touches fresh pages: one
minor page fault (and a zeroed 4 KiB page) per page. For `predict_object` at N=64, batch 64,
that is ~170,000 faults per batch and a third to a half of the inference time on the 2-core
machine of docs/benchmarks.md (TensorFlow and ONNX Runtime keep their own arenas and do not pay
it). Raising the mmap and trim thresholds keeps freed blocks in the heap for reuse.

The cost: memory freed by the process is kept (up to the trim threshold) instead of returned
to the system, so the resident size stays near the peak. The CLI (`ptychopinn ...`) applies it
at start-up; the Python API leaves the process alone unless `tune_host_allocator()` is called.
`PTYCHOPINN_HOST_ALLOCATOR=system` turns it off for the CLI too. Elsewhere than glibc (macOS,
Windows, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["tune_host_allocator", "ENV_SWITCH", "DEFAULT_THRESHOLD_BYTES"]

#: environment variable: "system" leaves glibc's defaults (the CLI then does not tune)
ENV_SWITCH = "PTYCHOPINN_HOST_ALLOCATOR"
#: mmap and trim threshold set by `tune_host_allocator` (1 GiB)
DEFAULT_THRESHOLD_BYTES = 1 << 30

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_host_allocator(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES, *, respect_env: bool = True) -> bool:
    """Keep freed host memory for reuse (glibc): True when the settings were applied.

    Sets glibc's `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` to `threshold_bytes` (bytes) for the
    whole process. Does nothing (False) off glibc, when glibc refuses the value, or when
    `respect_env` and `PTYCHOPINN_HOST_ALLOCATOR=system`.
    """
    if respect_env and os.environ.get(ENV_SWITCH, "").strip().lower() == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    value = ctypes.c_int(int(min(threshold_bytes, 2**31 - 1)))
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, value))
