"""Shared helpers of the model tests: build a PtychoPINN from a TF bundle fixture.

Era switches per fixture (spec §0, §8.3, §8.4): K2 polar / C-channel amplitude head / offsets
re-centred; K1 additive (A + iφ) / 1-channel head / no re-centring; S1 polar / 1-channel head /
no re-centring, scale baked (the bundle value).
"""
from __future__ import annotations

import functools
import json

import numpy as np
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.interop.keras_layout import load_keras_weights
from ptychopinn.model import PtychoPINN
from tests.conftest import load_bundle_fixture

#: fixture -> (combine, amp_head_channels, recentre_offsets)
ERAS = {
    "n64_gs1": ("polar", None, True),
    "n64_gs2": ("polar", None, True),
    "k1_n64_gs1": ("additive", 1, False),
    "s1_savedmodel_n64_gs1": ("polar", 1, False),
}


def config_from_params(params: dict, combine: str, amp_head_channels: int | None, recentre: bool) -> ModelConfig:
    """ModelConfig from a fixture's params_json (legacy params.cfg keys)."""
    return ModelConfig(
        N=params["N"],
        gridsize=params["gridsize"],
        n_filters_scale=params["n_filters_scale"],
        object_big=params["object.big"],
        probe_big=params["probe.big"],
        probe_mask=params["probe.mask"],
        pad_object=params["pad_object"],
        amp_activation=params["amp_activation"],
        gaussian_smoothing_sigma=params["gaussian_smoothing_sigma"],
        offset=params["offset"],
        max_position_jitter=params["max_position_jitter"],
        amp_head_channels=amp_head_channels,
        combine=combine,
        recentre_offsets=recentre,
    )


@functools.lru_cache(maxsize=None)
def fixture_arrays(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """(reference.npz arrays, meta.json) of a bundle fixture, read once per test session (read-only use)."""
    _, arrays, meta = load_bundle_fixture(name)
    return arrays, meta


def d2o_weights(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    n = len(arrays["d2o_weight_names"])
    return [arrays[f"d2o_w{i:03d}"] for i in range(n)]


def model_from_fixture(name: str) -> tuple[PtychoPINN, dict[str, np.ndarray], dict]:
    """(model with the fixture's weights, probe and scale; reference arrays; meta.json)."""
    arrays, meta = fixture_arrays(name)
    params = json.loads(str(arrays["params_json"]))
    combine, amp_ch, recentre = ERAS[name]
    config = config_from_params(params, combine, amp_ch, recentre)
    model = PtychoPINN(config, probe=arrays["model_probe_variable"], intensity_scale=float(arrays["intensity_scale"]))
    load_keras_weights(model, d2o_weights(arrays), source=f"{name}/reference.npz")
    return model.eval(), arrays, meta


def tf_inputs(arrays: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """TF `(B, N, N, C)` / `(B, 1, 2, C)` inputs → channels-first `(B, C, N, N)` / `(B, C, 2)`."""
    x = torch.from_numpy(np.ascontiguousarray(arrays["X_input_scaled"].transpose(0, 3, 1, 2)))
    offsets = torch.from_numpy(np.ascontiguousarray(arrays["positions_input"][:, 0].transpose(0, 2, 1)))
    return x, offsets


def to_tf(t: torch.Tensor) -> np.ndarray:
    """`(B, C, N, N)` → TF `(B, N, N, C)`; `(B, N, N)` → `(B, N, N, 1)`."""
    a = t.detach().cpu().numpy()
    return a[..., None] if a.ndim == 3 else a.transpose(0, 2, 3, 1)
