"""Native model format: bitwise round trips and one-line ModelFormatError for every bad input."""
from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, config_to_dict
from ptychopinn.errors import ModelFormatError
from ptychopinn.io import load_model, read_model_info, save_model
from ptychopinn.io.model_format import CONFIG_NAME, WEIGHTS_NAME, is_model_path
from ptychopinn.io.tensor_codec import decode_state, encode_state
from ptychopinn.model import PtychoPINN

SMALL = dict(N=64, gridsize=2, n_filters_scale=1)


def _probe(rng, N=64) -> np.ndarray:
    return (rng.random((N, N)) * np.exp(1j * rng.random((N, N)))).astype(np.complex64)


def _model(rng, **overrides) -> PtychoPINN:
    cfg = ModelConfig(**{**SMALL, **overrides})
    torch.manual_seed(int(rng.integers(1 << 30)))
    return PtychoPINN(cfg, probe=_probe(rng, cfg.N), intensity_scale=float(rng.uniform(50, 500)))


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def saved(tmp_path, rng):
    model = _model(rng)
    path = save_model(model, tmp_path / "model", extra={"normalisation": {"f": 0.25}, "epochs": 3})
    return model, path


@pytest.mark.parametrize("suffix", ["model", "model.zip"])
def test_round_trip_bitwise(tmp_path, rng, suffix):
    model = _model(rng, probe_trainable=True)
    path = save_model(model, tmp_path / suffix, extra={"note": "x"})
    assert is_model_path(path)
    loaded = load_model(path)
    assert isinstance(loaded, PtychoPINN) and not loaded.training
    assert loaded.config == model.config
    _assert_same_state(model, loaded)
    assert loaded.intensity_scale == model.intensity_scale
    assert isinstance(loaded.probe, torch.nn.Parameter) and loaded.probe.dtype == torch.complex64
    assert torch.equal(loaded.probe, model.probe)
    # non-persistent buffers (rebuilt from the config) agree too, so predictions are identical
    ba, bb = dict(model.named_buffers()), dict(loaded.named_buffers())
    assert ba.keys() == bb.keys() and all(torch.equal(ba[k], bb[k]) for k in ba)
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == [
        (n, p.requires_grad) for n, p in loaded.named_parameters()
    ]
    info = read_model_info(path)
    assert info.extra == {"note": "x"} and info.format_version == 1
    assert info.complex_tensors == ("probe",) and info.tensors["probe"] == ("F32", (64, 64, 2))


def test_config_json_layout(saved):
    model, path = saved
    doc = json.loads((path / CONFIG_NAME).read_text())
    assert doc["format"] == "ptychopinn.model" and doc["format_version"] == 1
    assert doc["model_config"] == config_to_dict(model.config)
    assert doc["intensity_scale"] == pytest.approx(model.intensity_scale, rel=1e-7)
    assert doc["extra"] == {"normalisation": {"f": 0.25}, "epochs": 3}
    assert isinstance(doc["ptychopinn_version"], str)
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_model_without_probe(tmp_path, rng):
    model = PtychoPINN(ModelConfig(**SMALL), intensity_scale=7.0)
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.probe is None
    _assert_same_state(model, loaded)


def test_dtype_float64_keeps_complex_probe(saved):
    model, path = saved
    loaded = load_model(path, dtype="float64")
    assert loaded.probe.dtype == torch.complex128
    assert loaded.log_intensity_scale.dtype == torch.float64
    torch.testing.assert_close(loaded.probe, model.probe.to(torch.complex128), rtol=0, atol=0)
    w = dict(loaded.named_parameters())["encoder.blocks.0.conv1.weight"]
    assert w.dtype == torch.float64


def test_device_auto(saved):
    _, path = saved
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        loaded = load_model(path, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {p.device.type for p in loaded.state_dict().values()} == {expected}


def test_overwrite_model_but_not_foreign_directory(tmp_path, rng):
    a, b = _model(rng), _model(rng)
    path = save_model(a, tmp_path / "m")
    save_model(b, path)
    _assert_same_state(b, load_model(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a ptychopinn model"):
        save_model(a, foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"
    # a model directory that also holds other files (a training run folder) is not replaced either
    (path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="metrics.jsonl"):
        save_model(a, path)
    _assert_same_state(b, load_model(path))  # extra files beside a model do not disturb loading


def test_loading_never_unpickles(saved, monkeypatch):
    _, path = saved

    def forbidden(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    load_model(path)


# -- corrupt safetensors ------------------------------------------------------------------------
def test_pickle_junk_instead_of_safetensors(saved):
    model, path = saved
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)  # a zip-of-pickles checkpoint, as the old stack wrote
    (path / WEIGHTS_NAME).write_bytes(buf.getvalue())
    with pytest.raises(ModelFormatError) as e:
        load_model(path)
    assert WEIGHTS_NAME in _one_line_error(e)
    (path / WEIGHTS_NAME).write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFormatError, match="safetensors"):
        load_model(path)


@pytest.mark.parametrize("keep", [0, 5, 200, -100])
def test_truncated_safetensors(saved, keep):
    _, path = saved
    data = (path / WEIGHTS_NAME).read_bytes()
    (path / WEIGHTS_NAME).write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ModelFormatError) as e:
        load_model(path)
    msg = _one_line_error(e)
    assert WEIGHTS_NAME in msg


def _rewrite_tensors(path, edit):
    tensors, meta = decode_state((path / WEIGHTS_NAME).read_bytes(), "x")
    edit(tensors)
    (path / WEIGHTS_NAME).write_bytes(encode_state(tensors))


def test_missing_tensor_named(saved):
    _, path = saved
    _rewrite_tensors(path, lambda t: t.pop("decoder_phase.head1.bias"))
    with pytest.raises(ModelFormatError, match=r"missing tensor\(s\) decoder_phase\.head1\.bias"):
        load_model(path)


def test_unexpected_tensor_named(saved):
    _, path = saved
    _rewrite_tensors(path, lambda t: t.__setitem__("rogue.weight", torch.zeros(3)))
    with pytest.raises(ModelFormatError, match="rogue.weight"):
        load_model(path)


def test_shape_mismatch_named(saved):
    _, path = saved
    _rewrite_tensors(path, lambda t: t.__setitem__("encoder.blocks.0.conv1.bias", torch.zeros(5)))
    with pytest.raises(ModelFormatError, match=r"'encoder\.blocks\.0\.conv1\.bias' has shape \(5,\)"):
        load_model(path)


def test_config_gridsize_mismatch_named(saved):
    _, path = saved
    doc = json.loads((path / CONFIG_NAME).read_text())
    doc["model_config"]["gridsize"] = 1
    (path / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match="tensor 'encoder.blocks.0.conv1.weight' has shape"):
        load_model(path)


def test_nan_tensor(saved):
    _, path = saved
    _rewrite_tensors(path, lambda t: t["encoder.blocks.0.conv1.bias"].fill_(float("nan")))
    with pytest.raises(ModelFormatError, match="NaN"):
        load_model(path)


# -- bad config.json ------------------------------------------------------------------------------
def _edit_config(path, edit):
    doc = json.loads((path / CONFIG_NAME).read_text())
    edit(doc)
    (path / CONFIG_NAME).write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d["model_config"].__setitem__("use_polar", True), "unknown model_config key.*use_polar"),
        (lambda d: d.__setitem__("surprise", 1), "unknown key.*surprise"),
        (lambda d: d.__setitem__("format_version", 2), "format_version 2 is newer"),
        (lambda d: d.__setitem__("format_version", "1"), "format_version"),
        (lambda d: d.__setitem__("format", "keras"), "key 'format'"),
        (lambda d: d.pop("intensity_scale"), "missing key.*intensity_scale"),
        (lambda d: d.__setitem__("intensity_scale", -1.0), "intensity_scale"),
        (lambda d: d.__setitem__("intensity_scale", 1.0), "disagrees with tensor 'log_intensity_scale'"),
        (lambda d: d["model_config"].__setitem__("N", 48), "invalid model_config"),
        (lambda d: d["model_config"].__setitem__("gridsize", "2"), "model_config.gridsize"),
        (lambda d: d["model_config"].__setitem__("probe_big", 1), "model_config.probe_big"),
    ],
)
def test_bad_config(saved, edit, pattern):
    _, path = saved
    _edit_config(path, edit)
    with pytest.raises(ModelFormatError, match=pattern) as e:
        load_model(path)
    assert CONFIG_NAME in _one_line_error(e)


def test_config_not_json(saved):
    _, path = saved
    (path / CONFIG_NAME).write_bytes(b"\x80\x04junk")
    with pytest.raises(ModelFormatError, match="JSON"):
        load_model(path)
    (path / CONFIG_NAME).unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        load_model(path)


def test_nonexistent_and_not_a_model(tmp_path):
    with pytest.raises(ModelFormatError, match="no such"):
        load_model(tmp_path / "nope")
    f = tmp_path / "file.bin"
    f.write_bytes(b"hello")
    with pytest.raises(ModelFormatError, match="not a ptychopinn model"):
        load_model(f)


# -- zips -----------------------------------------------------------------------------------------
def _zip_from(path, target, members):
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return target


def test_zip_traversal_and_extra_members(saved, tmp_path):
    _, path = saved
    cfg, w = (path / CONFIG_NAME).read_bytes(), (path / WEIGHTS_NAME).read_bytes()
    for bad in ("../evil.txt", "/etc/passwd", "a/../../x"):
        z = _zip_from(path, tmp_path / "bad.zip", [(CONFIG_NAME, cfg), (WEIGHTS_NAME, w), (bad, b"x")])
        with pytest.raises(ModelFormatError, match="unsafe zip member") as e:
            load_model(z)
        _one_line_error(e)
    z = _zip_from(path, tmp_path / "extra.zip", [(CONFIG_NAME, cfg), (WEIGHTS_NAME, w), ("notes.txt", b"x")])
    with pytest.raises(ModelFormatError, match="unexpected zip member 'notes.txt'"):
        load_model(z)
    z = _zip_from(path, tmp_path / "missing.zip", [(CONFIG_NAME, cfg)])
    with pytest.raises(ModelFormatError, match="model.safetensors' is missing"):
        load_model(z)
    # one enclosing folder (what `zip -r model.zip model/` makes) is fine
    z = _zip_from(path, tmp_path / "folder.zip", [("model/" + CONFIG_NAME, cfg), ("model/" + WEIGHTS_NAME, w)])
    load_model(z)


def test_zip_bomb_ratio(saved, tmp_path):
    _, path = saved
    cfg = json.loads((path / CONFIG_NAME).read_text())
    cfg["extra"] = {"pad": " " * 5_000_000}
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(CONFIG_NAME, json.dumps(cfg))
        zf.writestr(WEIGHTS_NAME, (path / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ModelFormatError, match="compression ratio"):
        load_model(z)


def test_truncated_and_corrupt_zip(tmp_path, rng):
    path = save_model(_model(rng), tmp_path / "m.zip")
    data = path.read_bytes()
    (tmp_path / "trunc.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError) as e:
        load_model(tmp_path / "trunc.zip")
    _one_line_error(e)
    # flip bytes inside the (deflated) config member: CRC or inflate failure
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(CONFIG_NAME)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    corrupt = bytearray(data)
    for i in range(start + 5, start + 15):
        corrupt[i] ^= 0xFF
    (tmp_path / "corrupt.zip").write_bytes(bytes(corrupt))
    with pytest.raises(ModelFormatError) as e:
        load_model(tmp_path / "corrupt.zip")
    _one_line_error(e)


def test_save_zip_is_atomic_on_failure(tmp_path, rng):
    model = _model(rng)
    path = save_model(model, tmp_path / "m.zip")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="extra"):
        save_model(model, path, extra={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip"]
