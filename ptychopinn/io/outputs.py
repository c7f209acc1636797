"""Reconstruction output files: NPZ / HDF5 arrays and PNG images, all written atomically.

    reconstruction.npz   object (H, W) complex64, amplitude, phase (H, W) float32,
                         _metadata: JSON string (0-d unicode array, loads with allow_pickle=False)
    reconstruction.h5    datasets object (complex64), amplitude, phase; attrs: metadata_json and
                         each scalar/string metadata entry
    amplitude.png, phase.png (+ error_map.png when the truth is given)

No torch here: arrays are numpy. matplotlib is optional and imported only by `save_images`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .atomic import atomic_path, atomic_save_npz, strict_json_dumps

log = logging.getLogger("ptychopinn")

#: the one line logged when matplotlib (the `plot` extra) is missing
NO_MATPLOTLIB = 'matplotlib is not installed: no PNG images written (pip install "ptychopinn[plot]")'

__all__ = ["save_reconstruction", "save_images", "load_reconstruction"]

_FORMATS = ("npz", "h5")


def _as_object(obj: Any) -> np.ndarray:
    """(H, W) complex64 from a numpy array or a torch tensor."""
    if hasattr(obj, "detach"):  # a torch tensor, without importing torch here
        obj = obj.detach().cpu().numpy()
    a = np.asarray(obj)
    if a.ndim != 2:
        raise ValueError(f"reconstruction object must be 2-D (H, W), got shape {a.shape}")
    return a.astype(np.complex64, copy=False)


def _metadata_json(metadata: dict | None) -> str:
    try:
        return strict_json_dumps(metadata or {}, sort_keys=True)  # NaN/inf -> null
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_reconstruction: key 'metadata' must be JSON-serialisable ({exc})") from None


def save_reconstruction(
    out_dir: str | os.PathLike,
    obj: Any,
    *,
    metadata: dict | None = None,
    formats: Iterable[str] = _FORMATS,
) -> dict[str, Path]:
    """Write the stitched object `(H, W)` complex64 as `reconstruction.npz` and/or `.h5`.

    metadata: JSON-serialisable dict (model path, scan path, metrics, ...). Returns
    {format: path written}.
    """
    formats = tuple(formats)
    bad = [f for f in formats if f not in _FORMATS]
    if bad:
        raise ValueError(f"save_reconstruction: unknown format(s) {bad}; expected some of {_FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = _as_object(obj)
    amp = np.abs(a).astype(np.float32)
    phase = np.angle(a).astype(np.float32)
    meta = _metadata_json(metadata)
    written: dict[str, Path] = {}
    if "npz" in formats:
        written["npz"] = atomic_save_npz(
            out / "reconstruction.npz", object=a, amplitude=amp, phase=phase, _metadata=np.array(meta)
        )
    if "h5" in formats:
        import h5py

        path = out / "reconstruction.h5"
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as h5:
                ds = h5.create_dataset("object", data=a)
                ds.attrs["description"] = "reconstructed complex object (H, W), rows = y, columns = x"
                h5.create_dataset("amplitude", data=amp)
                h5.create_dataset("phase", data=phase)
                h5.attrs["metadata_json"] = meta
                for key, value in (metadata or {}).items():
                    if isinstance(value, (str, int, float)) and str(key) != "metadata_json":
                        h5.attrs[str(key)] = value  # nested values live in metadata_json only
        written["h5"] = path
    return written


def load_reconstruction(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read back `reconstruction.npz` or `.h5`: (object (H, W) complex64, metadata dict)."""
    p = Path(path)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return z["object"], json.loads(str(z["_metadata"]))
    import h5py

    with h5py.File(p, "r") as h5:
        meta = h5.attrs.get("metadata_json", "{}")
        return h5["object"][()], json.loads(meta if isinstance(meta, str) else meta.decode())


def _limits(*images: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) shared by `images`: their 1st and 99th percentiles (robust to a few outliers)."""
    values = np.concatenate([np.ravel(i) for i in images])
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _save_panel(path: Path, panels: list[tuple[np.ndarray, str, str, tuple | None]], dpi: int) -> None:
    """One PNG of side-by-side images with colourbars; panels = (image, title, cmap, (vmin, vmax))."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    for k, (img, title, cmap, lim) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        vmin, vmax = lim if lim is not None else (None, None)
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def save_images(
    out_dir: str | os.PathLike,
    obj: Any,
    *,
    truth: Any | None = None,
    dpi: int = 100,
) -> dict[str, Path]:
    """Write `amplitude.png` and `phase.png` (with colourbars), plus, with a truth,
    `comparison.png` (truth beside the aligned reconstruction) and `error_map.png`.

    obj, truth: (H, W) complex. Phase colour scales follow the data (a weak phase object stays
    visible). The reconstruction shown in the comparison and the error map is aligned to the
    truth with `ptychopinn.metrics` (global scale and phase offset): |α·obj| − |truth| and the
    wrapped phase difference. Returns {name: path}; when matplotlib is missing, logs one
    WARNING line (`NO_MATPLOTLIB`) and writes nothing.
    """
    try:
        import matplotlib  # noqa: F401  (optional extra: only the PNGs need it)
    except ImportError:
        log.warning(NO_MATPLOTLIB)
        return {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = _as_object(obj)
    written = {
        "amplitude": out / "amplitude.png",
        "phase": out / "phase.png",
    }
    _save_panel(written["amplitude"], [(np.abs(a), "amplitude", "gray", None)], dpi)
    _save_panel(written["phase"], [(np.angle(a), "phase (rad)", "twilight", _limits(np.angle(a)))], dpi)
    if truth is not None:
        from ..metrics import align, wrap_phase

        t = _as_object(truth)
        if t.shape != a.shape:
            raise ValueError(f"save_images: truth shape {t.shape} differs from object shape {a.shape}")
        aligned = align(a, t)
        amp_err = np.abs(aligned) - np.abs(t)
        ph_err = wrap_phase(np.angle(aligned * np.conj(t)))
        m = float(np.abs(amp_err).max()) or 1.0
        amp_lim = _limits(np.abs(t), np.abs(aligned))
        ph_lim = _limits(np.angle(t), np.angle(aligned))
        written["comparison"] = out / "comparison.png"
        _save_panel(
            written["comparison"],
            [
                (np.abs(t), "true amplitude", "gray", amp_lim),
                (np.abs(aligned), "reconstructed amplitude", "gray", amp_lim),
                (np.angle(t), "true phase (rad)", "twilight", ph_lim),
                (np.angle(aligned), "reconstructed phase (rad)", "twilight", ph_lim),
            ],
            dpi,
        )
        written["error_map"] = out / "error_map.png"
        _save_panel(
            written["error_map"],
            [
                (amp_err, "amplitude error (aligned)", "RdBu_r", (-m, m)),
                (ph_err, "phase error (rad, wrapped)", "RdBu_r", (-np.pi, np.pi)),
            ],
            dpi,
        )
    return written
