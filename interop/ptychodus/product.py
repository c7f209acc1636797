"""ptychodus products in and out: `Reconstruction` → `Product` (written with ptychodus's own
`save_product`), and `ReconstructInput` / product + pattern files → `Scan`.

Frames and units. A ptychopinn `Scan` holds positions in *object pixels* (x = column, y = row)
of an "object frame"; a ptychodus product holds positions in metres and an object array with a
physical pixel size and centre. One affine map joins them (`ProductGeometry`):

    x_m = origin_x_m + pixel_width_m · x_px          (same for y)

and ptychodus's own position → pixel rule (`ObjectGeometry.map_probe_positions_to_object_x_px`)

    x_px(array) = (x_m − center_x_m) / pixel_width_m + (W − 1) / 2

fixes the object's centre: a reconstruction canvas whose pixel (0, 0) sits at object-frame
pixel `rec.origin` gets `center_x_m = origin_x_m + pixel_width_m · (rec.origin[0] + (W − 1)/2)`,
so each scan position maps onto the canvas pixel where the reconstruction put its patch centre.

This module imports ptychodus (the `ptychodus` extra); the ptychopinn core never imports it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ptychopinn.errors import ConfigError, DataError

try:  # the optional extra: one clear line instead of a traceback when it is missing
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.io import load_diffraction_data, load_product, save_product
    from ptychodus.api.object import Object, ObjectCenter
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
    from ptychodus.api.product import LossValue, Product, ProductMetadata
    from ptychodus.api.reconstruct import ReconstructInput, prepare_reconstruct_input
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"ptychopinn.interop.ptychodus needs ptychodus ({exc}); install it with "
        "`pip install ptychodus==1.7.0 --no-deps` and `pip install 'ptychopinn[ptychodus]'`",
        name="ptychodus",
    ) from exc

__all__ = [
    "ProductGeometry",
    "ScanWithGeometry",
    "geometry_from_metadata",
    "resolve_geometry",
    "product_from_reconstruction",
    "write_product",
    "scan_from_reconstruct_input",
    "scan_from_product_files",
    "losses_from_history",
    "crop_factor",
    "is_ptychodus_export",
]

#: Scan.metadata keys read for the physical geometry (ptychodus's own names first)
PIXEL_WIDTH_KEYS = ("object_pixel_width_m", "pixel_width_m", "pixel_size_m", "pixel_size")
PIXEL_HEIGHT_KEYS = ("object_pixel_height_m", "pixel_height_m")
DISTANCE_KEYS = ("detector_object_distance_m", "detector_distance_m")
ENERGY_KEYS = ("photon_energy_eV", "probe_energy_eV")
#: relative tolerance for "the flag agrees with the file"
AGREE_RTOL = 1e-6


@dataclass(frozen=True)
class ProductGeometry:
    """The physical frame of a scan.

    pixel_width_m, pixel_height_m: object (= probe) pixel size in metres;
    origin_x_m, origin_y_m: metres of object-frame pixel (0, 0), i.e.
    `x_m = origin_x_m + pixel_width_m · x_px`;
    detector_distance_m: sample–detector distance in metres; photon_energy_eV: photon energy.
    """

    pixel_width_m: float
    pixel_height_m: float
    detector_distance_m: float
    photon_energy_eV: float  # noqa: N815
    origin_x_m: float = 0.0
    origin_y_m: float = 0.0

    def to_metres(self, x_px: np.ndarray, y_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object-frame pixels `(M,)` → metres `(M,)` float64."""
        x = self.origin_x_m + self.pixel_width_m * np.asarray(x_px, dtype=np.float64)
        y = self.origin_y_m + self.pixel_height_m * np.asarray(y_px, dtype=np.float64)
        return x, y

    def object_center(self, canvas_origin: Sequence[float], shape: tuple[int, int]) -> ObjectCenter:
        """ptychodus centre (metres) of an `(H, W)` canvas whose pixel (0, 0) is object-frame
        pixel `canvas_origin` `[x0, y0]`."""
        H, W = shape
        return ObjectCenter(
            x_m=float(self.origin_x_m + self.pixel_width_m * (float(canvas_origin[0]) + (W - 1) / 2)),
            y_m=float(self.origin_y_m + self.pixel_height_m * (float(canvas_origin[1]) + (H - 1) / 2)),
        )


@dataclass
class ScanWithGeometry:
    """A `Scan` built from ptychodus data, with its frame and the product it came from."""

    scan: Any
    geometry: ProductGeometry
    product: Product


# -- geometry -------------------------------------------------------------------------------
def _first(meta: Mapping[str, Any], keys: Iterable[str]) -> float | None:
    for k in keys:
        if k in meta and meta[k] is not None:
            try:
                return float(meta[k])
            except (TypeError, ValueError):
                raise DataError(f"metadata key {k!r}: expected a number, got {meta[k]!r}") from None
    return None


def geometry_from_metadata(meta: Mapping[str, Any]) -> dict[str, float | None]:
    """The physical values a scan's metadata holds (None for each one it lacks)."""
    width = _first(meta, PIXEL_WIDTH_KEYS)
    height = _first(meta, PIXEL_HEIGHT_KEYS)
    return {
        "pixel_width_m": width,
        "pixel_height_m": height if height is not None else width,
        "detector_distance_m": _first(meta, DISTANCE_KEYS),
        "photon_energy_eV": _first(meta, ENERGY_KEYS),
    }


def _h5_training_geometry(path: Path) -> dict[str, float | None]:
    """Scalars of a ptychodus `save_training_data` HDF5 file (empty when it is not one)."""
    import h5py

    out: dict[str, float | None] = {}
    try:
        with h5py.File(path, "r") as f:
            for key in ("object_pixel_width_m", "object_pixel_height_m", "detector_object_distance_m", "photon_energy_eV"):
                ds = f.get(key)
                if isinstance(ds, h5py.Dataset) and ds.shape == ():
                    out[key] = float(ds[()])
    except (OSError, ValueError):
        return {}
    return geometry_from_metadata(out) if out else {}


def _object_frame_shape(scan: Any, path: Path | None) -> tuple[int, int] | None:
    """(H, W) of the object array the export's pixel positions refer to, as stored in the file
    (`load_scan` resamples `initial_object` after a detector crop; the positions were written
    about the stored array's centre); the scan's own object array without a file."""
    shape = None
    if path is not None and path.is_file():
        try:  # read the header only
            import h5py

            if h5py.is_hdf5(path):
                with h5py.File(path, "r") as f:
                    ds = f.get("object")
                    if isinstance(ds, h5py.Dataset) and ds.ndim >= 2:
                        shape = (int(ds.shape[-2]), int(ds.shape[-1]))
            else:
                with np.load(path, mmap_mode="r", allow_pickle=False) as z:
                    if "objectGuess" in z.files and z["objectGuess"].ndim >= 2:
                        shape = (int(z["objectGuess"].shape[-2]), int(z["objectGuess"].shape[-1]))
        except (OSError, ValueError):
            shape = None
    if shape is not None:
        return shape
    for name in ("initial_object", "object"):
        obj = getattr(scan, name, None)
        if obj is not None:
            return int(obj.shape[-2]), int(obj.shape[-1])
    return None


def crop_factor(meta: Mapping[str, Any]) -> float:
    """raw window / stored frame of a detector crop recorded by `load_scan` (`detector_crop`),
    1 without one: the object pixels of a cropped scan are 1/factor times larger."""
    crop = meta.get("detector_crop") if isinstance(meta, Mapping) else None
    if isinstance(crop, Mapping) and crop.get("size") and crop.get("frame"):
        return float(crop["size"]) / float(crop["frame"])
    return 1.0


def is_ptychodus_export(scan: Any) -> bool:
    """True for a scan read from a ptychodus training export (positions are object pixels about
    the export's object array by construction)."""
    meta = getattr(scan, "metadata", None) or {}
    return str(meta.get("source_format", "")).startswith("ptychodus")


def resolve_geometry(
    scan: Any,
    *,
    pixel_size_m: float | None = None,
    detector_distance_m: float | None = None,
    photon_energy_eV: float | None = None,  # noqa: N803
    path: str | os.PathLike[str] | None = None,
) -> ProductGeometry:
    """The scan's physical frame: its metadata (and, for a ptychodus HDF5 training file, the
    file's scalars) completed by explicit values; a value given both ways must agree.

    pixel_size_m is at the sampling of the stored frames (as `--pixel-size`); after a detector
    crop (`Scan.metadata['detector_crop']`) the object pixels are larger by frame/window.
    Origin: for a ptychodus training export the centre of the export's object array is put at
    (0, 0) m (the exports store pixel positions about that array's centre and drop the absolute
    scan origin, so (0, 0) is the only honest choice); otherwise object-frame pixel (0, 0) is at
    (0, 0) m, so positions read in metres come back unchanged.
    Raises ConfigError naming every missing value and the flag that supplies it.
    """
    p = Path(path) if path is not None else getattr(scan, "path", None)
    p = Path(p) if p is not None else None
    meta = getattr(scan, "metadata", None) or {}
    known = dict(geometry_from_metadata(meta))
    if p is not None and p.is_file() and crop_factor(meta) == 1.0:
        for k, v in _h5_training_geometry(p).items():
            if known.get(k) is None:
                known[k] = v
    factor = crop_factor(meta)
    pixel_used = None if pixel_size_m is None else float(pixel_size_m) / factor
    flags = {
        "pixel_width_m": (pixel_used, "--pixel-size"),
        "pixel_height_m": (pixel_used, "--pixel-size"),
        "detector_distance_m": (detector_distance_m, "--detector-distance"),
        "photon_energy_eV": (photon_energy_eV, "--photon-energy"),
    }
    label = str(p) if p is not None else "<in-memory scan>"
    values: dict[str, float] = {}
    missing: list[str] = []
    for key, (given, flag) in flags.items():
        stored = known.get(key)
        if given is not None:
            given = float(given)
            if not (math.isfinite(given) and given > 0):
                raise ConfigError(f"{flag}: expected a positive number, got {given!r}")
            if stored is not None and not math.isclose(given, stored, rel_tol=AGREE_RTOL):
                raise ConfigError(f"{flag}={given * (factor if flag == '--pixel-size' else 1):g} disagrees with {label}'s {key}={stored:g}; drop the flag or fix the file")
            values[key] = given
        elif stored is not None:
            if not (math.isfinite(stored) and stored > 0):
                raise DataError(f"{label}: {key}={stored!r}, expected a positive number")
            values[key] = stored
        elif flag not in missing:
            missing.append(flag)
    if missing:
        raise ConfigError(
            f"{label} has no {', '.join(m.lstrip('-').replace('-', ' ') for m in missing)}: a ptychodus product needs "
            f"{' '.join(f'{m} VALUE' for m in missing)} (pixel size and distance in metres, energy in eV)"
        )
    ox = oy = 0.0
    frame = _object_frame_shape(scan, p) if is_ptychodus_export(scan) else None
    if frame is not None:  # the export's pixel frame, at the export's (uncropped) sampling
        ox = -values["pixel_width_m"] * factor * (frame[1] - 1) / 2
        oy = -values["pixel_height_m"] * factor * (frame[0] - 1) / 2
    return ProductGeometry(
        pixel_width_m=values["pixel_width_m"],
        pixel_height_m=values["pixel_height_m"],
        detector_distance_m=values["detector_distance_m"],
        photon_energy_eV=values["photon_energy_eV"],
        origin_x_m=ox,
        origin_y_m=oy,
    )


# -- writing --------------------------------------------------------------------------------
def losses_from_history(history: Iterable[Mapping[str, Any]] | None) -> list[LossValue]:
    """ptychodus `LossValue`s (epoch, training loss) from a ptychopinn training history."""
    out: list[LossValue] = []
    for row in history or ():
        loss = row.get("loss")
        if loss is None or not math.isfinite(float(loss)):
            continue
        out.append(LossValue(epoch=int(row.get("epoch", len(out))), value=float(loss)))
    return out


def _probe_sequence(scan: Any, geometry: ProductGeometry) -> ProbeSequence:
    modes = getattr(scan, "probe_modes", None)
    probe = np.asarray(modes if modes is not None else scan.probe)
    if probe.ndim == 2:
        probe = probe[None]
    pixel = PixelGeometry(width_m=geometry.pixel_width_m, height_m=geometry.pixel_height_m)
    return ProbeSequence(array=np.ascontiguousarray(probe, dtype=np.complex64), opr_weights=None, pixel_geometry=pixel)


def product_from_reconstruction(
    rec: Any,
    scan: Any,
    geometry: ProductGeometry,
    *,
    source: Product | None = None,
    losses: Sequence[LossValue] = (),
    name: str | None = None,
    comments: str = "",
) -> Product:
    """A ptychodus `Product` of a ptychopinn `Reconstruction` of `scan`.

    object: `rec.object` `(H, W)` complex64 (zero where no patch landed) on the object pixel
    grid, centred so that ptychodus maps every scan position onto the canvas pixel where the
    reconstruction placed it (see the module docstring). Positions, probe and metadata: those
    of `source` unchanged when the scan came from a ptychodus product; otherwise the scan's
    positions in metres (`geometry.to_metres`, indexes 0..M−1), its probe (all modes) and
    metadata built from `geometry`.
    """
    obj = np.ascontiguousarray(rec.object, dtype=np.complex64)
    pixel = PixelGeometry(width_m=geometry.pixel_width_m, height_m=geometry.pixel_height_m)
    object_ = Object(array=obj, pixel_geometry=pixel, center=geometry.object_center(rec.origin, obj.shape))
    if source is not None:
        positions = source.probe_positions
        probes = source.probes
        metadata = source.metadata
    else:
        x_m, y_m = geometry.to_metres(scan.xcoords, scan.ycoords)
        positions = ProbePositionSequence([ProbePosition(i, float(x), float(y)) for i, (x, y) in enumerate(zip(x_m, y_m))])
        probes = _probe_sequence(scan, geometry)
        path = getattr(scan, "path", None)
        metadata = ProductMetadata(
            name=name or (Path(path).stem if path else "ptychopinn"),
            comments=comments,
            detector_distance_m=geometry.detector_distance_m,
            photon_energy_eV=geometry.photon_energy_eV,
            probe_photon_count=0.0,
            exposure_time_s=0.0,
            mass_attenuation_m2_per_kg=0.0,
            tomography_angle_deg=0.0,
        )
    return Product(metadata=metadata, probe_positions=positions, probes=probes, object_=object_, losses=list(losses))


def write_product(path: str | os.PathLike[str], product: Product, *, overwrite: bool = False) -> Path:
    """Write `product` with ptychodus's `save_product`, atomically (temporary file beside `path`,
    renamed into place; follows the umask). Refuses an existing file unless `overwrite`."""
    from ptychopinn.io.atomic import atomic_path

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{target}: is a directory, expected a product file path (e.g. product.h5)")
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: exists; pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise ConfigError(f"{target}: folder {target.parent} does not exist")
    with atomic_path(target) as tmp:
        save_product(tmp, product)
    return target


# -- reading --------------------------------------------------------------------------------
def _check_square_pixels(product: Product, label: str) -> PixelGeometry:
    pixel = product.object_.get_pixel_geometry()
    try:
        probe_pixel = product.probes.get_pixel_geometry()
    except ValueError:
        probe_pixel = pixel
    for a, b, what in ((pixel.width_m, probe_pixel.width_m, "width"), (pixel.height_m, probe_pixel.height_m, "height")):
        if not math.isclose(a, b, rel_tol=1e-3):
            raise DataError(
                f"{label}: object pixel {what} {a:g} m differs from the probe's {b:g} m; ptychopinn needs one pixel grid "
                "(resample the object to the probe pixel size in ptychodus first)"
            )
    if not (pixel.width_m > 0 and pixel.height_m > 0):
        raise DataError(f"{label}: object pixel size {pixel.width_m:g} x {pixel.height_m:g} m, expected positive")
    return pixel


def scan_from_reconstruct_input(parameters: ReconstructInput, *, label: str = "<ptychodus input>") -> ScanWithGeometry:
    """A ptychopinn `Scan` of a ptychodus `ReconstructInput`, read as `load_scan` reads a
    ptychodus export: patterns are photon counts (`diffraction_units='counts'`, amplitudes on
    gather), `bad_pixels` kept (True = not measured), the OPR-free probe mode stack (dominant
    mode = `Scan.probe`), the input object as `initial_object` (never ground truth).
    Positions: ptychodus's own map onto the input object's pixel grid, whose pixel frame is the
    scan's object frame.
    """
    from ptychopinn.data import make_scan

    product = parameters.product
    pixel = _check_square_pixels(product, label)
    obj_geom = product.object_.get_geometry()
    positions = product.probe_positions
    x_px = np.asarray(obj_geom.map_probe_positions_to_object_x_px(positions), dtype=np.float64)
    y_px = np.asarray(obj_geom.map_probe_positions_to_object_y_px(positions), dtype=np.float64)
    patterns = np.asarray(parameters.diffraction_patterns)
    if patterns.ndim != 3 or patterns.shape[0] != x_px.shape[0]:
        raise DataError(f"{label}: {patterns.shape[0] if patterns.ndim else 0} patterns for {x_px.shape[0]} positions")
    if patterns.shape[1] != patterns.shape[2]:
        raise DataError(f"{label}: patterns are {patterns.shape[1]}x{patterns.shape[2]}, ptychopinn needs square patterns")
    meta = product.metadata
    arrays: dict[str, Any] = dict(
        diffraction=patterns,
        diffraction_units="counts",
        xcoords=x_px,
        ycoords=y_px,
        probeGuess=np.asarray(product.probes.get_probe_no_opr().get_array()),
        initial_object=np.asarray(product.object_.get_layer(0)),
        metadata={
            "source_format": "ptychodus-product",
            "object_pixel_width_m": float(pixel.width_m),
            "object_pixel_height_m": float(pixel.height_m),
            "detector_distance_m": float(meta.detector_distance_m),
            "photon_energy_eV": float(meta.photon_energy_eV),
        },
    )
    if parameters.bad_pixels is not None:
        bad = np.asarray(parameters.bad_pixels, dtype=bool)
        if bad.shape != patterns.shape[1:]:
            raise DataError(f"{label}: bad_pixels has shape {bad.shape}, expected {patterns.shape[1:]}")
        arrays["bad_pixels"] = bad
    scan = make_scan(**arrays)
    H, W = obj_geom.height_px, obj_geom.width_px
    geometry = ProductGeometry(
        pixel_width_m=float(pixel.width_m),
        pixel_height_m=float(pixel.height_m),
        detector_distance_m=float(meta.detector_distance_m),
        photon_energy_eV=float(meta.photon_energy_eV),
        origin_x_m=float(obj_geom.center_x_m - pixel.width_m * (W - 1) / 2),
        origin_y_m=float(obj_geom.center_y_m - pixel.height_m * (H - 1) / 2),
    )
    return ScanWithGeometry(scan=scan, geometry=geometry, product=product)


def scan_from_product_files(patterns_path: str | os.PathLike[str], product_path: str | os.PathLike[str]) -> ScanWithGeometry:
    """A `Scan` from a ptychodus diffraction file (`save_diffraction_data`: `patterns`,
    `indexes`, `bad_pixels`) and a product that supplies the probe and positions (paired by
    scan index with ptychodus's own `prepare_reconstruct_input`)."""
    import h5py

    pp, prod = Path(patterns_path), Path(product_path)
    for p, flag in ((pp, "--data"), (prod, "--product-in")):
        if not p.is_file():
            raise ConfigError(f"{flag}: {p}: file not found")
    try:
        product = load_product(prod)
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{prod}: not a readable ptychodus product ({exc})") from None
    if not h5py.is_hdf5(pp):
        raise DataError(f"{pp}: with --product-in, --data must be a ptychodus diffraction file (HDF5 with patterns, indexes, bad_pixels)")
    try:
        data = load_diffraction_data(pp)
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{pp}: not a ptychodus diffraction file, expected HDF5 datasets patterns (M, N, N), indexes (M,), bad_pixels (N, N) ({exc})") from None
    try:
        parameters = prepare_reconstruct_input(data, product)
    except ValueError as exc:
        raise DataError(f"{pp} + {prod}: {exc}") from None
    out = scan_from_reconstruct_input(parameters, label=str(pp))
    out.scan.path = pp
    return out
