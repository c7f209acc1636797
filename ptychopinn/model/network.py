"""`PtychoPINN`: diffraction amplitudes → complex object → predicted diffraction (spec §4.3).

    model = PtychoPINN(ModelConfig(gridsize=2), probe=probe)      # probe (N, N) complex64
    out = model(x, offsets)            # x (B, C, N, N) sqrt-photons, offsets (B, C, 2) [x, y] px
    out.object      # (B, N, N) complex64, the in-group reassembled object (TF `trimmed_obj`)
    out.amplitude   # (B, C, N, N) float32, predicted amplitude Â in sqrt-photons
    out.intensity   # (B, C, N, N) float32, Â² in photons
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .. import kernels, physics
from ..config import ModelConfig
from ..errors import ConfigError, DataError
from .functional import combine_complex, crop_centre, pad_reconstruction
from .layers import Decoder, Encoder

#: nphotons assumed for the default intensity scale when none is given (spec §2.2, TF default).
DEFAULT_NPHOTONS = 1e9
#: Regulariser of the in-model reassembly normalisation (TF `mk_norm`, spec §4.4).
REASSEMBLY_EPS = 1e-3


class ModelOutput(NamedTuple):
    """object `(B, N, N)` complex64; amplitude Â and intensity Â² `(B, C, N, N)` float32."""

    object: torch.Tensor
    amplitude: torch.Tensor
    intensity: torch.Tensor


def _as_probe(probe: torch.Tensor | np.ndarray, N: int) -> torch.Tensor:
    """`(N, N)` or `(K, N, N)` complex64 tensor from an array or tensor.

    Singleton axes are dropped (TF `(N, N, 1)`, `(1, N, N, 1)`; a one-mode `(1, N, N)` becomes
    `(N, N)`), so a single-mode probe is always stored `(N, N)` as before modes existed.
    """
    t = torch.as_tensor(np.asarray(probe)) if isinstance(probe, np.ndarray) else torch.as_tensor(probe)
    t = t.detach().clone()
    if t.ndim > 2:  # TF layouts (N, N, 1) and (1, N, N, 1); one mode (1, N, N)
        t = t.squeeze()
    ok_shape = t.ndim in (2, 3) and tuple(t.shape[-2:]) == (N, N) and t.numel() > 0
    if not ok_shape or not (t.is_complex() or t.is_floating_point()):
        raise ConfigError(
            f"PtychoPINN: key 'probe' must be ({N}, {N}) or (K, {N}, {N}) complex, got {tuple(t.shape)} {t.dtype}"
        )
    return t.to(torch.complex64)


class PtychoPINN(nn.Module):
    """The PtychoPINN autoencoder with its physics head (spec §3, §4.3).

    config: the architecture; probe: `(N, N)` complex, the illumination, or `(K, N, N)` for K
    incoherent modes (required by `forward`, not by `predict_object`); intensity_scale: s, the sqrt-photon scale (default
    sqrt(1e9)/(N/2)). Parameters: the convolutions (module paths in docs/model.md),
    `log_intensity_scale` (log s, trained only when `config.intensity_scale_trainable`) and, when
    `config.probe_trainable`, `probe`.
    """

    def __init__(
        self,
        config: ModelConfig,
        probe: torch.Tensor | np.ndarray | None = None,
        intensity_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder_amp = Decoder(config, "amp")
        self.decoder_phase = Decoder(config, "phase")
        # Conv weights in channels_last memory order (the logical shape is unchanged): with
        # NHWC activations this is ~1.4× faster on CPU (benchmarks/, inference rows).
        for part in (self.encoder, self.decoder_amp, self.decoder_phase):
            part.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to's stubs omit memory_format (accepted at runtime)
        if intensity_scale is None:
            intensity_scale = physics.intensity_scale(DEFAULT_NPHOTONS, config.N)
        intensity_scale = float(intensity_scale)
        if not (intensity_scale > 0 and math.isfinite(intensity_scale)):
            raise ConfigError(
                f"PtychoPINN: key 'intensity_scale' must be a positive finite number, got {intensity_scale}"
            )
        self.log_intensity_scale = nn.Parameter(
            torch.tensor(math.log(intensity_scale), dtype=torch.float32),
            requires_grad=config.intensity_scale_trainable,
        )
        self.probe: torch.Tensor | None
        self.register_buffer("probe", None)
        support = physics.probe_mask(config.N) if config.probe_mask else None
        # The physics head. The model owns the probe (state-dict key 'probe', so model files
        # keep their layout) and passes it to the operator on every call.
        self.operator = physics.PtychographyOperator(
            None, mask=support, smoothing_sigma=config.gaussian_smoothing_sigma
        )
        if probe is not None:
            self.set_probe(probe)

    # -- state -------------------------------------------------------------------------------
    def set_probe(self, probe: torch.Tensor | np.ndarray) -> None:
        """Install the `(N, N)` (or `(K, N, N)` modes) complex probe (a Parameter when
        `config.probe_trainable`).

        Replacing an existing probe of the same shape copies in place, so optimisers keep their
        reference; a probe of another shape (another K) replaces the tensor.
        """
        t = _as_probe(probe, self.config.N)
        if self.probe is not None and self.probe.shape == t.shape:
            with torch.no_grad():
                self.probe.copy_(t.to(device=self.probe.device, dtype=self.probe.dtype))
            return
        t = t.to(self.log_intensity_scale.device)
        self._buffers.pop("probe", None)
        self._parameters.pop("probe", None)
        if self.config.probe_trainable:
            self.probe = nn.Parameter(t)
        else:
            self.register_buffer("probe", t)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A model built without a probe accepts the one stored in a state dict.
        if self.probe is None and prefix + "probe" in state_dict:
            self.set_probe(state_dict[prefix + "probe"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def n_modes(self) -> int:
        """K, the number of probe modes (1 for an `(N, N)` probe, 0 when no probe is set)."""
        if self.probe is None:
            return 0
        return 1 if self.probe.ndim == 2 else int(self.probe.shape[0])

    @property
    def intensity_scale(self) -> float:
        """s = exp(log_intensity_scale), sqrt-photons per normalised amplitude unit."""
        return float(torch.exp(self.log_intensity_scale.detach()).item())

    # -- network -----------------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor, offsets: torch.Tensor) -> None:
        N, C = self.config.N, self.config.channels
        if x.ndim != 4 or tuple(x.shape[1:]) != (C, N, N):
            raise DataError(f"PtychoPINN: input 'x' must be (B, {C}, {N}, {N}), got {tuple(x.shape)}")
        if offsets.ndim != 3 or tuple(offsets.shape) != (x.shape[0], C, 2):
            raise DataError(f"PtychoPINN: input 'offsets' must be ({x.shape[0]}, {C}, 2), got {tuple(offsets.shape)}")

    def object_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel object patches `(B, Cout, N, N)` complex64 from x `(B, C, N, N)` sqrt-photons.

        Cout = C when object_big, else 1 (spec §3 heads, before any reassembly).
        """
        # channels_last: mkldnn/cuDNN convolutions run ~1.4–1.7× faster in NHWC memory order
        # (benchmarks/); the logical layout stays (B, C, N, N).
        x = (x / torch.exp(self.log_intensity_scale)).contiguous(memory_format=torch.channels_last)
        z = self.encoder(x)
        amp, phase = self.decoder_amp(z), self.decoder_phase(z)
        return combine_complex(amp, phase, self.config.combine)

    def object_canvas(self, patches: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The padded object `(B, P, P)`: in-group reassembly (object_big) or zero padding."""
        cfg = self.config
        if not cfg.object_big:
            return pad_reconstruction(patches, cfg.padded_size)
        return kernels.reassemble_patches(
            patches, offsets, cfg.padded_size, eps=REASSEMBLY_EPS, recentre=cfg.recentre_offsets
        )

    def predict_object(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The reconstructed object `(B, N, N)` complex64 (TF `diffraction_to_obj`); no probe needed."""
        offsets = offsets.to(dtype=x.dtype)
        self._check_inputs(x, offsets)
        canvas = self.object_canvas(self.object_patches(x), offsets)
        return crop_centre(canvas, self.config.N)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> ModelOutput:
        """x `(B, C, N, N)` float32 sqrt-photons, offsets `(B, C, 2)` [x, y] px → `ModelOutput`."""
        if self.probe is None:
            raise ConfigError("PtychoPINN.forward: key 'probe' is not set; pass probe= or call set_probe()")
        offsets = offsets.to(dtype=x.dtype)
        self._check_inputs(x, offsets)
        canvas = self.object_canvas(self.object_patches(x), offsets)
        amplitude = self.diffraction_from_canvas(canvas, offsets)
        return ModelOutput(crop_centre(canvas, self.config.N), amplitude, amplitude.square())

    def diffraction_from_canvas(self, canvas: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The physics head (spec §4.3 steps 5–9): Â `(B, C, N, N)` sqrt-photons.

        canvas `(B, P, P)` complex object; offsets `(B, C, 2)` [x, y] px. `self.operator`
        cuts patches at +offsets, multiplies them by each probe mode (smoothed/masked per
        config) and diffracts; Â = sqrt(Σₖ |F(Pₖ·O)|²)·s (K = 1: today's sqrt(|F(P·O)|²)·s).
        """
        if self.probe is None:
            raise ConfigError("PtychoPINN.forward: key 'probe' is not set; pass probe= or call set_probe()")
        intensity = self.operator(canvas, offsets, probe=self.probe)
        return physics.amplitude_from_intensity(intensity) * torch.exp(self.log_intensity_scale)


__all__ = ["PtychoPINN", "ModelOutput", "DEFAULT_NPHOTONS", "REASSEMBLY_EPS"]
