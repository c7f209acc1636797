"""`ptychopinn convert` both ways, `ptychopinn reconstruct --model OLD.zip`, and bad input (exit 2,
one line, nothing written)."""
from __future__ import annotations

import numpy as np
import pytest

from ptychopinn.cli import main
from tests.conftest import load_bundle_fixture, rel_l2


def test_convert_to_native_and_back(tmp_path, capsys):
    from ptychopinn import io
    from ptychopinn.interop import load_tf_bundle, read_tf_bundle

    folder, ref, _ = load_bundle_fixture("k1_n64_gs1")
    native = tmp_path / "native"
    assert main(["convert", str(folder / "wts.h5.zip"), "-o", str(native)]) == 0
    info = io.read_model_info(native)
    prov = info.extra["converted_from"]
    assert prov["era"] == "K1" and prov["source"].endswith("wts.h5.zip")
    assert prov["intensity_scale_source"] == "diffraction_to_obj/params.dill"
    assert info.config.combine == "additive" and info.config.amp_channels == 1
    model = io.load_model(native)
    X, pos = ref["X_input_scaled"][:2], ref["positions_input"][:2]
    import torch

    with torch.no_grad():
        obj = model.predict_object(torch.from_numpy(np.moveaxis(X, -1, 1).copy()),
                                   torch.from_numpy(np.swapaxes(pos[:, 0], 1, 2).copy())).numpy()
    assert rel_l2(obj, ref["d2o_trimmed_obj"][:2, ..., 0]) <= 1e-5

    back = tmp_path / "back.wts.h5.zip"
    assert main(["convert", str(native), "--to-legacy", "-o", str(back)]) == 0
    bundle = read_tf_bundle(back)
    assert bundle.era == "K2" and bundle.models["diffraction_to_obj"].combine_use_polar is False
    again = load_tf_bundle(back)
    assert again.config.combine == "additive"  # use_polar: false → A + iφ, as upstream's layer
    assert rel_l2(again.diffraction_to_obj(X, pos), ref["d2o_trimmed_obj"][:2]) <= 1e-5
    assert "wrote" in capsys.readouterr().out


def test_reconstruct_accepts_legacy_bundle(tmp_path):
    """`ptychopinn reconstruct --model OLD.zip --stitch tf` end to end (our own grouping) on 40 positions."""
    from ptychopinn import data

    folder, _, _ = load_bundle_fixture("n64_gs1")
    scan = data.load_scan(folder / "test_data.npz", mmap=False)
    small = tmp_path / "small.npz"
    with np.load(folder / "test_data.npz", allow_pickle=False) as z:
        keep = {k: z[k] for k in z.files}
    M = keep["diffraction"].shape[0]
    for k, v in list(keep.items()):
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == M:
            keep[k] = v[:40]
    np.savez(small, **keep)
    out = tmp_path / "rec"
    rc = main(["reconstruct", "--model", str(folder / "wts.h5.zip"), "--data", str(small), "--stitch", "tf",
               "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0
    with np.load(out / "reconstruction.npz") as z:
        key = next(k for k in z.files if np.iscomplexobj(z[k]))
        obj = z[key]
    amp = np.abs(obj)
    assert obj.ndim == 2 and np.isfinite(obj).all()
    assert amp.max() > 0 and np.median(amp[amp > 0]) < 10 * np.median(np.abs(scan.object))  # a sensible object


@pytest.mark.parametrize("to_legacy", [False, True])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, to_legacy):
    junk = tmp_path / "junk.wts.h5.zip"
    junk.write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / ("out.wts.h5.zip" if to_legacy else "out")
    argv = ["convert", str(junk), "-o", str(out)] + (["--to-legacy"] if to_legacy else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptychopinn: error:") and "\n" not in err and "junk.wts.h5.zip" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.wts.h5.zip"]
