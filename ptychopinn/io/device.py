"""Device selection: one rule for every entry point (train, reconstruct, load_model, CLI)."""
from __future__ import annotations

import functools
import logging

import torch

from ..errors import ConfigError

__all__ = ["resolve_device", "CPU_FALLBACK_LOGGER"]

#: logger of the CPU-fallback notice (the CLI silences it under --quiet)
CPU_FALLBACK_LOGGER = "ptychopinn.device"
log = logging.getLogger(CPU_FALLBACK_LOGGER)


@functools.lru_cache(maxsize=None)
def _cpu_fallback_notice() -> None:
    """Log the CPU-fallback line once per process (cached: later calls do nothing)."""
    log.warning("device auto: no CUDA GPU is available, running on CPU (slow)")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device string into a `torch.device`, checking that it exists.

    "auto" (or None): CUDA when available, else CPU with one WARNING log line (logger
    "ptychopinn.device", once per process) saying the work runs on CPU. "cpu", "cuda", "cuda:<i>", "mps": that device, or ConfigError when it is not available.
    """
    if spec is None:
        spec = "auto"
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ConfigError(f"device: expected a string such as 'auto', 'cpu', 'cuda', 'cuda:1', 'mps', got {spec!r}")
    name = spec.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        _cpu_fallback_notice()
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device: unknown device {spec!r}; expected 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {spec!r} requested but CUDA is not available (use 'auto' or 'cpu')")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device: {spec!r} requested but only {count} CUDA device(s) exist")
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device: {spec!r} requested but MPS is not available (use 'auto' or 'cpu')")
        return device
    raise ConfigError(f"device: unsupported device {spec!r}; expected 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'")
