"""normalization_factor: the spec §2.1 formula, chunking, lazy input, TF fixture parity."""
from __future__ import annotations

import numpy as np
import pytest

from ptychopinn.config import DataConfig
from ptychopinn.data import group_scan, load_scan, make_scan, normalization_factor, save_scan
from ptychopinn.data.normalize import pattern_energy
from ptychopinn.errors import DataError

from ..conftest import BUNDLE_FIXTURES, legacy_dir
from ._helpers import tiny_arrays


def _oracle(d: np.ndarray, indices=None) -> float:
    """The formula on an explicit grouped copy (what we avoid materialising)."""
    grouped = d.astype(np.float64) if indices is None else d.astype(np.float64)[np.asarray(indices)]
    N = d.shape[-1]
    return float(np.sqrt((N / 2) ** 2 / np.mean(np.sum(grouped**2, axis=(-2, -1)))))


def test_matches_formula_with_repeats(tmp_path):
    a = tiny_arrays(M=30, N=16, seed=4)
    d = a["diffraction"]
    scan = make_scan(**a)
    g = group_scan(scan, DataConfig(gridsize=2, neighbor_count=5, n_groups=70, seed=0))
    assert len(np.unique(g.indices)) < g.indices.size  # repeated patterns count per occurrence
    f = normalization_factor(d, g.indices)
    assert isinstance(f, np.float32)
    assert f == np.float32(_oracle(d, g.indices))
    assert normalization_factor(d) == np.float32(_oracle(d))
    # after normalisation the mean per-occurrence energy is (N/2)²
    X = f * d[g.indices].astype(np.float64)
    np.testing.assert_allclose(np.mean(np.sum(X**2, axis=(-2, -1))), 64.0, rtol=1e-6)
    # lazily read (memory-mapped) input and tiny chunks give the same value
    lazy = load_scan(save_scan(tmp_path / "s.npz", **a)).diffraction
    assert normalization_factor(lazy, g.indices) == f
    rows = np.unique(g.indices)
    np.testing.assert_allclose(pattern_energy(lazy, rows, chunk_bytes=1), np.sum(d[rows].astype(np.float64) ** 2, axis=(1, 2)), rtol=1e-12)


def test_scale_invariance_and_errors():
    d = tiny_arrays(M=10, N=8)["diffraction"]
    np.testing.assert_allclose(normalization_factor(3 * d) * 3, normalization_factor(d), rtol=1e-6)
    with pytest.raises(DataError, match="positive"):
        normalization_factor(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match="out of range"):
        normalization_factor(d, np.array([[0, 10]]))
    with pytest.raises(DataError, match="non-empty integer"):
        normalization_factor(d, np.array([0.5]))


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_tf_fixture_parity(name):
    """TF normalised over its grouped set (stitch_reference nn_indices: 128 / 32 / 256 groups);
    X_normalized_unscaled = f · raw_diffraction_of_batch in float32."""
    folder = legacy_dir(name)
    scan = load_scan(folder / "test_data.npz")
    ref = np.load(folder / "reference.npz", allow_pickle=False)
    nn_full = np.load(folder / "stitch_reference.npz", allow_pickle=False)["nn_indices"]
    f = normalization_factor(scan.diffraction, nn_full)
    raw = ref["raw_diffraction_of_batch"]  # (8, C, N, N)
    np.testing.assert_array_equal(raw, scan.diffraction[ref["nn_indices"].astype(np.int64)])
    X_tf = np.moveaxis(ref["X_normalized_unscaled"], -1, 1)
    X = f * raw
    if name in ("n64_gs1", "n64_gs2"):  # K2 (HEAD): float64 energy, float32 f, float32 product
        np.testing.assert_array_equal(X, X_tf)
    else:  # S1/K1 eras summed in float32: f differs by at most one float32 ulp
        np.testing.assert_allclose(X, X_tf, rtol=3e-7, atol=0)
        assert abs(float(f) - float(np.median(X_tf[X_tf > 0] / raw[X_tf > 0]))) <= 2 * np.spacing(f)
    # model input = X · s (s = sqrt(nphotons)/(N/2))
    s = np.float32(ref["intensity_scale"])
    np.testing.assert_allclose(X * s, np.moveaxis(ref["X_input_scaled"], -1, 1), rtol=3e-7)
