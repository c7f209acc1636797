"""FRC, alignment and `evaluate`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from ptychopinn.metrics import (
    align,
    evaluate,
    fit_alignment,
    frc,
    frc_resolution,
    trim_border,
    wrap_phase,
)


def _object(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    amp = 0.5 + 0.5 * ndimage.gaussian_filter(rng.random((n, n)), 2.0)
    amp = amp / amp.max()
    phase = 2.5 * (ndimage.gaussian_filter(rng.random((n, n)), 3.0) - 0.5) * 6
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def _frc_oracle(a, b):
    """Slow loop over pixels: ring sums in Python."""
    H, W = a.shape
    n = min(H, W)
    F1, F2 = np.fft.fft2(a), np.fft.fft2(b)
    K = n // 2 + 1
    num, p1, p2 = np.zeros(K), np.zeros(K), np.zeros(K)
    for r in range(H):
        for c in range(W):
            fy = r / H if r < (H + 1) // 2 else (r - H) / H
            fx = c / W if c < (W + 1) // 2 else (c - W) / W
            k = int(round(math.hypot(fx, fy) * n))
            if k < K:
                num[k] += (F1[r, c] * np.conj(F2[r, c])).real
                p1[k] += abs(F1[r, c]) ** 2
                p2[k] += abs(F2[r, c]) ** 2
    return num / np.sqrt(p1 * p2)


def test_frc_matches_oracle(rng):
    a = rng.random((24, 20))
    b = a + rng.standard_normal(a.shape)
    f, curve = frc(a, b)
    assert f.shape == curve.shape == (11,)
    assert f[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(curve, _frc_oracle(a, b), rtol=1e-10, atol=1e-12)


def test_frc_identical_is_one(rng):
    a = rng.random((32, 32))
    _, curve = frc(a, a)
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)
    res = frc_resolution(curve)
    assert not res.crossed and res.frequency == pytest.approx(0.5) and res.resolution_px == pytest.approx(2.0)


def test_frc_of_independent_noise_is_small(rng):
    a = rng.standard_normal((128, 128))
    b = rng.standard_normal((128, 128))
    f, curve = frc(a, b)
    # independent noise: ring k averages ~πk independent Fourier pairs, so FRC_k ~ N(0, 1/(πk))
    assert np.sqrt(np.mean(curve[32:] ** 2)) < 0.1
    assert abs(np.mean(curve[32:])) < 0.03
    res = frc_resolution(curve, frequencies=f)
    assert res.crossed and res.frequency <= 4 / 128


def test_frc_resolution_interpolates():
    curve = np.array([1.0, 0.9, 0.6, 0.4, 0.1, 0.05])
    f = np.linspace(0, 0.5, 6)
    r50 = frc_resolution(curve, 0.5, frequencies=f)
    assert r50.crossed
    assert r50.frequency == pytest.approx(0.2 + 0.5 * 0.1)  # halfway between 0.6 and 0.4
    assert r50.resolution_px == pytest.approx(1 / 0.25)
    r7 = frc_resolution(curve)
    assert r7.frequency == pytest.approx(0.3 + (0.4 - 1 / 7) / 0.3 * 0.1)


def test_frc_of_blurred_copy_resolves_less(rng):
    a = rng.standard_normal((64, 64))
    sharp = a + 0.3 * rng.standard_normal(a.shape)
    blurred = ndimage.gaussian_filter(a, 2.0) + 0.3 * rng.standard_normal(a.shape)
    _, c_sharp = frc(sharp, a)
    _, c_blur = frc(blurred, a)
    assert frc_resolution(c_blur, 0.5).frequency < frc_resolution(c_sharp, 0.5).frequency


def test_alignment_recovers_known_alpha(rng):
    truth = _object(rng, 32)
    alpha = 0.37 * np.exp(1j * 2.1)
    rec = truth / alpha
    al = fit_alignment(rec, truth)
    assert al.scale == pytest.approx(abs(alpha), rel=1e-6)
    assert al.phase_offset == pytest.approx(2.1, abs=1e-6)
    np.testing.assert_allclose(align(rec, truth), truth, atol=1e-6)
    # trimming returns the aligned interior
    np.testing.assert_allclose(align(rec, truth, trim=3), trim_border(truth, 3), atol=1e-6)


def test_alignment_is_least_squares_for_phase(rng):
    truth = _object(rng, 24).astype(np.complex128)
    rec = truth * np.exp(-0.4j) + 0.05 * (rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape))
    al = fit_alignment(rec, truth)
    alpha_ls = np.vdot(rec, truth) / np.vdot(rec, rec)  # argmin ‖α r − t‖
    assert al.phase_offset == pytest.approx(np.angle(alpha_ls), abs=1e-12)
    # no other global phase does better
    for d in (-1e-3, 1e-3):
        rot = abs(al.scale) * np.exp(1j * (al.phase_offset + d)) * rec
        assert np.linalg.norm(rot - truth) > np.linalg.norm(al.scale * np.exp(1j * al.phase_offset) * rec - truth)


def test_alignment_recovers_phase_ramp(rng):
    truth = _object(rng, 48).astype(np.complex128)
    H, W = truth.shape
    y, x = np.mgrid[:H, :W].astype(float)
    x -= (W - 1) / 2
    y -= (H - 1) / 2
    kx, ky = 0.037, -0.0213  # cycles/pixel: several wraps across the image
    rec = truth * np.exp(-1j * (0.8 + 2 * np.pi * (kx * x + ky * y))) / 1.7
    al = fit_alignment(rec, truth, phase_ramp=True)
    assert al.ramp_x == pytest.approx(kx, abs=1e-9)
    assert al.ramp_y == pytest.approx(ky, abs=1e-9)
    assert al.phase_offset == pytest.approx(0.8, abs=1e-8)
    assert al.scale == pytest.approx(1.7, rel=1e-9)
    np.testing.assert_allclose(align(rec, truth, phase_ramp=True), truth, atol=1e-8)


def test_wrap_phase_range():
    phi = np.array([-np.pi, np.pi, 3 * np.pi, -3 * np.pi + 1e-3, 0.5, 7.0])
    w = wrap_phase(phi)
    assert np.all(w > -np.pi) and np.all(w <= np.pi)
    np.testing.assert_allclose(np.exp(1j * w), np.exp(1j * phi), atol=1e-12)
    assert w[0] == pytest.approx(np.pi)


def test_evaluate_identical_and_json(rng):
    truth = _object(rng, 64)
    rec = truth * (2.0 * np.exp(-1.3j))  # global factor only
    rep = evaluate(rec, truth)
    json.loads(json.dumps(rep))
    assert rep["alignment"]["scale"] == pytest.approx(0.5, rel=1e-5)
    assert rep["alignment"]["phase_offset"] == pytest.approx(1.3, abs=1e-5)
    for part in ("amplitude", "phase"):
        m = rep[part]
        assert m["psnr"] > 90
        assert m["ssim"] == pytest.approx(1.0, abs=1e-6)
        assert m["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
        assert m["mae"] < 1e-5 and m["mse"] < 1e-10
        assert m["frc"]["frc1over7"] == pytest.approx(0.5)
        assert m["frc"]["resolution_px"] == pytest.approx(2.0)
        assert set(m) == {"psnr", "ssim", "ms_ssim", "ms_ssim_levels", "frc", "mae", "mse"}
    assert rep["amplitude"]["ms_ssim_levels"] == 4  # 60, 30, 15, 8 fit a 7x7 window; 4 does not


def test_evaluate_handles_phase_wrap(rng):
    """A truth whose phase sits at ±π: tiny errors across the wrap must stay tiny."""
    n = 32
    amp = np.ones((n, n))
    phase = np.pi - 1e-3 + 2e-3 * rng.random((n, n))  # straddles the ±π cut
    truth = amp * np.exp(1j * phase)
    rec = truth * np.exp(1j * 1e-4 * rng.standard_normal((n, n)))
    rep = evaluate(rec, truth, trim=0)
    assert rep["phase"]["mae"] < 2e-4  # unwrapped difference would be ~π


def test_evaluate_degrades_with_noise(rng):
    truth = _object(rng, 64)
    noise = rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape)
    good = evaluate(truth + 0.01 * noise, truth)
    bad = evaluate(truth + 0.2 * noise, truth)
    for part in ("amplitude", "phase"):
        assert good[part]["psnr"] > bad[part]["psnr"]
        assert good[part]["ssim"] > bad[part]["ssim"]
        assert good[part]["ms_ssim"] > bad[part]["ms_ssim"]
        assert good[part]["mse"] < bad[part]["mse"]
        assert good[part]["frc"]["frc50"] >= bad[part]["frc"]["frc50"]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        evaluate(np.ones((8, 8), complex), np.ones((8, 9), complex), trim=0)
