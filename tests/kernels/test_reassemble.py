"""reassemble_patches / center_mask: TF parity (ops/reassemble_group_gs2), sign, recentring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_op_fixture, rel_l2
from ptychopinn.kernels import center_mask, reassemble_patches


def test_center_mask():
    m = center_mask(8, dtype=torch.float64)
    assert m.shape == (8, 8) and m.dtype == torch.float64
    assert m.sum() == 16 and m[2:6, 2:6].all() and m[1].sum() == 0 and m[:, 6].sum() == 0
    with pytest.raises(ValueError):
        center_mask(10)


@pytest.fixture(scope="module")
def group_fixture():
    fx, _ = load_op_fixture("reassemble_group_gs2")
    patches = torch.from_numpy(np.ascontiguousarray(fx["patches"].transpose(0, 3, 1, 2)))  # (B, C, N, N)
    offsets = torch.from_numpy(np.ascontiguousarray(fx["positions"][:, 0].transpose(0, 2, 1)))  # (B, C, 2)
    return fx, patches, offsets


@pytest.mark.parametrize("key", ["out_reassemble_patches_unbatched", "out_ReassemblePatchesLayer"])
def test_matches_tf_reassembly(group_fixture, key):
    fx, patches, offsets = group_fixture
    out = reassemble_patches(patches, offsets, 78)
    assert out.shape == (4, 78, 78) and out.dtype == torch.complex64
    ref = fx[key][..., 0]
    # Values reach ~6e3 where the centre-mask denominator is ~1e-3 (border ×1000), so compare
    # relative to each value; observed rel L2 6e-8, worst element 4e-6 of max(|ref|, 1).
    assert rel_l2(out.numpy(), ref) < 1e-6
    assert np.max(np.abs(out.numpy() - ref) / np.maximum(np.abs(ref), 1.0)) < 2e-5


def test_denominator_matches_tf_norm(group_fixture):
    fx, patches, offsets = group_fixture
    # num/den with a patch that is exactly the centre mask gives mask_sum/(mask_sum + eps):
    # recover den from reassembling ones-in-the-centre with eps and compare with TF's norm_real.
    ones = center_mask(64).expand(4, 4, 64, 64)
    ratio = reassemble_patches(ones, offsets, 78).numpy()  # = (den - eps) / den
    den = 1e-3 / (1.0 - ratio)
    ref = fx["norm_real"][..., 0]
    inside = ref > 0.01  # elsewhere 1 - ratio is dominated by rounding
    np.testing.assert_allclose(den[inside], ref[inside], rtol=2e-3)


def test_sign_of_offsets():
    # A delta at the patch centre with offset o must land at canvas centre − o (TF translates by −o).
    N, P = 8, 16
    patches = torch.zeros(1, 2, N, N, dtype=torch.complex64)
    patches[0, :, N // 2, N // 2] = 1.0
    offsets = torch.tensor([[[2.0, -1.0], [-2.0, 1.0]]])  # zero mean
    out = reassemble_patches(patches, offsets, P)
    peaks = [(int(i) // P, int(i) % P) for i in torch.topk(out.abs().flatten(), 2).indices]
    assert sorted(peaks) == sorted([(P // 2 + 1, P // 2 - 2), (P // 2 - 1, P // 2 + 2)])


def test_recentre_subtracts_each_samples_mean_offset():
    g = torch.Generator().manual_seed(3)
    patches = torch.randn(2, 4, 8, 8, dtype=torch.complex128, generator=g)
    offsets = torch.randn(2, 4, 2, dtype=torch.float64, generator=g) + torch.tensor([[[1.5, -0.5]], [[-2.0, 0.7]]], dtype=torch.float64)
    k2 = reassemble_patches(patches, offsets, 14, recentre=True)
    centred = offsets - offsets.mean(1, keepdim=True)
    torch.testing.assert_close(k2, reassemble_patches(patches, centred, 14, recentre=False))
    assert not torch.allclose(k2, reassemble_patches(patches, offsets, 14, recentre=False))
    # a sample's canvas does not depend on the other samples of its batch
    torch.testing.assert_close(k2[1:], reassemble_patches(patches[1:], offsets[1:], 14, recentre=True), rtol=0, atol=0)


def test_gridsize1_border_amplification():
    # offsets 0: inside the central N/2 square obj/(1+eps), outside obj/eps (spec §4.4).
    obj = torch.full((1, 1, 8, 8), 2.0 + 1.0j, dtype=torch.complex128)
    out = reassemble_patches(obj, torch.zeros(1, 1, 2, dtype=torch.float64), 12)[0, 2:10, 2:10]
    torch.testing.assert_close(out[2:6, 2:6], obj[0, 0, 2:6, 2:6] / 1.001)
    torch.testing.assert_close(out[0, 0], obj[0, 0, 0, 0] / 1e-3)


def test_gradcheck():
    g = torch.Generator().manual_seed(4)
    patches = torch.randn(1, 2, 4, 4, dtype=torch.complex128, generator=g, requires_grad=True)
    offsets = torch.tensor([[[0.35, -0.6], [-0.2, 0.85]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, o: reassemble_patches(p, o, 8, eps=0.5), (patches, offsets))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float32, torch.complex128])
@pytest.mark.parametrize("N,P", [(64, 78), (16, 24), (32, 32)])
def test_single_patch_shortcut_is_bit_identical_to_interpolation(dtype, N, P):
    """One recentred patch per sample (gridsize 1) takes the zero-shift shortcut; the general
    interpolation path (reached with recentre=False and zero offsets) gives the same bits, values
    and gradient."""
    g = torch.Generator().manual_seed(3)
    patches = torch.randn(5, 1, N, N, dtype=dtype, generator=g).requires_grad_()
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    offsets = torch.randn(5, 1, 2, dtype=real, generator=g) * 3
    fast = reassemble_patches(patches, offsets, P)
    general = reassemble_patches(patches, torch.zeros_like(offsets), P, recentre=False)
    assert torch.equal(fast, general)
    (g_fast,) = torch.autograd.grad(fast.abs().sum(), patches)
    (g_general,) = torch.autograd.grad(general.abs().sum(), patches)
    assert torch.equal(g_fast, g_general)
