"""Iterative-grade reconstructions (issue 15), part of the `quality` group.

Recipe: a smooth phase object (GRF, amplitude in [0.5, 1], phase ±1 rad), N = 64, random scans,
default probe; counts ~ Poisson at `dose` photons per pattern through the refinement's own
operator (`reconstruct.refine.predicted_intensity`: bilinear patch → probe → far field). A
network is trained (PINN loss, gridsize 1) on one object's scan and reconstructs a second
object's scan. Rows per dose: network only; network + `refine` E epochs; `finetune` E then
network; and the iterative baseline: the same minibatch solver (`refine_canvas`, illumination-
preconditioned ePIE/LSQML-style step, Poisson NLL) started from a flat object (1 + 0j) with the
true probe, 10/50/100 epochs. Every row scores the same region (the network's covered box) with
`metrics.evaluate`; times are the wall time of the whole reconstruction (inference + refinement;
fine-tuning + inference; the solver's epochs) on this machine, one run each.

Sizes: full mode follows the issue (224 × 224 object, 1024 training / 256 test patterns, 20
training epochs); `--quick` shrinks everything (smoke test only, numbers meaningless).
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ptychopinn import data
from ptychopinn.config import DataConfig, ModelConfig, TrainConfig
from ptychopinn.metrics import evaluate
from ptychopinn.physics.probe import default_probe, normalize_probe
from ptychopinn.reconstruct import reconstruct
from ptychopinn.reconstruct.finetune import FinetuneConfig
from ptychopinn.reconstruct.refine import RefineConfig, predicted_intensity, refine_stitched
from ptychopinn.simulate.objects import grf_object
from ptychopinn.simulate.scan import make_scan_positions

from .common import Context, Row, run_ptychi_worker, skipped
from .timing import stats_of

GROUP = "quality"


@dataclass(frozen=True)
class Recipe:
    object_size: int = 224
    n_train: int = 1024
    n_test: int = 256
    train_epochs: int = 20
    refine_epochs: tuple[int, ...] = (5, 10, 20, 50)
    finetune_epochs: int = 5
    iterative_epochs: tuple[int, ...] = (10, 50, 100)
    doses: tuple[float, ...] = (1e9, 1e4)
    n_filters_scale: int = 2
    ptychi_epochs: tuple[int, ...] = (10, 50, 100)
    tuned_epochs: tuple[int, ...] = (5, 10, 20)
    tuned_bf16_epochs: tuple[int, ...] = (5, 7, 10)
    tuned_iterative_epochs: tuple[int, ...] = (5, 10, 20, 50)


#: the refinement settings docs/refinement.md recommends per dose (measured on this recipe):
#: high dose: momentum and small batches converge fastest, a light smoothness term helps the
#: smooth object; low dose: a strong smoothness term against the noise (not learned: the same
#: settings run from a flat start as `tuned_iterative` rows)
TUNED = {"high": {"momentum": 0.7, "batch_size": 32, "smooth_weight": 0.3}, "low": {"batch_size": 32, "smooth_weight": 3.0}}
#: rounds of per-patch phase synchronisation of the network's patches in the tuned rows
SYNC = 25


def tuned_settings(dose: float) -> dict[str, Any]:
    return dict(TUNED["high" if dose >= 1e6 else "low"])


FULL = Recipe()
QUICK = Recipe(object_size=112, n_train=32, n_test=16, train_epochs=1, refine_epochs=(2,), finetune_epochs=1,
               iterative_epochs=(2,), doses=(1e9,), n_filters_scale=1, ptychi_epochs=(2,),
               tuned_epochs=(2,), tuned_bf16_epochs=(2,), tuned_iterative_epochs=(2,))


def simulate_phase_object(size: int, n: int, dose: float, seed: int, N: int = 64) -> Any:
    """A `Scan` of a smooth phase object (truth in `objectGuess`), Poisson counts stored as √counts."""
    rng = np.random.default_rng(seed)
    truth = grf_object(size, rng, phase_max=1.0)
    x, y = make_scan_positions("random", size, N, n_positions=n, step=0.0, rng=rng)
    probe = normalize_probe(default_probe(N), 4.0).astype(np.complex64)
    pos = torch.from_numpy(np.stack([x, y], -1).astype(np.float64))
    with torch.no_grad():
        inten = predicted_intensity(torch.from_numpy(truth), pos, torch.from_numpy(probe)[None]).double().numpy()
    counts = rng.poisson(inten * (dose / inten.sum(axis=(1, 2)).mean()))
    return data.make_scan(
        diffraction=np.sqrt(counts).astype(np.float32), xcoords=x.astype(np.float64), ycoords=y.astype(np.float64),
        probeGuess=probe, objectGuess=truth, metadata={"nphotons": float(dose), "generator": "benchmarks.cases_refine"},
    )


def _scores(obj: np.ndarray, truth: np.ndarray, region: tuple[int, int, int, int]) -> dict[str, float]:
    r0, r1, c0, c1 = region
    m = evaluate(obj[r0:r1, c0:c1], truth[r0:r1, c0:c1])
    return {"amplitude_ssim": float(m["amplitude"]["ssim"]), "phase_ssim": float(m["phase"]["ssim"]),
            "amplitude_psnr": float(m["amplitude"]["psnr"]), "phase_psnr": float(m["phase"]["psnr"])}


def run_recipe(ctx: Context, recipe: Recipe, prefix: str = "quality/refine", keep: dict[str, np.ndarray] | None = None) -> list[Row]:
    """The rows of `recipe`; `keep` (a dict) receives the truth, network and refine-20 (or the
    longest) objects of the first dose's covered region, for figures."""
    rows: list[Row] = []
    dev = torch.device(ctx.device)
    for dose in recipe.doses:
        tag = f"{prefix}/{dose:.0e}".replace("+0", "").replace("+", "")
        train_scan = simulate_phase_object(recipe.object_size, recipe.n_train, dose, seed=21)
        test_scan = simulate_phase_object(recipe.object_size, recipe.n_test, dose, seed=22)
        truth = np.asarray(test_scan.object)
        ctx.log(f"  {tag}: training the network ({recipe.train_epochs} epochs, {recipe.n_train} patterns)")
        import ptychopinn as pp

        t0 = time.perf_counter()
        result = pp.train(train_scan, ModelConfig(N=64, gridsize=1, n_filters_scale=recipe.n_filters_scale), DataConfig(gridsize=1),
                          TrainConfig(epochs=recipe.train_epochs, batch_size=16, device=str(dev), exact_gradients="off"), progress=False)
        train_s = time.perf_counter() - t0
        model = result.model
        base_desc = (f"{recipe.object_size}² GRF phase object, N=64, random scan, {dose:.0e} photons; network trained "
                     f"{recipe.train_epochs} epochs on {recipe.n_train} patterns ({train_s:.0f} s), test {recipe.n_test} patterns")
        iter_name = f"{tag}/iterative{max(recipe.iterative_epochs)}"

        t0 = time.perf_counter()
        net = reconstruct(model, test_scan, device=dev)
        net_s = time.perf_counter() - t0
        region = net.region
        rows.append(Row(f"{tag}/network", GROUP, base_desc + ": network only", stats_of([net_s]), items=recipe.n_test,
                        unit="patterns/s", baselines=[iter_name], metrics=_scores(net.object, truth, region)))
        t0 = time.perf_counter()
        synced = reconstruct(model, test_scan, device=dev, phase_sync=SYNC)
        s = time.perf_counter() - t0
        rows.append(Row(f"{tag}/network_sync", GROUP, base_desc + f": network only, {SYNC} rounds of patch phase synchronisation",
                        stats_of([s]), items=recipe.n_test, unit="patterns/s", baselines=[iter_name],
                        metrics=_scores(synced.object, truth, region)))
        for E in recipe.refine_epochs:
            t0 = time.perf_counter()
            rec = reconstruct(model, test_scan, device=dev, refine=RefineConfig(epochs=E))
            s = time.perf_counter() - t0
            if keep is not None and not keep.get("done") and E == (20 if 20 in recipe.refine_epochs else max(recipe.refine_epochs)):
                r0, r1, c0, c1 = region
                keep.update(truth=truth[r0:r1, c0:c1], network=net.object[r0:r1, c0:c1], refined=rec.object[r0:r1, c0:c1],
                            refine_epochs=np.asarray(E), dose=np.asarray(dose), done=True)
            rows.append(Row(f"{tag}/refine{E}", GROUP, base_desc + f": network + refine {E} epochs (Poisson, object only)",
                            stats_of([s]), items=recipe.n_test, unit="patterns/s", baselines=[iter_name],
                            metrics={**_scores(rec.object, truth, region), "refine_seconds": rec.refinement["seconds"]}))
        E = recipe.finetune_epochs
        t0 = time.perf_counter()
        rec = reconstruct(model, test_scan, device=dev, finetune=FinetuneConfig(epochs=E))
        s = time.perf_counter() - t0
        rows.append(Row(f"{tag}/finetune{E}", GROUP, base_desc + f": finetune {E} epochs (PINN loss on the test scan), then network",
                        stats_of([s]), items=recipe.n_test, unit="patterns/s", baselines=[iter_name],
                        metrics=_scores(rec.object, truth, region)))
        flat = np.ones(net.object.shape, np.complex64)
        ones = np.ones(net.object.shape, np.float32)
        for E in recipe.iterative_epochs:
            t0 = time.perf_counter()
            out = refine_stitched(flat, ones, (0.0, 0.0), test_scan, RefineConfig(epochs=E, fit_scale=True), dev)
            s = time.perf_counter() - t0
            rows.append(Row(f"{tag}/iterative{E}", GROUP,
                            base_desc + f": iterative baseline, {E} epochs from a flat object, true probe (same solver and operator)",
                            stats_of([s]), items=recipe.n_test, unit="patterns/s",
                            role="baseline" if f"{tag}/iterative{E}" == iter_name else "candidate",
                            baselines=[] if f"{tag}/iterative{E}" == iter_name else [iter_name],
                            metrics=_scores(out["object"], truth, region)))
        rows += _tuned_rows(recipe, dose, tag, model, test_scan, truth, region, dev, base_desc, iter_name, flat, ones)
        rows += _ptychi_rows(ctx, recipe, tag, test_scan, truth, region, net.object.shape, base_desc, iter_name)
    return rows


def _tuned_rows(recipe: Recipe, dose: float, tag: str, model: Any, scan: Any, truth: np.ndarray, region: tuple[int, int, int, int],
                dev: torch.device, base_desc: str, iter_name: str, flat: np.ndarray, ones: np.ndarray) -> list[Row]:
    """The recommended settings of the dose (`TUNED`): from the network (float32 and bfloat16
    inference, `SYNC` rounds of patch phase synchronisation) and, as the fair control, from a
    flat object (`tuned_iterative`)."""
    kw = tuned_settings(dose)
    what = ", ".join(f"{k} {v:g}" for k, v in kw.items())
    rows: list[Row] = []
    runs = [(E, "float32", f"{tag}/refine{E}_tuned") for E in recipe.tuned_epochs]
    runs += [(E, "bf16", f"{tag}/refine{E}_tuned_bf16") for E in recipe.tuned_bf16_epochs]
    for E, precision, name in runs:
        t0 = time.perf_counter()
        rec = reconstruct(model, scan, device=dev, precision=precision, phase_sync=SYNC, refine=RefineConfig(epochs=E, **kw))
        s = time.perf_counter() - t0
        rows.append(Row(name, GROUP, base_desc + f": network ({precision} inference, phase sync {SYNC}) + refine {E} epochs ({what})",
                        stats_of([s]), items=recipe.n_test, unit="patterns/s", baselines=[iter_name],
                        metrics={**_scores(rec.object, truth, region), "refine_seconds": rec.refinement["seconds"]}))
    for E in recipe.tuned_iterative_epochs:
        t0 = time.perf_counter()
        out = refine_stitched(flat, ones, (0.0, 0.0), scan, RefineConfig(epochs=E, **kw), dev)
        s = time.perf_counter() - t0
        rows.append(Row(f"{tag}/tuned_iterative{E}", GROUP,
                        base_desc + f": the same solver and settings ({what}), {E} epochs from a flat object, true probe (no network)",
                        stats_of([s]), items=recipe.n_test, unit="patterns/s", baselines=[iter_name],
                        metrics=_scores(out["object"], truth, region)))
    return rows


def _ptychi_rows(ctx: Context, recipe: Recipe, tag: str, scan: Any, truth: np.ndarray, region: tuple[int, int, int, int],
                 shape: tuple[int, ...], base_desc: str, iter_name: str) -> list[Row]:
    """pty-chi 2.2 LSQML (fixed true probe, flat start, Gaussian noise model; Poisson too at low
    dose) on the same scan, in its own venv (`ctx.ptychi_python`, benchmarks/ptychi_worker.py);
    each row's time runs from the task's construction to the end of its epoch count."""
    models = ("gaussian",) if scan.metadata.get("nphotons", 1e9) >= 1e6 else ("gaussian", "poisson")
    names = [(m, E, f"{tag}/ptychi_lsqml_{m}{E}") for m in models for E in recipe.ptychi_epochs]
    desc = base_desc + ": pty-chi LSQML {E} epochs ({m} noise model), flat start, true probe fixed, batch 96, own venv"
    if not ctx.ptychi_python:
        return [skipped(n, GROUP, desc.format(E=E, m=m), "no pty-chi interpreter (--ptychi-python / $PTYCHOPINN_PTYCHI_PYTHON)")
                for m, E, n in names]
    rows: list[Row] = []
    for m in models:
        arrays = {"diffraction": np.asarray(scan.diffraction, np.float32), "xcoords": scan.coords[:, 0], "ycoords": scan.coords[:, 1],
                  "probe": np.asarray(scan.probe, np.complex64), "object_shape": np.asarray(shape[:2]),
                  "epochs": np.asarray(recipe.ptychi_epochs), "noise_model": np.asarray(m), "threads": np.asarray(ctx.threads),
                  "batch_size": np.asarray(96), "truth": truth.astype(np.complex64)}
        if getattr(scan, "bad_pixels", None) is not None:
            arrays["valid"] = ~np.asarray(scan.bad_pixels, bool)
        ctx.log(f"  {tag}: pty-chi LSQML ({m}, {max(recipe.ptychi_epochs)} epochs)")
        try:
            out = run_ptychi_worker(ctx, arrays)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            rows += [skipped(n, GROUP, desc.format(E=E, m=m), str(exc)) for mm, E, n in names if mm == m]
            continue
        for E in recipe.ptychi_epochs:
            name = f"{tag}/ptychi_lsqml_{m}{E}"
            rows.append(Row(name, GROUP, desc.format(E=E, m=m), stats_of([float(out[f"seconds_{E}"])]), items=recipe.n_test,
                            unit="patterns/s", baselines=[iter_name],
                            metrics={**_scores(out[f"object_{E}"], truth, region), "ptychi_version": str(out["ptychi_version"]),
                                     "forward_check_rel_l2": float(out["forward_check"])}))
    return rows


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(ctx: Context) -> list[Row]:
    return run_recipe(ctx, QUICK if ctx.quick else FULL)


def reduced(**changes: Any) -> Recipe:
    """The full recipe with some sizes changed (a reduced run on a shared machine)."""
    return replace(FULL, **changes)


__all__ = ["Recipe", "FULL", "QUICK", "TUNED", "SYNC", "tuned_settings", "simulate_phase_object", "run_recipe", "run", "reduced"]
