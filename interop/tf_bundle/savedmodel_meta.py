"""Facts from an S1 SavedModel's `keras_metadata.pb` (spec §6.4), without protobuf or TensorFlow.

The file is a `SavedMetadata` message: repeated `nodes` (field 1), each with node_path (3),
identifier (4) and metadata (5, a JSON string). The "root" node's JSON is the Keras-2 functional
config. From it we take the layer list, the input shape, and the intensity scale that S1 baked
into the graph: the `"y": s` keyword of the TFOpLambda `math.truediv` applied to the input, and
the `["_CONSTANT_VALUE", -1, s]` argument of the TFOpLambda `math.multiply` (autoencoder only).
Lambda layers carry marshalled Python bytecode; it is kept as inert text and never decoded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

from ptychopinn.errors import ModelFormatError

from . import wire


@dataclass
class SavedModelMeta:
    """layers: [{name, class_name, config}] in model.layers order; input_shape (N, N, C) or None;
    truediv_scale / multiply_scale: the baked constants (None when absent)."""

    layers: list[dict[str, Any]] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    truediv_scale: float | None = None
    multiply_scale: float | None = None

    @property
    def baked_scale(self) -> float | None:
        """The baked intensity scale s (truediv first, else the multiply constant)."""
        return self.truediv_scale if self.truediv_scale is not None else self.multiply_scale

    def layer_names(self, class_name: str) -> list[str]:
        return [x["name"] for x in self.layers if x["class_name"] == class_name]


def _root_json(data: bytes, where: str) -> dict:
    try:
        for field_no, wtype, node in wire.iter_fields(data):
            if field_no != 1 or wtype != wire.LEN:
                continue
            path = metadata = None
            for f2, w2, v in wire.iter_fields(cast(bytes, node)):  # LEN (checked above): bytes
                if f2 == 3 and w2 == wire.LEN:
                    path = v
                elif f2 == 5 and w2 == wire.LEN:
                    metadata = cast(bytes, v)
            if path == b"root" and metadata is not None:
                return json.loads(metadata.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelFormatError(f"{where}: malformed keras_metadata.pb ({exc})") from None
    raise ModelFormatError(f"{where}: keras_metadata.pb has no 'root' node with a model config")


def _input_shape(layers: list[dict]) -> tuple[int, ...] | None:
    for layer in layers:
        if layer["class_name"] == "InputLayer" and layer["name"] == "input":
            shape = layer["config"].get("batch_input_shape")
            if isinstance(shape, dict):
                shape = shape.get("items")
            if isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) for s in shape[1:]):
                return tuple(shape[1:])
    return None


def _call_args(inbound: Any) -> list:
    """Flatten a TFOpLambda's inbound_nodes into its call items ([name, node, tensor, kwargs])."""
    items: list = []

    def walk(x: Any) -> None:
        if isinstance(x, dict) and x.get("class_name") == "__tuple__":
            walk(x.get("items", []))
        elif isinstance(x, list):
            if len(x) >= 3 and isinstance(x[0], str) and isinstance(x[1], int):
                items.append(x)
            else:
                for y in x:
                    walk(y)

    walk(inbound)
    return items


def _is_float(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_keras_metadata(data: bytes, where: str) -> SavedModelMeta:
    """Decode keras_metadata.pb → `SavedModelMeta`."""
    root = _root_json(data, where)
    try:
        raw_layers = root["config"]["layers"]
    except (KeyError, TypeError):
        raise ModelFormatError(f"{where}: keras_metadata.pb root has no config.layers") from None
    layers = [{"name": str(x.get("name") or x.get("config", {}).get("name")), "class_name": x.get("class_name"),
               "config": x.get("config", {}), "inbound_nodes": x.get("inbound_nodes", [])}
              for x in raw_layers if isinstance(x, dict)]
    meta = SavedModelMeta(layers=layers, input_shape=_input_shape(layers))
    for layer in layers:
        if layer["class_name"] != "TFOpLambda":
            continue
        fn = layer["config"].get("function")
        for item in _call_args(layer["inbound_nodes"]):
            kwargs = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            if fn == "math.truediv" and item[0] == "input" and _is_float(kwargs.get("y")):
                meta.truediv_scale = float(kwargs["y"]) if meta.truediv_scale is None else meta.truediv_scale
            if fn == "math.multiply" and item[0] == "_CONSTANT_VALUE" and _is_float(item[2]):
                meta.multiply_scale = float(item[2]) if meta.multiply_scale is None else meta.multiply_scale
    # strip the inert inbound graph from the public layer list (names/configs are what callers need)
    for layer in layers:
        layer.pop("inbound_nodes", None)
    return meta
