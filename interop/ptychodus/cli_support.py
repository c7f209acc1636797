"""The `ptychopinn reconstruct` side of the ptychodus interop: `--product`, `--product-in` and
the geometry flags. Only the CLI imports this module (the core never does); ptychodus itself
is imported only when one of the product flags is used.

    --product OUT.h5         also write a ptychodus product (ptychodus's own save_product)
    --product-in IN.h5       probe and positions from a ptychodus product; --data is then a
                             ptychodus diffraction file (patterns, indexes, bad_pixels)
    --pixel-size M           object pixel size in metres (when the scan file has none)
    --detector-distance M    sample-detector distance in metres (when the scan file has none)
    --photon-energy EV       photon energy in eV (when the scan file has none)
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptychopinn.errors import ConfigError

__all__ = ["add_product_arguments", "ProductPlan", "plan_product", "write_planned_product"]

_FLAGS = (
    ("--product", dict(metavar="OUT.h5", help="also write a ptychodus product (HDF5) of the reconstruction")),
    ("--product-in", dict(metavar="IN.h5", help="ptychodus product supplying probe and positions; --data is then a ptychodus diffraction file")),
    ("--pixel-size", dict(metavar="M", help="object pixel size in metres (for --product when the scan file has none)")),
    ("--detector-distance", dict(metavar="M", help="sample-detector distance in metres (for --product when the scan file has none)")),
    ("--photon-energy", dict(metavar="EV", help="photon energy in eV (for --product when the scan file has none)")),
)


def add_product_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the product flags (each one only if no other part of the CLI defined it already:
    `--pixel-size` has one meaning everywhere, the object pixel size in metres)."""
    existing = set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public query
    for flag, kwargs in _FLAGS:
        if flag not in existing:
            parser.add_argument(flag, default=None, **kwargs)  # type: ignore[arg-type]


def _positive(flag: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: expected a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{flag}: expected a positive number, got {value!r}")
    return v


@dataclass
class ProductPlan:
    """What `plan_product` validated before any work: the scan to reconstruct (None: the CLI
    loads --data itself), and where and how to write the product (path None: no product)."""

    scan: Any
    path: Path | None
    overwrite: bool
    geometry: Any = None
    source: Any = None


def _import_interop() -> Any:
    try:
        from . import product
    except ImportError as exc:
        raise ConfigError(
            f"--product/--product-in need ptychodus ({exc}); pip install ptychodus==1.7.0 --no-deps && pip install 'ptychopinn[ptychodus]'"
        ) from None
    return product


def _model_size(model_path: Path) -> int:
    """N of a native model or legacy bundle (for `--crop-detector`)."""
    from ptychopinn import io

    if io.is_model_path(model_path):
        return int(io.read_model_info(model_path).config.N)
    import torch

    from ptychopinn.reconstruct.core import load_any_model

    return int(load_any_model(model_path, torch.device("cpu"))[0].config.N)


def plan_product(args: argparse.Namespace, data_path: Path, model_path: Path, load: Any = None) -> ProductPlan | None:
    """Validate the product flags before reconstructing (nothing is written on error).

    Returns None when neither --product nor --product-in is given; otherwise the plan holds the
    scan to reconstruct, read here with the load options `load` (`data.LoadOptions`), so the
    caller passes `plan.scan` (and no load options) to `reconstruct`. `--pixel-size` is the
    object pixel size in metres everywhere; for a ptychodus training export, whose positions are
    object pixels by construction, it only supplies the product's pixel size (the positions are
    not read as metres). Missing geometry, a flag that disagrees with the file, an existing
    product without --overwrite or a missing folder is a ConfigError (one line, exit 2).
    """
    out = getattr(args, "product", None)
    product_in = getattr(args, "product_in", None)
    if out is None and product_in is None:
        return None
    pm = _import_interop()
    pixel = _positive("--pixel-size", getattr(args, "pixel_size", None))
    distance = _positive("--detector-distance", getattr(args, "detector_distance", None))
    energy = _positive("--photon-energy", getattr(args, "photon_energy", None))
    overwrite = bool(getattr(args, "overwrite", False))
    path = None
    if out is not None:
        path = Path(str(out))
        if path.is_dir():
            raise ConfigError(f"--product: {path} is a directory, expected a file path such as product.h5")
        if path.exists() and not overwrite:
            raise ConfigError(f"--product: {path} exists; pass --overwrite to replace it")
        if not path.parent.is_dir():
            raise ConfigError(f"--product: folder {path.parent} does not exist")
    if product_in is not None:
        if load is not None and dataclasses.replace(load, pixel_size=None) != type(load)():
            raise ConfigError("--product-in: --diffraction-units, --crop-detector and --bin do not apply (the patterns are ptychodus photon counts, paired by scan index)")
        converted = pm.scan_from_product_files(data_path, Path(str(product_in)))
        # flags must agree with the product (resolve_geometry checks them against the metadata)
        pm.resolve_geometry(converted.scan, pixel_size_m=pixel, detector_distance_m=distance, photon_energy_eV=energy, path=Path(str(product_in)))
        return ProductPlan(scan=converted.scan, path=path, overwrite=overwrite, geometry=converted.geometry, source=converted.product)
    from ptychopinn.data import LoadOptions, load_scan

    opts = dataclasses.replace(load if load is not None else LoadOptions(), pixel_size=None)
    if opts.crop_detector:
        opts = opts.for_size(_model_size(model_path))
    if pixel is None:
        scan = load_scan(data_path, options=opts)
    else:  # positions in metres (data contract), unless the file is a ptychodus export (pixels)
        scan = load_scan(data_path, options=dataclasses.replace(opts, pixel_size=pixel))
        if pm.is_ptychodus_export(scan):
            scan = load_scan(data_path, options=opts)
    geometry = pm.resolve_geometry(scan, pixel_size_m=pixel, detector_distance_m=distance, photon_energy_eV=energy, path=data_path)
    return ProductPlan(scan=scan, path=path, overwrite=overwrite, geometry=geometry)


def _history(model_path: Path) -> list[dict[str, Any]]:
    from ptychopinn import io

    try:
        if io.is_model_path(model_path):
            return list(((io.read_model_info(model_path).extra or {}).get("training") or {}).get("history") or [])
    except Exception:  # losses are an extra: a model that loaded must not fail here
        return []
    return []


def write_planned_product(plan: ProductPlan, rec: Any, model_path: Path) -> Path | None:
    """Write the product of `rec` as planned; returns its path (None when no --product)."""
    if plan.path is None:
        return None
    pm = _import_interop()
    from ptychopinn import __version__

    product = pm.product_from_reconstruction(
        rec,
        plan.scan,
        plan.geometry,
        source=plan.source,
        losses=pm.losses_from_history(_history(model_path)),
        comments=f"ptychopinn {__version__} reconstruction, model {model_path.name}, {rec.n_groups} groups, {rec.stitch} stitching",
    )
    return pm.write_product(plan.path, product, overwrite=plan.overwrite)
