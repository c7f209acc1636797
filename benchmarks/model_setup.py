"""Shared model/input construction for the inference, training and quality cases."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ptychopinn import physics
from ptychopinn.config import ModelConfig
from ptychopinn.model import PtychoPINN


@dataclass
class Setup:
    """A seeded model plus one batch of inputs in both layouts."""

    config: ModelConfig
    model: PtychoPINN
    probe: np.ndarray  # (N, N) complex64, normalised
    scale: float  # intensity scale s
    x: torch.Tensor  # (B, C, N, N) float32 sqrt-photons
    offsets: torch.Tensor  # (B, C, 2) float32 [x, y] px

    @property
    def patterns(self) -> int:
        return int(self.x.shape[0] * self.x.shape[1])

    def tf_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Weights (Keras order), probe and inputs in TF layout, keys prefixed by `prefix`."""
        from ptychopinn.interop.keras_layout import export_keras_weights
        from ptychopinn.interop.tf_compat import channels_first_to_tf_offsets

        arrays = {f"{prefix}w{i}": a for i, a in enumerate(export_keras_weights(self.model))}
        arrays[f"{prefix}probe"] = self.probe
        arrays[f"{prefix}x"] = self.x.permute(0, 2, 3, 1).contiguous().numpy()
        arrays[f"{prefix}pos"] = channels_first_to_tf_offsets(self.offsets.numpy()).astype(np.float32)
        return arrays

    def tf_task(self, prefix: str) -> dict:
        """The model-related fields of a tf_worker task."""
        from ptychopinn.config import config_to_dict

        return {"config": config_to_dict(self.config), "weights": f"{prefix}w", "probe": f"{prefix}probe",
                "intensity_scale": self.scale, "x": f"{prefix}x", "positions": f"{prefix}pos"}


def make_setup(config: ModelConfig, batch: int, seed: int = 0) -> Setup:
    """A `PtychoPINN` with seeded default-initialised weights and a random batch of `batch` groups.

    Inputs: amplitudes X with mean per-pattern Σ X² = (N/2)² (the normalised data contract),
    times s = sqrt(1e9)/(N/2); offsets uniform in ±3 px for gridsize > 1, zero for gridsize 1.
    """
    torch.manual_seed(seed)
    N, C = config.N, config.channels
    probe = physics.normalize_probe(physics.default_probe(N), config.probe_scale).astype(np.complex64)
    scale = float(physics.intensity_scale(1e9, N))
    model = PtychoPINN(config, probe=probe, intensity_scale=scale).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    X = torch.rand(batch, C, N, N, generator=gen) ** 4
    X = X * ((N / 2) / X.square().sum(dim=(-2, -1), keepdim=True).mean().sqrt())
    offsets = (torch.rand(batch, C, 2, generator=gen) * 6 - 3) if C > 1 else torch.zeros(batch, 1, 2)
    return Setup(config, model, probe, scale, (X * scale).float().contiguous(), offsets.float())


__all__ = ["Setup", "make_setup"]
