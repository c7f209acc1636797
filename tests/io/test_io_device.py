"""resolve_device: 'auto' falls back to CPU with one log line (once per process); unavailable devices are errors."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from ptychopinn.errors import ConfigError
from ptychopinn.io.device import resolve_device


def test_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_without_cuda_logs_once(monkeypatch, caplog):
    from ptychopinn.io import device as device_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_mod._cpu_fallback_notice.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not a Python warning
        with caplog.at_level(logging.WARNING, logger="ptychopinn.device"):
            assert resolve_device("auto") == torch.device("cpu")
            assert resolve_device(None) == torch.device("cpu")
            assert resolve_device("auto") == torch.device("cpu")
    lines = [r for r in caplog.records if r.name == "ptychopinn.device"]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].levelno == logging.WARNING and "running on CPU" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()


def test_auto_with_cuda_picks_cuda_silently(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("spec", ["cuda", "cuda:1", "CUDA"])
def test_cuda_unavailable_is_config_error(monkeypatch, spec):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(spec)


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 1 CUDA"):
        resolve_device("cuda:1")


def test_mps_unavailable(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS"):
        resolve_device("mps")


@pytest.mark.parametrize("spec", ["gpu", "tpu", "cuda:x", "", 3])
def test_unknown(spec):
    with pytest.raises(ConfigError, match="device"):
        resolve_device(spec)
