"""Reconstruction quality: alignment, PSNR, SSIM, MS-SSIM, FRC (numpy + scipy only, no torch).

    from ptychopinn.metrics import evaluate
    report = evaluate(reconstruction, truth)        # (H, W) complex each
    report["amplitude"]["ssim"], report["phase"]["frc"]["resolution_px"]
"""
from __future__ import annotations

from .alignment import Alignment, align, apply_alignment, fit_alignment, trim_border, wrap_phase
from .evaluate import evaluate, image_metrics
from .frc import FRCCrossing, frc, frc_resolution
from .image import MS_SSIM_WEIGHTS, ms_ssim, psnr, ssim, ssim_map

__all__ = [
    "Alignment",
    "align",
    "apply_alignment",
    "fit_alignment",
    "trim_border",
    "wrap_phase",
    "evaluate",
    "image_metrics",
    "frc",
    "frc_resolution",
    "FRCCrossing",
    "MS_SSIM_WEIGHTS",
    "psnr",
    "ssim",
    "ssim_map",
    "ms_ssim",
]
