"""In-model reassembly of a group's patches onto one padded canvas (spec §4.4, §4.5).

Each zero-padded patch translated by `−(o_c − ō)` is `Ty_c · X_c · Tx_cᵀ` with rectangular
`(P, N)` bilinear interpolation matrices (the zero padding is the matrices' missing columns), so
the sum over a sample's `C` patches is one matmul with inner dimension `C·N`:
`[Ty_1 X_1 … Ty_C X_C] · [Tx_1 … Tx_C]ᵀ`. The centre mask is an outer product `m mᵀ`, so the
denominator is the rank-`C` product `[Ty_c m]_c · [Tx_c m]_cᵀ`.
"""
from __future__ import annotations

import torch

from .translate import _real_dtype, interp_matrix

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
    relative offsets), `padded_size` P ≥ N (P − N even, as in TF). With ō the mean of the
    sample's C offsets when `recentre` (K2) else 0 (S1/K1), returns `(B, P, P)`:
    `Σ_c T(pad(obj_c), −(o_c − ō)) / (Σ_c T(pad(Mc), −(o_c − ō)) + eps)`, Mc = `center_mask(N)`.
    Real and imaginary parts share the denominator.

    TF's K2 model subtracts the mean over the whole batch instead; grouped offsets are centred
    per group, so the two agree to rounding (~1e-14 px on the fixtures), and the per-sample
    mean keeps every sample's output independent of the batch it is computed in.
    """
    if patches.dim() != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"reassemble_patches: patches must be (B, C, N, N), got {tuple(patches.shape)}")
    B, C, N, _ = patches.shape
    if offsets.shape != (B, C, 2):
        raise ValueError(f"reassemble_patches: offsets must be {(B, C, 2)}, got {tuple(offsets.shape)}")
    if padded_size < N:
        raise ValueError(f"reassemble_patches: padded_size {padded_size} < N {N}")
    P = padded_size
    rdt = _real_dtype(patches)
    dev = patches.device
    if C == 1 and recentre and not offsets.requires_grad and not torch.onnx.is_in_onnx_export():
        return _reassemble_single(patches, P, eps)  # the shift is exactly 0
    o = offsets.to(rdt)
    if recentre:
        # Accurate mean, then rounded to the working dtype: a float32 running sum can be off by
        # an ulp of the offsets and move patches; TF's tree reduction is far closer to exact.
        o = o - offsets.to(torch.float64).mean(dim=1, keepdim=True).to(rdt)
    shifts = -o
    # Canvas pixel c samples the padded patch at c − shift; padded coordinate u is patch
    # coordinate u − lo. Coordinates are formed exactly as translate() forms them.
    lo = (P - N) // 2
    grid = torch.arange(P, dtype=rdt, device=dev)
    tx = interp_matrix(grid - shifts[..., 0:1], N, lo)  # (B, C, P, N)
    ty = interp_matrix(grid - shifts[..., 1:2], N, lo)
    txs = tx.transpose(1, 2).reshape(B, P, C * N)  # [Tx_1 … Tx_C]
    if patches.is_complex():
        parts = torch.view_as_real(patches).movedim(-1, 1)  # (B, 2, C, N, N)
        left = ty.unsqueeze(1) @ parts  # (B, 2, C, P, N)
        left = left.transpose(2, 3).reshape(B, 2, P, C * N)
        num = left @ txs.transpose(-1, -2).unsqueeze(1)  # (B, 2, P, P)
        num = torch.view_as_complex(num.movedim(1, -1).contiguous())
    else:
        left = (ty @ patches).transpose(1, 2).reshape(B, P, C * N)
        num = left @ txs.transpose(-1, -2)
    m = torch.zeros(N, dtype=rdt, device=dev)
    m[N // 4 : 3 * N // 4] = 1
    ay = (ty @ m).transpose(1, 2)  # (B, P, C)
    ax = (tx @ m).transpose(1, 2)
    den = ay @ ax.transpose(-1, -2) + eps
    return num / den


def _reassemble_single(patches: torch.Tensor, padded_size: int, eps: float) -> torch.Tensor:
    """`reassemble_patches` for one recentred patch per sample: its shift is exactly zero.

    The interpolation matrices are then 0/1 selections, so the general path computes
    `pad(obj) / (pad(Mc) ⊗ pad(Mc) + eps)` exactly; this forms it directly (bit-identical for
    finite patches, without the four `(B, P, N)` matrix products). `patches (B, 1, N, N)` → `(B, P, P)`.
    Not taken when the offsets need a gradient or during ONNX export (the exported graph keeps
    its `offsets` input).
    """
    B, _, N, _ = patches.shape
    lo = (padded_size - N) // 2
    rdt = _real_dtype(patches)
    m = torch.zeros(padded_size, dtype=rdt, device=patches.device)
    m[lo + N // 4 : lo + 3 * N // 4] = 1
    den = m[:, None] * m[None, :] + eps
    num = patches.new_zeros(B, padded_size, padded_size)
    num[:, lo : lo + N, lo : lo + N] = patches[:, 0]
    return num / den

