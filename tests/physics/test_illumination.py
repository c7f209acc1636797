"""Illumination ψ = probe ⊙ patch, smoothing and mask (spec §4.3 step 6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

from ptychopinn.physics import illuminate, probe_mask
from ptychopinn.physics.illumination import gaussian_smooth3


def _cplx(rng, *shape, dtype=np.complex64):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _smooth_oracle(x: np.ndarray, sigma: float) -> np.ndarray:
    t = np.array([-1.0, 0.0, 1.0])
    w = np.exp(-(t**2) / (2 * sigma**2))
    w /= w.sum()
    # scipy "mirror" = reflect about the edge pixel without repeating it (TF REFLECT)
    def f(a):
        return correlate1d(correlate1d(a, w, axis=-1, mode="mirror"), w, axis=-2, mode="mirror")
    return f(x.real) + 1j * f(x.imag)


def test_illuminate_is_elementwise_product(rng):
    patches = _cplx(rng, 3, 2, 16, 16)
    probe = _cplx(rng, 16, 16)
    psi = illuminate(torch.from_numpy(patches), torch.from_numpy(probe))
    assert psi.shape == (3, 2, 16, 16) and psi.dtype == torch.complex64
    np.testing.assert_allclose(psi.numpy(), probe * patches, rtol=1e-6)


def test_illuminate_mask_applied(rng):
    patches = _cplx(rng, 2, 16, 16)
    probe = _cplx(rng, 16, 16)
    m = probe_mask(16)
    psi = illuminate(torch.from_numpy(patches), torch.from_numpy(probe), mask=torch.from_numpy(m))
    np.testing.assert_allclose(psi.numpy(), probe * patches * m, rtol=1e-6)
    assert np.all(psi.numpy()[:, m == 0] == 0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_smoothing_matches_scipy_mirror_oracle(rng, sigma):
    x = _cplx(rng, 2, 12, 10, dtype=np.complex128)
    got = gaussian_smooth3(torch.from_numpy(x), sigma).numpy()
    np.testing.assert_allclose(got, _smooth_oracle(x, sigma), rtol=1e-12, atol=1e-12)


def test_smoothing_then_mask_order(rng):
    patches = _cplx(rng, 1, 16, 16, dtype=np.complex128)
    probe = _cplx(rng, 16, 16, dtype=np.complex128)
    m = probe_mask(16).astype(np.float64)
    psi = illuminate(torch.from_numpy(patches), torch.from_numpy(probe), mask=torch.from_numpy(m), smoothing_sigma=1.0)
    np.testing.assert_allclose(psi.numpy(), _smooth_oracle(probe * patches, 1.0) * m, rtol=1e-12, atol=1e-12)


def test_smoothing_taps_preserve_constants_and_sigma0_is_identity(rng):
    x = torch.full((1, 8, 8), 3.0 - 2.0j, dtype=torch.complex128)
    torch.testing.assert_close(gaussian_smooth3(x, 0.7), x)
    y = torch.from_numpy(_cplx(rng, 8, 8))
    assert gaussian_smooth3(y, 0.0) is y


def test_smoothing_gradcheck(rng):
    x = torch.from_numpy(_cplx(rng, 1, 4, 5, dtype=np.complex128)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: gaussian_smooth3(a, 0.8), (x,))


def test_illuminate_rejects_a_probe_of_another_size():
    with pytest.raises(ValueError):
        illuminate(torch.zeros(2, 8, 8, dtype=torch.complex64), torch.zeros(16, 16, dtype=torch.complex64))
