"""Physics refinement (ptychopinn.reconstruct.refine): the data loss falls, a known object is
recovered from a flat start, float64 gradcheck of the forward path, position refinement
recovers imposed shifts, `refine` 0 changes nothing, the CLI on a scan without ground truth."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ptychopinn.reconstruct.refine import RefineConfig, data_loss, predicted_intensity, refine_canvas


def _case(N: int = 32, size: int = 80, M: int = 64, photons: float | None = None, seed: int = 0, corr: float = 4.0):
    """(truth (size, size) complex64, positions (M, 2) [x, y], probe (N, N), amplitudes (M, N, N)).

    A smooth GRF object (amplitude in [0.5, 1], phase ±1 rad), a random scan, the project's
    default probe; data through the same forward model, noiseless or Poisson at `photons`.
    """
    from ptychopinn.physics.probe import default_probe, normalize_probe
    from ptychopinn.simulate.objects import grf_object

    rng = np.random.default_rng(seed)
    truth = grf_object(size, rng, correlation_length=corr, phase_max=1.0)
    pos = rng.uniform(N / 2 + 2, size - N / 2 - 3, (M, 2))
    probe = normalize_probe(default_probe(N), 4.0).astype(np.complex64)
    with torch.no_grad():
        inten = predicted_intensity(torch.from_numpy(truth), torch.from_numpy(pos), torch.from_numpy(probe)[None]).double().numpy()
    if photons is not None:
        inten = rng.poisson(inten * photons / inten.sum(axis=(1, 2)).mean()).astype(np.float64)
    return truth, pos, probe, np.sqrt(inten).astype(np.float32)


def _lit(pos: np.ndarray, size: int, N: int) -> tuple[slice, slice]:
    """A box well inside the scanned area."""
    lo = int(np.ceil(pos.min())) + N // 4
    hi = int(np.floor(pos.max())) - N // 4
    return slice(lo, hi), slice(lo, hi)


def _aligned_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖c·a − b‖/‖b‖ with the best complex scalar c (global phase and scale are not observable)."""
    a, b = a.ravel().astype(np.complex128), b.ravel().astype(np.complex128)
    c = np.vdot(a, b) / np.vdot(a, a)
    return float(np.linalg.norm(c * a - b) / np.linalg.norm(b))


def test_data_loss_falls_monotonically_on_average():
    truth, pos, probe, amp = _case(photons=1e7)
    res = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=10, batch_size=16))
    loss = np.asarray(res.loss)
    assert loss.shape == (10,) and np.isfinite(loss).all()
    assert loss[-1] < 0.2 * loss[0], loss
    assert (np.diff(loss) < 0).mean() >= 0.8, loss  # falls epoch after epoch
    amp_res = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=6, batch_size=16, loss="amplitude"))
    assert amp_res.loss[-1] < 0.2 * amp_res.loss[0] and (np.diff(amp_res.loss) < 0).all()


def test_recovers_a_known_object_from_a_flat_start():
    from ptychopinn.metrics import evaluate

    N, size = 32, 80
    truth, pos, probe, amp = _case(N, size)
    res = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=40, batch_size=16))
    box = _lit(pos, size, N)
    start_err = _aligned_rel_error(np.ones_like(truth)[box], truth[box])
    err = _aligned_rel_error(res.object[box], truth[box])
    assert err < 0.12 and err < start_err / 4, (err, start_err)
    m = evaluate(res.object[box], truth[box])
    assert m["amplitude"]["ssim"] > 0.9 and m["phase"]["ssim"] > 0.9, m
    # the photon scale of the probe was fitted from the data (the start carries none)
    assert res.probe_scale > 0 and res.probe.shape == (1, N, N)


def test_momentum_speeds_up_convergence():
    truth, pos, probe, amp = _case()
    plain = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=8, batch_size=16))
    fast = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=8, batch_size=16, momentum=0.5))
    assert fast.loss[-1] < 0.8 * plain.loss[-1], (fast.loss, plain.loss)


def test_minibatches_and_seed_are_deterministic():
    truth, pos, probe, amp = _case(M=20)
    cfg = RefineConfig(epochs=2, batch_size=7, seed=3)
    a = refine_canvas(np.ones_like(truth), amp, pos, probe, cfg)
    b = refine_canvas(np.ones_like(truth), amp, pos, probe, cfg)
    np.testing.assert_array_equal(a.object, b.object)
    assert a.loss == b.loss


def test_gradcheck_of_the_forward_path_float64():
    rng = np.random.default_rng(5)
    N, H = 8, 18
    canvas = torch.from_numpy(rng.standard_normal((H, H)) + 1j * rng.standard_normal((H, H))).requires_grad_(True)
    pos = torch.tensor([[8.3, 7.6], [9.45, 10.2], [6.7, 8.9]], dtype=torch.float64, requires_grad=True)
    probe = torch.from_numpy(rng.standard_normal((2, N, N)) + 1j * rng.standard_normal((2, N, N)))  # two modes
    counts = torch.from_numpy(rng.poisson(5.0, (3, N, N)).astype(np.float64))
    valid = torch.ones(N, N, dtype=torch.float64)
    valid[0, 1] = 0  # a bad pixel

    def poisson(c, p):
        return data_loss(predicted_intensity(c, p, probe), counts.sqrt(), "poisson", valid, 1e-3)

    def amplitude(c, p):
        return data_loss(predicted_intensity(c, p, probe), counts.sqrt(), "amplitude", valid, 0.0)

    assert torch.autograd.gradcheck(poisson, (canvas, pos), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(amplitude, (canvas, pos), eps=1e-6, atol=1e-5)


def test_bad_pixels_do_not_count():
    truth, pos, probe, amp = _case(M=12)
    valid = np.ones((32, 32), bool)
    valid[3, 4] = False
    corrupt = amp.copy()
    corrupt[:, 3, 4] = 1e4  # garbage where the detector is dead
    a = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=2, batch_size=6), valid=valid)
    b = refine_canvas(np.ones_like(truth), corrupt, pos, probe, RefineConfig(epochs=2, batch_size=6, fit_scale=False), valid=valid)
    c = refine_canvas(np.ones_like(truth), amp, pos, probe, RefineConfig(epochs=2, batch_size=6, fit_scale=False), valid=valid)
    np.testing.assert_allclose(b.object, c.object, rtol=0, atol=1e-6)
    assert np.isfinite(a.object).all()


def test_position_refinement_recovers_imposed_shifts():
    """Data at true positions; refinement starts from positions off by 0.5–2 px (random signs).

    Sign convention: `positions` are where patch pixel (N/2, N/2) sits on the object; the
    refined positions approach the true ones (a common shift of all positions is unobservable
    and held at zero, so errors are measured after removing the mean). The object is the
    truth and held fixed (`object=False`): this checks the position step itself."""
    N, size, M = 64, 128, 48
    truth, pos, probe, amp = _case(N, size, M, seed=0)
    rng = np.random.default_rng(7)
    offset = rng.uniform(0.5, 2.0, (M, 2)) * rng.choice([-1.0, 1.0], (M, 2))
    offset -= offset.mean(axis=0)
    start = pos + offset
    cfg = RefineConfig(epochs=10, batch_size=16, positions=True, object=False, fit_scale=False)
    res = refine_canvas(truth, amp, start, probe, cfg)
    err = res.positions - pos
    err -= err.mean(axis=0)
    assert np.abs(offset).max() >= 1.5
    assert np.abs(err).max() < 0.2, np.abs(err).max()
    # without position refinement the loss stays far higher
    fixed = refine_canvas(truth, amp, start, probe, RefineConfig(epochs=1, batch_size=16, object=False, fit_scale=False))
    assert res.loss[-1] < 0.1 * fixed.loss[-1]
    np.testing.assert_array_equal(res.object, truth)  # object=False: the object never moved


def test_probe_refinement_lowers_the_loss_with_a_wrong_probe():
    N = 32
    truth, pos, probe, amp = _case(N, M=48, seed=4)
    from scipy.ndimage import gaussian_filter

    wrong = (gaussian_filter(probe.real, 1.0) + 1j * gaussian_filter(probe.imag, 1.0)).astype(np.complex64)
    base = refine_canvas(np.ones_like(truth), amp, pos, wrong, RefineConfig(epochs=12, batch_size=16))
    both = refine_canvas(np.ones_like(truth), amp, pos, wrong, RefineConfig(epochs=12, batch_size=16, probe=True))
    assert both.loss[-1] < 0.7 * base.loss[-1], (both.loss[-1], base.loss[-1])
    # the probe's power is held fixed (scale ambiguity): the object carries the scale
    np.testing.assert_allclose((np.abs(both.probe) ** 2).sum(), (np.abs(wrong * both.probe_scale) ** 2).sum(), rtol=1e-4)


def test_network_consistency_prior():
    """The prior term (prior_weight ρ) pulls towards its target: the truth is a fixed point when
    the data and the prior agree; a huge ρ keeps the target; a good prior lowers the error at low
    dose; ρ = 0 is bit-identical to no prior."""
    truth, pos, probe, amp = _case(M=48)
    box = _lit(pos, 80, 32)
    cfg = RefineConfig(epochs=3, batch_size=16, prior_weight=1.0, fit_scale=False, loss="amplitude")
    # exact data, start = prior = truth: gradient and prior pull are both zero (the amplitude
    # loss: the Poisson NLL's ε makes the truth slightly non-stationary)
    res = refine_canvas(truth, amp, pos, probe, cfg, prior=truth)
    assert _aligned_rel_error(res.object[box], truth[box]) < 1e-6
    # a target far from the data with an overwhelming weight: the object stays at the target
    flat = np.ones_like(truth)
    res = refine_canvas(truth, amp, pos, probe, replace(cfg, prior_weight=1e6), prior=flat)
    assert np.abs(res.object[box] - flat[box]).max() < 0.05
    # low dose: a prior close to the truth helps, ρ = 0 equals no prior, the default target is the start
    truth, pos, probe, amp = _case(M=48, photons=2e3, seed=1)
    rng = np.random.default_rng(5)
    good = (truth * (1 + 0.02 * rng.standard_normal(truth.shape))).astype(np.complex64)
    base = RefineConfig(epochs=20, batch_size=16)
    plain = refine_canvas(np.ones_like(truth), amp, pos, probe, base)
    helped = refine_canvas(good, amp, pos, probe, replace(base, prior_weight=0.3), prior=good)
    unhelped = refine_canvas(good, amp, pos, probe, base)
    e = {k: _aligned_rel_error(r.object[box], truth[box]) for k, r in (("plain", plain), ("prior", helped), ("no prior", unhelped))}
    assert e["prior"] < 0.7 * e["no prior"] and e["prior"] < 0.7 * e["plain"], e
    zero = refine_canvas(good, amp, pos, probe, replace(base, prior_weight=0.0), prior=flat)
    np.testing.assert_array_equal(zero.object, unhelped.object)
    implicit = refine_canvas(good, amp, pos, probe, replace(base, prior_weight=0.3))
    np.testing.assert_array_equal(implicit.object, helped.object)


def test_smoothness_regulariser_at_low_dose():
    """smooth_weight: at a low dose the fine detail is mostly noise; penalising it lowers the
    error of a flat-start reconstruction of a smooth object, and a noiseless smooth truth barely
    moves; weight 0 is bit-identical to no regulariser."""
    truth, pos, probe, amp = _case(M=48, photons=1e3, seed=1, corr=8.0)
    box = _lit(pos, 80, 32)
    base = RefineConfig(epochs=20, batch_size=16)
    plain = refine_canvas(np.ones_like(truth), amp, pos, probe, base)
    smooth = refine_canvas(np.ones_like(truth), amp, pos, probe, replace(base, smooth_weight=1.0))
    e_plain = _aligned_rel_error(plain.object[box], truth[box])
    e_smooth = _aligned_rel_error(smooth.object[box], truth[box])
    assert e_smooth < 0.7 * e_plain, (e_smooth, e_plain)  # measured: 0.091 vs 0.158
    zero = refine_canvas(np.ones_like(truth), amp, pos, probe, replace(base, smooth_weight=0.0, smooth_sigma=5.0))
    np.testing.assert_array_equal(zero.object, plain.object)
    # a stronger blur scale penalises more of the object: the data misfit grows with sigma
    wide = refine_canvas(np.ones_like(truth), amp, pos, probe, replace(base, smooth_weight=1.0, smooth_sigma=6.0))
    assert wide.loss[-1] > smooth.loss[-1] > plain.loss[-1]


def test_config_errors():
    from ptychopinn.errors import ConfigError

    with pytest.raises(ConfigError, match="RefineConfig.prior_weight"):
        RefineConfig(epochs=1, prior_weight=-1.0).validate()
    with pytest.raises(ConfigError, match="RefineConfig.prior_weight"):
        RefineConfig(epochs=1, prior_weight=1.0, optimizer="adam").validate()
    with pytest.raises(ConfigError, match="RefineConfig.smooth_weight"):
        RefineConfig(epochs=1, smooth_weight=1.0, optimizer="adam").validate()
    with pytest.raises(ConfigError, match="RefineConfig.smooth_sigma"):
        RefineConfig(epochs=1, smooth_weight=1.0, smooth_sigma=0.0).validate()
    with pytest.raises(ConfigError, match="RefineConfig.prior_highpass"):
        RefineConfig(epochs=1, prior_weight=1.0, prior_highpass=float("nan")).validate()

    with pytest.raises(ConfigError, match="RefineConfig.loss"):
        RefineConfig(epochs=1, loss="gauss").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="RefineConfig.epochs"):
        RefineConfig(epochs=-1).validate()


# -- through reconstruct and the CLI ------------------------------------------------------------
@pytest.fixture(scope="module")
def scan_and_model(tmp_path_factory):
    """A simulated scan WITHOUT objectGuess holding integer detector counts and 3 flagged hot
    pixels (`bad_pixels`), its float twin with the truth, and a 1-epoch model trained on the
    truthless scan (no ground truth needed)."""
    import ptychopinn as pp
    from ptychopinn.config import ModelConfig, SimulationConfig, TrainConfig
    from ptychopinn.data import save_scan
    from ptychopinn.simulate import simulate

    base = tmp_path_factory.mktemp("refine")
    sim = simulate(SimulationConfig(N=64, object_kind="grf", object_size=112, n_positions=24, nphotons=1e6, seed=3))
    arrays = {k: v for k, v in sim.items() if k != "_metadata"}
    save_scan(base / "truth.npz", **arrays)
    arrays.pop("objectGuess")
    counts = np.rint(arrays["diffraction"].astype(np.float64) ** 2).astype(np.int32)
    bad = np.zeros((64, 64), bool)
    bad[[5, 40, 33], [7, 12, 33]] = True
    counts[:, bad] = 60000  # hot pixels: garbage where the detector is flagged
    np.savez(base / "scan.npz", **{**arrays, "diffraction": counts, "bad_pixels": bad})
    pp.train(base / "scan.npz", ModelConfig(n_filters_scale=1), None,
             TrainConfig(epochs=1, batch_size=8, device="cpu", validation_fraction=0.0), out_dir=base / "model", progress=False)
    return base


def test_refine_zero_equals_no_refinement(scan_and_model):
    import ptychopinn as pp

    base = scan_and_model
    plain = pp.reconstruct(base / "model", base / "truth.npz", device="cpu")
    zero = pp.reconstruct(base / "model", base / "truth.npz", device="cpu", refine=RefineConfig(epochs=0))
    np.testing.assert_array_equal(plain.object, zero.object)
    assert zero.refinement is None and plain.metrics == zero.metrics
    ref = pp.reconstruct(base / "model", base / "truth.npz", device="cpu", refine=RefineConfig(epochs=10))
    assert ref.object.shape == plain.object.shape and ref.origin == plain.origin
    assert ref.refinement["loss"][-1] < ref.refinement["loss"][0]
    # the refined object is closer to the truth than the 1-epoch network's
    for part in ("amplitude", "phase"):
        assert ref.metrics[part]["ssim"] > plain.metrics[part]["ssim"] + 0.05, (part, ref.metrics, plain.metrics)
    # the TF stitcher's canvas has a fractional origin: refinement works in its frame too
    tf = pp.reconstruct(base / "model", base / "truth.npz", device="cpu", stitch="tf", refine=RefineConfig(epochs=10))
    assert tf.origin != plain.origin and tf.object.shape == pp.reconstruct(base / "model", base / "truth.npz", device="cpu", stitch="tf").object.shape
    assert tf.metrics["phase"]["ssim"] > plain.metrics["phase"]["ssim"] + 0.05


def test_cli_refine_on_a_scan_without_truth(scan_and_model):
    from ptychopinn.cli import main

    base = scan_and_model
    out = base / "out"
    rc = main(["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(out),
               "--refine", "4", "--refine-positions", "--refine-probe", "--device", "cpu", "--quiet"])
    assert rc == 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
    metrics = json.loads((out / "metrics.json").read_text())
    loss = metrics["refine"]["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0]
    assert "amplitude" not in metrics  # no ground truth: no image metrics, only the losses
    # per-pixel deviance: counted, the 3 hot pixels (60000 counts) alone would add ~400 per pixel
    assert loss[-1] < 100
    with np.load(out / "refinement.npz", allow_pickle=False) as z:
        assert z["probe"].shape == (1, 64, 64) and z["positions"].shape == (24, 2)
    zero = base / "out0"
    assert main(["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(zero), "--refine", "0", "--device", "cpu", "--quiet"]) == 0
    with np.load(zero / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].shape == obj.shape and not np.array_equal(z["object"], obj)
    assert not (zero / "metrics.json").exists()


def test_cli_refine_flag_errors(scan_and_model, capsys):
    from ptychopinn.cli import main

    base = scan_and_model
    args = ["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(base / "bad"), "--device", "cpu"]
    assert main(args + ["--refine", "2", "--refine-loss", "gauss"]) == 2
    assert "--refine-loss" in capsys.readouterr().err
    assert main(args + ["--refine-probe"]) == 2
    assert main(args + ["--refine", "-1"]) == 2
    assert main(args + ["--refine", "2", "--refine-prior", "-0.5"]) == 2
    assert "--refine-prior" in capsys.readouterr().err
    assert main(args + ["--refine", "2", "--refine-smooth", "1", "--refine-smooth-sigma", "0"]) == 2
    assert "--refine-smooth-sigma" in capsys.readouterr().err
    assert main(args + ["--refine", "2", "--refine-smooth", "nan"]) == 2
    assert "--refine-smooth" in capsys.readouterr().err
    assert not (base / "bad").exists()


def test_cli_refine_prior_on_a_scan_without_truth(scan_and_model):
    """`--refine-prior RHO` / `--refine-smooth RHO`: the data term is fitted less tightly than
    without them, the prior keeps the object closer to the network's; metrics.json records the weights."""
    from ptychopinn.cli import main

    base = scan_and_model
    objs, losses = {}, {}
    for name, extra in (("net", ["--refine", "0"]), ("free", ["--refine", "4"]), ("prior", ["--refine", "4", "--refine-prior", "3"]),
                        ("smooth", ["--refine", "4", "--refine-smooth", "3", "--refine-smooth-sigma", "1.5"])):
        out = base / f"prior_{name}"
        assert main(["reconstruct", "--model", str(base / "model"), "--data", str(base / "scan.npz"), "--out", str(out),
                     "--device", "cpu", "--quiet", *extra]) == 0
        with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
            objs[name] = z["object"]
        if name != "net":
            rec = json.loads((out / "metrics.json").read_text())["refine"]
            losses[name] = rec["loss"]
            assert rec["config"]["prior_weight"] == (3.0 if name == "prior" else 0.0)
            assert rec["config"]["smooth_weight"] == (3.0 if name == "smooth" else 0.0)
    assert losses["prior"][-1] > losses["free"][-1] and losses["smooth"][-1] > losses["free"][-1]
    core = np.abs(objs["net"]) > 0.5 * np.abs(objs["net"]).max()  # the network's well-covered pixels (the rest start at a fill value)
    dist = {k: float(np.linalg.norm((objs[k] - objs["net"])[core])) for k in ("free", "prior")}
    assert dist["prior"] < 0.5 * dist["free"], dist  # measured: 3.8 vs 17.5


def test_cli_refine_with_a_legacy_bundle_on_counts_without_truth(tmp_path):
    """The acceptance interface: `reconstruct --model wts.h5.zip --data SCAN --out OUT --refine E`
    on a scan holding integer counts and no objectGuess; `object` in reconstruction.npz is refined."""
    from ptychopinn.cli import main
    from tests.conftest import legacy_dir

    folder = legacy_dir("n64_gs1")
    with np.load(folder / "test_data.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("diffraction", "xcoords", "ycoords", "probeGuess")}
    M = 64  # a subset keeps the test short
    arrays = {k: (v[:M] if v.ndim and v.shape[0] == 256 else v) for k, v in arrays.items()}
    arrays["diffraction"] = np.rint(arrays["diffraction"].astype(np.float64) ** 2).astype(np.int32)
    np.savez(tmp_path / "scan.npz", **arrays)
    outs = {}
    for E in (0, 3):
        out = tmp_path / f"out{E}"
        assert main(["reconstruct", "--model", str(folder / "wts.h5.zip"), "--data", str(tmp_path / "scan.npz"),
                     "--out", str(out), "--refine", str(E), "--device", "cpu", "--quiet"]) == 0
        with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
            outs[E] = z["object"]
    assert outs[0].shape == outs[3].shape and not np.array_equal(outs[0], outs[3])
    loss = json.loads((tmp_path / "out3" / "metrics.json").read_text())["refine"]["loss"]
    assert len(loss) == 3 and loss[-1] < loss[0]
