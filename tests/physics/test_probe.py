"""Probe mask, default probe and probe normalisation (spec §2.3, §4.1)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.physics import default_probe, normalize_probe, probe_mask


def _mask_loop(N: int) -> np.ndarray:
    out = np.zeros((N, N), np.float32)
    for i in range(N):
        for j in range(N):
            if ((i - N / 2 + 0.5) ** 2 + (j - N / 2 + 0.5) ** 2) ** 0.5 < N // 4:
                out[i, j] = 1
    return out


def test_probe_mask_812_pixels_at_64():
    m = probe_mask(64)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert int(m.sum()) == 812


@pytest.mark.parametrize("N", [16, 64, 128])
def test_probe_mask_matches_loop_and_is_symmetric(N):
    m = probe_mask(N)
    np.testing.assert_array_equal(m, _mask_loop(N))
    # centred on the pixel corner (N/2 - 0.5): symmetric under both flips and transposition
    np.testing.assert_array_equal(m, m[::-1, :])
    np.testing.assert_array_equal(m, m[:, ::-1])
    np.testing.assert_array_equal(m, m.T)


@pytest.mark.parametrize("N", [64, 128])
def test_default_probe_matches_scipy_recipe(N):
    from scipy.ndimage import gaussian_filter
    from scipy.signal.windows import gaussian

    line = gaussian(N, std=N / (0.7 * np.pi**2), sym=True)
    line /= line.max()
    ref = (gaussian_filter((np.outer(line, line) > 0.5).astype(float), sigma=1) + 1e-9).astype(np.complex64)
    np.testing.assert_array_equal(default_probe(N), ref)


def test_default_probe_shape_and_values():
    p = default_probe(64)
    assert p.shape == (64, 64) and p.dtype == np.complex64
    assert np.all(p.imag == 0)
    assert p.real.min() >= 1e-9 * 0.99
    assert 0.9 < p.real.max() <= 1.0 + 1e-6  # flat top of a blurred 0/1 aperture
    np.testing.assert_allclose(p, p[::-1, ::-1], atol=1e-7)
    # the flat top (threshold at 0.5 of a Gaussian window) is centred and smaller than the frame
    top = p.real > 0.5
    assert top[32, 32] and not top[0, 0] and not top[0, 32]


@pytest.mark.parametrize("probe_scale", [4.0, 10.0])
def test_normalize_probe_numpy(probe_scale):
    rng = np.random.default_rng(0)
    p = (default_probe(64) * np.exp(1j * rng.uniform(-1, 1, (64, 64)))).astype(np.complex64)
    q = normalize_probe(p, probe_scale)
    assert isinstance(q, np.ndarray) and q.dtype == np.complex64
    m = probe_mask(64)
    assert np.mean(np.abs(m * q)) == pytest.approx(1 / probe_scale, rel=1e-5)
    # only the norm uses the mask: q is P rescaled, not masked
    ratio = q / p
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)


def test_normalize_probe_torch_keeps_type_device_and_grad():
    p = torch.tensor(default_probe(64), dtype=torch.complex128, requires_grad=True)
    q = normalize_probe(p, 4.0)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.complex128
    m = torch.from_numpy(probe_mask(64)).double()
    assert torch.mean(torch.abs(m * q)).item() == pytest.approx(0.25, rel=1e-12)
    q.abs().sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad.real).all()
    np.testing.assert_allclose(q.detach().numpy(), normalize_probe(default_probe(64).astype(np.complex128), 4.0), rtol=1e-12)


def test_normalize_probe_explicit_mask():
    p = default_probe(16)
    ones = np.ones((16, 16), np.float32)
    q = normalize_probe(p, 2.0, mask=ones)
    assert np.mean(np.abs(q)) == pytest.approx(0.5, rel=1e-5)


def test_normalize_probe_rejects_bad_input():
    with pytest.raises(ValueError):
        normalize_probe(np.zeros((4, 5), np.complex64))
    with pytest.raises(ValueError):
        normalize_probe(np.zeros((8, 8), np.complex64))
    with pytest.raises(ValueError):
        normalize_probe(default_probe(8), probe_scale=0)
