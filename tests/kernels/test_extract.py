"""extract_patches: TF parity (ops/extract_patches_position), crop-of-translate identity, gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_op_fixture
from ptychopinn.kernels import extract_patches, translate

# Same float32 coordinate arithmetic as TF; residual = corner summation order (a few ulp at |v|≈4).
TF_ATOL = 1e-6


@pytest.mark.parametrize("key, gs", [("out_gs1", 1), ("out_gs2", 2), ("out_layer_gs2", 2)])
def test_matches_tf_extract_patches_position(key, gs):
    fx, _ = load_op_fixture("extract_patches_position")
    canvas = torch.from_numpy(fx["imgs"][..., 0])  # (B, 78, 78)
    # TF (B, 1, 2, C) channel-format offsets -> (B, C, 2)
    positions = torch.from_numpy(np.ascontiguousarray(fx[f"offsets_gs{gs}"][:, 0].transpose(0, 2, 1)))
    out = extract_patches(canvas, positions, 64)
    B, C = positions.shape[:2]
    assert out.shape == (B, C, 64, 64) and out.dtype == torch.complex64
    # TF output is FLAT (B*C, N, N, 1), channel-major per sample: row b*C + c
    np.testing.assert_allclose(out.reshape(B * C, 64, 64).numpy(), fx[key][..., 0], rtol=0, atol=TF_ATOL)


# (130, 4): the canvas is large relative to the patch, so extract takes the gather path while
# translate takes the matrix path; the two must agree.
@pytest.mark.parametrize("H, size", [(12, 8), (13, 8), (10, 10), (130, 4)])
def test_equals_centre_crop_of_translate(H, size):
    g = torch.Generator().manual_seed(1)
    canvas = torch.randn(2, H, H, dtype=torch.complex128, generator=g)
    positions = (torch.rand(2, 3, 2, dtype=torch.float64, generator=g) - 0.5) * 6
    full = translate(canvas[:, None], positions)
    k = (H - size) // 2
    expected = full[..., k : k + size, k : k + size]
    torch.testing.assert_close(extract_patches(canvas, positions, size), expected, rtol=0, atol=1e-13)


def test_shape_errors():
    with pytest.raises(ValueError, match="positions must be"):
        extract_patches(torch.zeros(1, 8, 8), torch.zeros(1, 2), 4)
    with pytest.raises(ValueError, match="exceeds"):
        extract_patches(torch.zeros(1, 8, 8), torch.zeros(1, 1, 2), 9)


def test_gradcheck_canvas_and_positions():
    g = torch.Generator().manual_seed(2)
    canvas = torch.randn(1, 7, 7, dtype=torch.complex128, generator=g, requires_grad=True)
    positions = torch.tensor([[[0.3, -1.2], [1.7, 0.45]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, p: extract_patches(c, p, 4), (canvas, positions))
