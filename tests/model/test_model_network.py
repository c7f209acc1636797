"""Behaviour of `PtychoPINN` beyond TF parity: oracle, gradients, sizes and switches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.interop.keras_layout import keras_weight_shapes
from ptychopinn.model import ModelOutput, PtychoPINN
from ptychopinn.model.functional import combine_complex
from tests.conftest import rel_l2


def _probe(N: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.hypot(*np.meshgrid(np.arange(N) - N / 2, np.arange(N) - N / 2))
    amp = np.exp(-((r / (N / 5)) ** 2))
    return (amp * np.exp(1j * rng.uniform(-0.5, 0.5, (N, N)))).astype(np.complex64)


def _model(seed: int = 0, **kw) -> PtychoPINN:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"N": 64, "n_filters_scale": 1, **kw})
    return PtychoPINN(cfg, probe=_probe(cfg.N, seed), intensity_scale=100.0)


def _inputs(cfg: ModelConfig, B: int = 2, seed: int = 0, integer: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = 100.0 * torch.rand(B, cfg.channels, cfg.N, cfg.N, generator=g)
    off = 6 * torch.rand(B, cfg.channels, 2, generator=g) - 3
    return x, (off.round() if integer else off)


# -- slow numpy oracle of the physics head (integer offsets: shifts are exact rolls) -----------
def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moves +dx columns, +dy rows, zero fill (the translation convention)."""
    out = np.zeros_like(a)
    H, W = a.shape
    out[max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = a[max(-dy, 0) : H - max(dy, 0), max(-dx, 0) : W - max(dx, 0)]
    return out


def _oracle(model: PtychoPINN, x: torch.Tensor, offsets: torch.Tensor):
    cfg = model.config
    N, P = cfg.N, cfg.padded_size
    k = (P - N) // 2
    with torch.no_grad():
        patches = model.object_patches(x).numpy().astype(np.complex128)
    o = offsets.numpy().astype(int)
    centre = np.zeros((N, N))
    centre[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = 1
    support = np.ones((N, N))
    if cfg.probe_mask:
        t = np.arange(N) - N / 2 + 0.5
        support = (np.hypot(t[:, None], t[None, :]) < N // 4).astype(float)
    probe = model.probe.numpy().astype(np.complex128)
    s = math.exp(float(model.log_intensity_scale))
    objs, amps = [], []
    for b in range(x.shape[0]):
        num = sum(_shift(np.pad(patches[b, c], k), -o[b, c, 0], -o[b, c, 1]) for c in range(cfg.channels))
        den = sum(_shift(np.pad(centre, k), -o[b, c, 0], -o[b, c, 1]) for c in range(cfg.channels)) + 1e-3
        canvas = num / den
        objs.append(canvas[k : k + N, k : k + N])
        for c in range(cfg.channels):
            patch = _shift(canvas, o[b, c, 0], o[b, c, 1])[k : k + N, k : k + N]
            psi = probe * patch * support
            amps.append(s * np.sqrt(np.abs(np.fft.fftshift(np.fft.fft2(psi))) ** 2 / N**2))
    return np.stack(objs), np.stack(amps).reshape(x.shape)


@pytest.mark.parametrize("probe_mask", [False, True])
def test_forward_matches_numpy_oracle_gs2(probe_mask):
    """Distinct patches and integer, non-zero-mean offsets: reassembly, extraction and diffraction
    follow the sign conventions (a flipped sign or swapped [x, y] fails this test)."""
    model = _model(gridsize=2, probe_mask=probe_mask, recentre_offsets=False)
    x, off = _inputs(model.config, integer=True)
    off[0, 0] = torch.tensor([3.0, -2.0])  # asymmetric: x ≠ y, not zero-mean
    with torch.no_grad():
        out = model(x, off)
    obj, amp = _oracle(model, x, off)
    assert rel_l2(out.object.numpy(), obj) < 1e-5
    assert rel_l2(out.amplitude.numpy(), amp) < 1e-5
    # the oracle is sensitive to the convention it checks
    wrong_obj, _ = _oracle(model, x, -off)
    assert rel_l2(out.object.numpy(), wrong_obj) > 1e-3
    wrong_obj, _ = _oracle(model, x, off.flip(-1))
    assert rel_l2(out.object.numpy(), wrong_obj) > 1e-3


def test_recentre_offsets():
    """K2 re-centring: a shift of a sample's offsets does not move its object; each sample is
    re-centred on its own mean offset, so its output does not depend on the rest of the batch."""
    model = _model(gridsize=2, recentre_offsets=True)
    x, off = _inputs(model.config)
    assert x.shape[0] >= 2
    shift = torch.zeros_like(off)
    shift[0] = torch.tensor([2.0, -1.0])  # only sample 0
    with torch.no_grad():
        a = model.predict_object(x, off)
        b = model.predict_object(x, off + shift)
        plain = _model(gridsize=2, recentre_offsets=False)
        c = plain.predict_object(x, off - off.mean(1, keepdim=True))
        alone = model.predict_object(x[1:], off[1:])
    assert rel_l2(b.numpy(), a.numpy()) < 1e-5
    assert rel_l2(c.numpy(), a.numpy()) < 1e-5
    assert rel_l2(alone.numpy(), a[1:].numpy()) < 1e-6
    # without re-centring the shift moves sample 0 (the check above is not vacuous)
    with torch.no_grad():
        moved = plain.predict_object(x, off + shift)
        unmoved = plain.predict_object(x, off)
    assert rel_l2(moved[0].numpy(), unmoved[0].numpy()) > 1e-3


@pytest.mark.parametrize("gridsize", [1, 2])
def test_shapes_and_dtypes(gridsize):
    model = _model(gridsize=gridsize)
    x, off = _inputs(model.config, B=3)
    out = model(x, off)
    C = gridsize**2
    assert isinstance(out, ModelOutput)
    assert out.object.shape == (3, 64, 64) and out.object.dtype == torch.complex64
    assert out.amplitude.shape == (3, C, 64, 64) and out.amplitude.dtype == torch.float32
    assert torch.equal(out.intensity, out.amplitude.square())
    assert model.predict_object(x, off).shape == (3, 64, 64)


@pytest.mark.parametrize("N", [128, 256])
def test_large_N(N):
    model = _model(N=N, gridsize=1)
    x, off = _inputs(model.config, B=1)
    with torch.no_grad():
        out = model(x, off)
    assert out.object.shape == (1, N, N) and out.amplitude.shape == (1, 1, N, N)
    assert torch.isfinite(out.amplitude).all()
    n_conv = sum(p.numel() for n, p in model.named_parameters() if n != "log_intensity_scale")
    assert n_conv == sum(int(np.prod(s)) for s in keras_weight_shapes(model.config))


def test_gradients_reach_every_parameter():
    model = _model(gridsize=2, probe_trainable=True, intensity_scale_trainable=True)
    assert isinstance(model.probe, torch.nn.Parameter)
    x, off = _inputs(model.config)
    out = model(x, off)
    loss = (out.intensity.mean() - (x**2).mean()).abs() + out.object.abs().mean()
    loss.backward()
    names = [n for n, p in model.named_parameters()]
    assert "probe" in names and "log_intensity_scale" in names
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_scale_and_probe_by_default():
    model = _model(gridsize=1)
    assert not model.log_intensity_scale.requires_grad
    assert "probe" in dict(model.named_buffers()) and "probe" not in dict(model.named_parameters())
    x, off = _inputs(model.config)
    model(x, off).intensity.mean().backward()
    assert model.log_intensity_scale.grad is None
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "log_intensity_scale")


def test_gradcheck_offsets_float64():
    """Analytic gradients w.r.t. the offsets (reassembly → extraction → diffraction) in float64.

    The conv trunk does not depend on the offsets, so its patches are computed once.
    """
    model = _model(gridsize=2).double()
    x, off = _inputs(model.config, B=1, seed=3)
    with torch.no_grad():
        patches = model.object_patches(x.double())
    assert patches.dtype == torch.complex128
    w = torch.rand(1, 4, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def f(o):
        canvas = model.object_canvas(patches, o)
        amplitude = model.diffraction_from_canvas(canvas, o)
        return (amplitude * w).sum() + canvas.real.sum() - 0.5 * canvas.imag.sum()

    assert torch.autograd.gradcheck(f, (off.double().requires_grad_(),), eps=1e-6, atol=1e-5, rtol=1e-4)


# -- decoder tail against hand-made features (spec §3 "Decoder tail", §4.5 centre mask) -------------
# The decoder's Up-blocks are replaced by a stub returning known features `feat` (B, F, N/2, N/2)
# and the heads by convolutions that copy one input channel (centre tap 1, bias 0), so the
# expected output follows from the spec by hand: x1 = act(feat[:, 0]) zero-padded by N/4 (head1
# reads channels :F-4), and with probe.big the border (outside rows/cols [N/4, 3N/4)) is
# swish(upsample×2(feat[:, F-4])) (x2_block reads channels F-4:; swish whatever `act` is).
_ACTIVATIONS = {  # numpy, from the spec's definitions
    "sigmoid": lambda t: 1 / (1 + np.exp(-t)),
    "swish": lambda t: t / (1 + np.exp(-t)),
    "softplus": lambda t: np.log1p(np.exp(t)),
    "relu": lambda t: np.maximum(t, 0),
}


class _Const(torch.nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value


class _UpCopy(torch.nn.Module):
    """Stands in for x2_block: channel 0 of its input upsampled ×2 (nearest) into `channels` channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.channels, 2 * x.shape[2], 2 * x.shape[3])
        out[:, 0] = x[:, 0].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        return out


def _copy_channel_0(conv: torch.nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[:, 0, 1, 1] = 1.0  # 'same' 3x3 conv: output c = input channel 0


def _stub_features(dec, B: int = 2, seed: int = 0) -> np.ndarray:
    """Replace `dec`'s Up-blocks by known features (B, F, N/2, N/2) and its heads by channel copies;
    channel 0 holds a ramp over [-6, 6], channel F-4 another over [-5, 5], the rest large noise
    (so reading the wrong channels changes the output)."""
    n, F_ = dec.N // 2, dec.split + 4
    rng = np.random.default_rng(seed)
    feat = 20 * rng.standard_normal((B, F_, n, n))
    ramp = np.linspace(-6, 6, n * n).reshape(n, n)
    feat[:, 0] = ramp + np.arange(B)[:, None, None]
    feat[:, F_ - 4] = np.linspace(-5, 5, n * n).reshape(n, n).T - np.arange(B)[:, None, None]
    dec.blocks = torch.nn.ModuleList([_Const(torch.from_numpy(feat.astype(np.float32)))])
    if hasattr(dec, "head1"):
        _copy_channel_0(dec.head1)
    if hasattr(dec, "head2"):
        dec.x2_block = _UpCopy(dec.head2.in_channels)
        _copy_channel_0(dec.head2)
    return feat


def _expected_tail(feat: np.ndarray, act, N: int, probe_big: bool) -> np.ndarray:
    out = np.zeros((feat.shape[0], 1, N, N))
    q = N // 4
    out[:, 0, q : 3 * q, q : 3 * q] = act(feat[:, 0])
    if probe_big:
        x2 = _ACTIVATIONS["swish"](np.kron(feat[:, feat.shape[1] - 4], np.ones((2, 2))))
        border = np.ones((N, N), bool)
        border[q : 3 * q, q : 3 * q] = False
        out[:, 0][:, border] = x2[:, border]
    return out


@pytest.mark.parametrize("name", sorted(_ACTIVATIONS))
def test_amp_activation_variants(name):
    """Each amp_activation is applied to head1's output (no probe.big: zero outside the centre)."""
    model = _model(gridsize=1, amp_activation=name, probe_big=False)
    x, off = _inputs(model.config)
    with torch.no_grad():
        assert model(x, off).amplitude.shape == (2, 1, 64, 64)  # the real network runs with it
        z = model.encoder(x / torch.exp(model.log_intensity_scale))
        feat = _stub_features(model.decoder_amp)
        got = model.decoder_amp(z).numpy()
        np.testing.assert_allclose(got, _expected_tail(feat, _ACTIVATIONS[name], 64, False), rtol=1e-6, atol=1e-6)
        assert not got[..., :16, :].any() and not got[..., :, 48:].any()
        feat = _stub_features(model.decoder_phase)
        phase = model.decoder_phase(z).numpy()
        np.testing.assert_allclose(phase, _expected_tail(feat, lambda t: math.pi * np.tanh(t), 64, False), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("which", ["amp", "phase"])
def test_probe_big_border(which):
    """probe_big: the centre square comes from act(head1) only, the border from swish(head2(x2_block))."""
    model = _model(gridsize=1)
    dec = model.decoder_amp if which == "amp" else model.decoder_phase
    act = _ACTIVATIONS["sigmoid"] if which == "amp" else (lambda t: math.pi * np.tanh(t))
    feat = _stub_features(dec)
    with torch.no_grad():
        got = dec(torch.zeros(2, 128, 8, 8)).numpy()
    np.testing.assert_allclose(got, _expected_tail(feat, act, 64, True), rtol=1e-6, atol=1e-6)
    assert (got[..., :16, :] < 0).any()  # swish, not a [0, 1] activation, on the border


def test_object_big_false():
    model = _model(gridsize=2, object_big=False)
    assert model.config.head_channels == 1
    x, off = _inputs(model.config)
    with torch.no_grad():
        patches = model.object_patches(x)
        out = model(x, off)
    assert patches.shape == (2, 1, 64, 64)
    assert torch.equal(out.object, patches[:, 0])  # pad then trim: the single patch itself
    assert out.amplitude.shape == (2, 4, 64, 64)
    # extraction at +offsets from the zero-padded patch: channel c sees the object shifted by o_c
    _, amp = _oracle_object_small(model, patches, off.round())
    with torch.no_grad():
        got = model.diffraction_from_canvas(model.object_canvas(patches, off.round()), off.round())
    assert rel_l2(got.numpy(), amp) < 1e-5


def _oracle_object_small(model, patches, off):
    N, k = 64, (model.config.padded_size - 64) // 2
    canvas = np.pad(patches[:, 0].numpy().astype(np.complex128), ((0, 0), (k, k), (k, k)))
    probe = model.probe.numpy().astype(np.complex128)
    s = math.exp(float(model.log_intensity_scale))
    o = off.numpy().astype(int)
    amps = np.empty(tuple(off.shape[:2]) + (N, N))
    for b in range(off.shape[0]):
        for c in range(off.shape[1]):
            psi = probe * _shift(canvas[b], o[b, c, 0], o[b, c, 1])[k : k + N, k : k + N]
            amps[b, c] = s * np.abs(np.fft.fftshift(np.fft.fft2(psi))) / N
    return canvas, amps


def test_pad_object_false():
    """pad_object=False: act(head2(x2_block(all features))) over the whole N×N, every head channel."""
    model = _model(gridsize=2, pad_object=False)
    assert not hasattr(model.decoder_amp, "head1")
    x, off = _inputs(model.config)
    with torch.no_grad():
        out = model(x, off)
        dec = model.decoder_phase
        feat = _stub_features(dec)
        got = dec(torch.zeros(2, 128, 8, 8)).numpy()
    expected = np.broadcast_to(math.pi * np.tanh(np.kron(feat[:, :1], np.ones((2, 2)))), (2, 4, 64, 64))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert out.object.shape == (2, 64, 64) and out.amplitude.shape == (2, 4, 64, 64)


def test_combine_modes_broadcast():
    amp = torch.rand(2, 1, 8, 8)
    phase = torch.rand(2, 4, 8, 8) - 0.5
    polar = combine_complex(amp, phase, "polar")
    additive = combine_complex(amp, phase, "additive")
    assert polar.shape == additive.shape == (2, 4, 8, 8)
    assert torch.allclose(polar.abs(), amp.expand(2, 4, 8, 8), atol=1e-6)
    assert torch.allclose(polar.angle(), phase, atol=1e-6)
    assert torch.equal(additive.real, amp.expand(2, 4, 8, 8)) and torch.equal(additive.imag, phase)
    with pytest.raises(ValueError):
        combine_complex(amp, phase, "cartesian")


def test_probe_required_only_for_forward():
    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(N=64, n_filters_scale=1, gridsize=2))
    x, off = _inputs(model.config)
    assert model.predict_object(x, off).shape == (2, 64, 64)
    with pytest.raises(ConfigError, match="probe"):
        model(x, off)
    assert "probe" not in model.state_dict()
    model.set_probe(_probe(64)[None, :, :, None])  # TF layout (1, N, N, 1) accepted
    assert model.state_dict()["probe"].shape == (64, 64)
    assert model(x, off).amplitude.shape == (2, 4, 64, 64)
    with pytest.raises(ConfigError, match=r"'probe' must be \(64, 64\)"):
        model.set_probe(np.ones((32, 32), np.complex64))
    trainable = _model(gridsize=1, probe_trainable=True)
    param = trainable.probe
    trainable.set_probe(2 * _probe(64))  # in place: an optimiser's reference stays valid
    assert trainable.probe is param and torch.equal(param.detach(), torch.from_numpy(2 * _probe(64)))
    fresh = PtychoPINN(ModelConfig(N=64, n_filters_scale=1, gridsize=2))  # no probe yet
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.probe, model.probe)
    with torch.no_grad():
        assert torch.equal(fresh(x, off).amplitude, model(x, off).amplitude)


def test_default_intensity_scale_and_state_dict():
    model = PtychoPINN(ModelConfig(N=64, n_filters_scale=1, probe_mask=True), probe=_probe(64))
    assert model.operator.mask is not None
    assert model.intensity_scale == pytest.approx(math.sqrt(1e9) / 32, rel=1e-6)
    keys = set(model.state_dict())
    assert {"probe", "log_intensity_scale", "encoder.blocks.0.conv1.weight", "decoder_phase.head1.bias"} <= keys
    assert not any("border" in k or "mask" in k or k.startswith("operator.") for k in keys)  # derived, not stored
    with pytest.raises(ConfigError, match="intensity_scale"):
        PtychoPINN(ModelConfig(), intensity_scale=0.0)


def test_input_validation():
    model = _model(gridsize=2)
    x, off = _inputs(model.config)
    with pytest.raises(DataError, match="'x' must be"):
        model(x[:, :1], off)
    with pytest.raises(DataError, match="'offsets' must be"):
        model(x, off[:, :, :1])
