"""Barycentric (bilinear-splat) stitching in numpy: the torch-free twin of `kernels.stitch`.

Same rule as `ptychopinn.kernels.stitch`: patch pixel `(r, c)` of an `h × w` patch centred at
`[x, y]` lands at the canvas point `(x + c − w//2, y + r − h//2)` and is shared between the four
surrounding canvas pixels with bilinear weights; pixels off the canvas are dropped one by one.
Positions are split into integer and fractional parts in float64; fractions and the
pre-interpolated `(h+1) × (w+1)` windows are in the patches' real dtype (float32 for complex64),
as in torch. Work is chunked over patches, so the extra memory is `O(chunk · h · w)` on top of
the canvas accumulators, which are updated in place.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["stitch", "normalize", "new_canvas", "default_chunk_size"]

_CHUNK_PIXELS = 1 << 21


def default_chunk_size(h: int, w: int) -> int:
    """Patches per chunk so that one chunk holds about 2M pre-interpolated pixels."""
    return max(1, _CHUNK_PIXELS // ((h + 1) * (w + 1)))


def _real_dtype(dtype: DTypeLike) -> np.dtype:
    return np.empty(0, dtype=dtype).real.dtype


def new_canvas(shape: tuple[int, int], dtype: DTypeLike = np.complex64) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed accumulators `(numerator (H, W) dtype, weight_sum (H, W) real dtype)`."""
    return np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=_real_dtype(np.dtype(dtype)))


def _push(p: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Spread `p (k, h, w)` by sub-pixel fractions `fx, fy (k,)` onto `(k, h+1, w+1)`."""
    k, h, w = p.shape
    ax = fx[:, None, None]
    ay = fy[:, None, None]
    t = np.zeros((k, h, w + 1), dtype=p.dtype)
    t[:, :, :w] = (1 - ax) * p
    t[:, :, 1:] += ax * p
    q = np.zeros((k, h + 1, w + 1), dtype=p.dtype)
    q[:, :h] = (1 - ay) * t
    q[:, 1:] += ay * t
    return q


def _edge_weights(f: np.ndarray, length: int) -> np.ndarray:
    """`(k, length+1)` splat weights of a row of ones: `[1−f, 1, …, 1, f]`."""
    out = np.ones((f.shape[0], length + 1), dtype=f.dtype)
    out[:, 0] = 1 - f
    out[:, -1] = f
    return out


def _accumulate(flat: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """flat[idx] += values (repeated indices add up), in place.

    A dense `bincount` over the touched index range when that range is small (scan-ordered
    chunks), else `np.add.at`; neither allocates a canvas-sized temporary for spread-out chunks.
    """
    if idx.size == 0:
        return
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if hi - lo <= 8 * idx.size:
        local = idx - lo
        flat[lo:hi] += np.bincount(local, weights=values, minlength=hi - lo).astype(flat.dtype)
    else:
        np.add.at(flat, idx, values)


def stitch(
    patches: np.ndarray,
    positions: np.ndarray,
    canvas_shape: tuple[int, int],
    *,
    weights: np.ndarray | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Splat `patches (n, h, w)` (real or complex) onto an `(H, W)` canvas.

    positions `(n, 2)` `[x, y]` canvas pixels where patch pixel `(h//2, w//2)` lands. Optional
    real `weights` `(h, w)` or `(n, h, w)` multiply each pixel. Returns `(numerator (H, W)` dtype
    of `patches`, `weight_sum (H, W)` real`)`; with `out=(num, den)` (C-contiguous, same dtypes)
    the sums are accumulated into those arrays in place and returned.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3:
        raise ValueError(f"stitch: patches must be (n, h, w), got {patches.shape}")
    n, h, w = patches.shape
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (n, 2):
        raise ValueError(f"stitch: positions must be ({n}, 2) [x, y], got {positions.shape}")
    if weights is not None and np.shape(weights) not in ((h, w), (n, h, w)):
        raise ValueError(f"stitch: weights must be {(h, w)} or {(n, h, w)}, got {np.shape(weights)}")
    H, W = int(canvas_shape[0]), int(canvas_shape[1])
    rdt = _real_dtype(patches.dtype)
    if out is None:
        num, den = new_canvas((H, W), patches.dtype)
    else:
        num, den = out
        if num.shape != (H, W) or den.shape != (H, W):
            raise ValueError(f"stitch: out arrays must be ({H}, {W}), got {num.shape}, {den.shape}")
        if num.dtype != patches.dtype or den.dtype != rdt:
            raise ValueError(f"stitch: out dtypes must be ({patches.dtype}, {rdt}), got ({num.dtype}, {den.dtype})")
        if not (num.flags.c_contiguous and den.flags.c_contiguous):
            raise ValueError("stitch: out arrays must be C-contiguous")
    if n == 0:
        return num, den
    is_complex = np.iscomplexobj(num)
    flat_parts: tuple[np.ndarray, ...] = (num.reshape(-1).real, num.reshape(-1).imag) if is_complex else (num.reshape(-1),)
    flat_den = den.reshape(-1)
    base = np.floor(positions)
    frac = (positions - base).astype(rdt)
    base = base.astype(np.int64)
    x0 = base[:, 0] - w // 2
    y0 = base[:, 1] - h // 2
    chunk = chunk_size or default_chunk_size(h, w)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        fx, fy = frac[s:e, 0], frac[s:e, 1]
        p = patches[s:e]
        if weights is None:
            qw = _edge_weights(fy, h)[:, :, None] * _edge_weights(fx, w)[:, None, :]
        else:
            wk = np.asarray(weights, dtype=rdt)
            wk = np.broadcast_to(wk, (n, h, w))[s:e]
            p = p * wk
            qw = _push(np.ascontiguousarray(wk), fx, fy)
        q = _push(p, fx, fy)
        cols = x0[s:e, None] + np.arange(w + 1)  # (k, w+1)
        rows = y0[s:e, None] + np.arange(h + 1)  # (k, h+1)
        valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
        idx = (rows[:, :, None] * W + cols[:, None, :])[valid]
        _accumulate(flat_den, idx, qw[valid])
        qv = q[valid]
        if is_complex:
            _accumulate(flat_parts[0], idx, qv.real)
            _accumulate(flat_parts[1], idx, qv.imag)
        else:
            _accumulate(flat_parts[0], idx, qv)
    return num, den


def normalize(numerator: np.ndarray, weight_sum: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """`numerator / (weight_sum + eps)`, dtype of `numerator` (as `kernels.normalize`)."""
    return (numerator / (weight_sum + weight_sum.dtype.type(eps))).astype(numerator.dtype, copy=False)
