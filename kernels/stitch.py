"""Whole-object stitching by bilinear splatting (push), and its exact adjoint (pull).

Patch pixel `(r, c)` of an `h × w` patch centred at `[x, y]` lands at the canvas point
`(x + c − w//2, y + r − h//2)` and is shared between the four surrounding canvas pixels with
bilinear weights. For a pure translation these weights are the same for every pixel of a patch,
so each patch is first pre-interpolated onto an `(h+1) × (w+1)` window and the window is added
to the canvas; off-canvas pixels get weight 0 so they are dropped one by one, never whole
patches. Work is chunked over patches: peak extra memory is `O(chunk · h · w)` on top of the
canvas. Two paths give the same sums up to float rounding:

- without autograd, on CPU (`_stitch_fast`): the windows are built by two lerps (x, then y) in
  reused zero-bordered buffers sized for the cache, and each chunk is added with ONE
  `index_add_` of whole windows along dim 0 of an overlapping `as_strided` window view of the
  canvas: a contiguous block add per window row, no per-pixel index tensor. Patches whose window
  leaves the canvas take the per-pixel path below.
- with autograd (or on CUDA): one depthwise 2×2 convolution per chunk, then one `index_add_` at
  per-pixel integer canvas indices (int32 when they fit, built as one contiguous
  `base + offsets` add for patches fully inside).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .translate import _real_dtype

__all__ = ["stitch", "gather_patches", "normalize", "default_chunk_size"]

_CHUNK_PIXELS = 1 << 20


def default_chunk_size(h: int, w: int) -> int:
    """Patches per chunk so that one chunk holds about 1M pre-interpolated pixels (cache-friendly)."""
    return max(1, _CHUNK_PIXELS // ((h + 1) * (w + 1)))


def _split_positions(positions: torch.Tensor, h: int, w: int, rdt: torch.dtype, device: torch.device):
    """Integer top-left corner `(X0, Y0)` int64 and fractions `(fx, fy)` (dtype `rdt`) per patch."""
    pos = positions.to(device=device, dtype=torch.float64)
    base = torch.floor(pos)
    frac = (pos - base).to(rdt)
    base = base.detach().to(torch.int64)
    return base[:, 0] - w // 2, base[:, 1] - h // 2, frac[:, 0], frac[:, 1]


def _axis_index(start: torch.Tensor, length: int, size: int):
    """Canvas coordinates `start + [0, length)` per patch `(k, length)` (clamped) and validity."""
    coords = start[:, None] + torch.arange(length, device=start.device)
    valid = (coords >= 0) & (coords < size)
    return coords.clamp(0, size - 1), valid


def _window_index(x0: torch.Tensor, y0: torch.Tensor, h1: int, w1: int, H: int, W: int):
    """Flat canvas index `(k, h1, w1)` of each patch's window (clamped) and its validity mask."""
    cols, vc = _axis_index(x0, w1, W)
    rows, vr = _axis_index(y0, h1, H)
    idx = rows[:, :, None] * W + cols[:, None, :]
    return idx, vr[:, :, None] & vc[:, None, :]


def _splat_window(p: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, vc: torch.Tensor, vr: torch.Tensor) -> torch.Tensor:
    """Bilinear splat of `p (k, h, w, lanes)` (real; `lanes` values per pixel sharing the weights)
    onto its `(k, h+1, w+1, lanes)` window.

    Window pixel `(i, j)` gets `Σ wy·wx·p[i−a, j−b]` over `a, b ∈ {0, 1}` with `wy = (1−fy, fy)`,
    `wx = (1−fx, fx)` (`fx, fy (k,)` per-patch fractions): one depthwise 2×2 convolution per
    patch (dilated by `lanes` along the interleaved columns), i.e. a single pass over the data.
    Window pixels off the canvas (`vc (k, w+1)`, `vr (k, h+1)` zero) get weight 0: dropped.
    """
    k, h, w, lanes = p.shape
    ky = torch.stack((fy, 1 - fy), dim=1)
    kx = torch.stack((fx, 1 - fx), dim=1)
    kernel = (ky[:, :, None] * kx[:, None, :]).unsqueeze(1)  # (k, 1, 2, 2), cross-correlation order
    q = F.conv2d(p.reshape(1, k, h, w * lanes), kernel, padding=(1, lanes), dilation=(1, lanes), groups=k)
    q = q.view(k, h + 1, w + 1, lanes)
    edge = (vc == 0).any(dim=1) | (vr == 0).any(dim=1)
    needs_grad = torch.is_grad_enabled() and (p.requires_grad or fx.requires_grad or fy.requires_grad)
    if needs_grad:
        q = q * (vr[:, :, None] * vc[:, None, :]).unsqueeze(-1)
    elif bool(edge.any()):
        q[edge] *= (vr[edge][:, :, None] * vc[edge][:, None, :]).unsqueeze(-1)
    return q


def _flat_index(x0, y0, h1: int, w1: int, H: int, W: int, lanes: int, itype: torch.dtype) -> torch.Tensor:
    """Flat index `(k, h1·w1·lanes)` into an `(H, W, lanes)` canvas of each patch's window.

    Patches whose window is fully inside take `base + rel` (one contiguous broadcast add);
    the others get clamped coordinates (their off-canvas pixels carry weight 0).
    """
    dev = x0.device
    lane = torch.arange(lanes, dtype=itype, device=dev)
    rel = ((torch.arange(h1, dtype=itype, device=dev) * W)[:, None] + torch.arange(w1, dtype=itype, device=dev))
    rel = (rel[:, :, None] * lanes + lane).reshape(-1)
    base = ((y0 * W + x0) * lanes).to(itype)
    idx = base[:, None] + rel
    edge = (x0 < 0) | (x0 + w1 > W) | (y0 < 0) | (y0 + h1 > H)
    if bool(edge.any()):
        cols, _ = _axis_index(x0[edge], w1, W)
        rows, _ = _axis_index(y0[edge], h1, H)
        pix = (rows[:, :, None] * W + cols[:, None, :]).to(itype) * lanes
        idx[edge] = (pix[..., None] + lane).reshape(pix.shape[0], -1)
    return idx


def _edge_weights(f: torch.Tensor, length: int) -> torch.Tensor:
    """`(k, length+1)` splat weights of a row of ones: `[1−f, 1, …, 1, f]`."""
    ones = torch.ones(f.shape[0], length - 1, dtype=f.dtype, device=f.device)
    return torch.cat(((1 - f)[:, None], ones, f[:, None]), dim=1)


def _pull(win: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Adjoint of the splat: window `(k, h+1, w+1)` -> `(k, h, w)` (bilinear pull)."""
    ax = fx[:, None, None]
    ay = fy[:, None, None]
    t = (1 - ay) * win[:, :-1, :] + ay * win[:, 1:, :]
    return (1 - ax) * t[:, :, :-1] + ax * t[:, :, 1:]


#: window pixels per chunk of the no-grad fast path (~31 patches of 64²: patches + window buffers
#: ~3 MiB, in L2/L3; the best of 8–128 patches measured here, 1 thread)
_FAST_CHUNK_PIXELS = 1 << 17


def _window_view(flat: torch.Tensor, H: int, W: int, h1: int, w1: int, lanes: int) -> torch.Tensor:
    """Overlapping view `(R, h1, w1·lanes)` of an `(H, W, lanes)` canvas: slice `p` is the window
    whose top-left pixel is flat pixel `p` (valid for windows fully inside; `R` = last such + 1)."""
    R = (H - h1) * W + (W - w1) + 1
    return flat.as_strided((R, h1, w1 * lanes), (lanes, W * lanes, 1))


class _Window:
    """Reused zero-bordered buffers for one chunk of `k` patches and the views the lerps use.

    `p (k, h, w+2, lanes)` (weighted patches) and `t (k, h+2, w+1, lanes)` (after the x pass)
    have zero borders that are never written, so each pass is ONE lerp over the whole window.
    """

    def __init__(self, k: int, h: int, w: int, lanes: int, rdt: torch.dtype, dev: torch.device, weighted: bool):
        self.g = torch.empty(k, h, w, lanes, dtype=rdt, device=dev)  # the chunk's patches, gathered
        self.g_r, self.g_l, self.g_0, self.g_w = self.g[:, :, 1:], self.g[:, :, :-1], self.g[:, :, :1], self.g[:, :, w - 1 :]
        self.t = torch.zeros(k, h + 2, w + 1, lanes, dtype=rdt, device=dev)
        self.q = torch.empty(k, h + 1, w + 1, lanes, dtype=rdt, device=dev)
        self.qw = torch.empty(k, h + 1, w + 1, dtype=rdt, device=dev)
        self.t_mid = self.t[:, 1 : h + 1]
        self.q_rows = self.q.view(k, h + 1, (w + 1) * lanes)
        if weighted:
            self.p = torch.zeros(k, h, w + 2, lanes, dtype=rdt, device=dev)
            self.tw = torch.zeros(k, h + 2, w + 1, dtype=rdt, device=dev)
            self.pw = torch.zeros(k, h, w + 2, dtype=rdt, device=dev)

    def view(self, k: int) -> _Window:
        """The same buffers cut to the first `k` patches (a short last chunk)."""
        v = object.__new__(_Window)
        for name, buf in vars(self).items():
            setattr(v, name, buf[:k])
        return v


def _stitch_fast(patches, x0, y0, fx, fy, weights, flat_num, flat_den, H: int, W: int, lanes: int, chunk: int, itype) -> None:
    """No-grad splat (the sums of the autograd path up to float rounding), for `H ≥ h+1, W ≥ w+1`.

    Per chunk of `k` patches the `(k, h+1, w+1, lanes)` windows are built in reused buffers by
    two lerps (x then y; `_Window`), the weight windows likewise (no weights: the rank-one
    product of the edge weights), and each is added by ONE `index_add_` of whole windows along
    dim 0 of an overlapping window view of the canvas (`_window_view`: one contiguous block
    add per window row, no per-pixel index tensor). Patches whose window leaves the canvas are
    added through the per-pixel path (masked, clamped `_flat_index`, as the autograd path) and
    zeroed in the buffers. One host sync per call (which chunks hold such patches). Extra
    memory `O(chunk · h · w)`.
    """
    n, h, w = patches.shape
    h1, w1 = h + 1, w + 1
    rdt = fx.dtype
    dev = patches.device
    # patches in canvas order (row-major by window corner): consecutive windows share canvas
    # rows, so the index_add_ read-modify-writes hit the cache (~1.8x on canvases beyond L2)
    order = torch.argsort(y0 * W + x0, stable=True)
    x0, y0, fx, fy = x0[order], y0[order], fx[order], fy[order]
    inside = (x0 >= 0) & (x0 + w1 <= W) & (y0 >= 0) & (y0 + h1 <= H)
    base = torch.where(inside, y0 * W + x0, 0).to(itype)  # edge windows are zeroed and added at 0
    edge_chunks = set(((~inside).nonzero().squeeze(1) // chunk).tolist())
    vnum = _window_view(flat_num, H, W, h1, w1, lanes)
    vden = _window_view(flat_den, H, W, h1, w1, 1)
    wts = None if weights is None else weights.to(rdt)
    per_patch = wts is not None and wts.dim() == 3
    gx, gy, hx = fx.view(n, 1, 1, 1), fy.view(n, 1, 1, 1), (1 - fx).view(n, 1, 1, 1)
    full = _Window(min(chunk, n), h, w, lanes, rdt, dev, wts is not None)
    last = full.view(n - (n - 1) // chunk * chunk)
    pr = torch.view_as_real(patches) if patches.is_complex() else patches.unsqueeze(-1)
    # every chunk's views in one call each (`split`): the loop body is the compute ops only
    parts = [order.split(chunk), gx.split(chunk), hx.split(chunk), gy.split(chunk), base.split(chunk)]
    if wts is None:
        parts += [_edge_weights(fy, h)[:, :, None].split(chunk), _edge_weights(fx, w)[:, None, :].split(chunk)]
    else:
        shared_pw = torch.zeros(1, h, w + 2, dtype=rdt, device=dev)  # the shared weight image, bordered
        if not per_patch:
            shared_pw[0, :, 1 : w + 1] = wts
        parts += [order.split(chunk) if per_patch else [wts] * len(parts[0]), fx.view(n, 1, 1).split(chunk)]
    nch = len(parts[0])
    for c, (ok, gxk, hxk, gyk, bk, u, u2) in enumerate(zip(*parts)):
        v = last if c == nch - 1 else full
        p = torch.index_select(pr, 0, ok, out=v.g)
        if wts is None:  # x pass with the two edge columns, rank-one weight window
            torch.lerp(v.g_r, v.g_l, gxk, out=v.t_mid[:, :, 1:w])
            torch.mul(v.g_0, hxk, out=v.t_mid[:, :, :1])
            torch.mul(v.g_w, gxk, out=v.t_mid[:, :, w:])
            torch.mul(u, u2, out=v.qw)  # u = y edge weights (k, h+1, 1), u2 = x (k, 1, w+1)
        else:
            wk = wts.index_select(0, u) if per_patch else u  # u = order (per-patch weights) or the weights
            gx3, gy3 = u2, gyk.view(-1, 1, 1)  # u2 = fx (k, 1, 1)
            torch.mul(p, wk.unsqueeze(-1), out=v.p[:, :, 1 : w + 1])
            torch.lerp(v.p[:, :, 1:], v.p[:, :, :-1], gxk, out=v.t_mid)
            if per_patch:
                v.pw[:, :, 1 : w + 1].copy_(wk)
            pw = v.pw if per_patch else shared_pw
            torch.lerp(pw[:, :, 1:], pw[:, :, :-1], gx3, out=v.tw[:, 1 : h + 1])
            torch.lerp(v.tw[:, 1:], v.tw[:, :-1], gy3, out=v.qw)
        torch.lerp(v.t[:, 1:], v.t[:, :-1], gyk, out=v.q)
        if c in edge_chunks:
            s, e = c * chunk, c * chunk + p.shape[0]
            ei = (~inside[s:e]).nonzero().squeeze(1)
            ex0, ey0 = x0[s:e][ei], y0[s:e][ei]
            _, vc = _axis_index(ex0, w1, W)
            _, vr = _axis_index(ey0, h1, H)
            mask = vr.to(rdt)[:, :, None] * vc.to(rdt)[:, None, :]
            idx = _flat_index(ex0, ey0, h1, w1, H, W, 1, itype)
            flat_den.index_add_(0, idx.view(-1), (v.qw[ei] * mask).view(-1))
            if lanes > 1:
                idx = _flat_index(ex0, ey0, h1, w1, H, W, lanes, itype)
            flat_num.index_add_(0, idx.view(-1), (v.q[ei] * mask.unsqueeze(-1)).view(-1))
            v.q[ei] = 0
            v.qw[ei] = 0
        vden.index_add_(0, bk, v.qw)
        vnum.index_add_(0, bk, v.q_rows)


def _check(patches_shape, positions: torch.Tensor, weights: torch.Tensor | None, name: str):
    n = patches_shape[0]
    if positions.shape != (n, 2):
        raise ValueError(f"{name}: positions must be ({n}, 2) [x, y], got {tuple(positions.shape)}")
    if weights is not None and weights.shape not in (tuple(patches_shape[1:]), tuple(patches_shape)):
        raise ValueError(
            f"{name}: weights must be {tuple(patches_shape[1:])} or {tuple(patches_shape)}, got {tuple(weights.shape)}"
        )


def stitch(
    patches: torch.Tensor,
    positions: torch.Tensor,
    canvas_shape: tuple[int, int],
    *,
    weights: torch.Tensor | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splat `patches (n, h, w)` (real or complex) onto an `(H, W)` canvas.

    `positions (n, 2)` = `[x, y]` canvas pixels where patch pixel `(h//2, w//2)` lands (any float
    dtype; split into integer and fractional parts in float64). Optional real `weights` `(h, w)`
    or `(n, h, w)` multiply each pixel (e.g. a crop mask or |probe|²). Returns
    `(numerator (H, W)` dtype of `patches`, `weight_sum (H, W)` real`)` with
    `numerator = Σ splat(w · patch)`, `weight_sum = Σ splat(w)`. With `out=(num, den)` (contiguous)
    the sums are accumulated into those tensors in place and returned. Differentiable w.r.t.
    `patches` and `positions`. On CUDA the accumulation order (atomics) is not deterministic.
    On CPU without autograd the whole-window path runs (patches added in canvas order, serially:
    deterministic; equal to the autograd path up to float rounding).
    Non-finite patch values propagate (also from dropped pixels, into the nearest edge pixel).
    """
    if patches.dim() != 3:
        raise ValueError(f"stitch: patches must be (n, h, w), got {tuple(patches.shape)}")
    _check(patches.shape, positions, weights, "stitch")
    n, h, w = patches.shape
    H, W = int(canvas_shape[0]), int(canvas_shape[1])
    rdt = _real_dtype(patches)
    dev = patches.device
    if out is None:
        num = torch.zeros(H, W, dtype=patches.dtype, device=dev)
        den = torch.zeros(H, W, dtype=rdt, device=dev)
    else:
        num, den = out
        if num.shape != (H, W) or den.shape != (H, W):
            raise ValueError(f"stitch: out tensors must be ({H}, {W}), got {tuple(num.shape)}, {tuple(den.shape)}")
        if num.dtype != patches.dtype or den.dtype != rdt:
            raise ValueError(f"stitch: out dtypes must be ({patches.dtype}, {rdt}), got ({num.dtype}, {den.dtype})")
        if not (num.is_contiguous() and den.is_contiguous()):
            raise ValueError("stitch: out tensors must be contiguous")
    if n == 0:
        return num, den
    is_c = num.is_complex()
    flat_num = torch.view_as_real(num).view(-1) if is_c else num.view(-1)
    flat_den = den.view(-1)
    x0, y0, fx, fy = _split_positions(positions, h, w, rdt, dev)
    L = 2 if is_c else 1
    itype = torch.int32 if H * W * L < 2**31 - 1 else torch.int64
    needs_grad = torch.is_grad_enabled() and (
        patches.requires_grad or positions.requires_grad or (weights is not None and weights.requires_grad)
    )
    # the window path on CPU only: on CUDA it is untested here (and deterministic mode turns
    # index_add_ into index_put_, unsafe on the overlapping window view), so CUDA keeps the
    # per-pixel path
    if not needs_grad and dev.type == "cpu" and H > h and W > w:
        chunk = chunk_size or max(1, _FAST_CHUNK_PIXELS // ((h + 1) * (w + 1)))
        _stitch_fast(patches, x0, y0, fx, fy, weights, flat_num, flat_den, H, W, L, chunk, itype)
        return num, den
    chunk = chunk_size or default_chunk_size(h, w)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        k = e - s
        _, vc = _axis_index(x0[s:e], w + 1, W)
        _, vr = _axis_index(y0[s:e], h + 1, H)
        vc = vc.to(rdt)
        vr = vr.to(rdt)
        p = patches[s:e]
        if weights is not None:
            wk = weights.to(rdt)
            wk = wk.expand(k, h, w) if wk.dim() == 2 else wk[s:e]
            p = p * wk
            qw = _splat_window(wk.unsqueeze(-1), fx[s:e], fy[s:e], vc, vr)
        else:
            ax = _edge_weights(fx[s:e], w) * vc
            ay = _edge_weights(fy[s:e], h) * vr
            qw = ay[:, :, None] * ax[:, None, :]
        pr = torch.view_as_real(p) if is_c else p.unsqueeze(-1)
        q = _splat_window(pr, fx[s:e], fy[s:e], vc, vr)  # (k, h+1, w+1, L)
        idx = _flat_index(x0[s:e], y0[s:e], h + 1, w + 1, H, W, 1, itype)
        flat_den.index_add_(0, idx.view(-1), qw.reshape(-1))
        if is_c:
            idx = _flat_index(x0[s:e], y0[s:e], h + 1, w + 1, H, W, L, itype)
        flat_num.index_add_(0, idx.view(-1), q.view(-1))
    return num, den


def gather_patches(
    canvas: torch.Tensor,
    positions: torch.Tensor,
    size: int | tuple[int, int],
    *,
    weights: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Exact adjoint of `stitch`'s numerator: read `(n, h, w)` patches from `canvas (H, W)`.

    Same geometry as `stitch` (patch pixel `(h//2, w//2)` at `positions[i]` = `[x, y]`): each
    pixel is the bilinear pull of its four canvas neighbours, off-canvas neighbours count 0, then
    multiplied by `weights` when given, so `⟨stitch(p)[0], q⟩ = ⟨p, gather_patches(q)⟩`.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if canvas.dim() != 2:
        raise ValueError(f"gather_patches: canvas must be (H, W), got {tuple(canvas.shape)}")
    n = positions.shape[0]
    _check((n, h, w), positions, weights, "gather_patches")
    H, W = canvas.shape
    rdt = _real_dtype(canvas)
    x0, y0, fx, fy = _split_positions(positions, h, w, rdt, canvas.device)
    flat = canvas.reshape(H * W)
    zero = torch.zeros((), dtype=canvas.dtype, device=canvas.device)
    chunk = chunk_size or default_chunk_size(h, w)
    pieces = []
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        idx, valid = _window_index(x0[s:e], y0[s:e], h + 1, w + 1, H, W)
        win = torch.where(valid, flat[idx], zero)
        pieces.append(_pull(win, fx[s:e], fy[s:e]))
    out = torch.cat(pieces, dim=0) if pieces else canvas.new_zeros(0, h, w)
    if weights is not None:
        out = out * weights.to(rdt)
    return out


def normalize(numerator: torch.Tensor, weight_sum: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """`numerator / (weight_sum + eps)` -> `(H, W)`, dtype of `numerator`."""
    return numerator / (weight_sum + eps)
