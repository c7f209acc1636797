"""Generator registry (`ModelConfig.generator`), the FNO generator's spectral convolution, and
CBAM/ECA attention: shapes, properties, native save/load, and the TF-bundle / ONNX refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError


def _probe(N=64):
    g = np.random.default_rng(0)
    return (g.random((N, N)) + 1j * g.random((N, N))).astype(np.complex64)


def test_registry_names_and_unknown_generator():
    from ptychopinn.model import PtychoPINN
    from ptychopinn.model.generators import available_generators, get_generator

    assert available_generators()[:2] == ("cnn", "fno")
    assert get_generator("cnn").tf_bundle and not get_generator("fno").tf_bundle and not get_generator("fno").onnx
    with pytest.raises(ConfigError, match="unknown generator 'unet'.*cnn, fno"):
        PtychoPINN(ModelConfig(generator="unet"))
    with pytest.raises(ConfigError, match="attention"):
        ModelConfig(attention="se")
    with pytest.raises(ConfigError, match="needs generator 'cnn'"):
        ModelConfig(generator="fno", attention="eca")


@pytest.mark.parametrize("kw", [dict(generator="fno"), dict(generator="fno", probe_big=False), dict(generator="fno", pad_object=False),
                                dict(attention="cbam"), dict(attention="eca")])
def test_generators_give_the_same_heads(kw):
    from ptychopinn.model import PtychoPINN

    cfg = ModelConfig(n_filters_scale=1, gridsize=2, **kw)
    torch.manual_seed(0)
    model = PtychoPINN(cfg, probe=_probe(), intensity_scale=10.0)
    x = torch.rand(2, 4, 64, 64) * 10
    offsets = torch.randn(2, 4, 2)
    out = model(x, offsets)
    assert out.object.shape == (2, 64, 64) and out.amplitude.shape == (2, 4, 64, 64)
    patches = model.object_patches(x)
    assert patches.shape == (2, 4, 64, 64)
    if cfg.pad_object and not cfg.probe_big:  # only the central N/2 square is non-zero, as the CNN's
        assert torch.count_nonzero(patches[..., :16, :]) == 0 and torch.count_nonzero(patches[..., 16:48, 16:48]) > 0
    phase = patches.detach().angle()[patches.detach().abs() > 0]
    assert float(phase.abs().max()) <= np.pi
    out.intensity.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_spectral_conv_is_translation_equivariant_and_band_limited():
    from ptychopinn.model.generators.fno import SpectralConv2d

    torch.manual_seed(0)
    conv = SpectralConv2d(3, 2, modes=4)
    x = torch.randn(2, 3, 32, 32)
    y = conv(x)
    shifted = conv(torch.roll(x, shifts=(5, -3), dims=(2, 3)))
    torch.testing.assert_close(shifted, torch.roll(y, shifts=(5, -3), dims=(2, 3)), rtol=1e-5, atol=1e-5)
    # a plane wave above the kept modes is annihilated; one inside is passed
    r = torch.arange(32.0)
    high = torch.cos(2 * np.pi * 9 * r / 32)[None, :].expand(32, 32)
    low = torch.cos(2 * np.pi * 2 * r / 32)[None, :].expand(32, 32)
    with torch.no_grad():
        assert float(conv(high.expand(1, 3, 32, 32)).abs().max()) < 1e-5
        assert float(conv(low.expand(1, 3, 32, 32)).abs().max()) > 1e-2
    # a single mode (0, 1) with weight w multiplies that Fourier coefficient by w
    one = SpectralConv2d(1, 1, modes=2)
    with torch.no_grad():
        for p in one.parameters():
            p.zero_()
        one.pos_real[0, 0, 0, 1], one.pos_imag[0, 0, 0, 1] = 0.5, -2.0
    z = torch.randn(1, 1, 16, 16)
    Z = torch.fft.rfft2(z, norm="ortho")
    expect = torch.zeros_like(Z)
    expect[..., 0, 1] = Z[..., 0, 1] * complex(0.5, -2.0)
    torch.testing.assert_close(one(z), torch.fft.irfft2(expect, s=(16, 16), norm="ortho"), rtol=1e-5, atol=1e-6)


def test_eca_kernel_sizes():
    from ptychopinn.model.generators.attention import eca_kernel_size

    assert [eca_kernel_size(c) for c in (32, 64, 128, 256)] == [3, 3, 5, 5]


@pytest.mark.parametrize("kw", [dict(generator="fno"), dict(attention="cbam"), dict(attention="eca")])
def test_native_save_and_load_round_trip(tmp_path, kw):
    from ptychopinn.io import load_model, save_model
    from ptychopinn.model import PtychoPINN

    cfg = ModelConfig(n_filters_scale=1, **kw)
    torch.manual_seed(1)
    model = PtychoPINN(cfg, probe=_probe(), intensity_scale=5.0).eval()
    save_model(model, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["model_config"]["generator"] == cfg.generator and doc["model_config"]["attention"] == cfg.attention
    loaded = load_model(tmp_path / "m")
    assert type(loaded.encoder) is type(model.encoder)
    x, offsets = torch.rand(2, 1, 64, 64) * 5, torch.zeros(2, 1, 2)
    with torch.no_grad():
        assert torch.equal(loaded.predict_object(x, offsets), model.predict_object(x, offsets))


def test_tf_bundle_writer_refuses_other_generators(tmp_path):
    from ptychopinn.interop.tf_bundle.writer import write_tf_bundle
    from ptychopinn.model import PtychoPINN

    for kw in (dict(generator="fno"), dict(attention="cbam")):
        model = PtychoPINN(ModelConfig(n_filters_scale=1, gridsize=2, **kw), probe=_probe())
        with pytest.raises(ConfigError, match="only the 'cnn' generator"):
            write_tf_bundle(model, tmp_path / "wts.h5.zip")
        assert not (tmp_path / "wts.h5.zip").exists()


def test_onnx_export_refuses_fno_and_exports_attention(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ptychopinn.interop.onnx import export_onnx
    from ptychopinn.model import PtychoPINN

    fno = PtychoPINN(ModelConfig(n_filters_scale=1, generator="fno"), probe=_probe())
    with pytest.raises(ConfigError, match="'fno' needs FFTs"):
        export_onnx(fno, tmp_path / "fno.onnx")
    assert not (tmp_path / "fno.onnx").exists()
    torch.manual_seed(0)
    cbam = PtychoPINN(ModelConfig(n_filters_scale=1, attention="cbam"), probe=_probe())
    report = export_onnx(cbam, tmp_path / "cbam.onnx")  # verifies ONNX Runtime against torch (≤ 1e-5)
    assert report.verify_rel_error is not None and report.verify_rel_error <= 1e-5
