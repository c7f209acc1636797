"""glibc allocator tuning of the CLI processes (ptychopinn/io/host_memory.py)."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from ptychopinn.io.host_memory import ENV_SWITCH, tune_host_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate and free a 64 MiB tensor 20 times, touching every page; print the minor page faults.
_CHILD = """
import json, resource, sys
import torch
from ptychopinn.io.host_memory import tune_host_allocator
applied = tune_host_allocator() if sys.argv[1] == "tuned" else False
for _ in range(15):
    torch.ones(16 << 20)  # warm-up: glibc's heap settles after a few aligned blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = torch.ones(16 << 20)  # 64 MiB of float32 (torch's CPU allocator: plain malloc), every page written
    del a
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the tuning is glibc-only (a no-op elsewhere, tested below)")
def test_tuned_allocator_reuses_freed_memory_instead_of_faulting_fresh_pages():
    system, tuned = _faults("system"), _faults("tuned")
    assert tuned["applied"] and not system["applied"]
    pages = 20 * (64 << 20) // 4096
    assert system["faults"] > 0.5 * pages  # glibc's default: a fresh mmap per 64 MiB buffer
    assert tuned["faults"] < 0.1 * pages  # tuned: the freed block is reused


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "system")
    assert tune_host_allocator() is False


def test_applies_on_glibc_and_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert tune_host_allocator() is GLIBC
