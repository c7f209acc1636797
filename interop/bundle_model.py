"""`load_tf_bundle`: a legacy TensorFlow bundle as a ready native `PtychoPINN`, with TF-layout calls.

    legacy = load_tf_bundle("run/wts.h5.zip")
    obj = legacy.diffraction_to_obj(X * s, positions)            # (B, N, N, 1) complex64
    obj, amp, intensity = legacy.autoencoder(X * s, positions)   # as the TF autoencoder
    legacy.model                                                 # the native nn.Module

The maths is the bundle's era (spec §0): K1 combines A + iφ with a 1-channel amplitude head, S0/S1
use A·e^{iφ} with a 1-channel head and no offset re-centring, K2 re-centres offsets over the
predict batch. Weights come from `read_tf_bundle` (no TensorFlow, no pickle beyond the restricted
unpickler) and are copied through `interop.keras_layout`. The in-model reassembly is always the
per-sample formula: HEAD's batch collapse when B·C ≥ 64 (spec §8.1) is not reproduced.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ptychopinn.errors import DataError, ModelFormatError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ptychopinn.config import ModelConfig
    from ptychopinn.model import PtychoPINN

    from .tf_bundle.reader import TFBundle

#: Keras `Model.predict` default batch size; K2 re-centres offsets over one predict batch.
TF_PREDICT_BATCH = 32


def _conv_weights(bundle: "TFBundle") -> list[np.ndarray]:
    """Conv kernels/biases in Keras order (diffraction_to_obj first; the autoencoder must agree)."""
    models = bundle.models
    names = [m for m in ("diffraction_to_obj", "autoencoder") if m in models]
    if not names:
        raise ModelFormatError(f"{bundle.source}: bundle has neither diffraction_to_obj nor autoencoder "
                               f"(models: {sorted(models)})")
    first = [a for _, a in models[names[0]].weights]
    for other in names[1:]:
        arrays = [a for _, a in models[other].weights]
        same = len(arrays) == len(first) and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(arrays, first))
        if not same:
            raise ModelFormatError(f"{bundle.source}: {other} conv weights differ from {names[0]}'s "
                                   "(inconsistent bundle; expected shared layers)")
    return first


def _probe(bundle: "TFBundle", N: int) -> np.ndarray | None:
    """The probe TF used: S0/S1 the autoencoder's checkpoint variable (trainable there), else params."""
    if bundle.era in ("S0", "S1"):
        for w in bundle.models.values():
            for arr in w.extras.values():
                if np.iscomplexobj(arr) and arr.shape == (1, N, N, 1):
                    return np.ascontiguousarray(arr[0, :, :, 0].astype(np.complex64))
    return bundle.probe


def model_config_for(bundle: "TFBundle") -> "ModelConfig":
    """The era-faithful `ModelConfig` of a bundle (`TFBundle.model_config_kwargs()`).

    A K2 bundle whose CombineComplexLayer says `use_polar: false` (as `write_tf_bundle` writes for
    an additive model) combines A + iφ, as upstream's layer does.
    """
    from ptychopinn.config import ModelConfig
    from ptychopinn.errors import ConfigError

    kw = bundle.model_config_kwargs()
    if bundle.era == "K2" and any(w.combine_use_polar is False for w in bundle.models.values()):
        kw["combine"] = "additive"
    try:
        return ModelConfig(**kw)
    except ConfigError as exc:
        raise ModelFormatError(f"{bundle.source}: unsupported model configuration ({exc})") from None


def build_model(bundle: "TFBundle", *, device: "str | torch.device | None" = None) -> "PtychoPINN":
    """A `PtychoPINN` (eval mode) holding the bundle's weights, probe and intensity scale."""
    from ptychopinn.model import PtychoPINN

    from .keras_layout import load_keras_weights

    config = model_config_for(bundle)
    model = PtychoPINN(config, probe=_probe(bundle, config.N), intensity_scale=float(bundle.intensity_scale))
    load_keras_weights(model, _conv_weights(bundle), source=f"{bundle.source}: conv weights")
    if device is not None:
        from ptychopinn.io import resolve_device

        model.to(resolve_device(device))
    return model.eval()


class TFModelView:
    """A TF-style callable over the native model: `view(X, positions)` or `view.predict([X, positions])`."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self.name = name

    def __call__(self, X: Any, positions: Any, *, batch_size: int | None = None) -> Any:
        return self._fn(X, positions, batch_size=batch_size)

    def predict(self, inputs: Sequence[Any], batch_size: int | None = None, verbose: Any = 0, **_: Any) -> Any:
        """Keras-style `predict([X, positions], batch_size=...)` (verbose and other flags ignored)."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise DataError(f"{self.name}.predict: expected [X, positions], got {type(inputs).__name__}")
        return self._fn(inputs[0], inputs[1], batch_size=batch_size)

    def __repr__(self) -> str:
        return f"TFModelView({self.name!r})"


@dataclass
class LegacyModel:
    """A legacy bundle loaded as a native model.

    model: the `PtychoPINN` (eval mode); config: its `ModelConfig`; bundle: the `TFBundle` read;
    era: "S0" | "S1" | "K1" | "K2"; intensity_scale: s (sqrt-photons); batch_size: groups per
    forward pass (also the span of K2's offset re-centring, as a TF predict batch).
    `diffraction_to_obj` / `autoencoder`: TF-layout callables (numpy in, numpy out).
    """

    model: "PtychoPINN"
    config: "ModelConfig"
    bundle: "TFBundle"
    era: str
    intensity_scale: float
    batch_size: int = TF_PREDICT_BATCH
    diffraction_to_obj: TFModelView = field(init=False, repr=False)
    autoencoder: TFModelView = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise DataError(f"load_tf_bundle: batch_size must be >= 1, got {self.batch_size}")
        self.diffraction_to_obj = TFModelView(self._diffraction_to_obj, "diffraction_to_obj")
        self.autoencoder = TFModelView(self._autoencoder, "autoencoder")

    @property
    def source(self) -> str:
        return str(self.bundle.source)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready facts about the bundle (stored under `extra` by `ptychopinn convert`)."""
        b = self.bundle
        keras = sorted({w.keras_version for w in b.models.values() if w.keras_version})
        return {
            "era": b.era, "source": os.path.abspath(str(b.source)), "intensity_scale": float(b.intensity_scale),
            "intensity_scale_source": b.intensity_scale_source, "probe_source": b.probe_source,
            "models": sorted(b.models), "keras_version": keras[0] if len(keras) == 1 else (keras or None),
            "inferred": list(b.model_config_hints.get("inferred", [])),
        }

    # -- TF layout -------------------------------------------------------------------------
    def _inputs(self, X: Any, positions: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
        N, C = self.config.N, self.config.channels
        X = np.asarray(X)
        positions = np.asarray(positions)
        if X.ndim != 4 or X.shape[1:] != (N, N, C) or not np.issubdtype(X.dtype, np.number):
            raise DataError(f"{who}: input X must be (B, {N}, {N}, {C}) float (TF layout, already × s), "
                            f"got {X.shape} {X.dtype}")
        if positions.shape != (X.shape[0], 1, 2, C):
            raise DataError(f"{who}: input positions must be ({X.shape[0]}, 1, 2, {C}) [x, y] "
                            f"(TF layout), got {positions.shape}")
        if np.iscomplexobj(X) or np.iscomplexobj(positions):
            raise DataError(f"{who}: inputs X and positions must be real, got {X.dtype} and {positions.dtype}")
        return X.astype(np.float32, copy=False), positions.astype(np.float32, copy=False)

    def _batches(self, X: np.ndarray, positions: np.ndarray, batch_size: int | None):
        """Yield channels-first torch batches (x (b, C, N, N), offsets (b, C, 2)) on the model's device."""
        import torch

        from .tf_compat import nhwc_to_nchw, tf_offsets_to_channels_first

        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise DataError(f"batch_size must be >= 1, got {bs}")
        dev = self.model.log_intensity_scale.device
        for s in range(0, X.shape[0], bs):
            x = torch.from_numpy(np.ascontiguousarray(nhwc_to_nchw(X[s:s + bs]))).to(dev)
            o = torch.from_numpy(np.ascontiguousarray(tf_offsets_to_channels_first(positions[s:s + bs]))).to(dev)
            yield x, o

    def _diffraction_to_obj(self, X: Any, positions: Any, *, batch_size: int | None = None) -> np.ndarray:
        """X `(B, N, N, C)` float32 (× s), positions `(B, 1, 2, C)` → trimmed_obj `(B, N, N, 1)` complex64."""
        import torch

        X, positions = self._inputs(X, positions, "diffraction_to_obj")
        out = np.empty((X.shape[0], self.config.N, self.config.N, 1), np.complex64)
        k = 0
        with torch.inference_mode():
            for x, o in self._batches(X, positions, batch_size):
                obj = self.model.predict_object(x, o)
                out[k:k + len(obj), :, :, 0] = obj.to(torch.complex64).cpu().numpy()
                k += len(obj)
        return out

    def _autoencoder(self, X: Any, positions: Any, *,
                     batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The TF autoencoder's outputs: trimmed_obj `(B, N, N, 1)` complex64, Â `(B, N, N, C)` float32
        (sqrt-photons), Î = Â² `(B, N, N, C)` float32 (deterministic, also for S0/S1 whose TF output 2
        was a random Poisson sample of Î)."""
        import torch

        from ptychopinn.errors import ConfigError

        if self.model.probe is None:
            raise ConfigError(f"{self.source}: the bundle holds no probe (params.dill 'probe'); "
                              "autoencoder needs one (diffraction_to_obj does not)")
        X, positions = self._inputs(X, positions, "autoencoder")
        B, N, C = X.shape[0], self.config.N, self.config.channels
        obj = np.empty((B, N, N, 1), np.complex64)
        amp = np.empty((B, N, N, C), np.float32)
        inten = np.empty((B, N, N, C), np.float32)
        k = 0
        with torch.inference_mode():
            for x, o in self._batches(X, positions, batch_size):
                out = self.model(x, o)
                n = out.object.shape[0]
                obj[k:k + n, :, :, 0] = out.object.to(torch.complex64).cpu().numpy()
                amp[k:k + n] = out.amplitude.float().permute(0, 2, 3, 1).cpu().numpy()
                inten[k:k + n] = out.intensity.float().permute(0, 2, 3, 1).cpu().numpy()
                k += n
        return obj, amp, inten


def load_tf_bundle(path: str | os.PathLike, *, device: "str | torch.device | None" = None,
                   batch_size: int = TF_PREDICT_BATCH, verify_checksums: bool = True) -> LegacyModel:
    """Load a legacy TF bundle (any era, see `read_tf_bundle` for accepted paths) as a native model.

    device: where the model lives (None = CPU; "auto" = CUDA when present). batch_size: groups per
    forward pass of the TF-layout calls (TF `predict`'s default 32; lower it to save memory).
    Raises ModelFormatError (one line) for anything that is not a usable bundle.
    """
    from .tf_bundle.reader import read_tf_bundle

    bundle = read_tf_bundle(path, verify_checksums=verify_checksums)
    model = build_model(bundle, device=device)
    return LegacyModel(model=model, config=model.config, bundle=bundle, era=bundle.era,
                       intensity_scale=float(bundle.intensity_scale), batch_size=int(batch_size))


__all__ = ["load_tf_bundle", "LegacyModel", "TFModelView", "build_model", "model_config_for", "TF_PREDICT_BATCH"]
