"""Far-field diffraction vs the TF fixture (ops/pad_and_diffract), numpy, Parseval, gradients.

Tolerances (spec addendum: amplitudes are square roots, so near-zero pixels carry float32 FFT
rounding amplified by the root): amplitudes by relative L2 ≤ 1e-6 (measured ~1.1e-7);
intensities A² by max-abs ≤ 1e-6 × max(A²) (measured ~2.8e-7).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_op_fixture, rel_l2
from ptychopinn.physics import diffract, far_field_intensity, pad_and_diffract

AMP_REL_L2 = 1e-6
INT_MAX_ABS_REL = 1e-6


def _cplx(rng, *shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _numpy_oracle(psi: np.ndarray, norm: float) -> np.ndarray:
    spec = np.fft.fft2(psi.astype(np.complex128), axes=(-2, -1))
    return np.sqrt(np.fft.fftshift(np.abs(spec) ** 2 / norm, axes=(-2, -1)))


def _assert_tf_parity(amp: np.ndarray, ref: np.ndarray) -> None:
    assert rel_l2(amp, ref) < AMP_REL_L2
    ref_i = ref.astype(np.float64) ** 2
    assert np.abs(amp.astype(np.float64) ** 2 - ref_i).max() < INT_MAX_ABS_REL * ref_i.max()


def test_diffract_matches_tf_nopad():
    arrays, _ = load_op_fixture("pad_and_diffract")
    x = torch.from_numpy(arrays["input_nopad"][..., 0])  # (6, 64, 64) channels-first
    amp = diffract(x)
    assert amp.dtype == torch.float32 and amp.shape == (6, 64, 64)
    _assert_tf_parity(amp.numpy(), arrays["out_amp_nopad"][..., 0])
    padded, amp2 = pad_and_diffract(x, 64, 64, pad=False)
    torch.testing.assert_close(amp2, amp, rtol=0, atol=0)
    np.testing.assert_array_equal(padded.numpy(), arrays["out_padded_nopad"][..., 0])


def test_pad_and_diffract_matches_tf_pad():
    arrays, _ = load_op_fixture("pad_and_diffract")
    x = torch.from_numpy(arrays["input_pad"][..., 0])  # (3, 32, 32)
    padded, amp = pad_and_diffract(x, 32, 32, pad=True)
    assert padded.shape == (3, 48, 48) and amp.shape == (3, 48, 48)
    np.testing.assert_array_equal(padded.numpy(), arrays["out_padded_pad"][..., 0])
    _assert_tf_parity(amp.numpy(), arrays["out_amp_pad"][..., 0])


def test_diffract_matches_numpy_float64(rng):
    psi = _cplx(rng, 2, 3, 16, 16)
    amp = diffract(torch.from_numpy(psi))
    assert amp.dtype == torch.float64 and amp.shape == psi.shape
    np.testing.assert_allclose(amp.numpy(), _numpy_oracle(psi, 256.0), rtol=1e-12, atol=1e-12)


def test_parseval(rng):
    psi = _cplx(rng, 4, 32, 32)
    amp = diffract(torch.from_numpy(psi)).numpy()
    np.testing.assert_allclose((amp**2).sum(axis=(-2, -1)), (np.abs(psi) ** 2).sum(axis=(-2, -1)), rtol=1e-12)


def test_zero_frequency_at_centre():
    psi = torch.ones(1, 8, 8, dtype=torch.complex128)
    amp = diffract(psi)[0]
    assert amp[4, 4].item() == pytest.approx(8.0)  # sqrt(|64|² / 64)
    assert amp.sum().item() == pytest.approx(8.0)


def test_pad_normalises_by_unpadded_size(rng):
    psi = _cplx(rng, 2, 16, 16)
    padded, amp = pad_and_diffract(torch.from_numpy(psi), 16, 16, pad=True)
    np.testing.assert_allclose(amp.numpy(), _numpy_oracle(padded.numpy(), 256.0), rtol=1e-12, atol=1e-12)
    # zero padding leaves Σ|ψ|² unchanged; the DFT of the 24x24 field then carries 24²/16² more
    np.testing.assert_allclose((amp.numpy() ** 2).sum(), (np.abs(psi) ** 2).sum() * 576 / 256, rtol=1e-12)


def test_gradcheck_away_from_zeros(rng):
    psi = torch.from_numpy(_cplx(rng, 1, 6, 6)).requires_grad_()
    assert diffract(psi.detach()).min() > 1e-3
    assert torch.autograd.gradcheck(diffract, (psi,))


def test_gradient_finite_at_zero_intensity():
    # ψ = 0 gives A = 0 everywhere: forward is exactly 0 and the gradient is 0, not NaN
    psi = torch.zeros(2, 8, 8, dtype=torch.complex64, requires_grad=True)
    amp = diffract(psi)
    assert torch.all(amp == 0)
    amp.sum().backward()
    assert torch.all(torch.view_as_real(psi.grad) == 0)
    # a field whose spectrum has exact zeros: a single-frequency plane wave
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    wave = torch.exp(2j * torch.pi * (xx * 2 / 8)).to(torch.complex64).requires_grad_()
    amp = diffract(wave)
    (amp * torch.rand_like(amp)).sum().backward()
    assert torch.isfinite(torch.view_as_real(wave.grad)).all()


def test_far_field_intensity_is_amplitude_squared(rng):
    psi = torch.from_numpy(_cplx(rng, 3, 16, 16))
    torch.testing.assert_close(far_field_intensity(psi), diffract(psi) ** 2)


def test_real_input_promoted_and_shape_checked():
    amp = diffract(torch.ones(4, 4))
    assert amp.dtype == torch.float32
    with pytest.raises(ValueError):
        pad_and_diffract(torch.ones(2, 8, 8, dtype=torch.complex64), 16, 16)
