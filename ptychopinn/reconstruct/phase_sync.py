"""Per-patch phase synchronisation of stitched network patches (`reconstruct(..., phase_sync=K)`).

A diffraction pattern does not change when its exit wave is multiplied by a constant phase
factor, so a network that reconstructs each pattern on its own (gridsize 1, and between groups
at gridsize > 1) leaves every object patch with an arbitrary phase offset; averaged as they are,
the offsets show up as facets and lower the phase (and amplitude) of the stitched object.
Synchronisation picks, for every patch m, the unit phasor u_m that best agrees with the others
where they overlap (angular synchronisation, solved by K rounds of the power iteration):

    O   = Σ_m w·u_m·p_m / Σ_m w               (stitch, the same weights w as the object)
    u_m = phase of ⟨p_m, O_m⟩_w                (O_m: O under patch m, `kernels.gather_patches`)

followed by removing the mean phasor's angle (the global phase stays where it was). Only phases
change; the amplitudes of the patches are left as the network predicted them.

Memory: the cropped patches of the whole scan are held, `n · crop² · 8` bytes (complex64); above
`max_bytes` the synchronisation is skipped with a warning. Distributed: each rank holds its own
patches, the numerator and weight canvases are all-reduced every round.
"""
from __future__ import annotations

from typing import Any

import torch

from ..distributed import all_reduce_sum
from ..kernels import gather_patches, normalize
from ..kernels import stitch as kstitch

MAX_BYTES = 2 << 30  # 2 GiB of held patches


def fits(n_patches: int, crop: int, max_bytes: int = MAX_BYTES) -> bool:
    """True when `n_patches` cropped complex64 patches fit the synchronisation's memory budget."""
    return n_patches * crop * crop * 8 <= max_bytes


def synchronise_phases(
    patches: torch.Tensor,
    positions: torch.Tensor,
    canvas_shape: tuple[int, int],
    iterations: int,
    *,
    weights: torch.Tensor | None = None,
    distributed: Any = None,
) -> torch.Tensor:
    """Unit phasors `(n,)` complex64 that align `patches (n, c, c)` complex (this rank's) at
    `positions (n, 2)` `[x, y]` canvas px on an `(H, W)` canvas; `weights (c, c)` real or None.

    `distributed`: the `distributed.current()` info or None; with it the canvases are summed over
    ranks every round and the global phase is fixed over all ranks' patches.
    """
    n = int(patches.shape[0])
    u = torch.ones(n, dtype=patches.dtype, device=patches.device)
    c = int(patches.shape[-1])
    for _ in range(iterations):
        num, den = kstitch(patches * u[:, None, None], positions, canvas_shape, weights=weights)
        if distributed is not None:
            all_reduce_sum(torch.view_as_real(num))
            all_reduce_sum(den)
        obj = torch.where(den > 0, normalize(num, den, 1e-9), torch.zeros((), dtype=num.dtype, device=num.device))
        under = gather_patches(obj, positions, c)
        w = 1.0 if weights is None else weights
        corr = (w * patches.conj() * under).sum(dim=(1, 2))
        u = torch.where(corr.abs() > 0, corr / corr.abs().clamp_min(1e-30), torch.ones((), dtype=corr.dtype, device=corr.device))
        mean = u.sum()
        if distributed is not None:
            all_reduce_sum(torch.view_as_real(mean))
        if mean.abs() > 0:
            u = u * (mean.abs() / mean)  # the mean phasor back to angle 0: the global phase is kept
    return u


__all__ = ["synchronise_phases", "fits", "MAX_BYTES"]
