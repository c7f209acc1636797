"""group_scan and split_by_region: rule, sign convention, determinism, fallbacks, parity with TF."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptychopinn.config import DataConfig
from ptychopinn.data import Groups, group_scan, load_scan, split_by_region
from ptychopinn.errors import ConfigError, DataError

from ..conftest import legacy_dir


def _grid(n: int = 10, step: float = 4.0) -> np.ndarray:
    """(n², 2) [x, y] raster with a little jitter (no distance ties)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:n, 0:n] * step
    return np.stack([xx.ravel(), yy.ravel()], -1) + rng.uniform(-0.4, 0.4, (n * n, 2))


def test_sign_convention_gridsize2_explicit():
    # four corners of a square: centre (2, 3); relative = −(p − centre) = centre − p
    xy = np.array([[0.0, 1.0], [4.0, 1.0], [0.0, 5.0], [4.0, 5.0], [100.0, 100.0]])
    g = group_scan(xy, DataConfig(gridsize=2, neighbor_count=4, n_groups=None, seed=0))
    b = 4  # seed (100, 100): its 4 nearest other positions are exactly the square
    assert sorted(g.indices[b].tolist()) == [0, 1, 2, 3]
    np.testing.assert_array_equal(g.centres[b], [2.0, 3.0])
    expected = {0: [2.0, 2.0], 1: [-2.0, 2.0], 2: [2.0, -2.0], 3: [-2.0, -2.0]}
    for c, i in enumerate(g.indices[b]):
        np.testing.assert_array_equal(g.relative[b, c], expected[int(i)])
    np.testing.assert_allclose(g.relative.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_array_equal(g.relative, g.centres[:, None] - g.coords)


def test_group_rule_gridsize2():
    xy = _grid()
    K = 6
    g = group_scan(xy, DataConfig(gridsize=2, neighbor_count=K, seed=1))
    M = xy.shape[0]
    assert g.indices.shape == (M, 4) and g.indices.dtype == np.int64
    assert g.coords.shape == (M, 4, 2) and g.centres.shape == (M, 2) and g.relative.shape == (M, 4, 2)
    _, nn = cKDTree(xy).query(xy, k=K + 1)
    for seed in range(M):  # slow oracle: distinct members, all among the seed's K nearest others
        members = g.indices[seed]
        assert len(set(members.tolist())) == 4
        assert seed not in members
        assert set(members.tolist()) <= set(nn[seed, 1:].tolist())
    np.testing.assert_array_equal(g.coords, xy[g.indices])
    np.testing.assert_allclose(g.centres, xy[g.indices].mean(axis=1))
    # the random draw really varies the channel order / choice
    first_pos = np.array([np.flatnonzero(nn[s, 1:] == g.indices[s, 0])[0] for s in range(M)])
    assert len(np.unique(first_pos)) > 3


def test_deterministic_and_seed_dependent():
    xy = _grid()
    cfg = DataConfig(gridsize=2, neighbor_count=7, n_groups=50, seed=5)
    a, b = group_scan(xy, cfg), group_scan(xy, cfg)
    np.testing.assert_array_equal(a.indices, b.indices)
    c = group_scan(xy, DataConfig(gridsize=2, neighbor_count=7, n_groups=50, seed=6))
    assert not np.array_equal(a.indices, c.indices)
    # no global numpy random state is consumed or used
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    group_scan(xy, cfg)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_gridsize1_seeds():
    xy = _grid()
    M = xy.shape[0]
    g = group_scan(xy, DataConfig(gridsize=1))
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(M))
    np.testing.assert_array_equal(g.relative, 0.0)
    np.testing.assert_array_equal(g.centres, xy)
    sub = group_scan(xy, DataConfig(gridsize=1, n_groups=30, seed=2))
    seeds = sub.indices[:, 0]
    assert len(np.unique(seeds)) == 30 and np.all(np.diff(seeds) > 0)  # sorted, no repeats
    # a spatial sample, not the first 30 positions (which would be the first three rows)
    assert np.ptp(xy[seeds, 1]) > 0.6 * np.ptp(xy[:, 1])
    with pytest.raises(ConfigError, match="n_groups=101 exceeds the 100 scan positions"):
        group_scan(xy, DataConfig(gridsize=1, n_groups=101))
    with pytest.raises(ConfigError, match="n_groups=0"):
        group_scan(xy, DataConfig(gridsize=1, n_groups=0))


def test_oversampling_gridsize2():
    xy = _grid(5)
    g = group_scan(xy, DataConfig(gridsize=2, neighbor_count=6, n_groups=60, seed=0))
    assert g.indices.shape == (60, 4)
    assert np.all(np.sort(g.indices, axis=1)[:, 1:] != np.sort(g.indices, axis=1)[:, :-1])  # distinct
    assert len({tuple(sorted(r)) for r in g.indices.tolist()}) > 25  # repeated seeds, new groups


def test_tiny_scans_fallbacks():
    # M = 4, C = 4: only 3 neighbours -> the seed is added; every group is all 4 positions
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = group_scan(xy, DataConfig(gridsize=2, neighbor_count=4))
    assert all(sorted(r) == [0, 1, 2, 3] for r in g.indices.tolist())
    # M = 2, C = 4: still short -> both positions, then repeats
    with pytest.warns(UserWarning, match="repeat positions"):
        g = group_scan(xy[:2], DataConfig(gridsize=2, neighbor_count=4))
    assert all(set(r) == {0, 1} for r in g.indices.tolist())
    with pytest.raises(ValueError, match="neighbor_count"):
        DataConfig(gridsize=2, neighbor_count=3)
    # group_scan checks K >= C itself too (for configs built without DataConfig's validation)
    loose = SimpleNamespace(gridsize=2, neighbor_count=3, n_groups=None, seed=0)
    with pytest.raises(ConfigError, match=r"neighbor_count \(K=3\) must be >= gridsize² \(C=4\)"):
        group_scan(xy, loose)
    with pytest.raises(DataError, match=r"expected \(M, 2\)"):
        group_scan(np.zeros((5, 3)), DataConfig())
    with pytest.raises(DataError, match="NaN"):
        group_scan(np.array([[0.0, np.nan]]), DataConfig())


def test_duplicate_positions_never_group_the_seed():
    xy = np.repeat(_grid(4), 2, axis=0)  # every position twice
    g = group_scan(xy, DataConfig(gridsize=2, neighbor_count=5, seed=0))
    assert not np.any(g.indices == np.arange(len(xy))[:, None])


def test_start_coordinates(tmp_path):
    from ptychopinn.data import make_scan

    from ._helpers import tiny_arrays

    a = tiny_arrays(M=30)
    scan = make_scan(**a, xcoords_start=a["xcoords"] + 0.5, ycoords_start=a["ycoords"] * 2)
    g = group_scan(scan, DataConfig(gridsize=2, seed=0))
    np.testing.assert_array_equal(g.coords_start, scan.coords_start[g.indices])
    np.testing.assert_allclose(g.relative_start, g.centres_start[:, None] - g.coords_start)
    np.testing.assert_allclose(g.relative_start[..., 0], g.relative[..., 0], atol=1e-12)
    np.testing.assert_allclose(g.relative_start[..., 1], 2 * g.relative[..., 1], atol=1e-12)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_split_by_region_is_leak_free(gridsize):
    xy = _grid(12)
    g = group_scan(xy, DataConfig(gridsize=gridsize, neighbor_count=6, seed=0))
    train, val = split_by_region(g, 0.25)
    assert len(val) > 0 and len(train) > 0
    assert not set(g.indices[train].ravel()) & set(g.indices[val].ravel())
    assert not set(train) & set(val)
    # the validation strip lies beyond the training region along the split axis
    axis = int(np.argmax(np.ptp(xy, axis=0)))
    assert g.coords[val][..., axis].min() >= g.coords[train][..., axis].max()
    frac = len(val) / len(g)
    assert 0.1 < frac < 0.3
    tr_y, val_y = split_by_region(g, 0.25, axis=1)
    assert g.coords[val_y][..., 1].min() >= g.coords[tr_y][..., 1].max()
    t0, v0 = split_by_region(g, 0.0)
    assert len(t0) == len(g) and len(v0) == 0
    with pytest.raises(ConfigError):
        split_by_region(g, 1.0)


def test_groups_subset():
    g = group_scan(_grid(), DataConfig(gridsize=2, seed=0))
    s = g.subset(np.array([3, 1]))
    assert isinstance(s, Groups) and len(s) == 2
    np.testing.assert_array_equal(s.relative, g.relative[[3, 1]])


@pytest.mark.parametrize("name", ["n64_gs1", "n64_gs2"])
def test_fixture_group_geometry(name):
    """coords_offsets_global = mean over the group; coords_relative = −(p − mean) (spec §1.3)."""
    folder = legacy_dir(name)
    scan = load_scan(folder / "test_data.npz")
    ref = np.load(folder / "reference.npz", allow_pickle=False)
    nn = ref["nn_indices"].astype(np.int64)
    xy = scan.coords[nn]  # (8, C, 2)
    centres = xy.mean(axis=1)
    # TF layouts: offsets (B, 1, 2, 1), relative (B, 1, 2, C)
    np.testing.assert_allclose(ref["coords_offsets_global"][:, 0, :, 0], centres, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(ref["coords_relative"][:, 0], -1, 1), -(xy - centres[:, None]), atol=1e-12)
    np.testing.assert_array_equal(
        np.moveaxis(ref["positions_input"][:, 0], -1, 1), (-(xy - centres[:, None])).astype(np.float32)
    )
    if nn.shape[1] == 4:
        # TF groups obey our rule too: 4 distinct positions among a seed's 4 nearest others
        # (the seed itself is unknown, so check that some position has all 4 as its 4-NN)
        tree = cKDTree(scan.coords)
        _, knn = tree.query(scan.coords, k=5)
        for row in nn:
            assert len(set(row.tolist())) == 4
            assert any(set(knn[s, 1:].tolist()) == set(row.tolist()) for s in range(scan.n_positions))
