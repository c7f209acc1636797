"""`ptychopinn-ptychodus`: ptychodus (GUI or `--batch` mode) with ptychopinn registered as a
reconstructor library, without forking ptychodus.

ptychodus 1.7 hard-codes its reconstructor libraries in `ptychodus.model.core.ModelCore`
(the list handed to `ProcessingCore`) and has no plugin entry point for them. `register()`
replaces the module global `ptychodus.model.core.ProcessingCore` with a subclass that appends
`PtychoPINNTorchLibrary` to that list; `ModelCore.__init__` looks the name up at call time, so
every ModelCore built afterwards offers the algorithm `ptychopinn-pytorch_pinn`. This depends
on those internals, hence the pinned, tested version range (`SUPPORTED`).

    ptychopinn-ptychodus                                   # the GUI (needs PyQt5)
    ptychopinn-ptychodus --batch reconstruct -i IN -o OUT  # IN/settings.ini sets
                                                           # [Processing] Algorithm = ptychopinn-pytorch_PINN
"""
from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any, Iterator, Sequence

from ptychodus.api.reconstruct import Reconstructor, ReconstructorLibrary

from .reconstructor import PtychoPINNReconstructor, ReconstructorSettings

__all__ = ["SUPPORTED", "LIBRARY_NAME", "ALGORITHM_KEY", "PtychoPINNTorchLibrary", "check_version", "register", "main"]

#: ptychodus versions whose internals `register` was tested against: [low, high)
SUPPORTED = ((1, 7), (1, 8))
#: library name shown by ptychodus (no "_": ptychodus splits algorithm keys on it)
LIBRARY_NAME = "PtychoPINN-PyTorch"
#: ptychodus's algorithm key for our reconstructor ([Processing] Algorithm in settings.ini)
ALGORITHM_KEY = "ptychopinn-pytorch_pinn"
#: ptychodus settings group holding `ReconstructorSettings`
SETTINGS_GROUP = "PtychoPINNPyTorch"
_MARK = "_ptychopinn_registered"


class VersionError(RuntimeError):
    """The installed ptychodus is outside `SUPPORTED`."""


def _parse(v: str) -> tuple[int, ...]:
    parts = []
    for piece in v.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def check_version(installed: str | None = None) -> str:
    """The installed ptychodus version; raises VersionError (one line) outside `SUPPORTED`."""
    if installed is None:
        try:
            installed = version("ptychodus")
        except PackageNotFoundError:
            raise VersionError("ptychodus is not installed (pip install 'ptychodus[gui]==1.7.*')") from None
    lo, hi = SUPPORTED
    if not (lo <= _parse(installed)[: len(lo)] < hi):
        raise VersionError(
            f"ptychodus {installed} is not supported: this launcher patches ptychodus internals tested with "
            f"{'.'.join(map(str, lo))}.x only (pip install 'ptychodus==1.7.*')"
        )
    return installed


class _SettingsBridge:
    """`ReconstructorSettings` read from a ptychodus settings group at each call."""

    def __init__(self, registry: Any) -> None:
        d = ReconstructorSettings()
        g = registry.create_group(SETTINGS_GROUP)
        self.device = g.create_string_parameter("Device", d.device)
        self.batch_size = g.create_integer_parameter("BatchSize", d.batch_size, minimum=1)
        self.stitch = g.create_string_parameter("Stitch", d.stitch)
        self.crop = g.create_integer_parameter("Crop", 0, minimum=0)
        self.weight = g.create_string_parameter("Weight", d.weight)
        self.epochs = g.create_integer_parameter("Epochs", d.epochs, minimum=1)
        self.train_batch_size = g.create_integer_parameter("TrainBatchSize", d.train_batch_size, minimum=1)
        self.learning_rate = g.create_real_parameter("LearningRate", d.learning_rate, minimum=0.0)
        self.gridsize = g.create_integer_parameter("GridSize", d.gridsize, minimum=1, maximum=5)
        self.n_filters_scale = g.create_integer_parameter("NumFiltersScale", d.n_filters_scale, minimum=1, maximum=4)
        self.nphotons = g.create_real_parameter("NumPhotons", d.nphotons, minimum=0.0)
        self.seed = g.create_integer_parameter("Seed", d.seed, minimum=0)

    def __call__(self) -> ReconstructorSettings:
        crop = int(self.crop.get_value())
        return ReconstructorSettings(
            device=str(self.device.get_value()),
            batch_size=int(self.batch_size.get_value()),
            stitch=str(self.stitch.get_value()),
            crop=crop or None,
            weight=str(self.weight.get_value()),
            epochs=int(self.epochs.get_value()),
            train_batch_size=int(self.train_batch_size.get_value()),
            learning_rate=float(self.learning_rate.get_value()),
            gridsize=int(self.gridsize.get_value()),
            n_filters_scale=int(self.n_filters_scale.get_value()),
            nphotons=float(self.nphotons.get_value()),
            seed=int(self.seed.get_value()),
        )


class PtychoPINNTorchLibrary(ReconstructorLibrary):
    """ptychodus `ReconstructorLibrary` holding one `PtychoPINNReconstructor` ("PINN").

    settings_registry: a ptychodus `SettingsRegistry`; when given, the reconstructor reads its
    settings from the group `PtychoPINNPyTorch` (saved in / read from settings.ini).
    """

    def __init__(self, settings_registry: Any = None, is_developer_mode_enabled: bool = False) -> None:
        super().__init__("ptychopinn")
        source = _SettingsBridge(settings_registry) if settings_registry is not None else None
        self._reconstructors: list[Reconstructor] = [PtychoPINNReconstructor(name="PINN", settings_source=source)]

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter(self._reconstructors)


def register(core: ModuleType | None = None) -> ModuleType:
    """Make every `ModelCore` built from `core` (default: the real `ptychodus.model.core`)
    offer ptychopinn; idempotent. Returns the patched module."""
    check_version()
    if core is None:
        core = importlib.import_module("ptychodus.model.core")
    original = core.ProcessingCore
    if getattr(original, _MARK, False):
        return core

    class ProcessingCore(original):  # type: ignore[misc, valid-type]  # subclassing a class looked up at runtime (untyped ptychodus)
        __doc__ = f"{original.__doc__ or original.__name__} (+ ptychopinn, registered by ptychopinn-ptychodus)"

        def __init__(self, task_manager: Any, settings_registry: Any, product_api: Any, algorithm_libraries: Sequence[Any]) -> None:
            libraries = list(algorithm_libraries)
            if not any(getattr(lib, "name", None) == LIBRARY_NAME for lib in libraries):
                libraries.append(PtychoPINNTorchLibrary(settings_registry))
            super().__init__(task_manager, settings_registry, product_api, libraries)

    setattr(ProcessingCore, _MARK, True)
    ProcessingCore.__qualname__ = original.__qualname__
    ProcessingCore.__module__ = original.__module__
    core.ProcessingCore = ProcessingCore  # type: ignore[attr-defined]  # patching a name on ptychodus's module (ModuleType has no such attribute)
    return core


def main(argv: Sequence[str] | None = None) -> int:
    """Console script: check the version, register, then run ptychodus's own `main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        register()
    except VersionError as exc:
        print(f"ptychopinn-ptychodus: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # ptychodus installed without the packages its application needs
        print(f"ptychopinn-ptychodus: error: ptychodus cannot start ({exc}); install it with its dependencies: pip install 'ptychodus[gui]==1.7.*'", file=sys.stderr)
        return 2
    ptychodus_main = importlib.import_module("ptychodus.__main__")
    saved = sys.argv
    sys.argv = ["ptychodus", *args]
    try:
        return int(ptychodus_main.main() or 0)
    finally:
        sys.argv = saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
