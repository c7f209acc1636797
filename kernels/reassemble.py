"""In-model reassembly of a group's patches onto one padded canvas (spec §4.4, §4.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .translate import _real_dtype, translate

__all__ = ["center_mask", "reassemble_patches"]


def center_mask(N: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """`(N, N)` mask: ones on rows and columns `[N/4, 3N/4)`, zeros elsewhere (TF `mk_centermask`).

    `N` must be divisible by 4.
    """
    if N % 4 != 0:
        raise ValueError(f"center_mask: N must be divisible by 4, got {N}")
    mask = torch.zeros(N, N, dtype=dtype, device=device)
    mask[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = 1
    return mask


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    n = x.shape[-1]
    lo = (size - n) // 2
    hi = size - n - lo
    if x.is_complex():
        return torch.complex(F.pad(x.real, (lo, hi, lo, hi)), F.pad(x.imag, (lo, hi, lo, hi)))
    return F.pad(x, (lo, hi, lo, hi))


def reassemble_patches(
    patches: torch.Tensor,
    offsets: torch.Tensor,
    padded_size: int,
    *,
    eps: float = 1e-3,
    recentre: bool = True,
) -> torch.Tensor:
    """Merge each sample's `C` patches onto a `P × P` canvas, normalised by the centre mask.

    `patches (B, C, N, N)` complex (or real), `offsets (B, C, 2)` `[x, y]` pixels (the model's
    relative offsets), `padded_size` P ≥ N (P − N even, as in TF). With ō the mean of all B·C
    offsets when `recentre` (K2) else 0 (S1/K1), returns `(B, P, P)`:
    `Σ_c T(pad(obj_c), −(o_c − ō)) / (Σ_c T(pad(Mc), −(o_c − ō)) + eps)`, Mc = `center_mask(N)`.
    Real and imaginary parts share the denominator.
    """
    if patches.dim() != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"reassemble_patches: patches must be (B, C, N, N), got {tuple(patches.shape)}")
    B, C, N, _ = patches.shape
    if offsets.shape != (B, C, 2):
        raise ValueError(f"reassemble_patches: offsets must be {(B, C, 2)}, got {tuple(offsets.shape)}")
    if padded_size < N:
        raise ValueError(f"reassemble_patches: padded_size {padded_size} < N {N}")
    rdt = _real_dtype(patches)
    o = offsets.to(rdt)
    if recentre:
        # Accurate mean, then rounded to the working dtype: a float32 running sum can be off by
        # an ulp of the offsets and move patches; TF's tree reduction is far closer to exact.
        o = o - offsets.reshape(B * C, 2).to(torch.float64).mean(dim=0).to(rdt)
    shifts = -o
    num = translate(_pad_to(patches, padded_size), shifts).sum(dim=1)
    mask = _pad_to(center_mask(N, dtype=rdt, device=patches.device), padded_size)
    den = translate(mask, shifts).sum(dim=1) + eps
    return num / den
