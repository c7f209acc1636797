"""The ptychography operator: mixed-state intensity Σₖ |F(Pₖ·O)|², its linear part and adjoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn import kernels
from ptychopinn.physics import (
    PtychographyOperator,
    default_probe,
    diffract,
    far_field_intensity,
    illuminate,
    mixed_state_intensity,
    mixed_state_probe,
    normalize_probe,
    probe_mask,
    ptychography_intensity,
)
from ptychopinn.physics.illumination import gaussian_smooth3, gaussian_smooth3_adjoint

N = 16


def _cplx(gen: torch.Generator, *shape: int, dtype=torch.complex128) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=gen)


def _dot(a: torch.Tensor, b: torch.Tensor) -> complex:
    """⟨a, b⟩ = Σ conj(a)·b."""
    return complex(torch.vdot(a.reshape(-1), b.reshape(-1)))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(7)


def _mask64():
    return torch.from_numpy(probe_mask(N)).double()


@pytest.mark.parametrize("sigma", [0.6, 1.5])
@pytest.mark.parametrize("H, W", [(3, 3), (7, 5), (16, 16)])
def test_smoothing_adjoint(gen, sigma, H, W):
    x = _cplx(gen, 2, H, W)
    y = _cplx(gen, 2, H, W)
    lhs = _dot(gaussian_smooth3(x, sigma), y)
    rhs = _dot(x, gaussian_smooth3_adjoint(y, sigma))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@pytest.mark.parametrize("sigma", [0.0, 0.8])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("K", [1, 3])
def test_exit_wave_adjointness_float64(gen, sigma, use_mask, K):
    op = PtychographyOperator(None, mask=probe_mask(N) if use_mask else None, smoothing_sigma=sigma).double()
    probe = _cplx(gen, K, N, N)
    x = _cplx(gen, 2, 3, N, N)
    y = _cplx(gen, 2, 3, K, N, N)
    lhs = _dot(op.exit_waves(x, probe), y)
    rhs = _dot(x, op.adjoint(y, probe))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_canvas_adjointness_float64(gen):
    """The whole linear part canvas → exit waves (bilinear extraction included)."""
    probe = _cplx(gen, 2, N, N)
    op = PtychographyOperator(probe.to(torch.complex64), smoothing_sigma=0.7)
    P = 28
    canvas = _cplx(gen, 2, P, P)
    offsets = (torch.rand(2, 4, 2, generator=gen, dtype=torch.float64) - 0.5) * 7
    y = _cplx(gen, 2, 4, 2, N, N)
    lhs = _dot(op.canvas_exit_waves(canvas, offsets, probe), y)
    rhs = _dot(canvas, op.canvas_adjoint(y, offsets, P, probe))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_gradcheck_intensity_float64(gen):
    mask = _mask64()
    patches = _cplx(gen, 2, N, N).requires_grad_()
    probe = _cplx(gen, 2, N, N).requires_grad_()
    fn = lambda o, p: mixed_state_intensity(o, p, mask=mask, smoothing_sigma=0.9)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (patches, probe))


def test_gradcheck_forward_canvas_float64(gen):
    """extract → illuminate → diffract, w.r.t. the canvas and the (sub-pixel) offsets."""
    probe = _cplx(gen, 2, N, N)
    canvas = _cplx(gen, 1, 24, 24).requires_grad_()
    offsets = torch.tensor([[[0.3, -1.7], [2.45, 0.6]]], dtype=torch.float64, requires_grad=True)
    fn = lambda c, o: ptychography_intensity(c, o, probe, smoothing_sigma=0.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (canvas, offsets))


@pytest.mark.parametrize("sigma", [0.0, 0.7])
@pytest.mark.parametrize("use_mask", [False, True])
def test_one_mode_equals_single_probe_model_exactly(gen, sigma, use_mask):
    """K = 1 (probe (N, N) or (1, N, N)) is bit for bit `diffract(illuminate(extract(O), P))²`."""
    mask = torch.from_numpy(probe_mask(N)) if use_mask else None
    probe = torch.from_numpy(normalize_probe(default_probe(N)))
    canvas = _cplx(gen, 3, 40, 40, dtype=torch.complex64)
    offsets = (torch.rand(3, 4, 2, generator=gen) - 0.5) * 9
    amp_today = diffract(illuminate(kernels.extract_patches(canvas, offsets, N), probe, mask=mask, smoothing_sigma=sigma))
    for p in (probe, probe[None]):
        op = PtychographyOperator(p, mask=mask, smoothing_sigma=sigma)
        assert op.probe.shape == (1, N, N)
        assert torch.equal(op.amplitude(canvas, offsets), amp_today)
        intensity = op(canvas, offsets)
        assert intensity.shape == (3, 4, N, N) and intensity.dtype == torch.float32
        assert torch.equal(intensity, far_field_intensity(illuminate(kernels.extract_patches(canvas, offsets, N), probe, mask=mask, smoothing_sigma=sigma)))


def test_modes_add_incoherently(gen):
    """Σₖ modes ≡ the sum of K single-mode intensities, and only the mixed state matters:
    any unitary mixing of the modes gives the same intensity (equal-power modes included)."""
    mask = _mask64()
    K = 3
    probe = _cplx(gen, K, N, N)
    patches = _cplx(gen, 5, N, N)
    mixed = mixed_state_intensity(patches, probe, mask=mask, smoothing_sigma=0.4)
    singles = sum(mixed_state_intensity(patches, probe[k], mask=mask, smoothing_sigma=0.4) for k in range(K))
    torch.testing.assert_close(mixed, singles, rtol=1e-12, atol=0)
    # equal-power modes: orthonormalise, then mix with a random unitary U
    q, _ = torch.linalg.qr(probe.reshape(K, -1).T)
    equal = q.T.reshape(K, N, N) * 3.0
    assert torch.allclose((equal.abs() ** 2).sum(dim=(-2, -1)), torch.full((K,), 9.0, dtype=torch.float64))
    U, _ = torch.linalg.qr(_cplx(gen, K, K))
    rotated = torch.einsum("kj,jxy->kxy", U, equal)
    torch.testing.assert_close(
        mixed_state_intensity(patches, rotated, mask=mask),
        mixed_state_intensity(patches, equal, mask=mask),
        rtol=1e-10, atol=1e-12,
    )


def test_parseval_energy(gen):
    """Σ_pixels I = Σₖ Σ_pixels |Pₖ·O|² for every pattern (no mask, no smoothing)."""
    probe = _cplx(gen, 4, N, N)
    patches = _cplx(gen, 2, 3, N, N)
    intensity = mixed_state_intensity(patches, probe)
    energy = (probe.abs() ** 2 * patches.abs().unsqueeze(-3) ** 2).sum(dim=(-3, -2, -1))
    torch.testing.assert_close(intensity.sum(dim=(-2, -1)), energy, rtol=1e-12, atol=0)
    assert (intensity >= 0).all()


def test_module_state_and_probe_override(gen):
    probe = default_probe(N)
    op = PtychographyOperator(probe, mask=probe_mask(N), smoothing_sigma=0.5)
    assert set(op.state_dict()) == {"probe"}  # the mask is derived, not stored
    assert op.probe.dtype == torch.complex64 and op.n_modes == 1 and len(list(op.parameters())) == 0
    trainable = PtychographyOperator(np.stack([probe, 0.5 * probe]), trainable=True)
    assert isinstance(trainable.probe, torch.nn.Parameter) and trainable.n_modes == 2
    canvas = _cplx(gen, 1, 24, 24, dtype=torch.complex64)
    offsets = torch.zeros(1, 2, 2)
    trainable(canvas, offsets).sum().backward()
    assert trainable.probe.grad is not None and torch.isfinite(torch.view_as_real(trainable.probe.grad)).all()
    # a probe passed to the call overrides the stored one
    other = _cplx(gen, 2, N, N, dtype=torch.complex64)
    torch.testing.assert_close(op(canvas, offsets, probe=other), PtychographyOperator(other, mask=probe_mask(N), smoothing_sigma=0.5)(canvas, offsets))
    with pytest.raises(ValueError, match="no probe"):
        PtychographyOperator()(canvas, offsets)
    with pytest.raises(ValueError, match="probe"):
        PtychographyOperator(np.zeros((2, 3, N, N), np.complex64))
    with pytest.raises(ValueError, match="mask"):
        PtychographyOperator(probe, mask=np.ones((4, 4)))


def test_mixed_state_probe_modes_are_orthogonal_with_the_stated_powers():
    P = normalize_probe(default_probe(64))
    modes = mixed_state_probe(P, 4, power_ratio=0.5)
    assert modes.shape == (4, 64, 64) and modes.dtype == np.complex64
    assert np.array_equal(modes[0], P)
    m = modes.reshape(4, -1).astype(np.complex128)
    gram = m.conj() @ m.T
    power = np.diag(gram).real
    np.testing.assert_allclose(power / power[0], [1, 0.5, 0.25, 0.125], rtol=1e-5)
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() <= 1e-5 * power[0]
    assert np.array_equal(mixed_state_probe(P, 1), P[None])
    with pytest.raises(ValueError, match="n_modes"):
        mixed_state_probe(P, 0)
