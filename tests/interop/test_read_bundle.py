"""`read_tf_bundle` on the four TF fixture bundles (eras K2 ×2, K1, S1), an S0 layout built from
S1, hostile archives, the torch/TF-free guarantee, and the legacy key mapping."""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.config import DataConfig, ModelConfig, TrainConfig
from ptychopinn.errors import ModelFormatError
from ptychopinn.interop import legacy, read_tf_bundle
from ptychopinn.interop.tf_bundle.reader import _hints
from ptychopinn.interop.tf_bundle.safezip import Limits
from tests.conftest import BUNDLE_FIXTURES, REPO_ROOT, load_bundle_fixture

ERAS = {"n64_gs1": "K2", "n64_gs2": "K2", "k1_n64_gs1": "K1", "s1_savedmodel_n64_gs1": "S1"}
S1 = "s1_savedmodel_n64_gs1"


@lru_cache(maxsize=None)
def _bundle(name: str):
    folder, _, _ = load_bundle_fixture(name)
    return read_tf_bundle(folder / "wts.h5.zip")


def _ref_weights(ref) -> list[np.ndarray]:
    n = len([k for k in ref if k.startswith("d2o_w") and k[5:].isdigit()])
    return [ref[f"d2o_w{i:03d}"] for i in range(n)]


def _assert_same(arrays, expected):
    assert len(arrays) == len(expected)
    for i, (a, e) in enumerate(zip(arrays, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape, i
        assert np.array_equal(a, e), f"weight {i} differs"


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_fixture_bundle_matches_tf_reference(name):
    _, ref, meta = load_bundle_fixture(name)
    b = _bundle(name)
    assert b.era == ERAS[name]
    assert b.manifest["models"] == ["autoencoder", "diffraction_to_obj"]
    expected = _ref_weights(ref)
    d2o = b.models["diffraction_to_obj"]
    _assert_same([a for _, a in d2o.weights], expected)
    # autoencoder weights, mapped into the d2o order (-1 = an autoencoder-only variable)
    ae = b.models["autoencoder"]
    index = ref["ae_weight_index_into_d2o"]
    _assert_same([a for _, a in ae.weights], [expected[i] for i in index if i >= 0])
    if name == S1:
        assert list(ae.extras) == ["layer_with_weights-22/w"]
        assert np.array_equal(ae.extras["layer_with_weights-22/w"], ref["ae_extra_w044"])
    else:
        assert ae.extras == {} and (index >= 0).all()
    assert b.intensity_scale == float(ref["intensity_scale"])
    assert b.intensity_scale_source == "diffraction_to_obj/params.dill"
    assert b.probe.dtype == np.complex64 and b.probe.shape == (64, 64)
    assert np.array_equal(b.probe, ref["params_probe"][..., 0])
    if name == S1:  # the checkpoint copy of the probe is the same array
        assert np.array_equal(b.probe, ref["ae_extra_w044"][0, ..., 0])


def test_weight_names_are_keras_layer_names():
    _, ref, _ = load_bundle_fixture("n64_gs1")
    names = [n for n, _ in _bundle("n64_gs1").models["diffraction_to_obj"].weights]
    assert names == [str(x) for x in ref["d2o_weight_names"]]
    # S1 takes the names from keras_metadata.pb: the same construction order gives the same names
    assert [n for n, _ in _bundle(S1).models["diffraction_to_obj"].weights] == names


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_params_match_meta(name):
    _, _, meta = load_bundle_fixture(name)
    b = _bundle(name)
    h = b.model_config_hints
    for key, value in meta["params_from_bundle"].items():
        if key == "padded_size":
            assert h["padded_size"] == value
        elif key == "bigN":  # params() adds bigN = N + (gridsize - 1) * offset
            assert h["N"] + (h["gridsize"] - 1) * h["offset"] == value
        else:
            assert b.params[key] == value, key
    assert b.params["probe"].shape == (64, 64, 1)


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_hints_inferred_from_weights_match_params(name):
    b = _bundle(name)
    full = b.model_config_hints
    assert full["inferred"] == []
    # with no params at all, the architecture is recovered from the weights and configs
    blind = _hints({}, b.models["diffraction_to_obj"])
    for key in ("N", "gridsize", "n_filters_scale", "object_big", "probe_big", "pad_object", "amp_head_channels"):
        assert blind[key] == full[key], key
    if b.era in ("K1", "K2"):
        assert blind["amp_activation"] == full["amp_activation"]
    gs = full["gridsize"]
    expected_amp = gs * gs if b.era == "K2" else 1
    assert full["amp_head_channels"] == expected_amp


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_model_config_kwargs_per_era(name):
    b = _bundle(name)
    kw = b.model_config_kwargs()
    cfg = ModelConfig(**kw)
    assert cfg.intensity_scale_trainable is False  # the bundles say True; it never had an effect
    assert cfg.amp_channels == b.model_config_hints["amp_head_channels"]
    assert cfg.padded_size == b.model_config_hints["padded_size"]
    assert cfg.combine == ("additive" if b.era == "K1" else "polar")
    assert cfg.recentre_offsets is (b.era == "K2")
    assert b.models["diffraction_to_obj"].combine_use_polar is (True if b.era == "K2" else None)


def test_path_forms(tmp_path):
    folder, _, _ = load_bundle_fixture("n64_gs1")
    expected = [a for _, a in _bundle("n64_gs1").models["diffraction_to_obj"].weights]
    for form in (folder, folder / "wts.h5"):
        b = read_tf_bundle(form)
        assert b.era == "K2"
        _assert_same([a for _, a in b.models["diffraction_to_obj"].weights], expected)
    # an unzipped bundle folder (manifest.dill + <model>/model.keras) reads the same
    with zipfile.ZipFile(folder / "wts.h5.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    b = read_tf_bundle(tmp_path / "unzipped")
    _assert_same([a for _, a in b.models["diffraction_to_obj"].weights], expected)
    with pytest.raises(ModelFormatError, match="not a PtychoPINN bundle"):
        read_tf_bundle(tmp_path / "unzipped" / "autoencoder")
    with pytest.raises(ModelFormatError, match="no such file"):
        read_tf_bundle(tmp_path / "missing" / "wts.h5")


def _extract(zip_path: Path, dest: Path, layout: str = "s0") -> None:
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            model, _, rest = info.filename.partition("/")
            if not rest:  # manifest.dill: S0 had none
                continue
            out = dest / f"wts.h5_{model}" / rest
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(info))


def test_s0_layout_and_fallbacks(tmp_path):
    folder, ref, _ = load_bundle_fixture(S1)
    _extract(folder / "wts.h5.zip", tmp_path)
    b = read_tf_bundle(tmp_path)
    assert b.era == "S0"
    assert sorted(b.manifest["models"]) == ["autoencoder", "diffraction_to_obj"]
    _assert_same([a for _, a in b.models["diffraction_to_obj"].weights], _ref_weights(ref))
    assert b.intensity_scale == float(ref["intensity_scale"])
    # without params.dill: s from model.h5, then from the constant baked into keras_metadata.pb;
    # the probe from the autoencoder checkpoint; the architecture from the weights
    for model in ("autoencoder", "diffraction_to_obj"):
        (tmp_path / f"wts.h5_{model}" / "params.dill").unlink()
    b = read_tf_bundle(tmp_path / "wts.h5")
    assert b.intensity_scale_source == "diffraction_to_obj/model.h5"
    assert b.intensity_scale == float(ref["intensity_scale"])
    for model in ("autoencoder", "diffraction_to_obj"):
        (tmp_path / f"wts.h5_{model}" / "model.h5").unlink()
    b = read_tf_bundle(tmp_path)
    assert b.intensity_scale_source == "diffraction_to_obj/keras_metadata.pb"
    # the graph constant TF baked: a float32 near sqrt(1e9)/32, 2 ulps below the params.dill value
    assert b.intensity_scale == 988.211669921875
    assert abs(b.intensity_scale / float(ref["intensity_scale"]) - 1) < 2e-7
    assert b.probe_source == "autoencoder/variables:layer_with_weights-22/w"
    assert np.array_equal(b.probe, ref["ae_extra_w044"][0, ..., 0])
    h = b.model_config_hints
    assert (h["N"], h["gridsize"], h["n_filters_scale"], h["probe_big"], h["object_big"]) == (64, 1, 1, True, True)
    assert "N" in h["inferred"] and b.params == {}


# --- hostile and broken inputs --------------------------------------------------------------------

def _write_zip(path: Path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
    return path


_MANIFEST = pickle.dumps({"models": ["diffraction_to_obj"], "version": "1.0"}, protocol=4)


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("label, members, match", [
    ("traversal", {"manifest.dill": _MANIFEST, "../evil.txt": b"x"}, r"'\.\.'"),
    ("traversal_nested", {"manifest.dill": _MANIFEST, "diffraction_to_obj/../../evil": b"x"}, r"'\.\.'"),
    ("absolute", {"manifest.dill": _MANIFEST, "/etc/evil": b"x"}, "absolute path"),
    ("drive", {"manifest.dill": _MANIFEST, "C:/evil": b"x"}, "absolute path"),
    ("backslash", {"manifest.dill": _MANIFEST, "..\\evil": b"x"}, "backslash"),
    ("symlink", {"manifest.dill": _MANIFEST, _symlink_info("diffraction_to_obj/model.keras"): b"/etc/passwd"},
     "symbolic link"),
    ("no_manifest", {"diffraction_to_obj/params.dill": b"x"}, "not a PtychoPINN bundle"),
    ("no_model", {"manifest.dill": _MANIFEST}, "neither diffraction_to_obj/model.keras nor"),
    ("bad_manifest", {"manifest.dill": pickle.dumps({"models": ["../x"]})}, "plain folder name|'\\.\\.'"),
])
def test_hostile_archives_are_refused(tmp_path, label, members, match):
    path = _write_zip(tmp_path / f"{label}.zip", members)
    with pytest.raises(ModelFormatError, match=match) as info:
        read_tf_bundle(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_zip_bombs_are_refused(tmp_path):
    # ratio: 32 MiB of zeros deflate to ~32 kB
    bomb = _write_zip(tmp_path / "bomb.zip", {"manifest.dill": _MANIFEST, "big": bytes(32 * 1024**2)},
                      zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFormatError, match="zip bomb"):
        read_tf_bundle(bomb)
    # a central directory that lies: a member declared as ~4 GiB
    raw = bytearray(_write_zip(tmp_path / "liar.zip", {"manifest.dill": _MANIFEST, "x": b"abc"}).read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="per-member limit"):
        read_tf_bundle(tmp_path / "liar.zip")
    # caps are configurable, and nested archives share the total budget
    folder, _, _ = load_bundle_fixture("n64_gs1")
    with pytest.raises(ModelFormatError, match="total size limit|exceeds the limit"):
        read_tf_bundle(folder / "wts.h5.zip", limits=Limits(max_total=4 * 1024**2))


def test_broken_files_are_one_line_errors(tmp_path):
    folder, _, _ = load_bundle_fixture("n64_gs1")
    with open(folder / "wts.h5.zip", "rb") as fh:
        head = fh.read(1 << 20)
    (tmp_path / "truncated.zip").write_bytes(head)
    (tmp_path / "random.zip").write_bytes(np.random.default_rng(0).bytes(4096))
    crc = bytearray(_write_zip(tmp_path / "crc.zip", {"manifest.dill": _MANIFEST}).read_bytes())
    crc[crc.find(b"models")] ^= 0x20  # flip a byte of the stored member: CRC-32 mismatch
    (tmp_path / "crc.zip").write_bytes(bytes(crc))
    for name, match in (("truncated.zip", "not a readable zip"), ("random.zip", "not a readable zip"),
                        ("crc.zip", "corrupt or truncated")):
        with pytest.raises(ModelFormatError, match=match) as info:
            read_tf_bundle(tmp_path / name)
        assert "\n" not in str(info.value)


def _bundle_with(tmp_path: Path, replace: dict[str, bytes]) -> Path:
    """A one-model K1 bundle copied from the fixture, with some members replaced."""
    folder, _, _ = load_bundle_fixture("k1_n64_gs1")
    members = {"manifest.dill": _MANIFEST}
    with zipfile.ZipFile(folder / "wts.h5.zip") as zf:
        for m in ("model.keras", "params.dill", "model.h5", "custom_objects.dill"):
            members[f"diffraction_to_obj/{m}"] = zf.read(f"diffraction_to_obj/{m}")
    members.update(replace)
    return _write_zip(tmp_path / "wts.h5.zip", members)


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_malicious_params_in_valid_bundle_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps({"N": 64, "probe": _Evil(f"touch {sentinel}")}, protocol=4)
    path = _bundle_with(tmp_path, {"diffraction_to_obj/params.dill": evil})
    with pytest.raises(ModelFormatError, match=r"diffraction_to_obj/params\.dill: refused to unpickle global "
                                               r"(posix|os)\.system"):
        read_tf_bundle(path)
    assert not sentinel.exists()


def test_custom_objects_dill_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(f"touch {sentinel}"), protocol=4)
    path = _bundle_with(tmp_path, {"diffraction_to_obj/custom_objects.dill": evil})
    b = read_tf_bundle(path)  # would raise "refused" if the reader touched the file
    assert b.era == "K1" and list(b.models) == ["diffraction_to_obj"]
    assert not sentinel.exists()


def test_reading_needs_neither_torch_nor_tensorflow():
    paths = [str(load_bundle_fixture(n)[0] / "wts.h5.zip") for n in BUNDLE_FIXTURES]
    script = textwrap.dedent("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "tensorflow", "keras", "tf_keras"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import ptychopinn.interop as interop
        eras = [interop.read_tf_bundle(p).era for p in sys.argv[1:]]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "keras"))
        print(" ".join(eras), heavy)
    """)
    out = subprocess.run([sys.executable, "-c", script, *paths], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == " ".join(ERAS[n] for n in BUNDLE_FIXTURES) + " []"


# --- legacy key mapping -------------------------------------------------------------------------

def test_params_from_configs_round_trip():
    mc = ModelConfig(N=128, gridsize=2, n_filters_scale=1, probe_big=False, probe_mask=True,
                     amp_activation="swish", offset=6, max_position_jitter=8)
    dc = DataConfig(gridsize=2, neighbor_count=7, n_groups=300, nphotons=1e6)
    tc = TrainConfig(epochs=12, batch_size=8, mae_weight=0.5)
    probe = (np.arange(128 * 128).reshape(128, 128) * (1 + 1j)).astype(np.complex128)
    params = legacy.params_from_configs(mc, dc, tc, 31.25, probe)
    assert set(legacy.DEFAULT_CFG) <= set(params)
    assert params["object.big"] is True and params["probe.big"] is False and params["probe.mask"] is True
    assert params["nepochs"] == 12 and params["n_groups"] == 300 and params["neighbor_count"] == 7
    assert params["probe"].shape == (128, 128, 1) and params["probe"].dtype == np.complex64
    assert params["intensity_scale"] == 31.25 and params["_version"] == "1.0"
    back = legacy.model_config_kwargs_from_params(params, "K2", amp_head_channels=4)
    rebuilt = ModelConfig(**back)
    for field in ("N", "gridsize", "n_filters_scale", "object_big", "probe_big", "probe_mask", "pad_object",
                  "amp_activation", "offset", "max_position_jitter", "gaussian_smoothing_sigma"):
        assert getattr(rebuilt, field) == getattr(mc, field), field
    assert DataConfig(**legacy.data_config_kwargs_from_params(params)) == dc
    t = legacy.train_config_kwargs_from_params(params, "K2")
    assert (t["epochs"], t["batch_size"], t["mae_weight"], t["nll_form"]) == (12, 8, 0.5, "mean")
    assert legacy.train_config_kwargs_from_params(params, "S1")["nll_form"] == "full_sum"


def test_legacy_defaults_and_errors():
    # a key a bundle lacks takes the legacy DEFAULT_CFG value (probe.big False, probe.mask True)
    kw = legacy.model_config_kwargs_from_params({"N": 64, "gridsize": 1}, "S1")
    assert (kw["probe_big"], kw["probe_mask"], kw["amp_head_channels"], kw["combine"]) == (False, True, 1, "polar")
    assert legacy.data_config_kwargs_from_params({"n_images": 77, "gridsize": 1})["n_groups"] == 77
    from ptychopinn.errors import ConfigError

    with pytest.raises(ConfigError, match="'object.big'"):
        legacy.model_config_kwargs_from_params({"object.big": "yes"}, "K2")
    with pytest.raises(ConfigError, match="era"):
        legacy.model_config_kwargs_from_params({}, "K3")
    json.dumps(kw)  # plain data
