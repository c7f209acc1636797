"""conv2d_master_weight: float32 compute, float64 weight gradients that do not depend on the
thread count or on how the batch is split."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptychopinn.kernels import conv2d_master_weight


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
