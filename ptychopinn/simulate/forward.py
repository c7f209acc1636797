"""The simulation forward model: object + probe + scan → noisy diffraction amplitudes.

Pipeline (spec §2.2 simulation paragraph, §4.1 default probe, §4.3 steps 6–7):

1. object O `(H, W)` complex64 (`objects`), positions `[x, y]` (`scan`), probe
   P = normalize_probe(default_probe(N), probe_scale) `(N, N)` complex64; with
   `probe_modes` K > 1, K orthogonal modes `physics.mixed_state_probe(P, K, probe_mode_power)`;
2. through `physics.PtychographyOperator` (the model's physics head): ground-truth patches
   O_m `(M, N, N)` cut at the positions (bilinear, `kernels.extract_patches`; an exact crop at
   integer positions), exit waves ψ_km = P_k ⊙ O_m, amplitudes A_m = sqrt(Σ_k |F ψ_km|²)
   (K = 1: `physics.diffract(physics.illuminate(O_m, P))`, bit for bit);
3. s = sqrt(nphotons / mean_m Σ_k Σ|ψ_km|²) (`physics.scaling.photon_scale`); by Parseval the
   noiseless counts (s·A)² have a mean of `nphotons` photons per pattern;
5. counts ~ Poisson((s·A)²) from a seeded numpy Generator; stored amplitude = sqrt(counts).

The stored `diffraction` is therefore in sqrt(photon) units, like measured data; the model's data
normalisation (`ptychopinn.data`) rescales it. The probe's own scale has no effect on the data
(s absorbs it); we store the normalised probe so that `probeGuess` is ready for the model. (TF's
simulation illuminated with the raw default probe; only the stored probe differs, by a constant.)

Randomness: one `numpy.random.SeedSequence(seed)` spawns independent streams for the object,
the scan and the noise, so the same config gives byte-identical arrays, and the object does not
change with `n_positions`. Physics runs in torch on the CPU by default (deterministic).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import SUPPORTED_N, SimulationConfig, config_to_dict
from ..data import save_scan, save_scan_h5
from ..errors import ConfigError
from ..physics.diffraction import amplitude_from_intensity
from ..physics.operator import PtychographyOperator, intensity_from_exit_waves
from ..physics.probe import default_probe, mixed_state_probe, normalize_probe
from ..physics.scaling import photon_scale
from .objects import make_object
from .scan import make_scan_positions

#: patterns per vectorised chunk (bounds memory: 4096·N² complex64 ≈ 128 MiB at N = 64)
CHUNK = 4096
FORMAT_VERSION = 1


def validate_simulation_config(config: SimulationConfig) -> None:
    """Raise ConfigError (one line naming the field) when the config cannot be simulated."""

    def bad(field: str, expected: str) -> ConfigError:
        return ConfigError(f"SimulationConfig.{field}={getattr(config, field)!r}: expected {expected}")

    if config.N not in SUPPORTED_N:
        raise bad("N", f"one of {', '.join(map(str, SUPPORTED_N))}")
    if config.object_kind not in ("lines", "grf"):
        raise bad("object_kind", "'lines' or 'grf'")
    if config.scan not in ("random", "grid"):
        raise bad("scan", "'random' or 'grid'")
    if not isinstance(config.object_size, (int, np.integer)) or config.object_size < config.N + 1:
        raise bad("object_size", f"an integer >= N + 1 = {config.N + 1}")
    if config.scan == "random" and (not isinstance(config.n_positions, (int, np.integer)) or config.n_positions < 1):
        raise bad("n_positions", "an integer >= 1")
    if config.scan == "grid" and not (np.isfinite(config.step) and config.step > 0):
        raise bad("step", "a number > 0")
    if not (np.isfinite(config.nphotons) and config.nphotons > 0):
        raise bad("nphotons", "a number > 0")
    if not (np.isfinite(config.probe_scale) and config.probe_scale > 0):
        raise bad("probe_scale", "a number > 0")
    if not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
        raise bad("seed", "an integer >= 0")
    if not isinstance(config.probe_modes, (int, np.integer)) or not 1 <= config.probe_modes <= 16:
        raise bad("probe_modes", "an integer in [1, 16]")
    if not (np.isfinite(config.probe_mode_power) and 0 < config.probe_mode_power <= 1):
        raise bad("probe_mode_power", "a number in (0, 1]")


def _patch_positions(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], N: int) -> np.ndarray:
    """`kernels.extract_patches` offsets that centre patch pixel (N/2, N/2) on object point (x, y).

    extract_patches samples canvas column kw + c − dx for patch column c (kw = (W − N)//2); we
    want x − N/2 + c, so dx = kw + N/2 − x (likewise for rows). Returns `(M, 2)` float64.
    """
    H, W = shape
    kh, kw = (H - N) // 2, (W - N) // 2
    return np.stack([kw + N / 2 - x, kh + N / 2 - y], axis=-1)


def simulate(
    config: SimulationConfig,
    *,
    poisson_noise: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Simulate one scan; returns the arrays of the scan contract (see `docs/physics.md`).

    Keys: `diffraction (M, N, N)` float32 sqrt(photons); `xcoords, ycoords, xcoords_start,
    ycoords_start (M,)` float64 object pixels; `probeGuess (N, N)` complex64 (`(K, N, N)`, mode
    0 dominant, when `config.probe_modes` K > 1); `objectGuess (H, W)`
    complex64; `scan_index (M,)` int64 (zeros); `_metadata` 0-d str array holding JSON.
    `poisson_noise=False` stores the noiseless s·A instead (for tests and studies).
    """
    validate_simulation_config(config)
    N = int(config.N)
    obj_seq, scan_seq, noise_seq = np.random.SeedSequence(int(config.seed)).spawn(3)
    obj = make_object(config.object_kind, int(config.object_size), np.random.default_rng(obj_seq))
    x, y = make_scan_positions(
        config.scan,
        int(config.object_size),
        N,
        n_positions=int(config.n_positions),
        step=float(config.step),
        rng=np.random.default_rng(scan_seq),
    )
    probe = normalize_probe(default_probe(N), float(config.probe_scale))
    K = int(config.probe_modes)
    if K > 1:
        probe = mixed_state_probe(probe, K, float(config.probe_mode_power))

    dev = torch.device(device)
    canvas = torch.from_numpy(obj).to(dev).unsqueeze(0)  # (1, H, W)
    operator = PtychographyOperator(probe).to(dev)  # no mask, no smoothing (TF simulation)
    offsets = _patch_positions(x, y, obj.shape, N)
    M = x.shape[0]
    amplitude = np.empty((M, N, N), np.float32)
    power = np.empty(M, np.float64)
    with torch.no_grad():
        for start in range(0, M, CHUNK):
            stop = min(start + CHUNK, M)
            pos = torch.from_numpy(offsets[start:stop]).to(dev).unsqueeze(0)  # (1, m, 2)
            waves = operator.exit_waves(operator.extract(canvas, pos)[0])  # (m, K, N, N)
            power[start:stop] = (waves.abs().double() ** 2).sum(dim=(-2, -1)).sum(dim=-1).cpu().numpy()
            amplitude[start:stop] = amplitude_from_intensity(intensity_from_exit_waves(waves)).cpu().numpy()

    s = photon_scale(float(config.nphotons), power)
    noise_rng = np.random.default_rng(noise_seq)
    diffraction = np.empty_like(amplitude)
    for start in range(0, M, CHUNK):
        expected = (s * amplitude[start : start + CHUNK].astype(np.float64)) ** 2
        if poisson_noise:
            diffraction[start : start + CHUNK] = np.sqrt(noise_rng.poisson(expected))
        else:
            diffraction[start : start + CHUNK] = np.sqrt(expected)

    metadata = {
        **config_to_dict(config),
        "generator": "ptychopinn.simulate",
        "version": FORMAT_VERSION,
        "poisson_noise": bool(poisson_noise),
        "simulation_intensity_scale": s,
        "probe_normalized": True,
        "units": {"diffraction": "sqrt(photons)", "coords": "object pixels [x=column, y=row]"},
    }
    return {
        "diffraction": diffraction,
        "xcoords": x.astype(np.float64),
        "ycoords": y.astype(np.float64),
        "xcoords_start": x.astype(np.float64).copy(),
        "ycoords_start": y.astype(np.float64).copy(),
        "probeGuess": probe.astype(np.complex64),
        "objectGuess": obj.astype(np.complex64),
        "scan_index": np.zeros(M, np.int64),
        "_metadata": np.array(json.dumps(metadata, sort_keys=True)),
    }


def simulate_to_file(config: SimulationConfig, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """`simulate(config)` written atomically to `path` (parent folders are created).

    `.h5`/`.hdf5` paths are written with `ptychopinn.data.save_scan_h5`, anything else as an
    uncompressed NPZ with `ptychopinn.data.save_scan` (both validate the contract first, write a
    temporary file in the same folder and `os.replace` it). Returns the path written.
    """
    out = Path(path)
    arrays = simulate(config, **kwargs)
    metadata = json.loads(str(arrays.pop("_metadata")))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = save_scan_h5 if out.suffix.lower() in (".h5", ".hdf5") else save_scan
    return Path(writer(out, **arrays, metadata=metadata))


__all__ = ["simulate", "simulate_to_file", "validate_simulation_config"]
