"""The Keras-3 functional `config.json` of a K2-era PtychoPINN model, generated from a ModelConfig.

Mirrors what upstream's `create_model_with_gridsize` builds (spec §3, §3.1, §6.3): the same layer
classes, registered names (`ptycho>...`), auto-generated layer names (`conv2d_k` in construction
order: encoder, then per decoder head1, head2, decoder blocks, x2 block), call structure
(`inbound_nodes`) and symbolic shapes. Layers are listed in Keras' `model.layers` order, computed
with Keras' own rule (depth from the outputs, ties broken by discovery order of a depth-first walk
from the outputs), so `model.weights.h5` group names (`layers/<snake_case>[_k]`) follow from it.

Supported: pad_object=True and object_big=True (the upstream defaults, every known bundle);
probe_big on or off. Pure Python (no torch, no TensorFlow).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError

Which = Literal["autoencoder", "diffraction_to_obj"]
#: DTypePolicy objects are shared between layers in Keras' serialisation; any fixed id works.
SHARED_POLICY_ID = 140000000000001
_ENCODER_BASE = {64: (32, 64, 128), 128: (16, 32, 64, 128), 256: (8, 16, 32, 64, 128)}
_DECODER_BASE = {64: (64, 32), 128: (128, 64, 32), 256: (256, 128, 64, 32)}
C_OUTER = 4  # decoder channels routed to the probe.big branch


@dataclass
class _T:
    """A symbolic tensor: producing layer, output index, shape (without batch), dtype."""

    layer: str
    index: int
    shape: tuple[int, ...]
    dtype: str = "float32"

    def json(self) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__",
                "config": {"shape": [None, *self.shape], "dtype": self.dtype,
                           "keras_history": [self.layer, 0, self.index]}}


@dataclass
class _Layer:
    name: str
    class_name: str
    module: str
    registered_name: str | None
    config: dict[str, Any]
    args: list[Any]  # call arguments: tensors, lists of tensors, literal JSON
    build_shape: Any = None  # None: no build_config
    parents: list[str] = field(default_factory=list)
    is_input: bool = False

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"module": self.module, "class_name": self.class_name, "config": self.config,
                               "registered_name": self.registered_name}
        if self.build_shape is not None:
            out["build_config"] = {"input_shape": self.build_shape}
        out["name"] = self.name
        out["inbound_nodes"] = [] if self.is_input else [{"args": [_arg_json(a) for a in self.args], "kwargs": {}}]
        return out


def _arg_json(a: Any) -> Any:
    if isinstance(a, _T):
        return a.json()
    if isinstance(a, list):
        return [_arg_json(x) for x in a]
    return a


def _tensors(a: Any) -> list[_T]:
    if isinstance(a, _T):
        return [a]
    if isinstance(a, list):
        return [t for x in a for t in _tensors(x)]
    return []


def _policy(name: str = "float32", shared: bool = True) -> dict[str, Any]:
    p: dict[str, Any] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}
    if shared:
        p["shared_object_id"] = SHARED_POLICY_ID
    return p


def _shape(s: tuple[int, ...]) -> list[Any]:
    return [None, *s]


class _Builder:
    """Records layers as upstream's model code creates and calls them."""

    def __init__(self) -> None:
        self.layers: dict[str, _Layer] = {}
        self._auto: dict[str, int] = defaultdict(int)

    def auto(self, base: str) -> str:
        """Keras auto-naming: base, base_1, base_2, ... per base name, in creation order."""
        k = self._auto[base]
        self._auto[base] = k + 1
        return base if k == 0 else f"{base}_{k}"

    def add(self, layer: _Layer) -> None:
        layer.parents = [t.layer for t in _tensors(layer.args)]
        self.layers[layer.name] = layer

    # -- Keras layers ------------------------------------------------------------------------
    def input(self, name: str, shape: tuple[int, ...]) -> _T:
        cfg = {"batch_shape": _shape(shape), "dtype": "float32", "sparse": False, "ragged": False, "name": name}
        self.add(_Layer(name, "InputLayer", "keras.layers", None, cfg, [], is_input=True))
        return _T(name, 0, shape)

    def conv(self, name: str, x: _T, filters: int, activation: str) -> _T:
        cfg = {"name": name, "trainable": True, "dtype": _policy(), "filters": filters, "kernel_size": [3, 3],
               "strides": [1, 1], "padding": "same", "data_format": "channels_last", "dilation_rate": [1, 1],
               "groups": 1, "activation": activation, "use_bias": True,
               "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                      "config": {"seed": None}, "registered_name": None},
               "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                                    "registered_name": None},
               "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
               "kernel_constraint": None, "bias_constraint": None}
        self.add(_Layer(name, "Conv2D", "keras.layers", None, cfg, [x], build_shape=_shape(x.shape)))
        return _T(name, 0, (*x.shape[:2], filters))

    def maxpool(self, x: _T) -> _T:
        name = self.auto("max_pooling2d")
        cfg = {"name": name, "trainable": True, "dtype": _policy(), "pool_size": [2, 2], "padding": "same",
               "strides": [2, 2], "data_format": "channels_last"}
        self.add(_Layer(name, "MaxPooling2D", "keras.layers", None, cfg, [x]))
        return _T(name, 0, (x.shape[0] // 2, x.shape[1] // 2, x.shape[2]))

    def upsample(self, x: _T) -> _T:
        name = self.auto("up_sampling2d")
        cfg = {"name": name, "trainable": True, "dtype": _policy(), "size": [2, 2], "data_format": "channels_last",
               "interpolation": "nearest"}
        self.add(_Layer(name, "UpSampling2D", "keras.layers", None, cfg, [x], build_shape=_shape(x.shape)))
        return _T(name, 0, (x.shape[0] * 2, x.shape[1] * 2, x.shape[2]))

    def zero_pad(self, name: str, x: _T, pad: int) -> _T:
        cfg = {"name": name, "trainable": True, "dtype": _policy(), "padding": [[pad, pad], [pad, pad]],
               "data_format": "channels_last"}
        self.add(_Layer(name, "ZeroPadding2D", "keras.layers", None, cfg, [x], build_shape=_shape(x.shape)))
        return _T(name, 0, (x.shape[0] + 2 * pad, x.shape[1] + 2 * pad, x.shape[2]))

    # -- Keras ops (not layers: no weights group) --------------------------------------------
    def op(self, base: str, class_name: str, module: str, args: list[Any], shape: tuple[int, ...]) -> _T:
        name = self.auto(base)
        self.add(_Layer(name, class_name, module, class_name, {"name": name}, args))
        return _T(name, 0, shape)

    def get_item(self, x: _T, start: int | None, stop: int | None) -> _T:
        key = [{"class_name": "__ellipsis__", "config": {}},
               {"class_name": "__slice__", "config": {"start": start, "stop": stop, "step": None}}]
        c = x.shape[2]
        width = len(range(c)[slice(start, stop)])
        return self.op("get_item", "GetItem", "keras.src.ops.numpy", [x, key], (*x.shape[:2], width))

    # -- ptycho custom layers ----------------------------------------------------------------
    def custom(self, name: str, class_name: str, module: str, args: list[Any], extra: dict[str, Any], *,
               dtype: str = "float32", shared: bool = True, registered: str | None = None,
               build_shape: Any = None) -> None:
        cfg = {"name": name, "trainable": True, "dtype": _policy(dtype, shared), **extra}
        reg = registered if registered is not None else f"ptycho>{class_name}"
        self.add(_Layer(name, class_name, module, reg, cfg, args, build_shape=build_shape))


def _decoder(b: _Builder, x: _T, cfg: ModelConfig, which: str, head_names: tuple[str, str],
             act_name: str, act_cfg: dict[str, Any], filters: int) -> _T:
    """One decoder (amp or phase) as upstream's create_decoder_* / create_decoder_last call it."""
    N, nfs = cfg.N, cfg.n_filters_scale
    head1, head2 = head_names
    for f in _DECODER_BASE[N]:
        x = b.conv(b.auto("conv2d"), x, f * nfs, "relu")
        x = b.conv(b.auto("conv2d"), x, f * nfs, "relu")
        x = b.upsample(x)
    x1 = b.get_item(x, None, -C_OUTER)
    x1 = b.conv(head1, x1, filters, "linear")
    b.custom(act_name, "ActivationLayer", "ptycho.custom_layers", [x1], act_cfg, build_shape=_shape(x1.shape))
    x1 = _T(act_name, 0, x1.shape)
    x1 = b.zero_pad(f"{which}_padded", x1, N // 4)
    if not cfg.probe_big:
        return x1
    x2 = b.get_item(x, -C_OUTER, None)
    width = nfs * 2048 // N
    x2 = b.conv(b.auto("conv2d"), x2, width, "relu")
    x2 = b.conv(b.auto("conv2d"), x2, width, "relu")
    x2 = b.upsample(x2)
    x2 = b.conv(head2, x2, filters, "linear")
    x2 = b.op("silu", "Silu", "keras.src.ops.nn", [x2], x2.shape)
    mask = b.auto("center_mask_layer")
    b.custom(mask, "CenterMaskLayer", "ptycho.tf_helper", [x2], {"N": N, "c": 1, "kind": "border"},
             registered="CenterMaskLayer", build_shape=_shape(x2.shape))
    m = _T(mask, 0, (N, N, 1))
    masked = b.op("multiply", "Multiply", "keras.src.ops.numpy", [x2, m], x2.shape)
    return b.op("add", "Add", "keras.src.ops.numpy", [x1, masked], x1.shape)


def _build(cfg: ModelConfig, *, use_polar: bool) -> tuple[_Builder, dict[str, _T]]:
    if not (cfg.pad_object and cfg.object_big):
        raise ConfigError("write_tf_bundle: only pad_object=True and object_big=True models can be written as "
                          f"K2 bundles (got pad_object={cfg.pad_object}, object_big={cfg.object_big})")
    if cfg.amp_channels != cfg.head_channels:
        raise ConfigError(f"write_tf_bundle: a K2 bundle needs amp_head_channels = gridsize² ({cfg.head_channels}), "
                          f"got {cfg.amp_channels} (an S1/K1-era gridsize>1 model cannot be written as K2)")
    N, C, nfs = cfg.N, cfg.channels, cfg.n_filters_scale
    b = _Builder()
    inp = b.input("input", (N, N, C))
    pos = b.input("input_positions", (1, 2, C))
    b.custom("intensity_scaler", "IntensityScaler", "ptycho.model", [[inp]], {}, shared=False,
             build_shape=[_shape(inp.shape)])
    x = _T("intensity_scaler", 0, inp.shape)
    for f in _ENCODER_BASE[N]:
        x = b.conv(b.auto("conv2d"), x, f * nfs, "relu")
        x = b.conv(b.auto("conv2d"), x, f * nfs, "relu")
        x = b.maxpool(x)
    Cout = cfg.head_channels
    # each decoder creates its two head convs before its blocks (so they get the lower names)
    amp_heads = (b.auto("conv2d"), b.auto("conv2d"))
    amp = _decoder(b, x, cfg, "amp", amp_heads, "amp",
                   {"activation_name": cfg.amp_activation, "scale": 1.0}, Cout)
    phase_heads = (b.auto("conv2d"), b.auto("conv2d"))
    phase = _decoder(b, x, cfg, "phase", phase_heads, "phi",
                     {"activation_name": "tanh", "scale": 3.141592653589793}, Cout)
    b.custom("obj", "CombineComplexLayer", "ptycho.custom_layers", [[amp, phase]], {"use_polar": bool(use_polar)},
             build_shape=[_shape(amp.shape), _shape(phase.shape)])
    obj = _T("obj", 0, amp.shape)
    P = cfg.padded_size
    b.custom("padded_obj_2", "ReassemblePatchesLayer", "ptycho.custom_layers", [[obj, pos]],
             {"padded_size": P, "N": N, "gridsize": cfg.gridsize}, dtype="complex64", shared=False,
             build_shape=[_shape(obj.shape), _shape(pos.shape)])
    padded = _T("padded_obj_2", 0, (P, P, C), "complex64")
    b.custom("trimmed_obj", "TrimReconstructionLayer", "ptycho.custom_layers", [padded], {"output_size": N},
             dtype="complex64", shared=False, build_shape=_shape(padded.shape))
    outs = {"trimmed_obj": _T("trimmed_obj", 0, (N, N, 1), "complex64")}
    b.custom("padded_objs_with_offsets", "ExtractPatchesPositionLayer", "ptycho.custom_layers", [[padded, pos]],
             {"jitter": 0.0, "N": N, "gridsize": cfg.gridsize}, dtype="complex64", shared=False,
             build_shape=[_shape(padded.shape), _shape(pos.shape)])
    patches = _T("padded_objs_with_offsets", 0, (N, N, C), "complex64")
    b.custom("probe_illumination", "ProbeIllumination", "ptycho.model", [[patches]], {"N": N},
             build_shape=[_shape(patches.shape)])
    lit = _T("probe_illumination", 0, (N, N, C))
    b.custom("pred_amplitude", "PadAndDiffractLayer", "ptycho.custom_layers", [[lit]], {"h": N, "w": N, "pad": False},
             build_shape=[_shape(lit.shape)])
    amp_flat = _T("pred_amplitude", 1, (N, N, C))
    b.custom("pred_diff_channels", "FlatToChannelLayer", "ptycho.custom_layers", [amp_flat],
             {"N": N, "gridsize": cfg.gridsize}, build_shape=_shape(amp_flat.shape))
    chan = _T("pred_diff_channels", 0, (N, N, C))
    b.custom("intensity_scaler_inv", "IntensityScaler_inv", "ptycho.model", [[chan]], {},
             build_shape=[_shape(chan.shape)])
    amp_scaled = _T("intensity_scaler_inv", 0, (N, N, C))
    b.custom("pred_intensity", "SquareLayer", "ptycho.custom_layers", [amp_scaled], {},
             build_shape=_shape(amp_scaled.shape))
    outs["intensity_scaler_inv"] = amp_scaled
    outs["pred_intensity"] = _T("pred_intensity", 0, (N, N, C))
    return b, outs


def _layer_order(layers: dict[str, _Layer], outputs: list[str]) -> list[str]:
    """Keras' functional `map_graph` order: decreasing depth from the outputs; within a depth, the
    order in which a depth-first walk from the outputs (arguments left to right) first meets a layer."""
    discovered: dict[str, int] = {}
    post: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        discovered.setdefault(name, len(discovered))
        layer = layers[name]
        if not layer.is_input:
            for parent in layer.parents:
                visit(parent)
        done.add(name)
        post.append(name)

    for out in outputs:
        visit(out)
    depth: dict[str, int] = {}
    for name in reversed(post):
        d = depth.setdefault(name, 0)
        for parent in layers[name].parents:
            depth[parent] = max(depth.get(parent, 0), d + 1)
    by_depth: dict[int, list[str]] = defaultdict(list)
    for name, d in depth.items():
        by_depth[d].append(name)
    order: list[str] = []
    for d in sorted(by_depth, reverse=True):
        order += sorted(by_depth[d], key=discovered.__getitem__)
    return order


def keras_model_config(cfg: ModelConfig, which: Which, *, use_polar: bool = True,
                       compile_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `config.json` document of `<which>/model.keras` for a K2-era bundle."""
    if which not in ("autoencoder", "diffraction_to_obj"):
        raise ConfigError(f"keras_model_config: model must be autoencoder or diffraction_to_obj, got {which!r}")
    b, outs = _build(cfg, use_polar=use_polar)
    outputs = ["trimmed_obj"] if which == "diffraction_to_obj" else ["trimmed_obj", "intensity_scaler_inv",
                                                                       "pred_intensity"]
    order = _layer_order(b.layers, outputs)
    return {
        "module": "keras.src.models.functional", "class_name": "Functional",
        "config": {
            "name": "functional" if which == "autoencoder" else "functional_1", "trainable": True,
            "layers": [b.layers[n].json() for n in order],
            "input_layers": [["input", 0, 0], ["input_positions", 0, 0]],
            "output_layers": [[outs[o].layer, 0, outs[o].index] for o in outputs],
        },
        "registered_name": "Functional", "build_config": {"input_shape": None},
        "compile_config": compile_config if compile_config is not None else {},
    }


def snake_case(name: str) -> str:
    """Keras' class-name → weights-group name: 'UpSampling2D' → 'up_sampling2d'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def weight_groups(config_doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(`layers/<group>` name, layer JSON) for every layer (not op) in config order."""
    counts: dict[str, int] = defaultdict(int)
    out = []
    for layer in config_doc["config"]["layers"]:
        if str(layer.get("module", "")).startswith("keras.src.ops"):
            continue
        base = snake_case(layer["class_name"])
        k = counts[base]
        counts[base] += 1
        out.append((base if k == 0 else f"{base}_{k}", layer))
    return out


__all__ = ["keras_model_config", "weight_groups", "snake_case", "SHARED_POLICY_ID"]
