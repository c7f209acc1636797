"""Bilinear sub-pixel translation with TensorFlow's `Translation` semantics (spec §4.2).

Output pixel `(r, c)` samples the input at `x = c − dx`, `y = r − dy` (integer pixel centres);
a bilinear corner outside the image contributes 0 and the weights are not renormalised.
Coordinates and weights are computed in the real dtype of the images (float32 for
float32/complex64, as TF does).

A pure translation shares one fractional shift across all pixels of an image, so bilinear
sampling on a separable grid is `out = Ty · I · Txᵀ` with interpolation matrices `Ty (h, H)`,
`Tx (w, W)` holding at most two non-zeros per row (`1 − f` at the floor index, `f` at the next;
indices outside the image simply have no column, which is the zero fill). Two batched
matmuls replace gathers; gradients w.r.t. the shifts flow through `f`. Very large inputs (where
the dense matrices cost more than `_MATMUL_MACS_PER_PIXEL` multiply-adds per output pixel) use
a gather path with the same arithmetic.
"""
from __future__ import annotations

import torch

__all__ = ["translate", "sample_grid"]


def _real_dtype(t: torch.Tensor) -> torch.dtype:
    return t.real.dtype if t.is_complex() else t.dtype


def interp_matrix(coords: torch.Tensor, size: int, start: int = 0) -> torch.Tensor:
    """Bilinear interpolation matrix `(..., n, size)` for sample positions `coords (..., n)`.

    Column `j` stands for input coordinate `start + j`. Row `i` has `1 − f` at coordinate
    `floor(coords[i])` and `f` at the next one (`f` the fractional part); coordinates outside
    `[start, start + size)` have no column, i.e. zero fill. Dtype of `coords`; differentiable
    w.r.t. `coords` through `f`.
    """
    c0 = torch.floor(coords)
    f = (coords - c0).unsqueeze(-1)
    j = torch.arange(start, start + size, dtype=coords.dtype, device=coords.device)
    d = j - c0.detach().unsqueeze(-1)
    zero = torch.zeros((), dtype=coords.dtype, device=coords.device)
    return torch.where(d == 0, 1.0 - f, zero) + torch.where(d == 1, f, zero)


def apply_separable(images: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """`ty (..., h, H) · images (..., H, W) · tx (..., w, W)ᵀ` -> `(..., h, w)`, leading dims broadcast.

    Complex images are multiplied as stacked real and imaginary parts sharing the real weights.
    The cheaper association order is chosen from the shapes.
    """
    h, H = ty.shape[-2:]
    w, W = tx.shape[-2:]
    txt = tx.transpose(-1, -2)
    rows_first = h * W * (H + w) <= H * w * (W + h)
    if images.is_complex():
        parts = torch.view_as_real(images).movedim(-1, -3)  # (..., 2, H, W)
        ty, txt = ty.unsqueeze(-3), txt.unsqueeze(-3)
        out = (ty @ parts) @ txt if rows_first else ty @ (parts @ txt)
        return torch.view_as_complex(out.movedim(-3, -1).contiguous())
    return (ty @ images) @ txt if rows_first else ty @ (images @ txt)


#: above this many multiply-adds per output pixel the dense matrices lose to gathering
_MATMUL_MACS_PER_PIXEL = 4096


def use_matrices(h: int, w: int, H: int, W: int) -> bool:
    """Whether `(h, w)` samples of an `(H, W)` image are cheaper as two dense matmuls than as gathers."""
    return min(h * W * (H + w), H * w * (W + h)) <= _MATMUL_MACS_PER_PIXEL * h * w


def _gather_real(images: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Gather-based bilinear sample of real `images (..., H, W)` on the grid `ys (..., h) × xs (..., w)`
    (the path for large inputs, where the dense interpolation matrices would cost too much).

    Leading dims of the three tensors broadcast. Returns `(..., h, w)`, dtype of `images`.
    """
    H, W = images.shape[-2], images.shape[-1]
    batch = torch.broadcast_shapes(images.shape[:-2], xs.shape[:-1], ys.shape[:-1])
    h, w = ys.shape[-1], xs.shape[-1]
    img = images.expand(*batch, H, W)
    xs = xs.expand(*batch, w)
    ys = ys.expand(*batch, h)

    x0 = torch.floor(xs)
    y0 = torch.floor(ys)
    x1 = x0 + 1.0
    y1 = y0 + 1.0
    wx = (xs - x0).unsqueeze(-2)  # (..., 1, w)
    wy = (ys - y0).unsqueeze(-1)  # (..., h, 1)

    def inside(v: torch.Tensor, size: int) -> torch.Tensor:
        return (v >= 0) & (v <= size - 1)

    def index(v: torch.Tensor, size: int) -> torch.Tensor:
        return v.detach().clamp(0, size - 1).to(torch.int64)

    dt = images.dtype
    # Masks are 0/1 and separable, so folding them into the (separable) weights gives exactly
    # TF's (I·mask)·w products while touching full-size arrays far less often.
    mx0, mx1 = inside(x0, W).to(dt), inside(x1, W).to(dt)
    my0, my1 = inside(y0, H).to(dt), inside(y1, H).to(dt)
    ix0, ix1 = index(x0, W), index(x1, W)
    iy0, iy1 = index(y0, H), index(y1, H)

    # Rows first (gather along H), then columns (gather along W).
    rows0 = torch.gather(img, -2, iy0.unsqueeze(-1).expand(*batch, h, W))
    rows1 = torch.gather(img, -2, iy1.unsqueeze(-1).expand(*batch, h, W))
    cx0 = ix0.unsqueeze(-2).expand(*batch, h, w)
    cx1 = ix1.unsqueeze(-2).expand(*batch, h, w)
    ia = torch.gather(rows0, -1, cx0)
    ib = torch.gather(rows0, -1, cx1)
    ic = torch.gather(rows1, -1, cx0)
    id_ = torch.gather(rows1, -1, cx1)

    ux0 = (1.0 - wx) * mx0.unsqueeze(-2)
    ux1 = wx * mx1.unsqueeze(-2)
    uy0 = (1.0 - wy) * my0.unsqueeze(-1)
    uy1 = wy * my1.unsqueeze(-1)
    return (ux0 * uy0) * ia + (ux1 * uy0) * ib + (ux0 * uy1) * ic + (ux1 * uy1) * id_


def sample_grid(images: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Bilinear zero-fill sample of `images (..., H, W)` (real or complex) at columns `xs (..., w)`
    and rows `ys (..., h)` (pixel units, integer centres) -> `(..., h, w)`.

    Leading dims broadcast. Coordinates are cast to the real dtype of `images`. Complex images
    are sampled as real and imaginary parts with shared weights.
    """
    rdt = _real_dtype(images)
    H, W = images.shape[-2], images.shape[-1]
    xs = xs.to(rdt)
    ys = ys.to(rdt)
    if use_matrices(ys.shape[-1], xs.shape[-1], H, W):
        return apply_separable(images, interp_matrix(ys, H), interp_matrix(xs, W))
    batch = torch.broadcast_shapes(images.shape[:-2], xs.shape[:-1], ys.shape[:-1])
    images = images.expand(*batch, H, W)
    if images.is_complex():
        parts = torch.stack((images.real, images.imag), dim=0)
        out = _gather_real(parts, xs.unsqueeze(0), ys.unsqueeze(0))
        return torch.complex(out[0], out[1])
    return _gather_real(images, xs, ys)


def translate(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate `images (..., H, W)` (float or complex) by `shifts (..., 2)` = `[dx, dy]` pixels.

    Content moves `+dx` columns and `+dy` rows: `out[..., r, c] = I(x = c − dx, y = r − dy)`,
    bilinear, zero fill, no renormalisation. The leading dims of `shifts` broadcast against
    those of `images`; the result has the broadcast leading shape and the dtype of `images`.
    Differentiable w.r.t. `images` and `shifts`.
    """
    if shifts.shape[-1] != 2:
        raise ValueError(f"translate: shifts must have a last dim of 2 ([dx, dy]), got {tuple(shifts.shape)}")
    if images.dim() < 2:
        raise ValueError(f"translate: images must be (..., H, W), got {tuple(images.shape)}")
    rdt = _real_dtype(images)
    H, W = images.shape[-2], images.shape[-1]
    shifts = shifts.to(rdt)
    cols = torch.arange(W, dtype=rdt, device=images.device)
    rows = torch.arange(H, dtype=rdt, device=images.device)
    xs = cols - shifts[..., 0:1]
    ys = rows - shifts[..., 1:2]
    return sample_grid(images, xs, ys)
