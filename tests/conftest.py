"""Shared test helpers: the TF fixtures in ../shared and tiny simulated data.

Fixture folders are read from `../shared/fixtures/legacy_tf` relative to the repository root
(or from $PTYCHOPINN_SHARED). Tests that need them skip with a clear reason only when that
folder is absent; CI always has it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PTYCHOPINN_SHARED", REPO_ROOT.parent / "shared"))
LEGACY_TF = SHARED / "fixtures" / "legacy_tf"
BUNDLE_FIXTURES = ("n64_gs1", "n64_gs2", "k1_n64_gs1", "s1_savedmodel_n64_gs1")


def legacy_dir(name: str = "") -> Path:
    """Path of a fixture folder; skips the test (with the reason) when ../shared is absent."""
    path = LEGACY_TF / name if name else LEGACY_TF
    if not path.exists():
        pytest.skip(f"TF fixtures not found at {path} (set PTYCHOPINN_SHARED or place ../shared beside the repo)")
    return path


def load_op_fixture(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and JSON description of `ops/<name>.npz`."""
    folder = legacy_dir("ops")
    with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((folder / f"{name}.json").read_text())
    return arrays, meta


def load_bundle_fixture(name: str) -> tuple[Path, dict[str, np.ndarray], dict]:
    """(folder, reference.npz arrays, meta.json) of one bundle fixture."""
    folder = legacy_dir(name)
    with np.load(folder / "reference.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((folder / "meta.json").read_text())
    return folder, arrays, meta


def rel_l2(a, b) -> float:
    """‖a − b‖ / ‖b‖ (the parity metric of the spec addendum)."""
    a = np.asarray(a, dtype=np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64)
    b = np.asarray(b, dtype=a.dtype)
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-300))


def one_line_error(capsys, *needles: str) -> str:
    """The captured stderr: exactly one line `ptychopinn: error: ...` holding every needle."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ptychopinn: error:"), err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    on a small shared machine, thread contention makes convolutions ~20× slower."""
    import torch  # lazy: most test modules (and the torch-free ones) never need it here

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
