"""Physics refinement of a reconstruction: gradient steps on the complex object canvas against
the measured diffraction patterns (see docs/refinement.md).

Forward model, per scan position m at canvas point `r_m = [x, y]` (patch pixel `(N/2, N/2)` on
`r_m`, the simulator's convention):

    O_m = gather_patches(O, r_m, N)                      # (N, N) bilinear pull, kernels.stitch
    I_m = Σ_k fftshift(|FFT2(P_k · O_m)|² / N²)           # physics.operator.mixed_state_intensity

against the measured counts y_m = d_m² (the scan's `diffraction` d is sqrt(counts)). Losses
(pixels marked bad are left out): "poisson" Σ I − y·log(I + ε) − (y − y·log y) (half the
Poisson deviance: 0 at a perfect fit), "amplitude" Σ (√I − d)².
Losses are reported per measured pixel (mean over pixels and positions).

Optimisers: "pie" (default) is the illumination-preconditioned gradient step of ePIE/LSQML run
on minibatches: ΔO = −step · ∇_O L / (c · (Σ_batch |P|² splat + α·max)), where c = 2 for the
amplitude loss (then step 1 on a whole batch is exactly the error-reduction projection) and 4
for Poisson (its gradient is twice the amplitude loss's near the solution). "adam" runs
torch.optim.Adam on the canvas (lr = `adam_lr`, object units). Positions always use a
Gauss–Newton step (gradient over the curvature Σ|P·∂O/∂x|²), at most `max_shift` px per step.

Regularisers ("pie" only, quadratic, weighed in units of the scan's mean illumination Ī):
a smoothness term (c/2)·ρ·Ī·‖(1 − G_σ)·O‖² (`smooth_weight`, `smooth_sigma`) and a network
prior (c/2)·ρ·Ī·‖H·w·(O − O_net)‖² (`prior_weight`, `prior_highpass`); a minibatch carries its
share b/M, its gradient joins the data gradient and its curvature the preconditioner.

Memory is bounded: one minibatch of patches at a time (`batch_size` positions) plus the canvas.
Distributed (`torch.distributed` initialised): each global minibatch is split over ranks
(`distributed.shard_batch`), the canvas/probe gradients and illumination sums are all-reduced,
so every rank applies the same step and holds the same canvas.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from .. import distributed as dist_
from ..errors import ConfigError, DataError
from ..kernels import gather_patches
from ..kernels import stitch as kstitch
from ..physics.operator import mixed_state_intensity

log = logging.getLogger("ptychopinn")

RefineLoss = Literal["poisson", "amplitude"]
Optimizer = Literal["pie", "adam"]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the physics refinement (`reconstruct(..., refine=RefineConfig(epochs=10))`).

    epochs: passes over all scan positions (0 = no refinement, the network's object unchanged).
    loss: "poisson" (NLL of the counts, default) or "amplitude" (MSE of √counts).
    batch_size: positions per update (memory: one batch of N×N patches).
    optimizer: "pie" (preconditioned gradient, default) or "adam".
    step: object step of "pie" (1 = full preconditioned step); adam_lr: Adam's learning rate.
    alpha: preconditioner regularisation, a fraction of the batch's maximum illumination.
    momentum: η of the mPIE-style object momentum applied after every epoch ("pie" only):
    v ← η·v + (O − O_epoch start), O ← O + η·v (0 = off).
    prior_weight: ρ of the network-consistency term ("pie" only; 0 = off): the refinement
    minimises L + (c/2)·ρ·Ī·Σ w·|O − O_prior|², O_prior the network's object, w its coverage
    (1 where the network covered, 0 elsewhere), Ī the mean illumination Σ_m |P|² of the whole
    scan over the covered pixels: ρ = 1 weighs the prior like one scan's worth of data at a
    typically lit pixel; weakly lit pixels lean on the prior (what it buys: docs/refinement.md).
    prior_highpass: σ px (0 = off): the prior acts only on the detail finer than a σ-pixel
    Gaussian blur, ‖(1 − G_σ)·w·(O − O_prior)‖²: the data keep the coarse structure, the network
    the fine.
    smooth_weight, smooth_sigma: a smoothness regulariser (c/2)·ρ_s·Ī·‖(1 − G_σ)·O‖² (0 = off):
    penalises the detail finer than a σ-pixel blur everywhere on the canvas; not learned, the
    same for a flat start (measured at low dose in docs/refinement.md).
    probe: refine the probe too (from epoch `probe_start`, 0-based); its power Σ|P|² is kept
    fixed (the object absorbs the global scale).
    positions: refine the scan positions (sub-pixel; the mean correction is kept at zero);
    position_step: Gauss–Newton step fraction; max_shift: px per update at most.
    object: update the object (False: only the probe / positions move, e.g. aligning the
    positions to a trusted object first).
    poisson_eps: ε in log(I + ε), photons (bounds the Poisson gradient where I → 0).
    fit_scale: scale the probe first so the start predicts the measured total counts (the
    network's object and the file's probe carry no photon scale of their own).
    seed: shuffling of the positions; progress: tqdm bar.
    """

    epochs: int = 0
    loss: RefineLoss = "poisson"
    batch_size: int = 64
    optimizer: Optimizer = "pie"
    step: float = 1.0
    adam_lr: float = 0.02
    alpha: float = 0.05
    momentum: float = 0.0
    prior_weight: float = 0.0
    prior_highpass: float = 0.0
    smooth_weight: float = 0.0
    smooth_sigma: float = 2.0
    probe: bool = False
    probe_start: int = 1
    probe_step: float = 1.0
    positions: bool = False
    object: bool = True
    position_step: float = 1.0
    max_shift: float = 0.5
    poisson_eps: float = 1e-3
    fit_scale: bool = True
    seed: int = 0
    progress: bool = False

    def validate(self) -> None:
        """ConfigError (one line naming the field) for values that cannot run."""
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"RefineConfig.{name}={getattr(self, name)!r}: expected {expected}")

        if not isinstance(self.epochs, (int, np.integer)) or self.epochs < 0:
            raise bad("epochs", "an integer >= 0")
        if self.loss not in ("poisson", "amplitude"):
            raise bad("loss", "'poisson' or 'amplitude'")
        if self.optimizer not in ("pie", "adam"):
            raise bad("optimizer", "'pie' or 'adam'")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        for name in ("step", "adam_lr", "probe_step", "position_step", "max_shift"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise bad(name, "a number > 0")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise bad("momentum", "a number in [0, 1)")
        for name in ("prior_weight", "prior_highpass", "smooth_weight", "smooth_sigma"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise bad(name, "a number >= 0")
        for name in ("prior_weight", "smooth_weight"):
            if getattr(self, name) > 0 and self.optimizer != "pie":
                raise bad(name, "0 with optimizer 'adam' (the regularisers are part of the 'pie' step)")
        if self.smooth_weight > 0 and self.smooth_sigma == 0:
            raise bad("smooth_sigma", "a number > 0 when smooth_weight > 0")
        for name in ("alpha", "poisson_eps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise bad(name, "a number >= 0")
        if self.probe_start < 0:
            raise bad("probe_start", "an integer >= 0")


@dataclass
class RefineResult:
    """What `refine_canvas` returns (numpy, CPU).

    object: `(H, W)` complex64 refined canvas; probe: `(K, N, N)` complex64 (scaled by
    `probe_scale`, refined when asked); positions: `(M, 2)` float64 `[x, y]` canvas px (refined
    when asked, else the input); loss: per epoch, mean over the epoch's updates (computed before
    each update); loss_start: the loss of the starting point (first pass, before any update);
    seconds: wall time of the epochs.
    """

    object: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    loss: list[float]
    probe_scale: float
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)


# -- forward model (functional) -------------------------------------------------------------
def predicted_intensity(canvas: torch.Tensor, positions: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """Far-field intensity `(b, N, N)` (photons) of the patches of `canvas (H, W)` complex at
    `positions (b, 2)` `[x, y]` px, illuminated by `probe (K, N, N)` complex (modes summed)."""
    N = int(probe.shape[-1])
    patches = gather_patches(canvas, positions, N)  # (b, N, N)
    return mixed_state_intensity(patches, probe)  # Σ_k |F(P_k·O_m)|², the model's operator


def data_loss(intensity: torch.Tensor, amplitude: torch.Tensor, kind: RefineLoss, valid: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Σ over pixels and positions (0-d) of the refinement loss.

    intensity `(b, N, N)` predicted photons; amplitude `(b, N, N)` measured √counts; valid
    `(N, N)` bool (True = measured) or None.
    """
    if kind == "poisson":
        y = amplitude.square()
        # minus the saturated model's value (a constant): 0 at a perfect fit, ≥ 0 for eps = 0
        per = intensity - y * torch.log(intensity + eps) - (y - torch.xlogy(y, y))
    else:
        per = (torch.sqrt(intensity + 1e-30) - amplitude).square()
    if valid is not None:
        per = per * valid
    return per.sum()


# -- the loop -------------------------------------------------------------------------------
class _Data:
    """Measured amplitudes by position index: kept on the device when small, else read per batch."""

    def __init__(self, diffraction: Any, dev: torch.device, rdt: torch.dtype, limit_bytes: int = 1 << 28) -> None:
        self.src = diffraction
        self.dev = dev
        self.rdt = rdt
        M, N = int(diffraction.shape[0]), int(diffraction.shape[-1])
        self.all = None
        if M * N * N * 4 <= limit_bytes:
            self.all = torch.as_tensor(np.asarray(diffraction[np.arange(M)] if not isinstance(diffraction, np.ndarray) else diffraction), dtype=rdt).to(dev)

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        if self.all is not None:
            return self.all[torch.as_tensor(idx, device=self.dev)]
        order = np.argsort(idx)
        rows = np.asarray(self.src[idx[order]], dtype=np.float32)
        out = np.empty_like(rows)
        out[order] = rows
        return torch.as_tensor(out, dtype=self.rdt).to(self.dev)


def _fit_scale(canvas, positions, probe, data: _Data, M: int, batch: int, valid) -> float:
    """c minimising Σ (c·√I − d)² over (up to 512 of) the positions: the probe's photon scale."""
    idx = np.linspace(0, M - 1, min(M, 512)).round().astype(np.int64)
    num = den = 0.0
    with torch.no_grad():
        for s in range(0, idx.size, batch):
            b = idx[s : s + batch]
            a = torch.sqrt(predicted_intensity(canvas, positions[torch.as_tensor(b, device=canvas.device)], probe))
            d = data(b)
            if valid is not None:
                a, d = a * valid, d * valid
            num += float((a * d).sum())
            den += float((a * a).sum())
    if not (den > 0 and num > 0):
        raise DataError("refinement: the starting object and probe predict no signal where the data has some")
    return num / den


def refine_canvas(
    canvas: np.ndarray | torch.Tensor,
    diffraction: Any,
    positions: np.ndarray,
    probe: np.ndarray,
    config: RefineConfig,
    *,
    valid: np.ndarray | None = None,
    prior: np.ndarray | torch.Tensor | None = None,
    prior_mask: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.complex64,
) -> RefineResult:
    """Refine `canvas (H, W)` complex against `diffraction (M, N, N)` √counts (array or lazy).

    positions `(M, 2)` `[x, y]` canvas px of each pattern; probe `(N, N)` or `(K, N, N)` complex
    (modes); valid `(N, N)` bool (True = measured pixel) or None; prior `(H, W)` complex, the
    object the network-consistency term pulls towards (`config.prior_weight` > 0; default: the
    starting canvas), prior_mask `(H, W)` its weight w in [0, 1] (default 1). See the module docstring.
    """
    config.validate()
    info = dist_.current()
    dev = torch.device(device)
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    P = torch.as_tensor(np.asarray(probe)).to(dtype).to(dev)
    if P.ndim == 2:
        P = P[None]
    if P.ndim != 3 or P.shape[-1] != P.shape[-2]:
        raise DataError(f"refinement: probe must be (N, N) or (K, N, N), got {tuple(P.shape)}")
    M, N = int(diffraction.shape[0]), int(diffraction.shape[-1])
    if int(P.shape[-1]) != N:
        raise DataError(f"refinement: probe is {P.shape[-1]}x{P.shape[-1]}, the patterns are {N}x{N}")
    pos0 = np.asarray(positions, dtype=np.float64)
    if pos0.shape != (M, 2):
        raise DataError(f"refinement: positions must be ({M}, 2) [x, y], got {pos0.shape}")
    O = torch.as_tensor(canvas).to(dtype).to(dev).clone()
    if O.ndim != 2:
        raise DataError(f"refinement: the object canvas must be (H, W), got {tuple(O.shape)}")
    pos = torch.as_tensor(pos0, dtype=torch.float64, device=dev).clone()
    mask = None if valid is None else torch.as_tensor(np.asarray(valid, dtype=bool), device=dev).to(rdt)
    data = _Data(diffraction, dev, rdt)
    cfg = config
    scale = 1.0
    if cfg.fit_scale and cfg.epochs > 0:
        scale = _fit_scale(O, pos, P, data, M, cfg.batch_size, mask)
        P = P * scale
    probe_power = float((P.abs() ** 2).sum())
    c = 4.0 if cfg.loss == "poisson" else 2.0
    terms = _regularisers(O, prior, prior_mask, P, pos, cfg, M)  # validate() keeps them to "pie"
    n_pix = float(N * N) if mask is None else float(mask.sum())

    O.requires_grad_(cfg.optimizer == "adam")
    adam = None
    if cfg.optimizer == "adam":
        groups = [{"params": [O], "lr": cfg.adam_lr}]
        if cfg.probe:
            P.requires_grad_(True)
            groups.append({"params": [P], "lr": cfg.adam_lr * float(P.abs().max())})
        adam = torch.optim.Adam(groups)

    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    bar = None
    main = info is None or info.is_main
    if cfg.progress and main and cfg.epochs > 0:
        from tqdm.auto import tqdm  # lazy: only with a progress bar (tqdm.auto probes for notebooks on import)

        bar = tqdm(total=cfg.epochs, desc="refine", unit="epoch", leave=False)
    t0 = time.perf_counter()
    velocity = None
    for epoch in range(cfg.epochs):
        start = O.detach().clone() if (cfg.momentum and adam is None and cfg.object) else None
        order = rng.permutation(M)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        with_probe = cfg.probe and epoch >= cfg.probe_start
        for s in range(0, M, cfg.batch_size):
            batch = order[s : s + cfg.batch_size]
            mine = batch if info is None else dist_.shard_batch(batch, info.rank, info.world_size)
            loss_val = _step(O, P, pos, mine, data, mask, cfg, c, with_probe, adam, probe_power, info,
                             (terms, len(batch)))
            total += loss_val
        if info is not None:
            dist_.all_reduce_sum(total)
        if start is not None:  # every rank holds the same canvas: no communication needed
            with torch.no_grad():
                step = O - start
                velocity = step if velocity is None else cfg.momentum * velocity + step
                O += cfg.momentum * velocity
        if cfg.positions:  # a common shift of all positions only moves the object: keep the mean
            with torch.no_grad():
                pos -= (pos - torch.as_tensor(pos0, device=dev)).mean(dim=0)
        losses.append(float(total) / (M * n_pix))
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.5g}")
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    return RefineResult(
        object=O.detach().cpu().numpy().astype(np.complex64 if dtype == torch.complex64 else np.complex128),
        probe=P.detach().cpu().numpy(),
        positions=pos.detach().cpu().numpy(),
        loss=losses,
        probe_scale=float(scale),
        seconds=seconds,
        config=asdict(cfg),
    )


def _illumination(O: torch.Tensor, P: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Σ_m |P|² (summed over probe modes) splat at `pos (b, 2)` on the canvas of `O`, `(H, W)` real."""
    N = int(P.shape[-1])
    p2 = (P.detach().abs() ** 2).sum(dim=0)
    if not len(pos):
        return torch.zeros(O.shape, dtype=O.real.dtype, device=O.device)
    illum, _ = kstitch(p2.expand(len(pos), N, N).contiguous(), pos.detach(), (int(O.shape[0]), int(O.shape[1])))
    return illum.to(O.real.dtype)


def _mean_illumination(O: torch.Tensor, P: torch.Tensor, pos: torch.Tensor, M: int, where: torch.Tensor) -> torch.Tensor:
    """Ī: the whole scan's illumination Σ_m |P|² splat on the canvas, averaged over the lit
    pixels of `where` (bool `(H, W)`); the unit in which the regularisers are weighed."""
    illum = torch.zeros(O.shape, dtype=O.real.dtype, device=O.device)
    for s in range(0, M, 1024):  # in bounded chunks
        illum += _illumination(O, P, pos[s : s + 1024])
    lit = where & (illum > 0)
    return illum[lit].mean() if bool(lit.any()) else illum.max()


class _Quadratic:
    """A quadratic regulariser R = (c/2)·ρ·Ī·‖H(w·(O − T))‖², one minibatch of b carrying b/M of it.

    Network prior (RefineConfig.prior_weight, prior_highpass): T the network's object, w its
    coverage. Smoothness (smooth_weight, smooth_sigma): T = 0, w = 1. H = identity (σ = 0) or
    1 − G_σ, the detail finer than a σ-pixel Gaussian blur (|H(k)|² = (1 − exp(−2π²σ²|k|²))²,
    k in cycles per pixel, periodic canvas)."""

    def __init__(self, target: torch.Tensor | None, w: torch.Tensor | None, strength: torch.Tensor, M: int, sigma: float,
                 shape: tuple[int, int]) -> None:
        self.target, self.w, self.strength, self.M = target, w, strength, M  # w None: 1 everywhere
        self.highpass = None
        if sigma > 0:
            ky = torch.fft.fftfreq(shape[0], device=strength.device, dtype=strength.dtype)[:, None]
            kx = torch.fft.fftfreq(shape[1], device=strength.device, dtype=strength.dtype)[None, :]
            self.highpass = (1 - torch.exp(-2 * math.pi**2 * sigma**2 * (kx**2 + ky**2))) ** 2

    def gradient(self, O: torch.Tensor, b: int, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇R, curvature bound) for a minibatch of b of the M positions: `(H, W)` complex and
        `(H, W)` real (a scalar tensor without a mask)."""
        lam = self.strength * (b / self.M)
        d = O.detach() if self.target is None else O.detach() - self.target
        if self.w is not None:
            d = self.w * d
        if self.highpass is not None:
            d = torch.fft.ifft2(torch.fft.fft2(d) * self.highpass)
            if self.w is not None:
                d = self.w * d
        curv = c * lam if self.w is None else c * lam * self.w  # |H|² <= 1: c·λ·w bounds the curvature
        return c * lam * d, curv


def _regularisers(O: torch.Tensor, prior: Any, prior_mask: Any, P: torch.Tensor, pos: torch.Tensor, cfg: RefineConfig,
                  M: int) -> list[_Quadratic]:
    """The configured regularisers (network prior, smoothness), weighed in units of Ī."""
    terms: list[_Quadratic] = []
    if cfg.epochs == 0 or (cfg.prior_weight == 0 and cfg.smooth_weight == 0):
        return terms
    shape = (int(O.shape[0]), int(O.shape[1]))
    w = None
    if cfg.prior_weight > 0 and prior_mask is not None:
        w = torch.as_tensor(prior_mask).to(O.real.dtype).to(O.device)
        if w.shape != O.shape:
            raise DataError(f"refinement: prior_mask must match the canvas {tuple(O.shape)}, got {tuple(w.shape)}")
    where = torch.ones(O.shape, dtype=torch.bool, device=O.device) if w is None else w > 0
    mean_illum = _mean_illumination(O, P, pos, M, where)
    if cfg.prior_weight > 0:
        target = O.detach().clone() if prior is None else torch.as_tensor(prior).to(O.dtype).to(O.device)
        if target.shape != O.shape:
            raise DataError(f"refinement: prior must match the canvas {tuple(O.shape)}, got {tuple(target.shape)}")
        terms.append(_Quadratic(target, w, cfg.prior_weight * mean_illum, M, cfg.prior_highpass, shape))
    if cfg.smooth_weight > 0:
        terms.append(_Quadratic(None, None, cfg.smooth_weight * mean_illum, M, cfg.smooth_sigma, shape))
    return terms


def _step(O, P, pos, idx, data, mask, cfg: RefineConfig, c: float, with_probe: bool, adam, probe_power: float, info,
          regularisers: tuple[list[_Quadratic], int] = ([], 0)) -> torch.Tensor:
    """One minibatch update in place; returns this rank's summed loss (float64, before the step;
    the data term only). `regularisers` (the terms, the global batch size): their gradients and
    curvature bounds are added after the all-reduce (every rank adds them once)."""
    dev = O.device
    N = int(P.shape[-1])
    t_idx = torch.as_tensor(idx, dtype=torch.int64, device=dev)
    b_pos = pos[t_idx].detach().requires_grad_(cfg.positions)
    leaf_O = O if adam is not None else O.detach().requires_grad_(True)
    leaf_P = P if (adam is not None and with_probe) else P.detach().requires_grad_(with_probe)
    amp = data(idx) if len(idx) else torch.zeros(0, N, N, dtype=O.real.dtype, device=dev)
    patches = gather_patches(leaf_O, b_pos, N)
    inten = mixed_state_intensity(patches, leaf_P)
    loss = data_loss(inten, amp, cfg.loss, mask, cfg.poisson_eps)
    wrt = [leaf_O] + ([leaf_P] if with_probe else []) + ([b_pos] if cfg.positions else [])
    raw: list[torch.Tensor | None]
    if len(idx):
        raw = list(torch.autograd.grad(loss, wrt, allow_unused=True))
    else:
        raw = [None] * len(wrt)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, raw)]
    gO = grads[0]
    gP = grads[1] if with_probe else None
    gpos = grads[-1] if cfg.positions else None

    with torch.no_grad():
        # position curvature (before the object moves): Gauss–Newton with the Jacobian of the
        # predicted amplitudes √I w.r.t. each position's x and y (central differences, ±δ px)
        if gpos is not None and len(idx):
            shift = _position_step(O.detach(), P.detach(), b_pos.detach(), mask, c, gpos, cfg)
        if adam is None:
            illum = _illumination(O, P, b_pos)
            if gP is not None:
                o2 = (patches.detach().abs() ** 2).sum(dim=0)
            if info is not None:
                dist_.all_reduce_sum(torch.view_as_real(gO))
                dist_.all_reduce_sum(illum)
                if gP is not None:
                    dist_.all_reduce_sum(torch.view_as_real(gP))
                    dist_.all_reduce_sum(o2)
            denom = c * (illum + cfg.alpha * illum.max().clamp_min(1e-30))
            for term in regularisers[0]:
                g_reg, curv = term.gradient(O, regularisers[1], c)
                gO = gO + g_reg
                denom = denom + curv
            if cfg.object:
                O -= cfg.step * gO / denom
            if gP is not None:
                pden = c * (o2 + cfg.alpha * o2.max().clamp_min(1e-30))
                P -= cfg.probe_step * gP / pden
        else:
            if info is not None:
                dist_.all_reduce_sum(torch.view_as_real(gO))
                if gP is not None:
                    dist_.all_reduce_sum(torch.view_as_real(gP))
            O.grad = gO if cfg.object else None
            if with_probe:
                P.grad = gP
            adam.step()
            adam.zero_grad(set_to_none=True)
        if with_probe:  # fix the O·P scale ambiguity: probe power constant, object takes the scale
            k = math.sqrt(probe_power / max(float((P.abs() ** 2).sum()), 1e-30))
            P *= k
            O /= k
        if cfg.positions:
            if info is None:
                if len(idx):
                    pos[t_idx] += shift
            else:  # every rank learns every rank's position updates
                upd = torch.zeros_like(pos)
                if len(idx):
                    upd[t_idx] = shift
                dist_.all_reduce_sum(upd)
                pos += upd
    return loss.detach().to(torch.float64)


def _position_step(O, P, pos, mask, c: float, grad: torch.Tensor, cfg: RefineConfig, delta: float = 0.1) -> torch.Tensor:
    """Δr `(b, 2)` px = −step · H⁻¹ ∇_r L per position, H = c/2 · Σ_pixels J Jᵀ (2×2), J = ∂√I/∂r.

    c/2·2 = c: the amplitude loss's Gauss–Newton curvature is 2 Σ J Jᵀ, the Poisson NLL's
    Fisher information 4 Σ J Jᵀ (in √I every pixel carries Fisher information 4). Clipped to
    ±max_shift px per coordinate.
    """
    jac = []
    for axis in range(2):
        e = torch.zeros(2, dtype=pos.dtype, device=pos.device)
        e[axis] = delta
        hi = torch.sqrt(predicted_intensity(O, pos + e, P) + 1e-30)
        lo = torch.sqrt(predicted_intensity(O, pos - e, P) + 1e-30)
        j = (hi - lo) / (2 * delta)
        jac.append(j if mask is None else j * mask)
    jx, jy = (j.to(torch.float64).flatten(1) for j in jac)
    hxx, hyy, hxy = (jx * jx).sum(1), (jy * jy).sum(1), (jx * jy).sum(1)
    h = c * torch.stack([torch.stack([hxx, hxy], -1), torch.stack([hxy, hyy], -1)], -2)  # (b, 2, 2)
    ridge = 1e-6 * h.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-30)
    h = h + ridge[:, None, None] * torch.eye(2, dtype=h.dtype, device=h.device)
    step = -cfg.position_step * torch.linalg.solve(h, grad.to(torch.float64).unsqueeze(-1)).squeeze(-1)
    return step.clamp(-cfg.max_shift, cfg.max_shift)


# -- reconstruction frame -------------------------------------------------------------------
def refine_stitched(
    obj: np.ndarray,
    weight: np.ndarray,
    origin: Any,
    scan: Any,
    config: RefineConfig,
    device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """Refine a stitched object `obj (H, W)` (stitching weight `weight (H, W)`, canvas pixel
    (0, 0) at object-frame point `origin [x0, y0]`, integers) against `scan`.

    Returns {"object": (H, W) complex64 refined, same frame; "probe": (K, N, N) complex64;
    "positions": (M, 2) `[x, y]` object-frame px; and the JSON summary: "loss" per epoch, ...}.

    The refinement canvas covers every full N×N patch (the stitched canvas holds only the
    central crops and may be the objectGuess frame): it is the stitched canvas embedded in a
    larger frame. Pixels the network did not cover (weight below 1e-3 of the maximum, or outside
    the stitched canvas) start at the covered pixels' mean amplitude with the phase of their
    mean and are left free. The refined values are cut back to the stitched canvas.
    """
    if not isinstance(config, RefineConfig):
        raise ConfigError(f"refine: expected a RefineConfig, got {type(config).__name__}")
    obj = np.asarray(obj)
    wt = np.asarray(weight)
    N = scan.N
    org = np.asarray([float(origin[0]), float(origin[1])])
    coords = scan.coords.astype(np.float64)  # object frame
    local = coords - org  # stitched-canvas pixels (the origin may be fractional: stitch="tf")
    half = N // 2
    lo = np.minimum(np.floor(local.min(axis=0)) - half - 2, 0).astype(int)  # big canvas pixel 0 = stitched pixel lo
    hi = np.maximum(np.ceil(local.max(axis=0)) + (N - half) + 2, [obj.shape[1], obj.shape[0]]).astype(int)
    c0, r0 = -int(lo[0]), -int(lo[1])
    Wc, Hc = int(hi[0] - lo[0]), int(hi[1] - lo[1])
    covered = wt > 1e-3 * max(float(wt.max()), 1e-30)
    if covered.any():
        vals = obj[covered]
        mean_amp = float(np.abs(vals).mean())
        mean_phase = float(np.angle(vals.mean())) if abs(vals.mean()) > 0 else 0.0
    else:
        mean_amp, mean_phase = 1.0, 0.0
    fill = np.complex64(mean_amp * np.exp(1j * mean_phase))
    big = np.full((Hc, Wc), fill, dtype=np.complex64)
    view = big[r0 : r0 + obj.shape[0], c0 : c0 + obj.shape[1]]
    view[covered] = obj[covered]
    modes = getattr(scan, "probe_modes", None)
    probe = np.asarray(modes if modes is not None else scan.probe)
    bad = getattr(scan, "bad_pixels", None)
    valid = None if bad is None else ~np.asarray(bad, dtype=bool)
    if progress and not config.progress:
        config = replace(config, progress=True)
    prior_mask = None
    if config.prior_weight > 0:  # the network-consistency term pulls the covered pixels towards the start
        prior_mask = np.zeros((Hc, Wc), np.float32)
        prior_mask[r0 : r0 + obj.shape[0], c0 : c0 + obj.shape[1]][covered] = 1.0
    res = refine_canvas(big, scan.diffraction, local - lo, probe, config, valid=valid, prior=big if prior_mask is not None else None,
                        prior_mask=prior_mask, device=device)
    positions = res.positions + lo + org
    out: dict[str, Any] = {
        "object": res.object[r0 : r0 + obj.shape[0], c0 : c0 + obj.shape[1]].copy(),
        "probe": res.probe.astype(np.complex64),
        "positions": positions,
        "epochs": config.epochs,
        "loss_kind": config.loss,
        "loss": res.loss,
        "seconds": res.seconds,
        "probe_scale": res.probe_scale,
        "fill_value": [float(fill.real), float(fill.imag)],
        "config": {k: v for k, v in res.config.items() if k != "progress"},
    }
    if config.positions:
        shift = positions - coords
        out["position_shift_px"] = {"mean_abs": float(np.abs(shift).mean()), "max_abs": float(np.abs(shift).max())}
    return out


__all__ = ["RefineConfig", "RefineResult", "refine_canvas", "refine_stitched", "predicted_intensity", "data_loss"]
