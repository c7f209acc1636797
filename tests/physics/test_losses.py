"""Poisson NLL (vs the TF fixture ops/poisson_nll and torch.distributions), MAE, TV."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_op_fixture
from ptychopinn.physics import (
    complex_mae,
    mae,
    poisson_nll,
    poisson_nll_elementwise,
    realspace_loss,
    total_variation,
)


def _fixture():
    arrays, _ = load_op_fixture("poisson_nll")
    # TF layout (B, N, N, 1) -> ours (B, 1, N, N); the NLL is elementwise so only the sum matters
    to_t = lambda a: torch.from_numpy(np.moveaxis(a, -1, 1).copy())  # noqa: E731
    return to_t(arrays["y_pred"]), to_t(arrays["y_true"]), arrays


def test_elementwise_matches_tf():
    pred, obs, arrays = _fixture()
    got = poisson_nll_elementwise(pred, obs).numpy()
    ref = np.moveaxis(arrays["nll_elementwise"], -1, 1)
    assert (arrays["y_true"] == 0).any()  # the fixture exercises y = 0
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_mean_matches_tf_and_keras_reduction():
    pred, obs, arrays = _fixture()
    got = poisson_nll(pred, obs, form="mean")
    assert got.ndim == 0
    assert got.item() == pytest.approx(float(arrays["nll_mean"]), rel=1e-6)
    assert got.item() == pytest.approx(float(arrays["nll_keras_sum_over_batch_size"]), rel=1e-6)


def test_full_sum_equals_poisson_log_prob(rng):
    rate = torch.from_numpy(rng.uniform(0.2, 50.0, (5, 2, 6, 6)))
    counts = torch.from_numpy(rng.poisson(rate.numpy()).astype(np.float64))
    ref = -torch.distributions.Poisson(rate).log_prob(counts).reshape(5, -1).sum(1).mean()
    torch.testing.assert_close(poisson_nll(rate, counts, form="full_sum"), ref, rtol=1e-12, atol=1e-10)
    # same gradient direction as "mean", N²·C larger (lgamma does not depend on the rate)
    r1 = rate.clone().requires_grad_()
    r2 = rate.clone().requires_grad_()
    poisson_nll(r1, counts, "full_sum").backward()
    poisson_nll(r2, counts, "mean").backward()
    torch.testing.assert_close(r1.grad, r2.grad * 72, rtol=1e-12, atol=1e-12)


def test_minimised_at_observation(rng):
    obs = torch.from_numpy(rng.uniform(0.5, 20.0, (3, 8, 8)))
    pred = obs.clone().requires_grad_()
    for form in ("mean", "full_sum"):
        pred.grad = None
        loss = poisson_nll(pred, obs, form)
        loss.backward()
        assert torch.abs(pred.grad).max().item() < 1e-12
        for factor in (0.9, 1.1):
            assert poisson_nll(obs * factor, obs, form).item() > loss.item()


def test_gradient_finite_where_observation_is_zero():
    obs = torch.tensor([[0.0, 0.0, 3.0]])
    pred = torch.tensor([[0.5, 2.0, 1.0]], requires_grad=True)
    poisson_nll(pred, obs).backward()
    assert torch.isfinite(pred.grad).all()
    torch.testing.assert_close(pred.grad, (1 - obs / pred.detach()) / 3)
    # 0·log 0 counts as 0 in the forward value
    assert poisson_nll_elementwise(torch.zeros(1), torch.zeros(1)).item() == 0.0


@pytest.mark.parametrize("form", ["mean", "full_sum"])
def test_gradcheck(rng, form):
    pred = torch.from_numpy(rng.uniform(0.5, 5.0, (2, 3, 4))).requires_grad_()
    obs = torch.from_numpy(rng.poisson(2.0, (2, 3, 4)).astype(np.float64))
    assert torch.autograd.gradcheck(lambda p: poisson_nll(p, obs, form), (pred,))


def test_nll_rejects_bad_form_and_shapes():
    with pytest.raises(ValueError):
        poisson_nll(torch.ones(2, 2), torch.ones(2, 2), form="sum")
    with pytest.raises(ValueError):
        poisson_nll(torch.ones(2, 2), torch.ones(2, 3))


def test_mae():
    a = torch.tensor([1.0, -2.0, 3.0])
    b = torch.tensor([0.0, 0.0, 0.0])
    assert mae(a, b).item() == pytest.approx(2.0)
    z = torch.tensor([3 + 4j, 0j])
    assert mae(z, torch.zeros(2, dtype=torch.complex64)).item() == pytest.approx(2.5)


def test_complex_mae_sums_amplitude_and_phase():
    t = torch.tensor([1.0 + 0j, 2j])
    p = torch.tensor([2.0 + 0j, 1j])
    # amplitudes 1,2 vs 2,1 -> 1 ; phases 0, π/2 vs 0, π/2 -> 0
    assert complex_mae(t, p).item() == pytest.approx(1.0)


def _tv_loop(x: np.ndarray) -> float:
    total = 0.0
    for part in (x.real, x.imag):
        for idx in np.ndindex(part.shape[:-2]):
            img = part[idx]
            H, W = img.shape
            for r in range(H):
                for c in range(W):
                    if r + 1 < H:
                        total += (img[r + 1, c] - img[r, c]) ** 2
                    if c + 1 < W:
                        total += (img[r, c + 1] - img[r, c]) ** 2
    return total


def test_total_variation_matches_loop(rng):
    x = rng.standard_normal((2, 5, 6)) + 1j * rng.standard_normal((2, 5, 6))
    assert total_variation(torch.from_numpy(x)).item() == pytest.approx(_tv_loop(x), rel=1e-12)
    assert total_variation(torch.ones(3, 4, 4)).item() == 0.0
    xr = rng.standard_normal((4, 4))
    assert total_variation(torch.from_numpy(xr)).item() == pytest.approx(_tv_loop(xr + 0j), rel=1e-12)


def test_realspace_loss_combines_terms(rng):
    pred = torch.from_numpy(rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8)))
    target = torch.from_numpy(rng.standard_normal((2, 8, 8)) + 0j)
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[2:6, 2:6] = 1
    got = realspace_loss(pred, target, tv_weight=0.3, mae_weight=2.0, center_mask=mask)
    masked = pred * mask
    ref = 0.3 * total_variation(masked) + 2.0 * complex_mae(target, masked)
    torch.testing.assert_close(got, ref)
    assert realspace_loss(pred).item() == 0.0
    with pytest.raises(ValueError):
        realspace_loss(pred, None, mae_weight=1.0)


@pytest.mark.parametrize("form", ["mean", "full_sum"])
def test_shards_add_up_to_the_batch_loss_with_identical_element_gradients(form):
    """batch_size = the whole batch's size: shard losses sum to the batch loss, and every element
    receives exactly the gradient it gets when the batch is evaluated whole."""
    from ptychopinn.physics import batch_mean, mae, poisson_nll

    g = torch.Generator().manual_seed(7)
    pred = (torch.rand(7, 2, 6, 6, generator=g) * 50 + 1).requires_grad_(True)
    obs = torch.poisson(torch.rand(7, 2, 6, 6, generator=g) * 50, generator=g)
    whole = poisson_nll(pred, obs, form=form)
    (gw,) = torch.autograd.grad(whole, pred)
    assert float(whole) == pytest.approx(float(poisson_nll(pred, obs, form=form, batch_size=None)), rel=0)
    shards = [slice(0, 3), slice(3, 4), slice(4, 7)]
    parts = [poisson_nll(pred[s], obs[s], form=form, batch_size=7) for s in shards]
    (gs,) = torch.autograd.grad(sum(parts), pred)
    assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-6)
    assert torch.equal(gs, gw)
    # the same for the MAE, and batch_mean is the plain mean
    a, b = pred.detach().requires_grad_(True), obs
    (gm,) = torch.autograd.grad(mae(a, b), a)
    (gm2,) = torch.autograd.grad(sum(mae(a[s], b[s], batch_size=7) for s in shards), a)
    assert torch.equal(gm, gm2)
    assert float(batch_mean(obs)) == pytest.approx(float(obs.mean()), rel=1e-6)


# -- bad pixels: the `valid` mask ---------------------------------------------------------------
def _masked_case(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(4, 2, 8, 8, generator=g, dtype=torch.float64) * 30 + 0.5
    obs = torch.poisson(pred * 1.1, generator=g)
    valid = torch.ones(8, 8, dtype=torch.bool)
    valid[0, 0] = valid[3, 5] = valid[7, 2] = False
    return pred, obs, valid


@pytest.mark.parametrize("form", ["mean", "full_sum"])
def test_masked_nll_is_the_nll_of_the_measured_pixels(form):
    pred, obs, valid = _masked_case()
    got = poisson_nll(pred, obs, form=form, valid=valid)
    ell = (pred - torch.xlogy(obs, pred))[..., valid]  # (4, 2, n_valid)
    if form == "mean":
        expected = ell.mean()
    else:
        expected = (ell + torch.lgamma(obs[..., valid] + 1)).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
    # an all-True mask is bit-identical to no mask (and valid=None is the unchanged code path)
    everything = torch.ones(8, 8, dtype=torch.bool)
    assert torch.equal(poisson_nll(pred.float(), obs.float(), form=form, valid=everything), poisson_nll(pred.float(), obs.float(), form=form))


@pytest.mark.parametrize("form", ["mean", "full_sum"])
def test_masked_pixels_pass_exactly_zero_gradient_and_a_hot_one_changes_nothing(form):
    pred, obs, valid = _masked_case()
    p = pred.clone().requires_grad_(True)
    loss = poisson_nll(p, obs, form=form, valid=valid)
    (grad,) = torch.autograd.grad(loss, p)
    assert (grad[..., ~valid] == 0).all() and (grad[..., valid] != 0).any()
    # hot / dead / broken values at the masked pixels: same loss, same gradient, all finite
    hot_obs, odd_pred = obs.clone(), pred.clone()
    hot_obs[..., ~valid] = 1e12
    hot_obs[0, 0, 3, 5] = float("nan")
    odd_pred[..., ~valid] = 0.0  # Î = 0 where y > 0 would be -inf in the unmasked NLL
    p2 = odd_pred.clone().requires_grad_(True)
    loss2 = poisson_nll(p2, hot_obs, form=form, valid=valid)
    (grad2,) = torch.autograd.grad(loss2, p2)
    assert float(loss2) == float(loss)
    assert torch.equal(grad2, grad)
    assert not torch.isfinite(poisson_nll(odd_pred, hot_obs, form=form)).item()  # unmasked: spoiled


def test_masked_mae_and_shards():
    pred, obs, valid = _masked_case(5)
    target = obs.sqrt()
    got = mae(pred, target, valid=valid)
    torch.testing.assert_close(got, (pred - target).abs()[..., valid].mean(), rtol=1e-13, atol=0)
    p = pred.clone().requires_grad_(True)
    hot = target.clone()
    hot[..., ~valid] = float("inf")
    loss = mae(p, hot, valid=valid)
    (grad,) = torch.autograd.grad(loss, p)
    assert float(loss) == float(got) and (grad[..., ~valid] == 0).all()
    # shards of a batch (batch_size = whole) add up to the batch's masked loss, same gradients
    whole = poisson_nll(p, obs, valid=valid)
    (gw,) = torch.autograd.grad(whole, p)
    parts = [poisson_nll(p[s], obs[s], batch_size=4, valid=valid) for s in (slice(0, 1), slice(1, 4))]
    (gs,) = torch.autograd.grad(sum(parts), p)
    torch.testing.assert_close(sum(parts), whole, rtol=1e-14, atol=0)
    torch.testing.assert_close(gs, gw, rtol=1e-14, atol=0)
