"""ONNX export of the inference graph: checker, FFT-free real graph, dynamic batch, metadata,
and ONNX Runtime vs torch `predict_object` (≤ 1e-5 relative, CPU) at N = 64, gridsize 1 and 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ptychopinn import io
from ptychopinn.cli import main as cli_main  # noqa: E402
from ptychopinn.config import ModelConfig  # noqa: E402
from ptychopinn.errors import ConfigError, ModelFormatError  # noqa: E402
from ptychopinn.interop.onnx import export_onnx  # noqa: E402
from ptychopinn.interop.onnx.metadata import FORMAT, PREFIX, parse_props  # noqa: E402
from ptychopinn.interop.onnx.wrapper import ObjectGraph  # noqa: E402
from ptychopinn.model import PtychoPINN  # noqa: E402
from ptychopinn.reconstruct.geometry import INFERENCE_SEED, default_crop  # noqa: E402
from tests.conftest import legacy_dir, rel_l2  # noqa: E402

N = 64


def _model(gridsize: int, seed: int = 0, **kw) -> PtychoPINN:
    torch.manual_seed(seed)
    cfg = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1, **kw)
    probe = np.exp(1j * np.linspace(0, 1, N * N)).reshape(N, N).astype(np.complex64)
    return PtychoPINN(cfg, probe=probe, intensity_scale=37.5).eval()


def _inputs(B: int, C: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, N, N, generator=g) * 40
    off = torch.randn(B, C, 2, generator=g) * 3
    return x, off - off.mean(dim=1, keepdim=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[int, tuple[PtychoPINN, Path]]:
    """gridsize → (torch model, .onnx): gs1 through the CLI from a saved model dir, gs2 via the API."""
    root = tmp_path_factory.mktemp("onnx_export")
    m1, m2 = _model(1), _model(2, seed=1)
    io.save_model(m1, root / "model_gs1", extra={"training": {"data_config": {"neighbor_count": 7}}})
    assert cli_main(["export-onnx", str(root / "model_gs1"), "-o", str(root / "gs1.onnx")]) == 0
    report = export_onnx(m2, root / "gs2.onnx")
    assert report.verify_rel_error is not None and report.verify_rel_error <= 1e-5
    return {1: (io.load_model(root / "model_gs1"), root / "gs1.onnx"), 2: (m2, root / "gs2.onnx")}


@pytest.mark.parametrize("gs", [1, 2])
def test_graph_is_valid_real_fft_free_and_batch_dynamic(exported, gs: int) -> None:
    proto = onnx.load(str(exported[gs][1]))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"DFT", "STFT"}
    assert "Conv" in ops  # the network (translation may export as gathers or matmuls)
    real = onnx.TensorProto.FLOAT
    for v in list(proto.graph.input) + list(proto.graph.output):
        assert v.type.tensor_type.elem_type == real, v.name
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input}
    assert dims == {"diffraction": ["batch", gs * gs, N, N], "offsets": ["batch", gs * gs, 2]}
    out_dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}
    assert out_dims == {"object_real": ["batch", N, N], "object_imag": ["batch", N, N]}


@pytest.mark.parametrize("gs", [1, 2])
def test_metadata_describes_the_model(exported, gs: int) -> None:
    model, path = exported[gs]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props[PREFIX + "format"] == FORMAT
    info = parse_props(props, path.name)
    assert (info.N, info.gridsize, info.channels) == (N, gs, gs * gs)
    assert info.intensity_scale == pytest.approx(model.intensity_scale, rel=1e-7)
    assert info.stitch_crop == default_crop(N)
    assert info.grouping_seed == INFERENCE_SEED
    # the saved training DataConfig's neighbour count travels into the artefact (default 4 otherwise)
    assert info.neighbor_count == (7 if gs == 1 else 4)
    assert info.model_config["gridsize"] == gs and info.padded_size == model.config.padded_size


@pytest.mark.parametrize("gs", [1, 2])
@pytest.mark.parametrize("B", [1, 3])
def test_onnxruntime_matches_torch(exported, gs: int, B: int) -> None:
    model, path = exported[gs]
    x, off = _inputs(B, gs * gs, seed=10 * gs + B)
    with torch.no_grad():
        ref = model.predict_object(x, off).numpy()
    sess = _session(path)
    real, imag = sess.run(["object_real", "object_imag"], {"diffraction": x.numpy(), "offsets": off.numpy()})
    assert real.shape == imag.shape == (B, N, N) and real.dtype == np.float32
    assert rel_l2(real + 1j * imag, ref) <= 1e-5
    if gs == 2:  # offsets really enter the graph: moving one patch changes the object
        off2 = off.clone()
        off2[:, 0] += 2.5
        real2, _ = sess.run(["object_real", "object_imag"], {"diffraction": x.numpy(), "offsets": off2.numpy()})
        assert rel_l2(real2, real) > 1e-3


@pytest.mark.parametrize(
    "kw",
    [
        {"object_big": False},
        {"combine": "additive", "amp_head_channels": 1},
        {"probe_big": False, "recentre_offsets": False},
        {"pad_object": False, "amp_activation": "swish"},
    ],
    ids=["object_small", "additive", "no_probe_big", "no_pad"],
)
def test_real_arithmetic_graph_equals_predict_object(kw) -> None:
    """ObjectGraph (what is exported) against the complex torch path, over the config branches."""
    gs = 1 if kw.get("object_big") is False else 2
    model = _model(gs, **kw)
    x, off = _inputs(3, gs * gs, seed=5)
    with torch.no_grad():
        ref = model.predict_object(x, off).numpy()
        real, imag = ObjectGraph(model)(x, off)
    assert rel_l2(real.numpy() + 1j * imag.numpy(), ref) <= 1e-6


def test_bad_requests_raise_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(_model(1), tmp_path / "m.onnx", opset=13)
    assert cli_main(["export-onnx", str(tmp_path / "missing_model"), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing_model" in err and "Traceback" not in err
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFormatError):
        export_onnx(junk, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_legacy_bundle_exports_and_matches_its_torch_model(tmp_path: Path) -> None:
    """A trained TF wts.h5.zip (gridsize 2): ONNX Runtime equals the torch model loaded from it."""
    bundle = legacy_dir("n64_gs2") / "wts.h5.zip"
    try:
        from ptychopinn.interop import load_tf_bundle
    except ImportError:
        with pytest.raises(ModelFormatError, match="load_tf_bundle"):
            export_onnx(bundle, tmp_path / "legacy.onnx")
        return
    report = export_onnx(bundle, tmp_path / "legacy.onnx")
    net = load_tf_bundle(bundle).model.eval()
    assert report.info.gridsize == 2 and report.info.intensity_scale == pytest.approx(net.intensity_scale, rel=1e-7)
    with np.load(legacy_dir("n64_gs2") / "test_data.npz") as z:
        d = z["diffraction"][:8].reshape(2, 4, N, N)
    x = torch.from_numpy(d * np.float32(30.0))
    _, off = _inputs(2, 4, seed=3)
    with torch.no_grad():
        ref = net.predict_object(x, off).numpy()
    sess = _session(report.path)
    real, imag = sess.run(None, {"diffraction": x.numpy(), "offsets": off.numpy()})
    assert rel_l2(real + 1j * imag, ref) <= 1e-5


def test_export_leaves_the_callers_model_alone(tmp_path: Path) -> None:
    """A float64 model in training mode stays float64 and in training mode after export."""
    m = _model(1).double().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    export_onnx(m, tmp_path / "m.onnx", verify=False)
    assert m.training and all(p.dtype == torch.float64 for p in m.parameters())
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
