"""PSNR / SSIM / MS-SSIM: identities, the skimage oracle, monotonicity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.metrics as skm  # test-only oracle (the "test" extra), never a runtime dependency

from ptychopinn.metrics import MS_SSIM_WEIGHTS, ms_ssim, psnr, ssim


def _smooth_image(rng: np.random.Generator, shape=(48, 40)) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.random(shape), 2.0)


def test_psnr_identical_is_inf(rng):
    x = rng.random((16, 16))
    assert psnr(x, x) == math.inf


def test_psnr_formula_and_default_range(rng):
    t = rng.random((20, 24)) * 3.0 + 1.0
    noise = 0.01 * rng.standard_normal(t.shape)
    p = t + noise
    R = t.max() - t.min()
    expected = 10 * math.log10(R**2 / np.mean(noise**2))
    assert psnr(p, t) == pytest.approx(expected, rel=1e-12)
    assert psnr(p, t, data_range=2.0) == pytest.approx(10 * math.log10(4.0 / np.mean(noise**2)), rel=1e-12)
    assert psnr(p, t) == pytest.approx(skm.peak_signal_noise_ratio(t, p, data_range=R), rel=1e-10)


def test_psnr_rejects_complex_and_constant(rng):
    with pytest.raises(ValueError, match="real images"):
        psnr(np.ones((4, 4), complex), np.ones((4, 4), complex))
    with pytest.raises(ValueError, match="data_range"):
        psnr(rng.random((4, 4)), np.ones((4, 4)))


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("shape", [(32, 32), (40, 27)])
def test_ssim_matches_skimage(rng, gaussian, shape):
    t = rng.random(shape)
    p = 0.7 * t + 0.3 * rng.random(shape)
    R = float(t.max() - t.min())
    ours = ssim(p, t, R, gaussian_weights=gaussian)
    ref = skm.structural_similarity(p, t, data_range=R, gaussian_weights=gaussian)
    assert abs(ours - ref) < 1e-6
    # population covariance + explicit window, as in Wang et al.
    ours2 = ssim(p, t, 1.0, win_size=9, use_sample_covariance=False)
    ref2 = skm.structural_similarity(p, t, data_range=1.0, win_size=9, use_sample_covariance=False)
    assert abs(ours2 - ref2) < 1e-6


def test_ssim_identical_is_one_and_drops_with_noise(rng):
    t = _smooth_image(rng)
    assert ssim(t, t) == pytest.approx(1.0, abs=1e-12)
    s1 = ssim(t + 0.001 * rng.standard_normal(t.shape), t)
    s2 = ssim(t + 0.01 * rng.standard_normal(t.shape), t)
    assert 1.0 > s1 > s2


def test_ssim_window_too_large():
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((5, 5)), np.arange(25.0).reshape(5, 5))


def _ms_ssim_oracle(p, t, R, levels):
    """Slow oracle: skimage SSIM at every [::2, ::2] level, weighted geometric mean."""
    w = np.asarray(MS_SSIM_WEIGHTS[:levels])
    w = w / w.sum()
    vals = []
    for _ in range(levels):
        vals.append(skm.structural_similarity(p, t, data_range=R))
        p, t = p[::2, ::2], t[::2, ::2]
    return float(np.prod(np.clip(vals, 0, None) ** w))


def test_ms_ssim_matches_oracle_and_is_monotone(rng):
    t = _smooth_image(rng, (128, 120))
    assert ms_ssim(t, t) == pytest.approx(1.0, abs=1e-12)
    R = float(t.max() - t.min())
    prev = 1.0
    for sigma in (0.002, 0.01, 0.05):
        p = t + sigma * rng.standard_normal(t.shape)
        v = ms_ssim(p, t)
        assert v == pytest.approx(_ms_ssim_oracle(p, t, R, 5), abs=1e-6)
        assert v < prev
        prev = v


def test_ms_ssim_levels(rng):
    t = _smooth_image(rng, (40, 40))  # 40, 20, 10 fit a 7x7 window; 5 does not
    p = t + 0.01 * rng.standard_normal(t.shape)
    R = float(t.max() - t.min())
    assert ms_ssim(p, t) == pytest.approx(_ms_ssim_oracle(p, t, R, 3), abs=1e-6)
    with pytest.raises(ValueError, match="too small"):
        ms_ssim(p, t, levels=5)
