"""`ObjectGraph`: `PtychoPINN.predict_object` in real arithmetic, for ONNX export (torch).

ONNX has no complex dtype, so the export graph carries the object as two real planes. The
network heads already produce real amplitude A and phase φ; the complex patch A·e^{iφ} is only
needed for the in-model reassembly, which is linear in the patches with a real, shared
denominator (spec §4.4). Reassembling Re and Im separately therefore gives exactly the real and
imaginary parts of `predict_object`. No FFT is involved (the inference path has none).

Built only from the model's public pieces (`encoder`, `decoder_amp`, `decoder_phase`,
`log_intensity_scale`, `config`) and `ptychopinn.kernels`; `tests/interop/test_onnx_export.py`
checks it against `predict_object` so the two cannot drift apart unnoticed.
"""
from __future__ import annotations

import torch
from torch import nn

from ptychopinn import kernels
from ptychopinn.config import ModelConfig
from ptychopinn.errors import ModelFormatError
from ptychopinn.grid import centre_crop
from ptychopinn.model.network import REASSEMBLY_EPS, PtychoPINN


def _pad_centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last two axes `(…, n, n)` to `(…, size, size)`, (size − n)//2 before (real)."""
    n = x.shape[-1]
    before = (size - n) // 2
    after = size - n - before
    return nn.functional.pad(x, (before, after, before, after))


class ObjectGraph(nn.Module):
    """Inference graph: diffraction `(B, C, N, N)` float32 sqrt-photons (= f·s·d) and offsets
    `(B, C, 2)` float32 `[x, y]` px → (real, imag), each `(B, N, N)` float32, of `predict_object`.
    """

    config: ModelConfig
    encoder: nn.Module
    decoder_amp: nn.Module
    decoder_phase: nn.Module
    scale: torch.Tensor  # buffer: exp(log_intensity_scale), a graph constant

    def __init__(self, model: PtychoPINN) -> None:
        super().__init__()
        for name in ("encoder", "decoder_amp", "decoder_phase", "log_intensity_scale", "config"):
            if not hasattr(model, name):
                raise ModelFormatError(f"ONNX export: the model has no {name!r}; expected a ptychopinn PtychoPINN")
        self.eps = float(REASSEMBLY_EPS)
        self.config = model.config
        self.encoder = model.encoder
        self.decoder_amp = model.decoder_amp
        self.decoder_phase = model.decoder_phase
        # a constant in the graph (inference never changes the scale)
        self.register_buffer("scale", torch.exp(model.log_intensity_scale.detach().float()).reshape(()))

    def forward(self, diffraction: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        z = self.encoder(diffraction / self.scale)
        amp, phase = self.decoder_amp(z), self.decoder_phase(z)
        if cfg.combine == "polar":
            real, imag = amp * torch.cos(phase), amp * torch.sin(phase)
        else:  # "additive" (K1 bundles): A + iφ
            real, imag = amp + torch.zeros_like(phase), phase + torch.zeros_like(amp)
        offsets = offsets.to(real.dtype)
        if cfg.object_big:
            # Re and Im stacked along the batch axis share one reassembly (half the graph); the
            # duplicated offsets leave the batch-mean recentring unchanged.
            both = kernels.reassemble_patches(
                torch.cat((real, imag), dim=0),
                torch.cat((offsets, offsets), dim=0),
                cfg.padded_size,
                eps=self.eps,
                recentre=cfg.recentre_offsets,
            )
            canvas_re, canvas_im = torch.chunk(both, 2, dim=0)
        else:
            canvas_re, canvas_im = _pad_centre(real[:, 0], cfg.padded_size), _pad_centre(imag[:, 0], cfg.padded_size)
        return centre_crop(canvas_re, cfg.N), centre_crop(canvas_im, cfg.N)


__all__ = ["ObjectGraph"]
