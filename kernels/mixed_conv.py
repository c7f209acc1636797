"""2-D convolution with float32 activations and float64 ("master") weights.

The forward pass and the input gradient run in the activations' dtype (float32, the fast
oneDNN / cuDNN path); the weight and bias gradients are reduced in float64. A float32 weight
gradient is a sum over batch × pixels whose rounding depends on how the library splits that
sum (thread count, batch size, shard boundaries), and Adam turns that rounding noise into
different trajectories. In float64 the same sums agree to ~1e-16, so the float32 weights
derived from them are the same for any thread count, batch split or number of processes.
A batch of one is computed as a batch of two (the same sample twice): oneDNN's kernel for a
single sample rounds differently from its batched kernel and depends on the thread count.

The float64 weight gradient of a stride-1, ungrouped convolution is `conv_weight_grad`: kh
matrix products over the batch × pixels axis, with the float32 operands cast to float64 once
(every float32 × float32 product is exact in float64; only the accumulation rounds, at ~1e-16).
PyTorch's own float64 CPU convolution (`_slow_conv2d_backward`: im2col per sample into zero-filled
buffers) takes ~3× as long for the model's weight gradients; it remains the fallback for
strides > 1 and groups > 1. The cost is float64 matrix-product throughput (MKL dgemm: ~¼ of
oneDNN's float32 convolution speed on an AVX-512 CPU), see docs/benchmarks.md.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["conv2d_master_weight", "conv_weight_grad"]


def _pair(v: int | Sequence[int]) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _twice(t: torch.Tensor) -> torch.Tensor:
    """A batch of one repeated to two (oneDNN picks a thread-count-dependent kernel for B = 1)."""
    return torch.cat([t, t]) if t.shape[0] == 1 else t


def _place(dst: torch.Tensor, src: torch.Tensor, top: int, left: int, dx: int) -> None:
    """dst[n, b, r, z] = src[b, n, r - top, z + dx - left] where that is inside src (dst is zeroed).

    dst `(N, B, R, Z)`, src `(B, N, Hs, Ws)`; offsets may be negative (cropping)."""
    R, Z = dst.shape[-2:]
    Hs, Ws = src.shape[-2:]
    r0, r1 = max(0, top), min(R, Hs + top)
    z0, z1 = max(0, left - dx), min(Z, Ws + left - dx)
    if r0 < r1 and z0 < z1:
        dst[:, :, r0:r1, z0:z1].copy_(src[:, :, r0 - top : r1 - top, z0 + dx - left : z1 + dx - left].transpose(0, 1))


# the batch goes through in chunks of up to _CHUNK_ROWS rows of the products' inner axis, with
# operand buffers of at most _CHUNK_BYTES (reused across chunks, and below glibc's 32 MiB mmap
# threshold: a fresh mmap'ed buffer costs a page fault per 4 KiB on first touch); few, large
# chunks keep the number of parallel regions (copies, products) per convolution low
_CHUNK_ROWS = 16384
_CHUNK_BYTES = 24 << 20


def _shifted_products(a: torch.Tensor, s: torch.Tensor, kh: int, kw: int, dh: int, dw: int, top: int, left: int,
                      dtype: torch.dtype) -> torch.Tensor:
    """out[m, n, i, j] = Σ_{b,y,z} a[b, m, y, z] · t[b, n, y + i·dh, z + j·dw], in `dtype`.

    a `(B, M, Ha, Wa)`; s `(B, N, Hs, Ws)` placed at (top, left) in a zero canvas t of
    `(Ha + dh(kh−1), Wa + dw(kw−1))`. Returns `(M, N, kh, kw)`.

    The canvas is stored once per column shift j, flattened over (b, row, column) with rows of
    length Wa; a row shift i is then an offset of i·dh·Wa along that axis, so each i is one
    matrix product (M × K)·(K × N·kw) of strided views, K ≈ B·Hc·Wa (no kh·kw im2col). The
    batch goes through in chunks (`_CHUNK_ROWS`, `_CHUNK_BYTES`), accumulated in `dtype`.
    """
    B, M, Ha, Wa = a.shape
    N = s.shape[1]
    Hc = Ha + dh * (kh - 1)
    per = Hc * Wa
    nb = max(1, min(B, _CHUNK_ROWS // per, _CHUNK_BYTES // ((M + N * kw) * per * dtype.itemsize)))
    af = a.new_zeros((M, nb, Hc, Wa), dtype=dtype)
    cols = a.new_zeros((N, kw, nb, Hc, Wa), dtype=dtype)
    out = a.new_zeros((kh, M, N * kw), dtype=dtype)
    for b0 in range(0, B, nb):
        n = min(nb, B - b0)
        af[:, :n, :Ha].copy_(a[b0 : b0 + n].transpose(0, 1))
        for j in range(kw):
            _place(cols[:, j, :n], s[b0 : b0 + n], top, left, j * dw)
        L = n * per
        K = L - (Hc - Ha) * Wa  # a is zero past its last sample's last row
        a2 = af[:, :n].reshape(M, L)[:, :K]
        c2 = cols[:, :, :n].reshape(N * kw, L)
        for i in range(kh):
            out[i].addmm_(a2, c2[:, i * dh * Wa : i * dh * Wa + K].t())
    return out.view(kh, M, N, kw).permute(1, 2, 0, 3)


def conv_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel_size: Sequence[int], padding: Sequence[int] = (0, 0),
                     dilation: Sequence[int] = (1, 1), dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Weight gradient of a stride-1, ungrouped `conv2d`, computed in `dtype`.

    x `(B, Cin, H, W)`, grad_out `(B, Cout, Ho, Wo)` with Ho = H + 2·ph − dh·(kh − 1) (and
    likewise Wo), any float dtype and memory format. Returns `(Cout, Cin, kh, kw)` in `dtype`:
    Σ_{b,y,z} grad_out[b, o, y, z] · x_padded[b, i, y + a·dh, z + c·dw]. The smaller of
    Cin / Cout is the operand that is copied kw times.
    """
    kh, kw = (int(k) for k in kernel_size)
    ph, pw = (int(p) for p in padding)
    dh, dw = (int(d) for d in dilation)
    if x.shape[1] <= grad_out.shape[1]:
        # a = grad_out on the output grid; the canvas is x zero-padded by (ph, pw)
        return _shifted_products(grad_out, x, kh, kw, dh, dw, ph, pw, dtype)
    # a = x on the input grid; the canvas is grad_out shifted by the kernel's reach: the taps
    # come out flipped (the correlation is read from the other side)
    out = _shifted_products(x, grad_out, kh, kw, dh, dw, dh * (kh - 1) - ph, dw * (kw - 1) - pw, dtype)
    return out.permute(1, 0, 2, 3).flip(2, 3)


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
        if want_w and stride == [1, 1] and groups == 1:
            grad_w = conv_weight_grad(x, grad_out, w.shape[2:], padding, dilation, master)
            if want_b:
                grad_b = grad_out.sum(dim=(0, 2, 3), dtype=master)
        elif want_w or want_b:
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
