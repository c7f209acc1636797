"""Bad (unmeasured) detector pixels: the network-input fill (numpy only; no torch).

`Scan.bad_pixels` is an `(N, N)` bool mask, True = not measured (the ptychodus convention),
shared by every pattern of the scan. Masked pixels are

- excluded from the normalisation factor (`normalize.normalization_factor(..., bad_pixels=)`);
- excluded from the training loss (the loss gets `valid = ~bad_pixels`);
- filled at the network input by `BadPixelFill` — used by both `GroupDataset` (torch) and the
  torch-free ONNX runner, so the two see the same input.

The fill: **each masked pixel takes the mean of its measured 4-neighbours** (up, down, left,
right), in rounds growing inward from the edge of each masked region: round 1 fills the masked
pixels that touch a measured one, round 2 those touching a round-1 pixel, and so on (an
onion-peel, discrete harmonic-like inpainting). Why this rule: the far-field intensity is smooth
on the scale of a speckle (≥ 2 px at Nyquist sampling), so an isolated hot pixel or a 1–2 px
detector gap is well predicted by its neighbours; a zero would put a hole the network never saw
in training, and the point-reflected (Friedel) pixel is only equal for a real exit wave, which a
phase object with a complex probe is not. Large masked areas (a beamstop) get a smooth
interpolation of their rim; their values never enter the loss or the normalisation anyway.
The fill is linear in the pattern, so it commutes with the scalar input scale.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["BadPixelFill", "fill_bad_pixels"]


class BadPixelFill:
    """Precomputed fill plan for one `(N, N)` mask; call it on `(..., N, N)` float patterns.

    The plan is a list of rounds `(targets (n,), neighbours (n, 4), weights (n, 4))` over
    flattened pixel indices; a call costs a few gathers over the masked pixels only.
    """

    def __init__(self, bad_pixels: np.ndarray) -> None:
        bad = np.asarray(bad_pixels, dtype=bool)
        if bad.ndim != 2:
            raise DataError(f"bad_pixels has shape {bad.shape}, expected (N, N) bool")
        if bad.all():
            raise DataError(f"bad_pixels flags all {bad.size} pixels, expected at least one measured pixel")
        self.shape = bad.shape
        H, W = bad.shape
        known = ~bad
        flat = np.arange(H * W).reshape(H, W)
        self.rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        while not known.all():
            pad = np.pad(known, 1, constant_values=False)
            nbr_known = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])  # up, down, left, right
            target = ~known & nbr_known.any(axis=0)
            rows, cols = np.nonzero(target)
            offsets = ((-1, 0), (1, 0), (0, -1), (0, 1))
            nb = np.empty((rows.size, 4), dtype=np.int64)
            wt = np.empty((rows.size, 4), dtype=np.float32)
            for k, (dr, dc) in enumerate(offsets):
                ok = nbr_known[k, rows, cols]
                rr = np.clip(rows + dr, 0, H - 1)
                cc = np.clip(cols + dc, 0, W - 1)
                nb[:, k] = np.where(ok, flat[rr, cc], flat[rows, cols])
                wt[:, k] = ok
            wt /= wt.sum(axis=1, keepdims=True)
            self.rounds.append((flat[rows, cols], nb, wt))
            known = known | target
        self.n_bad = int(bad.sum())

    def __call__(self, patterns: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Filled copy of `patterns (..., N, N)` (in place when `out is patterns`)."""
        x = np.asarray(patterns)
        if x.shape[-2:] != self.shape:
            raise DataError(f"patterns of shape {x.shape[-2:]} do not match the bad-pixel mask {self.shape}")
        if out is None:
            out = np.array(x, dtype=np.result_type(x.dtype, np.float32), copy=True)
        elif out is not x:
            out[...] = x
        if not out.flags.c_contiguous:  # reshape must be a view so that the writes land in `out`
            tmp = np.ascontiguousarray(out)
            out[...] = self(tmp, out=tmp)
            return out
        flat = out.reshape(out.shape[:-2] + (-1,))
        for targets, nb, wt in self.rounds:
            flat[..., targets] = np.einsum("...nk,nk->...n", flat[..., nb], wt).astype(flat.dtype, copy=False)
        return out


def fill_bad_pixels(patterns: np.ndarray, bad_pixels: np.ndarray | None) -> np.ndarray:
    """`BadPixelFill(bad_pixels)(patterns)`; a copy of `patterns` when `bad_pixels` is None."""
    if bad_pixels is None:
        return np.array(patterns, copy=True)
    return BadPixelFill(bad_pixels)(patterns)
