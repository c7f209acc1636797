"""conv2d_master_weight: float32 compute, float64 weight gradients that do not depend on the
thread count or on how the batch is split."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptychopinn.kernels import conv2d_master_weight, mixed_conv


def _case(seed: int = 0, B: int = 6, cin: int = 8, cout: int = 16, H: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cin, H, H, generator=g)
    w = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64) * 0.2
    b = torch.randn(cout, generator=g, dtype=torch.float64) * 0.1
    go = torch.randn(B, cout, H, H, generator=g)
    return x, w, b, go


def _grads(x, w, b, go, threads: int | None = None):
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x = x.clone().requires_grad_(True)
        w = w.clone().requires_grad_(True)
        b = b.clone().requires_grad_(True)
        y = conv2d_master_weight(x, w, b, padding=1)
        y.backward(go)
        return y.detach(), x.grad, w.grad, b.grad
    finally:
        torch.set_num_threads(prev)


def test_forward_and_input_gradient_are_the_float32_convolution():
    x, w, b, go = _case()
    y, gx, gw, gb = _grads(x, w, b, go)
    x32 = x.clone().requires_grad_(True)
    w32 = w.float().requires_grad_(True)
    ref = F.conv2d(x32, w32, b.float(), padding=1)
    ref.backward(go)
    assert y.dtype == torch.float32 and gx.dtype == torch.float32
    assert torch.equal(y, ref.detach())
    assert torch.equal(gx, x32.grad)
    assert gw.dtype == torch.float64 and gb.dtype == torch.float64
    # the float64 weight gradient is the exact one (float32 weight gradient is ~1e-6 off)
    x64 = x.double()
    w64 = w.float().double().requires_grad_(True)
    b64 = b.float().double().requires_grad_(True)
    F.conv2d(x64, w64, b64, padding=1).backward(go.double())
    torch.testing.assert_close(gw, w64.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, b64.grad, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(w32.grad.double(), w64.grad, rtol=1e-9, atol=0)  # would fail if dw were float32


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d_master_weight(x, w, b, padding=1), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: conv2d_master_weight(x, w, None, stride=2, padding=(1, 0)), (x, w))


@pytest.mark.parametrize("B", [1, 2, 6])
def test_thread_count_does_not_change_anything(B):
    x, w, b, go = _case(B=B)
    one = _grads(x, w, b, go, threads=1)
    two = _grads(x, w, b, go, threads=2)
    for a, c in zip(one, two):
        assert torch.equal(a.float(), c.float())


def test_shards_add_up_to_the_whole_batch():
    x, w, b, go = _case(B=6)
    _, gx, gw, gb = _grads(x, w, b, go)
    parts = [_grads(x[s], w, b, go[s]) for s in (slice(0, 1), slice(1, 4), slice(4, 6))]
    # per-sample outputs and input gradients do not depend on the batch they were computed in
    assert torch.equal(torch.cat([p[1] for p in parts]), gx)
    assert torch.equal(torch.cat([p[0] for p in parts]), _grads(x, w, b, go)[0])
    # the float64 sums agree to float64 rounding (a few ulps of the largest entry, ~300 here: the
    # reduction order over B*H*W terms depends on the CPU's kernels), so their float32 values are identical
    sw, sb = sum(p[2] for p in parts), sum(p[3] for p in parts)
    torch.testing.assert_close(sw, gw, rtol=0, atol=1e-14 * float(gw.abs().max()))
    assert torch.equal(sw.float(), gw.float()) and torch.equal(sb.float(), gb.float())


def test_numeric_padding_required():
    x, w, b, _ = _case(B=1)
    with pytest.raises(ValueError, match="numeric padding"):
        conv2d_master_weight(x, w, b, padding="same")


def _aten_weight_grad(x, go, w_shape, padding, dilation):
    """The reference: PyTorch's own float64 convolution backward (weight only)."""
    zeros = torch.zeros(w_shape, dtype=torch.float64)
    return torch.ops.aten.convolution_backward(
        go.double(), x.double(), zeros, None, [1, 1], list(padding), list(dilation), False, [0, 0], 1, [False, True, False]
    )[1]


# (B, Cin, H, W, Cout, kernel, padding, dilation): the model's convolutions (3x3 'same' with
# Cin < Cout, Cin > Cout, Cin = 1, Cout = 1; 1x1 attention/FNO; CBAM's 7x7 2->1; ECA's (1, k)
# on (B, 1, 1, C)) and odd ones (non-square, no padding, dilation, padding past the kernel's
# reach, a batch of one)
WEIGHT_GRAD_SHAPES = [
    (3, 8, 16, 16, 16, (3, 3), (1, 1), (1, 1)),
    (3, 16, 8, 8, 8, (3, 3), (1, 1), (1, 1)),
    (2, 1, 16, 16, 8, (3, 3), (1, 1), (1, 1)),
    (2, 12, 16, 16, 1, (3, 3), (1, 1), (1, 1)),
    (2, 8, 4, 4, 4, (1, 1), (0, 0), (1, 1)),
    (2, 2, 12, 12, 1, (7, 7), (3, 3), (1, 1)),
    (2, 1, 1, 32, 1, (1, 5), (0, 2), (1, 1)),
    (2, 5, 7, 9, 4, (3, 5), (0, 2), (1, 1)),
    (2, 3, 9, 8, 6, (3, 3), (2, 1), (2, 1)),
    (2, 6, 10, 10, 3, (2, 2), (1, 0), (1, 2)),
    (2, 3, 5, 5, 8, (3, 3), (3, 3), (1, 1)),
    (2, 8, 5, 6, 3, (3, 3), (3, 2), (1, 1)),
    (1, 4, 6, 7, 5, (5, 3), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("B,cin,H,W,cout,k,pad,dil", WEIGHT_GRAD_SHAPES)
def test_weight_grad_is_the_float64_convolution_backward(B, cin, H, W, cout, k, pad, dil):
    g = torch.Generator().manual_seed(B * 1000 + cin * 10 + cout)
    x = torch.randn(B, cin, H, W, generator=g)
    Ho = H + 2 * pad[0] - dil[0] * (k[0] - 1)
    Wo = W + 2 * pad[1] - dil[1] * (k[1] - 1)
    go = torch.randn(B, cout, Ho, Wo, generator=g)
    ref = _aten_weight_grad(x, go, (cout, cin, *k), pad, dil)
    got = mixed_conv.conv_weight_grad(x, go, k, pad, dil)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    # float32 x float32 products are exact in float64: only the float64 accumulation rounds
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-14 * float(ref.abs().max()))
    # channels_last operands give the same numbers
    got_cl = mixed_conv.conv_weight_grad(x.contiguous(memory_format=torch.channels_last),
                                         go.contiguous(memory_format=torch.channels_last), k, pad, dil)
    torch.testing.assert_close(got_cl, ref, rtol=0, atol=1e-14 * float(ref.abs().max()))


@pytest.mark.parametrize("cin,cout", [(3, 5), (5, 3)])
def test_weight_grad_in_chunks_of_the_batch(monkeypatch, cin, cout):
    """Several chunks (and a short last one) accumulate to the one-chunk result."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, cin, 6, 7, generator=g)
    go = torch.randn(5, cout, 6, 7, generator=g)
    whole = mixed_conv.conv_weight_grad(x, go, (3, 3), (1, 1))
    monkeypatch.setattr(mixed_conv, "_CHUNK_ROWS", 2 * 8 * 7)  # two samples per chunk: 2 + 2 + 1
    chunked = mixed_conv.conv_weight_grad(x, go, (3, 3), (1, 1))
    ref = _aten_weight_grad(x, go, (cout, cin, 3, 3), (1, 1), (1, 1))
    torch.testing.assert_close(chunked, ref, rtol=0, atol=1e-14 * float(ref.abs().max()))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-14 * float(ref.abs().max()))


def test_master_weight_gradients_of_a_model_shaped_conv_match_float64_autograd():
    """Through the autograd function: weight and bias gradients of a 3x3 'same' layer with
    float64 masters are float64 autograd's (the stride-1 path; stride 2 is the aten fallback)."""
    x, w, b, go = _case(seed=3, B=4, cin=16, cout=4, H=12)
    _, _, gw, gb = _grads(x, w, b, go)
    w64 = w.float().double().requires_grad_(True)
    b64 = b.float().double().requires_grad_(True)
    F.conv2d(x.double(), w64, b64, padding=1).backward(go.double())
    torch.testing.assert_close(gw, w64.grad, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(gb, b64.grad, rtol=1e-13, atol=1e-13)
