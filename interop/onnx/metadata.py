"""What a ptychopinn `.onnx` file says about itself (`metadata_props`), written and read here.

An exported model is a complete deployable artefact: the runner needs nothing but the file and
a scan. Every entry is a string under a `ptychopinn.` key (visible in Netron / `onnx.load`):

    format, format_version      "ptychopinn.onnx", "1"
    N, gridsize, channels       patch size and group size (C = gridsize²)
    padded_size                 in-model canvas P (informative)
    intensity_scale             s (sqrt-photons per normalised amplitude unit), repr float
    normalization               "grouped_mean_energy": f = sqrt((N/2)² / mean_{b,c} Σ d²) over the
                                grouped patterns; model input = f · s · d (float32)
    input_units                 "sqrt_photons"
    grouping_seed, neighbor_count   DataConfig of inference grouping (n_groups = None)
    offsets                     "relative": −(coords − centres) per group, float32 [x, y]
    stitch, stitch_crop, stitch_weight, stitch_eps   "barycentric", central crop side, "probe"|"uniform", normaliser eps
    inputs, outputs             "diffraction,offsets", "object_real,object_imag"
    output_parts                "real_imag"
    model_config                JSON of the ModelConfig (informative)
    ptychopinn_version, source  producer version, source model file name

numpy-free and torch-free (standard library only).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ptychopinn.errors import ModelFormatError

FORMAT = "ptychopinn.onnx"
FORMAT_VERSION = 1
PREFIX = "ptychopinn."
INPUTS = ("diffraction", "offsets")
OUTPUTS = ("object_real", "object_imag")
NORMALIZATION = "grouped_mean_energy"


@dataclass(frozen=True)
class OnnxModelInfo:
    """Parsed metadata of an exported model (see module docstring for the meaning of each field)."""

    N: int
    gridsize: int
    intensity_scale: float
    neighbor_count: int
    grouping_seed: int
    stitch_crop: int
    #: patch weighting of the barycentric stitcher: "probe" (|probe|² of the crop) or "uniform"
    stitch_weight: str = "probe"
    stitch_eps: float = 1e-9
    padded_size: int = 0
    model_config: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ptychopinn_version: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def channels(self) -> int:
        """C = gridsize²."""
        return self.gridsize * self.gridsize

    def to_props(self) -> dict[str, str]:
        """The `metadata_props` entries (key → string value)."""
        values = {
            "format": FORMAT,
            "format_version": str(self.format_version),
            "N": str(self.N),
            "gridsize": str(self.gridsize),
            "channels": str(self.channels),
            "padded_size": str(self.padded_size),
            "intensity_scale": repr(float(self.intensity_scale)),
            "normalization": NORMALIZATION,
            "input_units": "sqrt_photons",
            "grouping_seed": str(self.grouping_seed),
            "neighbor_count": str(self.neighbor_count),
            "offsets": "relative",
            "stitch": "barycentric",
            "stitch_crop": str(self.stitch_crop),
            "stitch_weight": self.stitch_weight,
            "stitch_eps": repr(float(self.stitch_eps)),
            "inputs": ",".join(INPUTS),
            "outputs": ",".join(OUTPUTS),
            "output_parts": "real_imag",
            "model_config": json.dumps(self.model_config, sort_keys=True),
            "ptychopinn_version": self.ptychopinn_version,
            "source": self.source,
        }
        return {PREFIX + k: v for k, v in values.items()}


def _get(props: Mapping[str, str], key: str, where: str) -> str:
    try:
        return props[PREFIX + key]
    except KeyError:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}{key}' is missing, expected a ptychopinn ONNX export") from None


def _int(props: Mapping[str, str], key: str, where: str, lo: int = 0) -> int:
    raw = _get(props, key, where)
    try:
        value = int(raw)
    except ValueError:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}{key}' = {raw!r}, expected an integer") from None
    if value < lo:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}{key}' = {value}, expected >= {lo}")
    return value


def _float(props: Mapping[str, str], key: str, where: str) -> float:
    raw = _get(props, key, where)
    try:
        value = float(raw)
    except ValueError:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}{key}' = {raw!r}, expected a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}{key}' = {raw!r}, expected a positive finite number")
    return value


def parse_props(props: Mapping[str, str], where: str) -> OnnxModelInfo:
    """`OnnxModelInfo` from `metadata_props` (a mapping); ModelFormatError (one line) if invalid.

    where: the file name used in messages.
    """
    fmt = props.get(PREFIX + "format")
    if fmt != FORMAT:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}format' is {fmt!r}, expected {FORMAT!r} (export it with `ptychopinn export-onnx`)")
    version = _int(props, "format_version", where, lo=1)
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{where}: format_version {version} is newer than this runner understands ({FORMAT_VERSION}); upgrade ptychopinn")
    for key, expected in (("normalization", NORMALIZATION), ("output_parts", "real_imag"), ("stitch", "barycentric"),
                          ("inputs", ",".join(INPUTS)), ("outputs", ",".join(OUTPUTS))):
        value = _get(props, key, where)
        if value != expected:
            raise ModelFormatError(f"{where}: metadata key '{PREFIX}{key}' = {value!r}, expected {expected!r}")
    N = _int(props, "N", where, lo=4)
    gridsize = _int(props, "gridsize", where, lo=1)
    crop = _int(props, "stitch_crop", where, lo=1)
    if crop > N:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}stitch_crop' = {crop}, expected <= N = {N}")
    weight = _get(props, "stitch_weight", where)
    if weight not in ("probe", "uniform"):
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}stitch_weight' = {weight!r}, expected 'probe' or 'uniform'")
    try:
        model_config = json.loads(props.get(PREFIX + "model_config", "{}"))
    except json.JSONDecodeError:
        raise ModelFormatError(f"{where}: metadata key '{PREFIX}model_config' is not valid JSON") from None
    return OnnxModelInfo(
        N=N,
        gridsize=gridsize,
        intensity_scale=_float(props, "intensity_scale", where),
        neighbor_count=_int(props, "neighbor_count", where, lo=1),
        grouping_seed=_int(props, "grouping_seed", where),
        stitch_crop=crop,
        stitch_weight=weight,
        stitch_eps=_float(props, "stitch_eps", where),
        padded_size=_int(props, "padded_size", where),
        model_config=model_config if isinstance(model_config, dict) else {},
        source=props.get(PREFIX + "source", ""),
        ptychopinn_version=props.get(PREFIX + "ptychopinn_version", ""),
        format_version=version,
    )


__all__ = ["OnnxModelInfo", "parse_props", "FORMAT", "FORMAT_VERSION", "INPUTS", "OUTPUTS", "PREFIX", "NORMALIZATION"]
