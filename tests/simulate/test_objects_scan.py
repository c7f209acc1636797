"""Synthetic objects and scan paths."""
from __future__ import annotations

import numpy as np
import pytest

from ptychopinn.simulate import grf_object, grid_scan, lines_object, make_object, random_scan


@pytest.mark.parametrize("maker", [lines_object, grf_object])
def test_object_shape_range_and_determinism(maker):
    o = maker(96, np.random.default_rng(3))
    assert o.shape == (96, 96) and o.dtype == np.complex64
    amp, ph = np.abs(o), np.angle(o)
    assert amp.min() >= 0.5 - 1e-6 and amp.max() <= 1.0 + 1e-6
    assert np.abs(ph).max() <= np.pi / 2 + 1e-6
    assert amp.std() > 0.02 and ph.std() > 0.02  # not flat
    np.testing.assert_array_equal(o, maker(96, np.random.default_rng(3)))
    assert not np.array_equal(o, maker(96, np.random.default_rng(4)))


def test_lines_object_phase_follows_absorption():
    o = lines_object(128, np.random.default_rng(0))
    amp, ph = np.abs(o).astype(np.float64), np.angle(o).astype(np.float64)
    # |O| = 1 − 0.5·f and φ = (π/2)·f share the feature map f
    np.testing.assert_allclose(ph, (1 - amp) / 0.5 * np.pi / 2, atol=1e-5)
    assert (amp > 0.999).mean() > 0.3  # mostly clear background between lines


def test_grf_object_is_spatially_correlated():
    o = grf_object(128, np.random.default_rng(1), correlation_length=6.0)
    a = np.abs(o) - np.abs(o).mean()
    lag1 = (a * np.roll(a, 1, axis=1)).mean() / a.var()
    lag32 = (a * np.roll(a, 32, axis=1)).mean() / a.var()
    assert lag1 > 0.9 and abs(lag32) < 0.3


def test_make_object_rejects_unknown_kind():
    with pytest.raises(ValueError):
        make_object("disc", 64, np.random.default_rng(0))
    with pytest.raises(ValueError):
        lines_object(1, np.random.default_rng(0))


def _patch_inside(x, y, size, N):
    # integer rows/cols touched by a bilinear N×N crop centred at (x, y)
    return (
        np.all(np.floor(x) - N // 2 >= 0)
        and np.all(np.floor(y) - N // 2 >= 0)
        and np.all(np.floor(x) + 1 + N // 2 - 1 <= size - 1)
        and np.all(np.floor(y) + 1 + N // 2 - 1 <= size - 1)
    )


def test_random_scan_bounds_and_dtype():
    x, y = random_scan(500, 100, 64, np.random.default_rng(0))
    assert x.shape == y.shape == (500,) and x.dtype == y.dtype == np.float64
    assert _patch_inside(x, y, 100, 64)
    assert np.ptp(x) > 0.8 * (100 - 64 - 1) and np.ptp(y) > 0.8 * (100 - 64 - 1)
    x2, y2 = random_scan(500, 100, 64, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_grid_scan_row_major_and_inside():
    x, y = grid_scan(80, 64, 4)
    axis = np.array([32.0, 36.0, 40.0, 44.0])  # up to 80 − 32 − 1 = 47
    np.testing.assert_array_equal(x, np.tile(axis, 4))
    np.testing.assert_array_equal(y, np.repeat(axis, 4))
    assert _patch_inside(x, y, 80, 64)
    x, y = grid_scan(256, 64, 2.5)
    assert _patch_inside(x, y, 256, 64) and y.max() <= 256 - 33


def test_scan_rejects_bad_sizes():
    with pytest.raises(ValueError):
        grid_scan(64, 64, 4)
    with pytest.raises(ValueError):
        grid_scan(128, 64, 0)
    with pytest.raises(ValueError):
        random_scan(0, 128, 64, np.random.default_rng(0))
