"""pty-chi LSQML on one scan, run in pty-chi's OWN interpreter (it pulls its own torch/torchvision:
never in the project's environment). Imports numpy, torch and ptychi only, not ptychopinn.

    /path/to/ptychi-venv/bin/python benchmarks/ptychi_worker.py IN.npz OUT.npz

IN.npz: `diffraction (M, N, N)` float32 √counts (fftshifted, zero frequency at (N/2, N/2)),
`xcoords`, `ycoords` `(M,)` object pixels of each patch centre, `probe (N, N)` complex64,
`object_shape (2,)` `[H, W]` of the object grid to reconstruct on, optional `valid (N, N)` bool
(True = measured pixel), `epochs (k,)` increasing epoch
counts at which to keep the object, `noise_model` "gaussian" | "poisson", `threads`, `batch_size`.

OUT.npz: `object_<E> (H, W)` complex64 for every E in `epochs`, `seconds_<E>` wall time from the
start (task construction included) to the end of epoch E, `probe_scale`, `ptychi_version`,
`forward_check`: the relative L2 misfit of pty-chi's own forward model on the TRUE object when IN
holds `truth (H, W)` (a units/positions check; NaN otherwise).

Conventions (shared/spec/iterative-baseline.md): pty-chi's far field is the unnormalised `fft2`,
so its data are the counts y = d² as they are, and the probe is scaled so that pty-chi's model of
a flat object (ones) predicts the measured mean total counts (N²·Σ|cP|² = mean Σ y; the same
information the project's own flat-start baseline uses, `RefineConfig.fit_scale`); positions
`x − W/2`, `y − H/2`; the probe is held fixed (not optimised, not rescaled, no ambiguity removal);
LSQML, object SGD step 1, positions not refined, `random_seed 0`, CPU.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch


def _task(api, task_cls, counts, obj, probe, px, py, noise, batch, epochs, valid):
    """A PtychographyTask: LSQML, fixed probe, fixed positions, object SGD step 1, CPU."""
    opts = api.LSQMLOptions()
    opts.data_options.fft_shift = True  # our patterns are fftshifted (zero frequency at (N/2, N/2))
    opts.object_options.pixel_size_m = 1.0
    opts.object_options.optimizable = True
    opts.object_options.optimizer = api.Optimizers.SGD
    opts.object_options.step_size = 1.0
    opts.object_options.remove_object_probe_ambiguity.enabled = False
    opts.probe_options.optimizable = False
    opts.probe_position_options.optimizable = False
    rec = opts.reconstructor_options
    rec.num_epochs = int(epochs)
    rec.batch_size = int(batch)
    rec.noise_model = api.NoiseModels.POISSON if noise == "poisson" else api.NoiseModels.GAUSSIAN
    rec.rescale_probe_intensity_in_first_epoch = False
    rec.default_device = api.Devices.CPU
    rec.random_seed = 0
    return task_cls(opts, diffraction_data=counts.astype(np.float32), object_data=obj[None].astype(np.complex64),
                    probe_data=probe[None, None], probe_position_x_px=px, probe_position_y_px=py, valid_pixel_mask=valid)


def main(inp: str, out: str) -> None:
    import ptychi
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask

    z = np.load(inp)
    torch.set_num_threads(max(1, int(z["threads"])))
    d = np.asarray(z["diffraction"], np.float32)
    M, N = d.shape[0], d.shape[-1]
    counts = d.astype(np.float64) ** 2
    valid = np.asarray(z["valid"], bool) if "valid" in z.files else None
    probe = np.asarray(z["probe"], np.complex64)
    scale = float(np.sqrt(counts.sum(axis=(1, 2)).mean() / (N * N * float((np.abs(probe) ** 2).sum()))))
    probe = (probe * scale).astype(np.complex64)
    H, W = (int(v) for v in z["object_shape"])
    px = np.asarray(z["xcoords"], np.float64) - W / 2
    py = np.asarray(z["ycoords"], np.float64) - H / 2
    epochs = [int(e) for e in z["epochs"]]
    noise = str(z["noise_model"])
    batch = int(z["batch_size"])
    result: dict[str, np.ndarray] = {"probe_scale": np.asarray(scale), "ptychi_version": np.asarray(ptychi.__version__)}

    check = float("nan")
    if "truth" in z.files:  # pty-chi's own forward model on the truth: do units and positions agree?
        truth = np.asarray(z["truth"], np.complex64)
        with _task(api, PtychographyTask, counts, truth, probe, px, py, noise, batch, 1, valid) as task:
            idx = torch.arange(min(M, 64))
            pred = task.reconstructor.forward_model.forward(idx).detach().cpu().numpy()
        a = np.sqrt(np.fft.fftshift(pred, axes=(-2, -1)))  # pty-chi's far field is unshifted
        b = np.sqrt(counts[: len(idx)])
        k = float((a * b).sum() / (a * a).sum())  # the flat-object probe scale is not the truth's
        check = float(np.linalg.norm(k * a - b) / np.linalg.norm(b))
    result["forward_check"] = np.asarray(check)

    t0 = time.perf_counter()
    with _task(api, PtychographyTask, counts, np.ones((H, W), np.complex64), probe, px, py, noise, batch, max(epochs), valid) as task:
        done = 0
        for e in epochs:
            task.run(n_epochs=e - done)
            done = e
            obj = task.get_data_to_cpu("object", as_numpy=True)
            result[f"seconds_{e}"] = np.asarray(time.perf_counter() - t0)
            result[f"object_{e}"] = np.asarray(obj).reshape(-1, H, W)[0].astype(np.complex64)
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
