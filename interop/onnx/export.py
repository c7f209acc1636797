"""`export_onnx`: a PtychoPINN inference graph as one self-describing `.onnx` file (torch, onnx).

Graph: `diffraction (B, C, N, N)` float32 sqrt-photons (= f·s·d) and `offsets (B, C, 2)` float32
`[x, y]` px → `object_real`, `object_imag` `(B, N, N)` float32 (`predict_object`), dynamic batch
axis, opset ≥ 17, no DFT and no complex tensors. `metadata_props` carry everything the runner
needs (see `metadata.py`), taken from the same core functions `reconstruct` uses.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.errors import ConfigError, ModelFormatError

from .metadata import INPUTS, OUTPUTS, OnnxModelInfo

MIN_OPSET = 17
DEFAULT_OPSET = 17
#: op types the exported graph must not contain (DFT has no CUDA kernel in ONNX Runtime)
FORBIDDEN_OPS = frozenset({"DFT", "STFT"})
#: largest relative L2 error of ONNX Runtime vs torch accepted by the export self-check
VERIFY_RTOL = 1e-5


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote: path, metadata, opset, op types, self-check error (or None)."""

    path: Path
    info: OnnxModelInfo
    opset: int
    op_types: tuple[str, ...]
    verify_rel_error: float | None


def _load(model: Any) -> tuple[Any, dict[str, Any], str]:
    """(PtychoPINN on CPU in float32 eval mode, saved extra info, source name) from a module or a path.

    A module passed in is copied first: the caller's model keeps its device, dtype and mode.
    """
    import copy

    import torch

    from ptychopinn.reconstruct.core import load_any_model

    in_memory = isinstance(model, torch.nn.Module)
    source = "<in-memory model>" if in_memory else Path(model).name
    net, extra = load_any_model(copy.deepcopy(model) if in_memory else model, torch.device("cpu"))
    return net.float().eval(), extra, source


def _check_graph(proto: Any, where: str) -> tuple[str, ...]:
    """Op types of the graph; ModelFormatError on DFT/STFT nodes or complex tensors."""
    import onnx

    ops = tuple(sorted({n.op_type for n in proto.graph.node}))
    bad = sorted(set(ops) & FORBIDDEN_OPS)
    if bad:
        raise ModelFormatError(f"{where}: the exported graph contains {bad} nodes; the inference graph must be FFT-free")
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    values = list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info)
    typed = [v.name for v in values if v.type.tensor_type.elem_type in complex_types]
    typed += [t.name for t in proto.graph.initializer if t.data_type in complex_types]
    if typed:
        raise ModelFormatError(f"{where}: the exported graph has complex tensors {typed[:3]}; ONNX Runtime cannot run them")
    return ops


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    example_batch: int = 2,
) -> ExportReport:
    """Export `model` (a PtychoPINN, a native model dir/zip, or a legacy `wts.h5.zip` when
    `ptychopinn.interop.load_tf_bundle` is available) to `path` (written atomically).

    verify: run the file with ONNX Runtime (CPU) on a random batch and require relative L2
    error ≤ 1e-5 against torch `predict_object`. Returns an `ExportReport`.
    """
    import onnx
    import torch

    from ptychopinn import __version__
    from ptychopinn.config import config_to_dict
    from ptychopinn.data.inputs import inference_data_config
    from ptychopinn.io.atomic import atomic_write
    from ptychopinn.reconstruct.geometry import default_crop

    from .wrapper import ObjectGraph

    if not MIN_OPSET <= int(opset) <= onnx.defs.onnx_opset_version():
        raise ConfigError(f"opset must be in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], got {opset}")
    out = Path(path)
    net, extra, source = _load(model)
    cfg = net.config
    from ptychopinn.model.generators import get_generator

    if not get_generator(cfg.generator).onnx:
        raise ConfigError(
            f"{source}: generator {cfg.generator!r} needs FFTs (spectral convolutions) and the ONNX inference graph is FFT-free; "
            "only models of an FFT-free generator (e.g. 'cnn') export to ONNX"
        )
    dcfg = inference_data_config(cfg.gridsize, extra)
    info = OnnxModelInfo(
        N=int(cfg.N),
        gridsize=int(cfg.gridsize),
        intensity_scale=float(net.intensity_scale),
        neighbor_count=int(dcfg.neighbor_count),
        grouping_seed=int(dcfg.seed),
        stitch_crop=int(default_crop(cfg.N)),
        padded_size=int(cfg.padded_size),
        model_config=config_to_dict(cfg),
        source=source,
        ptychopinn_version=__version__,
    )
    graph = ObjectGraph(net).eval()
    gen = torch.Generator().manual_seed(0)
    C, N = cfg.channels, cfg.N
    x = torch.rand(example_batch, C, N, N, generator=gen) * 10
    offsets = torch.randn(example_batch, C, 2, generator=gen)
    offsets = offsets - offsets.mean(dim=1, keepdim=True)
    buf = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from input checks, legacy-exporter notice
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (x, offsets),
                buf,  # type: ignore[arg-type]  # torch's annotation omits the file-like objects export accepts
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes=dynamic,
                opset_version=int(opset),
                do_constant_folding=True,
                dynamo=False,
            )
    proto = onnx.load_from_string(buf.getvalue())
    ops = _check_graph(proto, out.name)
    proto.doc_string = "PtychoPINN inference graph: diffraction (B,C,N,N) sqrt-photons + offsets (B,C,2) -> object real/imag (B,N,N)"
    proto.producer_name = "ptychopinn"
    proto.producer_version = __version__
    for value in proto.graph.output:  # the tracer leaves the spatial dims symbolic; they are N × N
        dims = value.type.tensor_type.shape.dim
        for d, size in zip(dims[1:], (N, N)):
            d.Clear()
            d.dim_value = size
    del proto.metadata_props[:]
    for key, value in info.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    rel = _verify(data, net, out.name, gen) if verify else None
    with atomic_write(out, "wb") as fh:
        fh.write(data)
    return ExportReport(path=out, info=info, opset=int(opset), op_types=ops, verify_rel_error=rel)


def _verify(data: bytes, net: Any, where: str, gen: Any) -> float:
    """Relative L2 error of ONNX Runtime (CPU) vs torch `predict_object` on a batch of 3."""
    import onnxruntime as ort
    import torch

    cfg = net.config
    x = torch.rand(3, cfg.channels, cfg.N, cfg.N, generator=gen) * 10
    offsets = torch.randn(3, cfg.channels, 2, generator=gen)
    offsets = offsets - offsets.mean(dim=1, keepdim=True)
    with torch.no_grad():
        ref = net.predict_object(x, offsets).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    real, imag = session.run(list(OUTPUTS), {"diffraction": x.numpy(), "offsets": offsets.numpy()})
    got = real + 1j * imag
    rel = float(np.linalg.norm(got - ref) / max(float(np.linalg.norm(ref)), 1e-30))
    if not rel <= VERIFY_RTOL:
        raise ModelFormatError(f"{where}: ONNX Runtime output differs from torch by {rel:.2e} relative (> {VERIFY_RTOL:g}); not written")
    return rel


__all__ = ["export_onnx", "ExportReport", "MIN_OPSET", "DEFAULT_OPSET", "FORBIDDEN_OPS"]
