"""stitch / gather_patches / normalize: slow oracle, adjointness, chunking, streaming, edges, grads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.kernels import gather_patches, normalize, stitch
from tests.kernels._oracles import stitch_oracle

H, W = 19, 23


def _case(seed: int, n: int = 6, h: int = 5, w: int = 6, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(n, h, w, dtype=dtype, generator=g)
    # include positions hanging off every edge of the canvas
    positions = torch.rand(n, 2, dtype=torch.float64, generator=g) * torch.tensor([W + 6.0, H + 6.0]) - 3.0
    return patches, positions


@pytest.mark.parametrize("dtype", [torch.complex128, torch.float64])
@pytest.mark.parametrize("hw", [(5, 6), (4, 4)])
def test_matches_translate_loop_oracle(dtype, hw):
    patches, positions = _case(0, h=hw[0], w=hw[1], dtype=dtype)
    num, den = stitch(patches, positions, (H, W), chunk_size=4)
    ref_num, ref_den = stitch_oracle(patches.numpy(), positions.numpy(), H, W)
    assert num.dtype == dtype and den.dtype == torch.float64
    np.testing.assert_allclose(num.numpy(), ref_num, rtol=0, atol=1e-12)
    np.testing.assert_allclose(den.numpy(), ref_den, rtol=0, atol=1e-12)


@pytest.mark.parametrize("per_patch", [False, True])
def test_weights_match_oracle(per_patch):
    patches, positions = _case(1)
    g = torch.Generator().manual_seed(9)
    shape = patches.shape if per_patch else patches.shape[1:]
    weights = torch.rand(shape, dtype=torch.float64, generator=g)
    num, den = stitch(patches, positions, (H, W), weights=weights)
    ref_num, ref_den = stitch_oracle(patches.numpy(), positions.numpy(), H, W, weights=weights.numpy())
    np.testing.assert_allclose(num.numpy(), ref_num, rtol=0, atol=1e-12)
    np.testing.assert_allclose(den.numpy(), ref_den, rtol=0, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_gather_is_exact_adjoint(weighted):
    patches, positions = _case(2, n=9)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(H, W, dtype=torch.complex128, generator=g)
    weights = torch.rand(patches.shape[1:], dtype=torch.float64, generator=g) if weighted else None
    num, _ = stitch(patches, positions, (H, W), weights=weights, chunk_size=2)
    back = gather_patches(q, positions, patches.shape[1:], weights=weights, chunk_size=4)
    lhs = torch.vdot(num.flatten(), q.flatten())
    rhs = torch.vdot(patches.flatten(), back.flatten())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_gather_equals_pull_bilinear_sampling():
    # gather_patches(q)[i, r, c] = bilinear sample of q at (x_i + c − w//2, y_i + r − h//2)
    from ptychopinn.kernels import sample_grid

    _, positions = _case(3, n=4, h=4, w=5)
    q = torch.randn(H, W, dtype=torch.float64)
    xs = positions[:, :1] + torch.arange(5, dtype=torch.float64) - 2
    ys = positions[:, 1:] + torch.arange(4, dtype=torch.float64) - 2
    torch.testing.assert_close(gather_patches(q, positions, (4, 5)), sample_grid(q, xs, ys), rtol=0, atol=1e-13)


def test_chunking_and_streaming_into_out_are_invariant():
    patches, positions = _case(4, n=11, dtype=torch.complex64)
    num, den = stitch(patches, positions, (H, W))
    acc = (torch.zeros(H, W, dtype=torch.complex64), torch.zeros(H, W))
    for s in range(0, 11, 3):  # a caller streaming its own chunks
        res = stitch(patches[s : s + 3], positions[s : s + 3], (H, W), out=acc, chunk_size=2)
        assert res[0] is acc[0] and res[1] is acc[1]
    torch.testing.assert_close(acc[0], num, rtol=0, atol=1e-5)
    torch.testing.assert_close(acc[1], den, rtol=0, atol=1e-5)


def test_off_canvas_pixels_dropped_individually():
    # A 4x4 patch of ones centred on the canvas corner: only the 2x2 quadrant inside survives.
    patch = torch.ones(1, 4, 4)
    num, den = stitch(patch, torch.tensor([[0.0, 0.0]]), (6, 6))
    assert num.sum() == 4 and den.sum() == 4 and num[:2, :2].eq(1).all()
    # fully outside: nothing lands, nothing crashes
    num, den = stitch(patch, torch.tensor([[-10.0, 50.0]]), (6, 6))
    assert num.abs().sum() == 0 and den.sum() == 0


def test_constant_patches_normalise_to_constant():
    patches, positions = _case(5, n=30)
    patches = torch.full_like(patches, 0.5 - 2.0j)
    num, den = stitch(patches, positions, (H, W))
    img = normalize(num, den, 1e-9)
    covered = den > 1e-3
    torch.testing.assert_close(img[covered], torch.full_like(img[covered], 0.5 - 2.0j), rtol=1e-6, atol=1e-6)
    assert (den == 0).any() and img[den == 0].abs().max() == 0


def test_total_weight_is_conserved_inside_canvas():
    # Bilinear splatting keeps the total weight of a patch that lands fully inside.
    patches = torch.ones(3, 5, 4, dtype=torch.float64)
    positions = torch.tensor([[5.3, 6.7], [10.01, 8.5], [12.0, 9.25]], dtype=torch.float64)
    num, den = stitch(patches, positions, (H, W))
    assert abs(float(den.sum()) - 60.0) < 1e-12 and abs(float(num.sum()) - 60.0) < 1e-12


def test_errors():
    with pytest.raises(ValueError, match="positions"):
        stitch(torch.zeros(2, 3, 3), torch.zeros(3, 2), (5, 5))
    with pytest.raises(ValueError, match="weights"):
        stitch(torch.zeros(2, 3, 3), torch.zeros(2, 2), (5, 5), weights=torch.ones(4, 4))
    with pytest.raises(ValueError, match="dtypes"):
        stitch(torch.zeros(2, 3, 3), torch.zeros(2, 2), (5, 5), out=(torch.zeros(5, 5, dtype=torch.complex64), torch.zeros(5, 5)))


def test_gradcheck_patches_and_positions():
    g = torch.Generator().manual_seed(6)
    patches = torch.randn(3, 3, 4, dtype=torch.complex128, generator=g, requires_grad=True)
    positions = torch.tensor([[2.3, 3.6], [4.45, 1.2], [0.7, 5.85]], dtype=torch.float64, requires_grad=True)
    weights = torch.rand(3, 4, dtype=torch.float64, generator=g)

    def f(p, pos):
        num, den = stitch(p, pos, (7, 8), weights=weights, chunk_size=2)
        return num, den

    assert torch.autograd.gradcheck(f, (patches, positions))
    assert torch.autograd.gradcheck(lambda c, pos: gather_patches(c, pos, (3, 4)), (torch.randn(7, 8, dtype=torch.complex128, requires_grad=True), positions))


def test_stitch_scale_benchmark_smoke(tmp_path):
    # The benchmark script streams chunks into one canvas and cross-checks stitch against the
    # TF-style full-canvas translate-and-sum; run it tiny and check the report it writes.
    import json
    import runpy

    from conftest import REPO_ROOT

    mod = runpy.run_path(str(REPO_ROOT / "benchmarks" / "stitch_scale.py"), run_name="stitch_scale")
    out = tmp_path / "report.json"
    args = ["--patches", "70", "--size", "8", "--canvas", "40", "--chunk", "16",
            "--baseline-patches", "12", "--baseline-canvas", "32", "--json", str(out)]
    assert mod["main"](args) == 0
    report = json.loads(out.read_text())
    assert report["stitch"]["patches"] == 70 and report["stitch"]["finite"]
    assert report["peak_rss_mb"] > 0
    assert report["baseline"]["rel_l2_numerator_difference"] < 1e-5


def test_autograd_and_inplace_window_paths_agree():
    # stitch splats in place when no gradient is needed and functionally otherwise; edge
    # patches (dropped pixels) must give identical sums either way.
    patches, positions = _case(7, n=12)
    g = torch.Generator().manual_seed(8)
    weights = torch.rand(patches.shape[1:], dtype=torch.float64, generator=g)
    with torch.no_grad():
        ref = stitch(patches, positions, (H, W), weights=weights, chunk_size=5)
    live = stitch(patches.clone().requires_grad_(True), positions, (H, W), weights=weights, chunk_size=5)
    torch.testing.assert_close(live[0].detach(), ref[0], rtol=0, atol=1e-13)
    torch.testing.assert_close(live[1].detach(), ref[1], rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float32, torch.complex128])
@pytest.mark.parametrize("weighting", ["none", "shared", "per_patch"])
@pytest.mark.parametrize("chunk", [None, 3])
def test_window_path_matches_per_pixel_path(dtype, weighting, chunk):
    # Without autograd, stitch adds whole windows through an overlapping canvas view (edge
    # patches per pixel); with autograd it takes the per-pixel index path. Same sums, up to
    # float rounding, for interior and edge patches, any chunking (incl. a short last chunk).
    g = torch.Generator().manual_seed(11)
    n, h, w, Hc, Wc = 40, 7, 5, 31, 26
    patches = torch.randn(n, h, w, dtype=dtype, generator=g)
    positions = torch.rand(n, 2, dtype=torch.float64, generator=g) * torch.tensor([Wc + 8.0, Hc + 8.0]) - 4.0
    positions[:4] = torch.tensor([[10.0, 12.0], [3.0, 3.5], [Wc - 3.0, 9.25], [12.5, Hc - 4.0]])  # integer / boundary cases
    rdt = patches.real.dtype
    weights = {"none": None, "shared": torch.rand(h, w, dtype=rdt, generator=g),
               "per_patch": torch.rand(n, h, w, dtype=rdt, generator=g)}[weighting]
    with torch.no_grad():
        fast = stitch(patches, positions, (Hc, Wc), weights=weights, chunk_size=chunk)
    slow = stitch(patches.clone().requires_grad_(True), positions, (Hc, Wc), weights=weights, chunk_size=chunk)
    tol = 1e-12 if rdt == torch.float64 else 2e-6
    for a, b in zip(fast, slow):
        scale = float(b.detach().abs().max())
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=tol * scale)
    # and both against the translate-loop oracle
    ref_num, ref_den = stitch_oracle(patches.to(torch.complex128 if dtype.is_complex else torch.float64).numpy(),
                                     positions.numpy(), Hc, Wc,
                                     weights=None if weights is None else weights.double().numpy())
    np.testing.assert_allclose(fast[0].numpy(), ref_num, rtol=0, atol=tol * 10 * np.abs(ref_num).max())
    np.testing.assert_allclose(fast[1].numpy(), ref_den, rtol=0, atol=tol * 10 * np.abs(ref_den).max())


def test_canvas_smaller_than_window_matches_oracle():
    # A canvas narrower than a patch window cannot hold any window whole: every pixel goes
    # through the per-pixel path.
    patches, positions = _case(12, n=5, h=5, w=6)
    num, den = stitch(patches, positions * 0.2, (4, 9))
    ref_num, ref_den = stitch_oracle(patches.numpy(), (positions * 0.2).numpy(), 4, 9)
    np.testing.assert_allclose(num.numpy(), ref_num, rtol=0, atol=1e-12)
    np.testing.assert_allclose(den.numpy(), ref_den, rtol=0, atol=1e-12)


def test_nonfinite_values_stay_in_their_window():
    # An interior patch's NaN lands in its own (h+1)x(w+1) window only.
    patches = torch.ones(2, 4, 4)
    patches[0, 1, 2] = float("nan")
    num, den = stitch(patches, torch.tensor([[5.5, 5.5], [14.0, 14.0]]), (20, 20))
    bad = torch.isnan(num)
    assert bad.any() and bad[3:8, 3:8].sum() == bad.sum() and torch.isfinite(den).all()
