"""GroupDataset: gathers by index, shapes/dtypes, collate, labels."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ptychopinn.config import DataConfig
from ptychopinn.data import GroupDataset, group_scan, load_scan, make_scan, object_patches, save_scan
from ptychopinn.errors import DataError

from ._helpers import tiny_arrays


@pytest.fixture
def lazy_scan(tmp_path):
    a = tiny_arrays(M=24, N=8, seed=2)
    return load_scan(save_scan(tmp_path / "s.npz", **a)), a


def test_items_and_dataloader_gridsize2(lazy_scan):
    scan, a = lazy_scan
    g = group_scan(scan, DataConfig(gridsize=2, neighbor_count=5, seed=0))
    ds = GroupDataset(scan, g, 2.5)
    assert len(ds) == 24
    item = ds[7]
    assert item["x"].shape == (4, 8, 8) and item["x"].dtype == torch.float32
    assert item["offsets"].shape == (4, 2) and item["offsets"].dtype == torch.float32
    assert item["centre"].shape == (2,) and item["index"].item() == 7
    np.testing.assert_array_equal(item["x"].numpy(), np.float32(2.5) * a["diffraction"][g.indices[7]])
    np.testing.assert_array_equal(item["offsets"].numpy(), g.relative[7].astype(np.float32))
    np.testing.assert_array_equal(item["centre"].numpy(), g.centres[7].astype(np.float32))
    loader = DataLoader(ds, batch_size=5, shuffle=False)
    batches = list(loader)
    assert batches[0]["x"].shape == (5, 4, 8, 8) and batches[0]["offsets"].shape == (5, 4, 2)
    assert batches[0]["centre"].shape == (5, 2) and batches[-1]["index"].tolist() == [20, 21, 22, 23]
    x_all = torch.cat([b["x"] for b in batches]).numpy()
    np.testing.assert_array_equal(x_all, np.float32(2.5) * a["diffraction"][g.indices])
    # __getitems__ (batched gather) equals per-item access
    for got, b in zip(ds.__getitems__([3, 0, 3]), [3, 0, 3]):
        for k in got:
            torch.testing.assert_close(got[k], ds[b][k], rtol=0, atol=0)
    start = GroupDataset(scan, g, 1.0, start_offsets=True)
    np.testing.assert_array_equal(start[2]["offsets"].numpy(), g.relative_start[2].astype(np.float32))


def test_pickles_without_copying_the_data(lazy_scan):
    scan, _ = lazy_scan
    g = group_scan(scan, DataConfig(gridsize=1))
    ds = GroupDataset(scan, g, 1.0)
    back = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    torch.testing.assert_close(back[5]["x"], ds[5]["x"])
    assert isinstance(back.scan.diffraction.source, np.memmap)


def _slow_patch(obj: np.ndarray, x: float, y: float, N: int) -> np.ndarray:
    """Pixel-by-pixel bilinear oracle (outside pixels contribute 0)."""
    H, W = obj.shape
    out = np.zeros((N, N), np.complex128)
    for r in range(N):
        for c in range(N):
            sx, sy = x + c - N // 2, y + r - N // 2
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < H and 0 <= xx < W:
                        out[r, c] += wy * wx * obj[yy, xx]
    return out


def test_object_patches_against_oracle():
    rng = np.random.default_rng(0)
    obj = (rng.random((20, 24)) + 1j * rng.random((20, 24))).astype(np.complex64)
    pos = np.array([[[10.0, 9.0], [3.25, 17.5]], [[22.7, 1.1], [12.0, 10.0]]])  # (2, 2, 2), edges included
    got = object_patches(obj, pos, 8)
    assert got.shape == (2, 2, 8, 8) and got.dtype == np.complex64
    for b in range(2):
        for c in range(2):
            np.testing.assert_allclose(got[b, c], _slow_patch(obj, *pos[b, c], 8), rtol=1e-6, atol=1e-6)
    # integer centre: pixel (N//2, N//2) is object (y, x); exact crop rows y-4..y+3
    np.testing.assert_array_equal(got[0, 0], obj[5:13, 6:14])


def test_labels_from_object_and_Y(lazy_scan, tmp_path):
    scan, a = lazy_scan
    g = group_scan(scan, DataConfig(gridsize=2, neighbor_count=5, seed=0))
    item = GroupDataset(scan, g, 1.0, labels=True)[4]
    assert item["labels"].shape == (4, 8, 8) and item["labels"].dtype == torch.complex64
    np.testing.assert_array_equal(item["labels"].numpy(), object_patches(a["objectGuess"], g.coords[4], 8))
    # true positions, not the legacy mirrored 2·centre − p (differs at gridsize 2)
    mirrored = object_patches(a["objectGuess"], 2 * g.centres[4][None] - g.coords[4], 8)
    assert not np.allclose(item["labels"].numpy(), mirrored)
    b = dict(a)
    del b["objectGuess"]
    b["Y"] = (np.arange(24 * 64).reshape(24, 8, 8) * 1j).astype(np.complex64)
    ys = load_scan(save_scan(tmp_path / "y.npz", **b))
    it = GroupDataset(ys, g, 1.0, labels=True)[4]
    np.testing.assert_array_equal(it["labels"].numpy(), b["Y"][g.indices[4]])
    del b["Y"]
    with pytest.raises(DataError, match="labels requested"):
        GroupDataset(make_scan(**b), g, 1.0, labels=True)


def test_bad_construction():
    a = tiny_arrays(M=10)
    scan = make_scan(**a)
    g = group_scan(np.random.default_rng(0).random((20, 2)) * 10, DataConfig(gridsize=1))
    with pytest.raises(DataError, match="group indices reach 19"):
        GroupDataset(scan, g, 1.0)
    with pytest.raises(DataError, match="scale"):
        GroupDataset(scan, group_scan(scan, DataConfig()), float("nan"))
    ds = GroupDataset(scan, group_scan(scan, DataConfig()), 1.0)
    with pytest.raises(IndexError):
        ds[10]
