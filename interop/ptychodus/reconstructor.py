"""`PtychoPINNReconstructor`: ptychopinn as a ptychodus `TrainableReconstructor`.

    from pathlib import Path
    from ptychopinn.interop.ptychodus import PtychoPINNReconstructor
    r = PtychoPINNReconstructor(device="cpu")
    r.load_model_from_file(Path("wts.h5.zip"))          # legacy TF bundle, or a native dir/.zip
    product = list(r.reconstruct(reconstruct_input))[-1].product

`reconstruct` is a generator, as ptychodus 1.7's `Reconstructor.reconstruct` declares
(`Iterator[ReconstructOutput]`, consumed with `for result in ...` by its background task); it
yields one `ReconstructOutput` (progress = goal) when the whole object is stitched, like
ptychodus's own subprocess backends. Work runs in the calling thread (ptychodus already runs
reconstructors on a background thread); torch releases the GIL in its kernels.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ptychodus.api.io import save_ptychopinn_training_data, save_training_data
from ptychodus.api.product import LossValue
from ptychodus.api.reconstruct import ReconstructInput, ReconstructOutput, TrainableReconstructor, TrainOutput

from ptychopinn.errors import ConfigError, DataError

from .. import plugins
from .product import losses_from_history, product_from_reconstruction, scan_from_reconstruct_input

log = logging.getLogger("ptychopinn")

__all__ = ["PtychoPINNReconstructor", "ReconstructorSettings", "PROGRESS_GOAL"]

#: the progress value of the final output
PROGRESS_GOAL = 100
#: file names looked up when `train` is given a folder (ptychodus's own PtychoPINN backend
#: reads `train_data.npz`; `export_training_data` writes either format)
TRAINING_FILE_NAMES = ("train_data.npz", "train_data.h5", "training_data.npz", "training_data.h5")
#: model file written by `train` into an output folder (ptychodus batch mode loads
#: `<input>/model<ext>` with ext = `get_model_file_extension()`)
MODEL_FILE_NAME = "model.zip"


@dataclass(frozen=True)
class ReconstructorSettings:
    """Inference and training settings (ptychopinn's flags of the same names).

    device: "auto" | "cpu" | "cuda" | "cuda:1" | "mps"; batch_size: groups per inference batch;
    stitch: "barycentric" | "tf"; crop: stitched patch side (None = N/2, tf: 20); weight:
    "probe" | "uniform"; epochs, train_batch_size, learning_rate, gridsize, n_filters_scale,
    nphotons: training (gridsize and n_filters_scale only when training a new model).
    """

    device: str = "auto"
    batch_size: int = 64
    stitch: str = "barycentric"
    crop: int | None = None
    weight: str = "probe"
    epochs: int = 50
    train_batch_size: int = 16
    learning_rate: float = 1e-3
    gridsize: int = 1
    n_filters_scale: int = 2
    nphotons: float = 1e9
    seed: int = 0


class PtychoPINNReconstructor(TrainableReconstructor):
    """ptychodus `TrainableReconstructor` backed by ptychopinn (PyTorch).

    Settings are keyword arguments (`ReconstructorSettings` fields) with defaults, so
    `PtychoPINNReconstructor()` works; `settings_source`, when given, is called at each
    reconstruct/train to read the current settings (the launcher wires ptychodus's settings
    registry in this way).
    """

    def __init__(
        self,
        *,
        name: str = "PINN",
        settings_source: Callable[[], ReconstructorSettings] | None = None,
        **settings: Any,
    ) -> None:
        fields = {f.name for f in dataclasses.fields(ReconstructorSettings)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ConfigError(f"PtychoPINNReconstructor: unknown settings {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
        # legacy wts.h5.zip loading without relying on installed entry points (a source tree or
        # a stale egg-info on sys.path hides them); idempotent
        plugins.register()
        self._name = name
        self._settings = ReconstructorSettings(**settings)
        self._settings_source = settings_source
        self._model: Any = None
        self._model_path: Path | None = None
        self._history: list[dict[str, Any]] = []

    # -- Reconstructor ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def settings(self) -> ReconstructorSettings:
        return self._settings_source() if self._settings_source is not None else self._settings

    def get_progress_goal(self) -> int:
        return PROGRESS_GOAL

    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        """Yield the reconstruction of `parameters` as a `ReconstructOutput` whose product keeps
        the input's positions, probe and metadata and carries the stitched object on the
        probe's pixel grid (centre set so ptychodus maps each position onto its patch)."""
        from ptychopinn.reconstruct import reconstruct

        if self._model is None:
            raise RuntimeError("PtychoPINN (PyTorch): no model loaded; load a model file (native .zip/folder or wts.h5.zip) first")
        s = self.settings
        converted = scan_from_reconstruct_input(parameters, label=parameters.product.metadata.name or "<ptychodus input>")
        rec = reconstruct(
            self._model,
            converted.scan,
            batch_size=int(s.batch_size),
            stitch=s.stitch,
            crop=s.crop,
            weight=s.weight,
            device=s.device,
        )
        product = product_from_reconstruction(
            rec, converted.scan, converted.geometry, source=converted.product, losses=losses_from_history(self._history)
        )
        yield ReconstructOutput(product=product, progress=PROGRESS_GOAL, status=0)

    # -- models -----------------------------------------------------------------------------
    def is_model_loaded(self) -> bool:
        return self._model is not None

    def get_model_file_filter(self) -> str:
        return "PtychoPINN model (*.zip)"

    def get_model_file_extension(self) -> str:
        return ".zip"

    def load_model_from_file(self, file_path: Path) -> None:
        """Load a native model (folder or .zip), a legacy TensorFlow `wts.h5.zip` or a folder
        holding one (on CPU; moved to the settings' device when reconstructing)."""
        import torch

        from ptychopinn.reconstruct.core import load_any_model

        path = Path(file_path)
        if path.is_dir() and (path / "wts.h5.zip").is_file() and not (path / "config.json").is_file():
            path = path / "wts.h5.zip"  # a legacy bundle folder (ptychodus's TF backend saves these)
        module, extra = load_any_model(path, torch.device("cpu"))
        module.eval()
        self._model = module
        self._model_path = path
        self._history = list(((extra or {}).get("training") or {}).get("history") or [])
        log.info("PtychoPINN (PyTorch): loaded %s (N=%d, gridsize=%d)", path, module.config.N, module.config.gridsize)

    def save_model(self, file_path: Path) -> None:
        """Write the loaded model in ptychopinn's native format (a `.zip`, or a folder when the
        path has no .zip suffix); a legacy bundle is converted on the way."""
        from ptychopinn import io

        if self._model is None:
            raise RuntimeError("PtychoPINN (PyTorch): no model to save")
        extra: dict[str, Any] | None = {"training": {"history": self._history}} if self._history else None
        if self._model_path is not None:
            extra = dict(extra or {}, source=str(self._model_path))
        io.save_model(self._model, Path(file_path), extra=extra)

    # -- training ---------------------------------------------------------------------------
    def get_training_data_file_filter(self) -> str:
        return "NumPy Zipped Archive (*.npz);;HDF5 training data (*.h5 *.hdf5)"

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        """Write `parameters` with ptychodus's own writers: HDF5 (`save_training_data`) for
        .h5/.hdf5, else the PtychoPINN NPZ (`save_ptychopinn_training_data`). Both are read
        by `ptychopinn.data.load_scan` and so by `train`."""
        path = Path(file_path)
        if path.suffix.lower() in (".h5", ".hdf5"):
            save_training_data(path, parameters)
        else:
            save_ptychopinn_training_data(path, parameters)

    def _training_file(self, input_path: Path) -> Path:
        if input_path.is_file():
            return input_path
        if input_path.is_dir():
            for name in TRAINING_FILE_NAMES:
                if (input_path / name).is_file():
                    return input_path / name
            raise DataError(f"{input_path}: no training file ({', '.join(TRAINING_FILE_NAMES)}); export training data first")
        raise DataError(f"{input_path}: training data not found")

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        """Train a new model on a training export and save it.

        input_path: a training file (NPZ/HDF5 from `export_training_data`, or any ptychopinn
        scan) or a folder holding `train_data.npz` / `train_data.h5`. output_path: a `.zip`
        file, or a folder that receives `model.zip`. The trained model becomes the loaded one.
        Yields one `TrainOutput` with the per-epoch training and validation losses.
        """
        from ptychopinn import io
        from ptychopinn.config import DataConfig, ModelConfig, TrainConfig
        from ptychopinn.data import load_scan
        from ptychopinn.train import train

        s = self.settings
        data_path = self._training_file(Path(input_path))
        out = Path(output_path)
        model_file = out if out.suffix.lower() == ".zip" else out / MODEL_FILE_NAME
        scan = load_scan(data_path)
        result = train(
            scan,
            ModelConfig(N=scan.N, gridsize=int(s.gridsize), n_filters_scale=int(s.n_filters_scale)),
            DataConfig(gridsize=int(s.gridsize), nphotons=float(s.nphotons), seed=int(s.seed)),
            TrainConfig(epochs=int(s.epochs), batch_size=int(s.train_batch_size), learning_rate=float(s.learning_rate), device=s.device, seed=int(s.seed)),
            out_dir=None,
            progress=False,
        )
        model_file.parent.mkdir(parents=True, exist_ok=True)
        io.save_model(result.model, model_file, extra=dict(result.extra or {}))
        self._model = result.model.cpu().eval()
        self._model_path = model_file
        self._history = list(result.history)
        yield TrainOutput(
            training_loss=losses_from_history(result.history),
            validation_loss=_validation_losses(result.history),
            progress=PROGRESS_GOAL,
            status=0,
        )


def _validation_losses(history: list[dict[str, Any]]) -> list[LossValue]:
    out: list[LossValue] = []
    for row in history:
        v = row.get("val_loss")
        if v is not None and math.isfinite(float(v)):
            out.append(LossValue(epoch=int(row.get("epoch", len(out))), value=float(v)))
    return out
