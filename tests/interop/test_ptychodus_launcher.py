"""`ptychopinn-ptychodus`: registration into the real ptychodus 1.7 `ModelCore` (headless, no Qt),
and a full ptychodus batch-mode reconstruction (`--batch reconstruct -i IN -o OUT`) through it."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="needs the ptychodus extra (CI installs it)")

from _ptychodus_helpers import mapped_positions, simulated_session, write_diffraction_file  # noqa: E402
from ptychodus.api.io import load_product, save_product  # noqa: E402

from conftest import legacy_dir  # noqa: E402
from ptychopinn.interop.ptychodus import launcher  # noqa: E402
from ptychopinn.interop.ptychodus.reconstructor import PtychoPINNReconstructor  # noqa: E402


@pytest.mark.parametrize("v", ["1.7.0", "1.7.3", "1.7.0rc1"])
def test_supported_versions(v):
    assert launcher.check_version(v) == v


@pytest.mark.parametrize("v", ["1.6.9", "1.8.0", "2.0.0", "0.9"])
def test_unsupported_versions_one_line(v):
    with pytest.raises(launcher.VersionError) as info:
        launcher.check_version(v)
    msg = str(info.value)
    assert v in msg and "1.7" in msg and "\n" not in msg


def test_main_refuses_other_version_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(launcher, "version", lambda name: "1.9.0")
    assert launcher.main(["--version"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ptychopinn-ptychodus: error:") and "1.9.0" in err


@pytest.fixture()
def core_module():
    """The real ptychodus.model.core, registered; its ProcessingCore restored afterwards."""
    core = importlib.import_module("ptychodus.model.core")
    original = core.ProcessingCore
    yield launcher.register(core)
    core.ProcessingCore = original


def test_register_into_real_model_core(core_module):
    import logging

    assert launcher.register(core_module) is core_module  # idempotent
    base = core_module.ProcessingCore.__mro__[1]
    assert not getattr(base, "_ptychopinn_registered", False)  # wrapped once, not twice
    with core_module.ModelCore(None, log_level=logging.WARNING) as model:
        param = model.processing_core.algorithm_parameter
        assert launcher.ALGORITHM_KEY in list(param.available_reconstructors())
        param.set_value("ptychopinn-pytorch_PINN")
        r = param.get_current_reconstructor()
        assert isinstance(r, PtychoPINNReconstructor)
        # the settings live in ptychodus's registry (settings.ini group PtychoPINNPyTorch)
        group = model.settings_registry[launcher.SETTINGS_GROUP]
        group.parameters()["Epochs"].set_value_from_string("3")
        group.parameters()["Crop"].set_value_from_string("16")
        assert r.settings.epochs == 3 and r.settings.crop == 16
        assert model.processing_core.processing_api.get_model_file_extension() == ".zip"


def test_batch_mode_reconstruct(tmp_path):
    """ptychodus's own batch mode, in a fresh interpreter, via the console-script entry point."""
    session = simulated_session()
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    write_diffraction_file(inp / "diffraction.h5", session)
    save_product(inp / "product.h5", session.product)
    shutil.copy(legacy_dir("n64_gs1") / "wts.h5.zip", inp / "model.zip")  # <input>/model<ext>
    (inp / "settings.ini").write_text("[Processing]\nAlgorithm = ptychopinn-pytorch_PINN\n\n[PtychoPINNPyTorch]\nDevice = cpu\n")
    code = "import sys; from ptychopinn.interop.ptychodus.launcher import main; sys.exit(main())"
    res = subprocess.run([sys.executable, "-c", code, "--batch", "reconstruct", "-i", str(inp), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    written = sorted(out.glob("product*.h5"))
    assert len(written) == 1, list(out.iterdir())  # ptychodus names it product.<progress>.h5
    back = load_product(written[0])
    np.testing.assert_array_equal(back.probe_positions.get_indexes(), session.product.probe_positions.get_indexes())
    np.testing.assert_array_equal(back.probe_positions.get_coordinates_y_m(), session.product.probe_positions.get_coordinates_y_m())
    obj = back.object_.get_layer(0)
    cols, rows = np.rint(mapped_positions(back)).astype(int).T
    assert np.all(np.abs(obj[rows, cols]) > 0)
    assert "ptychopinn" in res.stdout + res.stderr  # our loader logged through ptychodus


def test_batch_mode_train(tmp_path):
    """`--batch train -i IN -o OUT`: ptychodus hands IN and OUT to `train`; IN/train_data.npz → OUT/model.zip."""
    from ptychodus.api.io import save_ptychopinn_training_data

    from ptychopinn import io

    session = simulated_session()
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    write_diffraction_file(inp / "diffraction.h5", session)
    save_product(inp / "product.h5", session.product)
    save_ptychopinn_training_data(inp / "train_data.npz", session.reconstruct_input)  # as ptychodus exports it
    (inp / "settings.ini").write_text(
        "[Processing]\nAlgorithm = ptychopinn-pytorch_PINN\n\n[PtychoPINNPyTorch]\nDevice = cpu\nEpochs = 1\nTrainBatchSize = 8\nNumFiltersScale = 1\n"
    )
    code = "import sys; from ptychopinn.interop.ptychodus.launcher import main; sys.exit(main())"
    res = subprocess.run([sys.executable, "-c", code, "--batch", "train", "-i", str(inp), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    model = out / "model.zip"
    assert io.is_model_path(model)
    info = io.read_model_info(model)
    assert info.config.n_filters_scale == 1 and len(info.extra["training"]["history"]) == 1
