"""tf_compat: TF-exact global stitcher (ops/reassemble_position, bundle stitch references) and layouts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_bundle_fixture, load_op_fixture, rel_l2
from ptychopinn.interop.tf_compat import (
    channels_first_to_tf_offsets,
    nchw_to_nhwc,
    nhwc_to_nchw,
    reassemble_position,
    tf_offsets_to_channels_first,
    translate_tf,
)
from ptychopinn.kernels import stitch

# The op fixture stitches 50 random-noise patches at offsets up to ~180 px. TF pulls each canvas
# pixel at x = c − g rounded to float32 (ulp 1.5e-5 at 180), whereas `stitch` uses the exact
# per-patch fraction; on white noise that leaves ~1.5e-6 relative L2 (observed 1.47e-6).
OP_REL_L2 = 5e-6
# Smooth model outputs of the bundle fixtures: observed 6e-8 … 7.4e-8 (target 1e-5).
BUNDLE_REL_L2 = 1e-6


@pytest.fixture(scope="module")
def op():
    return load_op_fixture("reassemble_position")[0]


@pytest.mark.parametrize("M, key", [(20, "out_M20"), (10, "out_M10")])
def test_matches_tf_reassemble_position(op, M, key):
    out = reassemble_position(op["obj_patches"], op["global_offsets"], M=M)
    ref = op[key][..., 0]
    assert isinstance(out, np.ndarray) and out.dtype == np.complex64 and out.shape == ref.shape
    assert rel_l2(out, ref) < OP_REL_L2


def test_normaliser_matches_tf_shift_and_sum_of_ones(op):
    # S = 180 for M = 20 -> pad 80; positions = pad + M/2 + (offsets − float32 mean)
    off = op["global_offsets"].reshape(-1, 2).astype(np.float32)
    g = off - np.cumsum(off, axis=0, dtype=np.float32)[-1] / np.float32(len(off))
    crop = torch.ones(len(off), 20, 20, dtype=torch.complex64)
    _, den = stitch(crop, torch.from_numpy(g.astype(np.float64) + 90.0), (180, 180))
    ref = op["ones_shift_and_sum_M20"][..., 0]
    assert np.abs(ref.imag).max() == 0
    np.testing.assert_allclose(den.numpy(), ref.real, rtol=0, atol=2e-5)  # float32 sums of up to ~20 ones


@pytest.mark.parametrize(
    "name, suffix",
    [("n64_gs1", ""), ("k1_n64_gs1", ""), ("s1_savedmodel_n64_gs1", ""), ("n64_gs2", "_predict_bs8")],
)
def test_matches_bundle_stitch_reference(name, suffix):
    folder, _, _ = load_bundle_fixture(name)
    with np.load(folder / "stitch_reference.npz") as z:
        patches, offsets, ref = z["obj_tensor_full" + suffix], z["global_offsets"], z["recon_complex" + suffix]
    out = reassemble_position(patches, offsets, M=20)  # (n, N, N, 1) patches, (n, 1, 2, 1) offsets
    assert out.shape == ref.shape[:2]
    assert rel_l2(out, ref[..., 0]) < BUNDLE_REL_L2


def test_offset_layouts_and_torch_round_trip(op):
    p, off = op["obj_patches"][:20], op["global_offsets"][:20]  # (n, N, N, 1), (n, 1, 1, 2)
    ref = reassemble_position(p, off, M=10)
    flat = off.reshape(-1, 2)
    np.testing.assert_array_equal(reassemble_position(p[..., 0], flat, M=10), ref)
    np.testing.assert_array_equal(reassemble_position(p, flat.reshape(-1, 1, 2, 1), M=10), ref)
    out_t = reassemble_position(torch.from_numpy(p[..., 0]), torch.from_numpy(flat), M=10)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.complex64
    np.testing.assert_array_equal(out_t.numpy(), ref)


def test_reassemble_position_rejects_bad_shapes(op):
    from ptychopinn.errors import DataError

    with pytest.raises(DataError, match="offsets"):
        reassemble_position(op["obj_patches"], op["global_offsets"][:3], M=20)
    with pytest.raises(DataError, match="patches"):
        reassemble_position(op["obj_patches"][..., 0, 0], op["global_offsets"], M=20)


def test_translate_tf_modular_broadcast_and_layer():
    fx, _ = load_op_fixture("translate")
    out = translate_tf(fx["bcast_imgs"], fx["bcast_offsets"])  # 8 images, 2 offset rows
    assert isinstance(out, np.ndarray) and out.shape == (8, 32, 32, 1)
    np.testing.assert_allclose(out, fx["bcast_out"], rtol=0, atol=1e-6)
    out_c = translate_tf(torch.from_numpy(fx["imgs_complex"]), torch.from_numpy(fx["offsets_dxdy"]))
    np.testing.assert_allclose(out_c.numpy(), fx["out_Translation_layer_complex"], rtol=0, atol=1e-6)


def test_layout_round_trips():
    x = np.arange(2 * 5 * 6 * 3).reshape(2, 5, 6, 3)
    nchw = nhwc_to_nchw(x)
    assert nchw.shape == (2, 3, 5, 6) and nchw[1, 2, 3, 4] == x[1, 3, 4, 2]
    np.testing.assert_array_equal(nchw_to_nhwc(nchw), x)
    t = torch.from_numpy(x)
    assert torch.equal(nchw_to_nhwc(nhwc_to_nchw(t)), t)
    off = np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 1, 2, 4)  # (B, 1, 2, C): [:, 0, 0, c] = x
    cf = tf_offsets_to_channels_first(off)
    assert cf.shape == (2, 4, 2) and cf[1, 3, 0] == off[1, 0, 0, 3] and cf[1, 3, 1] == off[1, 0, 1, 3]
    np.testing.assert_array_equal(channels_first_to_tf_offsets(cf), off)
    assert torch.equal(channels_first_to_tf_offsets(tf_offsets_to_channels_first(torch.from_numpy(off))), torch.from_numpy(off))
