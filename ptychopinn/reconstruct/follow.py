"""Torch predictor for live reconstruction (`ptychopinn reconstruct --follow`).

The follow engine itself is torch-free and lives with the ONNX runner
(`ptychopinn.interop.onnx.follow.follow`, docs/beamline.md); this module only wraps a trained model
as that engine's `predict` so the torch CLI and `ptychopinn-onnx --follow` share one engine. The
CLI joins the two (the core never imports `ptychopinn.interop`).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..io.device import resolve_device
from .core import load_any_model
from .geometry import default_crop

__all__ = ["torch_predictor"]


def torch_predictor(model: Any, *, device: str = "auto", crop: int | None = None, weight: str = "probe") -> dict[str, Any]:
    """Keyword arguments of `FollowModel` for a native model dir/zip, legacy bundle or module.

    predict(x (B, 1, N, N) float32, offsets (B, 1, 2) float32) -> (B, N, N) complex64 numpy,
    under `torch.inference_mode` on `device`; crop defaults to N/2 and eps to 1e-9 as in
    `reconstruct` (barycentric stitching).
    """
    dev = resolve_device(device)
    net, _ = load_any_model(model, dev)
    net.eval()
    N = int(net.config.N)
    crop = default_crop(N) if crop is None else int(crop)
    if not 1 <= crop <= N:
        raise ConfigError(f"crop must be in [1, {N}], got {crop}")

    def predict(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            p = net.predict_object(torch.from_numpy(x).to(dev), torch.from_numpy(offsets).to(dev))
            return p.to(torch.complex64).cpu().numpy()

    fn: Callable[[np.ndarray, np.ndarray], np.ndarray] = predict
    label = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    return dict(predict=fn, N=N, gridsize=int(net.config.gridsize), intensity_scale=float(net.intensity_scale), crop=crop,
                weight=weight, eps=1e-9, label=label, extra_meta={"model": label, "device": str(dev)})
