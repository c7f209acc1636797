"""Reconstruction output files: NPZ / HDF5 arrays and PNG images, all written atomically.

    reconstruction.npz   object (H, W) complex64, amplitude, phase (H, W) float32,
                         _metadata: JSON string (0-d unicode array, loads with allow_pickle=False)
    reconstruction.h5    datasets object (complex64), amplitude, phase; attrs: metadata_json and
                         each scalar/string metadata entry
    amplitude.png, phase.png (+ comparison.png, error_map.png when the truth is given)
    metrics.json, refinement.npz, frc_halves.png (`write_reconstruction_dir`, when given)

`write_reconstruction_dir` is the one writer of a reconstruction folder, shared by
`ptychopinn.reconstruct` and the torch-free ONNX runner (each passes its own metadata).
No torch here: arrays are numpy. matplotlib is optional and imported only by the PNG writers.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .atomic import atomic_directory, atomic_path, atomic_save_json, atomic_save_npz, strict_json_dumps

log = logging.getLogger("ptychopinn")

#: the one line logged when matplotlib (the `plot` extra) is missing
NO_MATPLOTLIB = 'matplotlib is not installed: no PNG images written (pip install "ptychopinn[plot]")'

__all__ = ["save_reconstruction", "save_images", "load_reconstruction", "save_frc_plot", "write_reconstruction_dir", "has_matplotlib"]

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


def has_matplotlib() -> bool:
    """True when matplotlib (the `plot` extra) can be imported (an import blocker counts as absent)."""
    try:
        import matplotlib  # noqa: F401  (optional extra: only the PNGs need it)
    except ImportError:
        return False
    return True


def save_frc_plot(path: str | os.PathLike, result: Any, *, dpi: int = 100) -> Path:
    """`frc_halves.png`: the half-set FRC, the ½-bit and 1/7 thresholds, their crossings and,
    with ground truth, the FRC of the full reconstruction against the truth.

    result: a `reconstruct.frc_halves.HalfSetFRC` (frequencies (K,) cycles/pixel, curve (K,),
    half_bit (K,), truth_curve (K,) or None, the crossings, region, n_positions).
    Needs matplotlib (the `plot` extra); ModuleNotFoundError otherwise (the CLI prints one line).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional extra: only the plot needs it
    from matplotlib.figure import Figure

    from ..metrics.frc import ONE_SEVENTH  # lazy: ptychopinn.metrics imports scipy, which the ONNX runner may lack

    fig = Figure(figsize=(6.4, 4.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    f = result.frequencies[1:]  # ring 0 (DC) is meaningless after the mean is removed
    ax.plot(f, result.curve[1:], color="C0", lw=1.8, label="half-set FRC (A vs B)")
    ax.plot(f, result.half_bit[1:], color="C1", ls="--", lw=1.2, label="½-bit threshold")
    ax.axhline(ONE_SEVENTH, color="C2", ls=":", lw=1.2, label="1/7 threshold")
    if result.truth_curve is not None:
        ax.plot(f, result.truth_curve[1:], color="C3", lw=1.2, alpha=0.8, label="full reconstruction vs truth")
    for c, colour, name in ((result.half_bit_crossing, "C1", "½-bit"), (result.one_seventh_crossing, "C2", "1/7")):
        if c.crossed and c.frequency > 0:
            ax.axvline(c.frequency, color=colour, lw=0.8, alpha=0.6)
            ax.annotate(f"{name}: {c.resolution_px:.1f} px", (c.frequency, 0.95), color=colour, fontsize=8, rotation=90,
                        ha="right", va="top")
    r0, r1, c0, c1 = result.region
    ax.set_title(f"half-set FRC, {r1 - r0}x{c1 - c0} px region, {result.n_positions[0]}+{result.n_positions[1]} positions", fontsize=9)
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("FRC")
    ax.set_xlim(0, float(f[-1]))
    ax.set_ylim(-0.2, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target


def write_reconstruction_dir(
    out_dir: str | os.PathLike,
    obj: Any,
    metadata: dict[str, Any],
    *,
    image_box: tuple[int, int, int, int],
    truth: Any | None = None,
    metrics: dict[str, Any] | None = None,
    refinement: dict[str, np.ndarray] | None = None,
    frc_halves: Any = None,
    formats: Iterable[str] = _FORMATS,
    images: bool = True,
    no_images_hint: str = "",
    overwrite: bool = True,
) -> dict[str, str]:
    """Write a reconstruction folder, replaced atomically (it appears complete or not at all).

    obj: the canvas `(H, W)` complex64 -> reconstruction.npz / .h5 (`save_reconstruction`, with
    `metadata`, formats `formats`). image_box: (row0, row1, col0, col1) of `obj` shown in
    amplitude.png / phase.png (with `truth`, the same-shape truth region `(r1-r0, c1-c0)` complex:
    also comparison.png and error_map.png); images=False writes no PNG; without matplotlib one
    WARNING line (`NO_MATPLOTLIB` + `no_images_hint`) and no PNG. metrics: metrics.json (strict
    JSON) when non-empty. refinement: arrays of refinement.npz (e.g. probe `(K, N, N)`, positions
    `(M, 2)`, loss `(E,)`). frc_halves: a `HalfSetFRC` -> frc_halves.png (`save_frc_plot`).
    overwrite=False: a non-empty `out_dir` is left untouched (ConfigError).
    Returns {name: final path} (npz, h5, amplitude, phase, comparison, error_map, refinement,
    metrics, frc_halves: those written).
    """
    out = Path(out_dir)
    r0, r1, c0, c1 = image_box
    written: dict[str, Path] = {}
    with atomic_directory(out, replace=overwrite) as tmp:
        written.update(save_reconstruction(tmp, obj, metadata=metadata, formats=formats))
        if refinement is not None:
            written["refinement"] = atomic_save_npz(tmp / "refinement.npz", **refinement)
        if images and not has_matplotlib():
            log.warning(NO_MATPLOTLIB + no_images_hint)
        elif images:
            written.update(save_images(tmp, _as_object(obj)[r0:r1, c0:c1], truth=truth))
        if metrics:
            written["metrics"] = atomic_save_json(tmp / "metrics.json", metrics)
        if frc_halves is not None:
            written["frc_halves"] = save_frc_plot(tmp / "frc_halves.png", frc_halves)
    return {k: str(out / Path(p).name) for k, p in written.items()}
