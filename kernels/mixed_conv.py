"""2-D convolution with float32 activations and float64 ("master") weights.

The forward pass and the input gradient run in the activations' dtype (float32, the fast
oneDNN / cuDNN path); the weight and bias gradients are reduced in float64. A float32 weight
gradient is a sum over batch × pixels whose rounding depends on how the library splits that
sum (thread count, batch size, shard boundaries), and Adam turns that rounding noise into
different trajectories. In float64 the same sums agree to ~1e-16, so the float32 weights
derived from them are the same for any thread count, batch split or number of processes.
A batch of one is computed as a batch of two (the same sample twice): oneDNN's kernel for a
single sample rounds differently from its batched kernel and depends on the thread count.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["conv2d_master_weight"]


def _pair(v: int | Sequence[int]) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _twice(t: torch.Tensor) -> torch.Tensor:
    """A batch of one repeated to two (oneDNN picks a thread-count-dependent kernel for B = 1)."""
    return torch.cat([t, t]) if t.shape[0] == 1 else t


class _MasterWeightConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        w = weight.to(x.dtype)
        b = None if bias is None else bias.to(x.dtype)
        ctx.save_for_backward(x, w)
        ctx.conf = (_pair(stride), _pair(padding), _pair(dilation), int(groups), bias is not None, weight.dtype)
        return F.conv2d(_twice(x), w, b, stride, padding, dilation, groups)[: x.shape[0]]

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias, master = ctx.conf
        conv_backward = torch.ops.aten.convolution_backward
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv_backward(
                _twice(grad_out), _twice(x), w, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
            )[0][: x.shape[0]]
        want_w = ctx.needs_input_grad[1]
        want_b = has_bias and ctx.needs_input_grad[2]
        if want_w or want_b:
            _, grad_w, grad_b = conv_backward(
                grad_out.to(master), x.to(master), w.to(master), [w.shape[0]] if want_b else None,
                stride, padding, dilation, False, [0, 0], groups, [False, want_w, want_b],
            )
        return grad_x, grad_w, grad_b, None, None, None, None


def conv2d_master_weight(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """`F.conv2d` computed in `x`'s dtype, with the weight/bias gradients in the weights' dtype.

    x `(B, Cin, H, W)` float32 (or bf16/fp16); weight `(Cout, Cin/groups, kh, kw)` and bias
    `(Cout,)` float64 master copies. Returns `(B, Cout, H', W')` in x's dtype; the gradient of
    x is in x's dtype, those of weight and bias are float64. Padding must be numeric (not 'same').
    """
    if isinstance(padding, str):
        raise ValueError("conv2d_master_weight: give numeric padding, not a padding mode string")
    return _MasterWeightConv2d.apply(x, weight, bias, stride, padding, dilation, groups)
