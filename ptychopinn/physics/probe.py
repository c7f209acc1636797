"""The probe: its support mask, the default simulation probe and its normalisation.

Spec §4.1 (mask, default probe) and §2.3 (normalisation). NumPy/SciPy at import; torch is
touched only when `normalize_probe` receives a torch tensor.
"""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

ProbeT = TypeVar("ProbeT")


def probe_mask(N: int) -> np.ndarray:
    """Disc support `(N, N)` float32: 1 where the distance from (N/2 − 0.5, N/2 − 0.5) is < N//4.

    The centre is the corner shared by the four central pixels (812 pixels at N = 64).
    Rows are i, columns j: r = sqrt((i − N/2 + 0.5)² + (j − N/2 + 0.5)²).
    """
    if N <= 0:
        raise ValueError(f"probe_mask: N must be > 0, got {N}")
    t = np.arange(N, dtype=np.float64) - N / 2 + 0.5
    r = np.sqrt(t[:, None] ** 2 + t[None, :] ** 2)
    return (r < N // 4).astype(np.float32)


def default_probe(N: int, scale: float = 0.7) -> np.ndarray:
    """The synthetic probe of the TF simulations, `(N, N)` complex64, real and ≥ 1e-9 (spec §4.1).

    A separable Gaussian window L (std = N / (scale·π²), symmetric, rescaled to max 1) is
    thresholded at 0.5 on its outer product — a flat-topped square aperture — whose edges are
    softened by a σ = 1 px Gaussian filter; 1e-9 is added so no pixel is exactly zero.
    `scale` is the legacy `default_probe_scale` (0.7). Not normalised (see `normalize_probe`).
    """
    from scipy.ndimage import gaussian_filter

    if N <= 0:
        raise ValueError(f"default_probe: N must be > 0, got {N}")
    # scipy.signal.windows.gaussian(N, std, sym=True), written out (scipy.signal imports slowly)
    n = np.arange(N, dtype=np.float64) - (N - 1) / 2
    line = np.exp(-0.5 * (n / (N / (scale * np.pi**2))) ** 2)
    line = line / line.max()
    aperture = (np.outer(line, line) > 0.5).astype(np.float64)
    probe = gaussian_filter(aperture, sigma=1.0) + 1e-9
    return probe.astype(np.complex64)


def probe_norm(probe: np.ndarray, probe_scale: float = 4.0, mask: Any = None) -> float:
    """probe_scale · mean(|M ⊙ P|) of an `(N, N)` numpy probe: `normalize_probe` divides by it
    (mask None = `probe_mask(N)`). Probe modes are all divided by their dominant mode's norm."""
    N = probe.shape[-1]
    m = probe_mask(N) if mask is None else np.asarray(mask)
    norm = float(probe_scale * np.mean(np.abs(m * probe)))
    if not norm > 0:
        raise ValueError("normalize_probe: the probe is zero inside the mask")
    return norm


def normalize_probe(probe: ProbeT, probe_scale: float = 4.0, mask: Any = None) -> ProbeT:
    """P / (probe_scale · mean(|M ⊙ P|)) (spec §2.3, TF `probe.set_probe`).

    probe: `(N, N)` complex, numpy array or torch tensor; the result has the same type, dtype
    and device (torch results stay differentiable).
    mask: M, `(N, N)`; None means the disc `probe_mask(N)`. As in TF, the mask is ALWAYS applied
    when measuring the norm, whether or not the model's `probe_mask` option is on; the mean runs
    over all N² pixels, zeros outside the disc included. Only the norm uses M: the returned probe
    is the whole P, rescaled (not masked). Afterwards mean(|M ⊙ P|) = 1 / probe_scale.
    """
    if not probe_scale > 0:
        raise ValueError(f"normalize_probe: probe_scale must be > 0, got {probe_scale}")
    shape = tuple(probe.shape)  # type: ignore[attr-defined]
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"normalize_probe: probe must be (N, N), got shape {shape}")
    N = shape[0]
    if isinstance(probe, np.ndarray):
        return (probe / probe_norm(probe, probe_scale, mask)).astype(probe.dtype, copy=False)  # type: ignore[return-value]

    import torch

    if not isinstance(probe, torch.Tensor):
        raise TypeError(f"normalize_probe: expected a numpy array or torch tensor, got {type(probe).__name__}")
    if mask is None:
        m = torch.as_tensor(probe_mask(N), device=probe.device)
    else:
        m = torch.as_tensor(mask, device=probe.device)
    m = m.to(probe.real.dtype if probe.is_complex() else probe.dtype)
    norm = probe_scale * torch.mean(torch.abs(m * probe))
    return probe / norm  # type: ignore[return-value]


def mixed_state_probe(probe: np.ndarray, n_modes: int, power_ratio: float = 0.5) -> np.ndarray:
    """K mutually orthogonal incoherent modes built on `probe`, `(K, N, N)` of its dtype.

    Mode 0 is `probe` itself. Mode k > 0 is `probe` times the k-th low-order polynomial of
    (1, x, y, xy, x², y², x²y, xy², …) in pixel coordinates about the centre, made orthogonal to
    the earlier modes (Gram–Schmidt, ⟨a, b⟩ = Σ conj(a)·b) and scaled so that
    Σ|P_k|² = power_ratio^k · Σ|P_0|². `n_modes` 1 returns `probe[None]`.
    """
    P = np.asarray(probe)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"mixed_state_probe: probe must be (N, N), got shape {P.shape}")
    if not isinstance(n_modes, (int, np.integer)) or n_modes < 1:
        raise ValueError(f"mixed_state_probe: n_modes must be an integer >= 1, got {n_modes!r}")
    if not (np.isfinite(power_ratio) and 0 < power_ratio <= 1):
        raise ValueError(f"mixed_state_probe: power_ratio must be in (0, 1], got {power_ratio}")
    N = P.shape[0]
    t = (np.arange(N, dtype=np.float64) - N / 2 + 0.5) / (N / 4)
    y, x = np.meshgrid(t, t, indexing="ij")
    orders = [(i, d - i) for d in range(N) for i in range(d + 1)]  # (px, py) by total degree
    base = P.astype(np.complex128)
    power0 = float(np.vdot(base, base).real)
    modes: list[np.ndarray] = []
    for px, py in orders:
        if len(modes) == n_modes:
            break
        m = base * x**px * y**py
        for q in modes:
            m = m - np.vdot(q, m) / np.vdot(q, q) * q
        if np.vdot(m, m).real <= 1e-12 * power0:
            continue  # linearly dependent on the earlier modes (e.g. a probe with tiny support)
        modes.append(m)
    if len(modes) < n_modes:
        raise ValueError(f"mixed_state_probe: the probe supports only {len(modes)} independent modes, asked {n_modes}")
    out = [m * np.sqrt(power_ratio**k * power0 / np.vdot(m, m).real) if k else m for k, m in enumerate(modes)]
    return np.stack(out).astype(P.dtype)


__all__ = ["probe_mask", "default_probe", "normalize_probe", "probe_norm", "mixed_state_probe"]
