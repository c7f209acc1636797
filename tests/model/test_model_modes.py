"""Multi-mode (incoherent mixed-state) probes in `PtychoPINN`: Â = sqrt(Σₖ |F(Pₖ·O)|²)·s."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError, ModelFormatError
from ptychopinn.io import load_model, save_model
from ptychopinn.model import PtychoPINN
from ptychopinn.physics import default_probe, mixed_state_probe, normalize_probe

N = 64


def _modes(K: int) -> np.ndarray:
    return mixed_state_probe(normalize_probe(default_probe(N)), K, power_ratio=0.6)


def _model(probe, seed: int = 0, **kw) -> PtychoPINN:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"N": N, "n_filters_scale": 1, "gridsize": 2, **kw})
    return PtychoPINN(cfg, probe=probe, intensity_scale=50.0)


def _inputs(cfg: ModelConfig, B: int = 2):
    g = torch.Generator().manual_seed(1)
    return 30 * torch.rand(B, cfg.channels, N, N, generator=g), 6 * torch.rand(B, cfg.channels, 2, generator=g) - 3


@pytest.mark.parametrize("kw", [{}, {"probe_mask": True, "gaussian_smoothing_sigma": 0.5}])
def test_one_mode_stack_is_the_single_probe_model(kw):
    probe = _modes(1)
    single, stacked = _model(probe[0], **kw), _model(probe, **kw)  # (N, N) and (1, N, N)
    assert stacked.probe.shape == (N, N) and stacked.n_modes == 1  # stored as before modes existed
    x, off = _inputs(single.config)
    with torch.no_grad():
        a, b = single(x, off), stacked(x, off)
    assert torch.equal(a.amplitude, b.amplitude) and torch.equal(a.intensity, b.intensity)


@pytest.mark.parametrize("kw", [{}, {"probe_mask": True, "gaussian_smoothing_sigma": 0.5}])
def test_k_modes_amplitude_is_root_of_summed_single_mode_intensities(kw):
    K = 3
    modes = _modes(K)
    mixed = _model(modes, **kw)
    assert mixed.probe.shape == (K, N, N) and mixed.n_modes == K
    x, off = _inputs(mixed.config)
    with torch.no_grad():
        out = mixed(x, off)
        summed = 0
        for k in range(K):
            one = _model(modes[k], **kw)
            one.load_state_dict({n: t for n, t in mixed.state_dict().items() if n != "probe"}, strict=False)
            summed = summed + one(x, off).intensity.double()
    np.testing.assert_allclose(out.intensity.double().numpy(), summed.numpy(), rtol=2e-5, atol=1e-6 * float(summed.max()))
    assert torch.equal(out.intensity, out.amplitude.square())


def test_trainable_modes_receive_gradients_and_set_probe_changes_k():
    model = _model(_modes(2), probe_trainable=True)
    assert isinstance(model.probe, torch.nn.Parameter) and model.probe.shape == (2, N, N)
    x, off = _inputs(model.config)
    model(x, off).intensity.sum().backward()
    g = model.probe.grad
    assert g is not None and torch.isfinite(torch.view_as_real(g)).all() and (g[1].abs() > 0).any()
    model.set_probe(_modes(3))
    assert model.n_modes == 3 and isinstance(model.probe, torch.nn.Parameter)
    with pytest.raises(ConfigError, match=r"'probe' must be \(64, 64\) or \(K, 64, 64\)"):
        model.set_probe(np.ones((2, 32, 32), np.complex64))


def test_native_format_round_trip_of_a_k_mode_model(tmp_path):
    model = _model(_modes(3)).eval()
    path = save_model(model, tmp_path / "m")
    back = load_model(path)
    assert back.probe.shape == (3, N, N) and torch.equal(back.probe, model.probe)
    x, off = _inputs(model.config)
    with torch.no_grad():
        assert torch.equal(back(x, off).amplitude, model(x, off).amplitude)
    # single-mode files keep their (N, N) layout
    one = load_model(save_model(_model(_modes(1)[0]).eval(), tmp_path / "one"))
    assert one.probe.shape == (N, N)


def test_native_format_rejects_a_probe_of_the_wrong_size(tmp_path):
    from ptychopinn.io.model_format import FORMAT_NAME, WEIGHTS_NAME
    from ptychopinn.io.tensor_codec import decode_state, encode_state

    path = save_model(_model(_modes(2)).eval(), tmp_path / "m")
    weights = path / WEIGHTS_NAME
    tensors, _ = decode_state(weights.read_bytes(), str(weights))
    tensors["probe"] = tensors["probe"][:, :32, :32].contiguous()
    weights.write_bytes(encode_state(tensors, metadata={"ptychopinn_format": FORMAT_NAME}))
    with pytest.raises(ModelFormatError, match=r"tensor 'probe' must be \(64, 64\) or \(K >= 2, 64, 64\)"):
        load_model(path)


def test_legacy_bundle_writer_refuses_modes(tmp_path):
    from ptychopinn.interop import write_tf_bundle

    target = tmp_path / "wts.h5.zip"
    with pytest.raises(ConfigError, match="3 probe modes; a legacy TF bundle holds one"):
        write_tf_bundle(_model(_modes(3)), target)
    assert not target.exists()


def test_onnx_export_of_a_k_mode_model_needs_no_probe(tmp_path):
    """predict_object does not use the probe: the exported graph is that of the object head."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from ptychopinn.interop import export_onnx

    model = _model(_modes(2)).eval()
    export_onnx(model, tmp_path / "m.onnx")  # verifies against torch (rel. L2 <= 1e-5) itself
    x, off = _inputs(model.config)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    real, imag = sess.run(["object_real", "object_imag"], {"diffraction": x.numpy(), "offsets": off.numpy()})
    with torch.no_grad():
        ref = model.predict_object(x, off).numpy()
    assert np.linalg.norm(real + 1j * imag - ref) <= 1e-5 * np.linalg.norm(ref)
