"""Model-loader / stitcher registries: native built in, interop's plugins found through entry points."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError, ModelFormatError
from ptychopinn.io import loaders, save_model
from ptychopinn.io.plugins import Registry
from ptychopinn.model import PtychoPINN
from ptychopinn.reconstruct import stitchers

LEGACY = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "legacy_tf" / "n64_gs1" / "wts.h5.zip"


def _model() -> PtychoPINN:
    torch.manual_seed(0)
    probe = np.ones((64, 64), np.complex64)
    return PtychoPINN(ModelConfig(N=64, gridsize=1, n_filters_scale=1), probe=probe, intensity_scale=10.0)


def test_native_dispatch_returns_module_and_extra(tmp_path):
    path = save_model(_model(), tmp_path / "m.zip", extra={"epochs": 2})
    assert loaders.find_model_loader(path).name == "native"
    assert loaders.is_loadable_model(path)
    module, extra = loaders.load_any_model(path, torch.device("cpu"))
    assert isinstance(module, PtychoPINN) and extra["epochs"] == 2


def test_unknown_and_missing_paths_are_one_line_model_format_errors(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        loaders.load_any_model(tmp_path / "nope", torch.device("cpu"))
    (tmp_path / "junk.bin").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="not a ptychopinn model in any known format.*native") as exc:
        loaders.load_any_model(tmp_path / "junk.bin", torch.device("cpu"))
    assert "\n" not in str(exc.value)
    assert not loaders.is_loadable_model(tmp_path / "junk.bin")


def test_registered_loader_is_dispatched_to(tmp_path):
    seen = []

    def load(path, device):
        seen.append((path, device))
        return _model(), {"fake": True}

    loaders.register_model_loader("fake", lambda p: p.suffix == ".fake", load, describe="a .fake file")
    try:
        target = tmp_path / "m.fake"
        target.write_bytes(b"")
        module, extra = loaders.load_any_model(target, torch.device("cpu"))
        assert extra == {"fake": True} and seen == [(target, torch.device("cpu"))]
        with pytest.raises(ValueError, match="already registered"):
            loaders.register_model_loader("fake", lambda p: False, load)
    finally:
        loaders.unregister_model_loader("fake")
    assert "fake" not in [lo.name for lo in loaders.model_loaders()]
    with pytest.raises(ValueError):
        loaders.unregister_model_loader("native")


def test_interop_plugins_come_from_entry_points():
    # compared by name, not identity: other tests may drop ptychopinn modules from sys.modules
    tf_bundle = [lo for lo in loaders.model_loaders() if lo.name == "tf_bundle"]
    assert len(tf_bundle) == 1 and tf_bundle[0].load.__module__ == "ptychopinn.interop.plugins"
    fn = stitchers.get_stitcher("tf")
    assert (fn.__module__, fn.__name__) == ("ptychopinn.interop.tf_compat", "reassemble_position")
    with pytest.raises(ConfigError, match="no stitcher registered"):
        stitchers.get_stitcher("poisson")


@pytest.mark.skipif(not LEGACY.is_file(), reason="shared legacy fixture missing")
def test_legacy_bundle_through_the_registry():
    assert loaders.find_model_loader(LEGACY).name == "tf_bundle"
    module, extra = loaders.load_any_model(LEGACY, torch.device("cpu"))
    assert extra == {"legacy_bundle": str(LEGACY)} and int(module.config.N) == 64


def test_registry_skips_entry_points_that_fail_to_import(monkeypatch):
    eps = [EntryPoint("ok", "ptychopinn.errors:DataError", "g"), EntryPoint("bad", "no_such_module_xyz:thing", "g")]
    monkeypatch.setattr("ptychopinn.io.plugins.entry_points", lambda group: eps if group == "g" else [])
    reg: Registry[object] = Registry("g")
    reg.register("code", 1)
    from ptychopinn.errors import DataError

    assert reg.items(discover=False) == [("code", 1)]
    assert reg.items() == [("code", 1), ("ok", DataError)]
    assert reg.get("bad") is None and "no_such_module_xyz" in reg.broken()["bad"]


def test_loading_a_native_model_never_imports_interop(tmp_path):
    path = save_model(_model(), tmp_path / "m")
    code = ("import sys, torch; from ptychopinn.reconstruct.core import load_any_model; "
            f"load_any_model({str(path)!r}, torch.device('cpu')); "
            "print(sorted(m for m in sys.modules if m.startswith('ptychopinn.interop')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_interop_register_is_idempotent_with_entry_points():
    from ptychopinn.interop import plugins

    loaders.model_loaders()  # entry points read first
    plugins.register()
    plugins.register()
    assert [lo.name for lo in loaders.model_loaders()].count("tf_bundle") == 1


def test_load_any_model_of_a_module_returns_the_callers_object():
    """Documented: a module passed in is moved with `.to(device)` and returned itself (no copy)."""
    from ptychopinn.reconstruct.core import load_any_model

    m = _model()
    m.extra_info = {"note": 1}
    out, extra = load_any_model(m, torch.device("cpu"))
    assert out is m and extra == {"note": 1}


def test_entry_points_are_installed():
    """pyproject.toml's plugin entry points exist in the installed metadata (re-run `pip install -e .`
    after changing them) and name loadable objects."""
    from importlib.metadata import entry_points

    loaders_ep = {ep.name: ep for ep in entry_points(group=loaders.ENTRY_POINT_GROUP)}
    stitch_ep = {ep.name: ep for ep in entry_points(group=stitchers.ENTRY_POINT_GROUP)}
    assert loaders_ep["tf_bundle"].value == "ptychopinn.interop.plugins:TF_BUNDLE_LOADER"
    assert stitch_ep["tf"].value == "ptychopinn.interop.tf_compat:reassemble_position"
    assert loaders_ep["tf_bundle"].load().name == "tf_bundle" and callable(stitch_ep["tf"].load())
