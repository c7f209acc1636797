"""The restricted unpickler: real params.dill files load as data; hostile pickles execute nothing."""
from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from ptychopinn.errors import ModelFormatError
from ptychopinn.interop.tf_bundle.unpickle import ALLOWED, load_manifest, load_params, safe_loads
from tests.conftest import BUNDLE_FIXTURES, load_bundle_fixture


def _fixture_member(name: str, member: str) -> bytes:
    folder, _, _ = load_bundle_fixture(name)
    with zipfile.ZipFile(folder / "wts.h5.zip") as zf:
        return zf.read(member)


@pytest.mark.parametrize("name", BUNDLE_FIXTURES)
def test_real_params_dill_loads_as_plain_data(name):
    _, ref, meta = load_bundle_fixture(name)
    params = load_params(_fixture_member(name, "diffraction_to_obj/params.dill"), "params.dill")
    probe = params["probe"]
    assert isinstance(probe, np.ndarray) and probe.dtype == np.complex64 and probe.shape == (64, 64, 1)
    assert np.array_equal(probe, ref["params_probe"])
    assert isinstance(params["intensity_scale"], float)  # numpy scalars become Python scalars
    assert params["intensity_scale"] == float(ref["intensity_scale"])
    for key, value in meta["params_from_bundle"].items():
        if key in params:
            assert params[key] == value, key
    manifest = load_manifest(_fixture_member(name, "manifest.dill"), "manifest.dill")
    assert manifest == {"models": ["autoencoder", "diffraction_to_obj"], "version": "1.0"}


class _Evil:
    """Pickles as a call of an arbitrary global (the classic __reduce__ attack)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_pickles(sentinel) -> dict[str, bytes]:
    import builtins
    import os
    import subprocess

    cmd = f"touch {sentinel}"
    code = f"open({str(sentinel)!r}, 'w').write('x')"
    out = {}
    for proto in (0, 2, 4, 5):
        out[f"os.system/p{proto}"] = pickle.dumps({"probe": _Evil(os.system, cmd)}, protocol=proto)
    out["eval"] = pickle.dumps({"x": _Evil(builtins.eval, code)}, protocol=4)
    out["exec"] = pickle.dumps([_Evil(builtins.exec, code)], protocol=2)
    out["subprocess"] = pickle.dumps(_Evil(subprocess.check_call, ["touch", str(sentinel)]), protocol=4)
    # getattr(__import__("os"), "system")(cmd), written as protocol-0 opcodes
    out["getattr"] = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V"
                      + cmd.encode() + b"\ntR.")
    # hand-written opcodes: GLOBAL + REDUCE, INST, and a dill _create_array whose constructor is os.system
    out["raw_global"] = b"cposix\nsystem\n(V" + cmd.encode() + b"\ntR."
    out["raw_inst"] = b"(V" + cmd.encode() + b"\nios\nsystem\n."
    out["create_array_hijack"] = (b"\x80\x04\x8c\ndill._dill\x8c\r_create_array\x93\x8c\x02os\x8c\x06system\x93"
                                  b"\x8c" + bytes([len(cmd)]) + cmd.encode() + b"\x85NN\x87R.")
    return out


def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    for label, payload in _hostile_pickles(sentinel).items():
        with pytest.raises(ModelFormatError, match=r"evil\.dill: .*(refused|not a readable)") as info:
            safe_loads(payload, "evil.dill")
        assert "\n" not in str(info.value), label
        assert not sentinel.exists(), f"{label} executed code"


def test_refusal_names_the_global():
    with pytest.raises(ModelFormatError, match=r"params\.dill: refused to unpickle global posix\.system|"
                                               r"params\.dill: refused to unpickle global os\.system"):
        safe_loads(pickle.dumps(_Evil(__import__("os").system, "true"), protocol=4), "params.dill")


def test_numpy_reconstruct_only_builds_plain_ndarrays():
    good = pickle.dumps(np.arange(6, dtype=np.float32).reshape(2, 3), protocol=3)
    assert np.array_equal(safe_loads(good, "a.pkl"), np.arange(6, dtype=np.float32).reshape(2, 3))
    # the same pickle with _reconstruct's type argument swapped from numpy.ndarray to numpy.dtype
    assert b"cnumpy\nndarray\n" in good
    swapped = good.replace(b"cnumpy\nndarray\n", b"cnumpy\ndtype\n")
    with pytest.raises(ModelFormatError, match="other than numpy.ndarray"):
        safe_loads(swapped, "swap.pkl")
    with pytest.raises(ModelFormatError, match="object"):
        safe_loads(pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=3), "obj.pkl")


def test_plain_data_round_trips():
    data = {"a": [1, 2.5, "s", None, True], "b": (1, 2), "c": {1, 2}, "d": b"xy", "e": complex(1, 2),
            "f": np.float32(1.5), "g": np.int64(7)}
    out = safe_loads(pickle.dumps(data, protocol=4), "p.pkl")
    assert out == {**data, "f": 1.5, "g": 7}
    assert type(out["f"]) is float and type(out["g"]) is int


def test_allow_list_has_no_callables_that_run_code():
    for (module, name) in ALLOWED:
        assert module in {"builtins", "numpy", "numpy.core.multiarray", "numpy._core.multiarray", "dill._dill",
                          "tensorflow.python.framework.ops"}
        assert name not in {"eval", "exec", "getattr", "__import__", "compile", "open", "apply", "system"}


@pytest.mark.parametrize("payload", [b"", b"\x80\x04", b"garbage", pickle.dumps([1, 2])[:-1]])
def test_corrupt_pickles_are_one_line_errors(payload):
    with pytest.raises(ModelFormatError, match=r"^x\.dill: ") as info:
        load_params(payload, "x.dill")
    assert "\n" not in str(info.value)


def test_params_must_be_a_dict():
    with pytest.raises(ModelFormatError, match="expected a dict"):
        load_params(pickle.dumps([1, 2]), "params.dill")
    with pytest.raises(ModelFormatError, match="'models'"):
        load_manifest(pickle.dumps({"models": []}), "manifest.dill")


def test_convert_to_tensor_global_maps_to_numpy():
    # the exact shape of the legacy probe pickle: convert_to_tensor(<ndarray>) by reference
    arr = (np.arange(4, dtype=np.float32) + 1j).astype(np.complex64).reshape(2, 2, 1)
    inner = pickle.dumps(arr, protocol=4)
    assert inner[-1:] == b"."
    payload = (b"\x80\x04\x8c\x1ftensorflow.python.framework.ops\x8c\x11convert_to_tensor\x93"
               + inner[2:-1] + b"\x85R.")
    out = safe_loads(payload, "probe.pkl")
    assert isinstance(out, np.ndarray) and np.array_equal(out, arr)
