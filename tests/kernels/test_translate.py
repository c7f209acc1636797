"""translate: TF parity (ops/translate), a pixel-loop oracle, properties, gradcheck, compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_op_fixture
from ptychopinn.kernels import translate
from tests.kernels._oracles import translate_oracle

# TF computes x = c − dx and the weights in float32 like we do; the only difference left is the
# summation order of the four corner terms (XLA may fuse), i.e. a few ulp at O(1) values.
TF_ATOL = 1e-6


@pytest.fixture(scope="module")
def fx():
    return load_op_fixture("translate")[0]


@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("key", ["out_Translation_layer_", "out_translate_"])
def test_matches_tf_translation(fx, kind, key):
    imgs = torch.from_numpy(fx[f"imgs_{kind}"][..., 0])
    out = translate(imgs, torch.from_numpy(fx["offsets_dxdy"]))
    assert out.dtype == imgs.dtype
    np.testing.assert_allclose(out.numpy(), fx[key + kind][..., 0], rtol=0, atol=TF_ATOL)


def test_matches_tf_modular_broadcast(fx):
    # TF: image i uses offset row i mod 2. Here: view the 8 images as (4, 2) and broadcast (2, 2).
    imgs = torch.from_numpy(fx["bcast_imgs"][..., 0])
    out = translate(imgs.reshape(4, 2, 32, 32), torch.from_numpy(fx["bcast_offsets"]))
    np.testing.assert_allclose(out.reshape(8, 32, 32).numpy(), fx["bcast_out"][..., 0], rtol=0, atol=TF_ATOL)


def test_matches_pixel_loop_oracle(rng):
    img = rng.standard_normal((7, 9)) + 1j * rng.standard_normal((7, 9))
    shifts = np.array([[0.3, -0.7], [-2.25, 1.5], [8.5, 0.0], [-0.999, 6.2]])
    out = translate(torch.from_numpy(img), torch.from_numpy(shifts)).numpy()
    for i, (dx, dy) in enumerate(shifts):
        np.testing.assert_allclose(out[i], translate_oracle(img, dx, dy), rtol=0, atol=1e-12)


def test_integer_shift_is_zero_filled_roll(rng):
    img = torch.from_numpy(rng.standard_normal((2, 6, 8)))
    out = translate(img, torch.tensor([3.0, -2.0], dtype=torch.float64))
    expected = torch.zeros_like(img)
    expected[:, :4, 3:] = img[:, 2:, :5]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_direction_convention():
    img = torch.zeros(9, 9)
    img[4, 4] = 1.0
    out = translate(img, torch.tensor([2.0, -1.0]))  # +2 columns, −1 row
    assert out[3, 6] == 1.0 and out.sum() == 1.0


def test_broadcasting_shapes():
    imgs = torch.randn(3, 1, 5, 5)
    out = translate(imgs, torch.zeros(4, 2))
    assert out.shape == (3, 4, 5, 5)
    torch.testing.assert_close(out, imgs.expand(3, 4, 5, 5))
    single = translate(torch.randn(5, 5), torch.zeros(2, 3, 2))
    assert single.shape == (2, 3, 5, 5)


def test_float32_arithmetic_and_dtypes():
    img = torch.randn(2, 4, 4, dtype=torch.complex64)
    assert translate(img, torch.zeros(2, 2, dtype=torch.float64)).dtype == torch.complex64
    assert translate(img.real, torch.zeros(2, 2)).dtype == torch.float32


def test_bad_shifts_raise():
    with pytest.raises(ValueError, match="last dim of 2"):
        translate(torch.zeros(4, 4), torch.zeros(3))


def test_gradcheck_images_and_shifts():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 5, 6, dtype=torch.complex128, generator=g, requires_grad=True)
    # away from integers so the piecewise-linear map is smooth under finite differences
    shifts = torch.tensor([[0.3, -1.6], [2.45, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(translate, (img, shifts))
    real = torch.randn(3, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(translate, (real, shifts[:1].detach().clone().requires_grad_(True)))


@pytest.mark.slow
def test_dynamo_fullgraph_capture_of_kernels():
    # fullgraph=True fails on any graph break; aot_eager also traces the backward graph.
    from ptychopinn.kernels import extract_patches, reassemble_patches

    torch._dynamo.reset()
    img = torch.randn(2, 6, 7, dtype=torch.complex64, requires_grad=True)
    shifts = torch.tensor([[0.4, -1.3], [2.0, 0.5]], requires_grad=True)
    out = torch.compile(translate, fullgraph=True, backend="aot_eager")(img, shifts)
    torch.testing.assert_close(out, translate(img, shifts))
    out.abs().sum().backward()
    assert img.grad is not None and shifts.grad is not None
    canvas = torch.randn(2, 12, 12, dtype=torch.complex64)
    pos = torch.randn(2, 4, 2)
    ext = torch.compile(extract_patches, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(ext(canvas, pos, 8), extract_patches(canvas, pos, 8))
    patches = torch.randn(2, 4, 8, 8, dtype=torch.complex64)
    rea = torch.compile(reassemble_patches, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(rea(patches, pos, 12), reassemble_patches(patches, pos, 12))


@pytest.mark.slow
def test_torch_compile_inductor_fullgraph():
    torch._dynamo.reset()
    compiled = torch.compile(translate, fullgraph=True)
    img = torch.randn(2, 6, 7)
    shifts = torch.tensor([[0.4, -1.3], [2.0, 0.5]])
    torch.testing.assert_close(compiled(img, shifts), translate(img, shifts), rtol=0, atol=1e-6)
