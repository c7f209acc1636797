"""`evaluate`: every quality metric of a complex reconstruction against the true object.

Procedure (differences from TF's `eval_reconstruction`, spec §7, in brackets):
1. trim `trim` px from every border of both images (TF: offset//2 = 2; same default);
2. fit one alignment on the trimmed pair (`fit_alignment`: least-squares amplitude scale,
   global phase offset, optional relative phase ramp) and apply it to the reconstruction
   [TF: amplitude × mean(t)/mean(r); phase planes fitted to each image separately];
3. amplitude metrics on |aligned| vs |truth|, data_range = truth max − min [TF PSNR used 255];
4. phase metrics on the aligned phase vs the true phase, both wrapped into (−π, π]:
   MAE/MSE use the wrapped difference (radians); PSNR uses data_range 2π; SSIM and MS-SSIM map
   φ → (φ + π)/(2π) with data_range 1 (as TF); FRC is computed on the wrapped phase images.
MS-SSIM uses as many of the 5 levels as fit (reported as `ms_ssim_levels`) and no pre-smoothing
[TF smoothed amplitudes with σ = 1]. FRC crossings are in cycles/pixel; `resolution_px` =
1 / frc1over7.

All values are Python floats (PSNR may be +inf for identical images) so the dict is
`json.dumps`-able.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .alignment import apply_alignment, fit_alignment, trim_border, wrap_phase
from .frc import frc, frc_resolution
from .image import ms_ssim, ssim

__all__ = ["evaluate", "image_metrics"]


def _ms_ssim_auto(p: np.ndarray, t: np.ndarray, data_range: float) -> tuple[float, int]:
    from .image import MS_SSIM_WEIGHTS

    levels, h = 0, min(p.shape)
    while levels < len(MS_SSIM_WEIGHTS) and h >= 7:
        levels += 1
        h = (h + 1) // 2
    if levels == 0:
        return float("nan"), 0
    return ms_ssim(p, t, data_range, levels=levels), levels


def image_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    data_range: float,
    ssim_pred: np.ndarray | None = None,
    ssim_target: np.ndarray | None = None,
    ssim_range: float | None = None,
    error: np.ndarray | None = None,
) -> dict[str, Any]:
    """PSNR / SSIM / MS-SSIM / FRC / MAE / MSE of one real (H, W) image pair.

    `error` overrides pred − target for MAE/MSE/PSNR (used for wrapped phase differences);
    `ssim_pred`/`ssim_target`/`ssim_range` override the images used by SSIM and MS-SSIM.
    """
    err = (pred - target) if error is None else error
    mse = float(np.mean(err * err))
    mae = float(np.mean(np.abs(err)))
    p_psnr = float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))
    sp = pred if ssim_pred is None else ssim_pred
    st = target if ssim_target is None else ssim_target
    sr = data_range if ssim_range is None else ssim_range
    if min(sp.shape) >= 7:
        s = ssim(sp, st, sr)
    else:
        s = float("nan")
    ms, levels = _ms_ssim_auto(sp, st, sr)
    freqs, curve = frc(pred, target)
    c50 = frc_resolution(curve, 0.5, frequencies=freqs)
    c7 = frc_resolution(curve, 1.0 / 7.0, frequencies=freqs)
    return {
        "psnr": p_psnr,
        "ssim": float(s),
        "ms_ssim": float(ms),
        "ms_ssim_levels": int(levels),
        "frc": {
            "frc50": float(c50.frequency),
            "frc1over7": float(c7.frequency),
            "resolution_px": float(c7.resolution_px),
        },
        "mae": mae,
        "mse": mse,
    }


def evaluate(
    reconstruction: np.ndarray,
    truth: np.ndarray,
    *,
    trim: int = 2,
    phase_ramp: bool = False,
) -> dict[str, Any]:
    """Align `reconstruction` (H, W) complex to `truth` (H, W) complex and compute all metrics.

    Returns {"amplitude": {...}, "phase": {...}, "alignment": {"scale", "phase_offset",
    "ramp_x", "ramp_y"}, "trim": int}, each metrics dict holding psnr (dB), ssim, ms_ssim,
    ms_ssim_levels, frc {frc50, frc1over7 (cycles/pixel), resolution_px}, mae, mse.
    """
    r = trim_border(np.asarray(reconstruction), trim)
    t = trim_border(np.asarray(truth), trim)
    alignment = fit_alignment(r, t, phase_ramp=phase_ramp)
    a = apply_alignment(r, alignment)
    t = t.astype(np.complex128)

    amp_p, amp_t = np.abs(a), np.abs(t)
    amp_range = float(amp_t.max() - amp_t.min())
    if not amp_range > 0:
        amp_range = float(amp_t.max()) if amp_t.max() > 0 else 1.0
    amplitude = image_metrics(amp_p, amp_t, data_range=amp_range)

    ph_p, ph_t = wrap_phase(np.angle(a)), wrap_phase(np.angle(t))
    dphi = wrap_phase(np.angle(a * np.conj(t)))
    phase = image_metrics(
        ph_p,
        ph_t,
        data_range=2 * np.pi,
        error=dphi,
        ssim_pred=(ph_p + np.pi) / (2 * np.pi),
        ssim_target=(ph_t + np.pi) / (2 * np.pi),
        ssim_range=1.0,
    )
    return {
        "amplitude": amplitude,
        "phase": phase,
        "alignment": alignment.as_dict(),
        "trim": int(trim),
    }
