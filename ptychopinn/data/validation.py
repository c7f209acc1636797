"""The scan contract's checks, one named function per rule (numpy only; no torch).

Each reader takes a `sources.Source` (or plain arrays), checks one key's shape, dtype and
values and returns it in the contract's dtype, or raises `DataError` with one line naming the
file (`label`), the key and what was expected. Also the rules other packages apply to files
they read themselves (the live follower, `interop.onnx.follow`): the declared diffraction units
(`declared_units`), their resolution against `--diffraction-units` (`resolve_units`, which warns
when the flag contradicts the file) and the bad-pixel mask (`bad_pixel_mask`).

Positions (metres, pixel sizes, the span check) are `data.positions`.
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ConfigError, DataError
from .detector import UNITS, size_hint, transform_probe
from .lazy import LazyArray, iter_chunks

if TYPE_CHECKING:  # annotations only: sources imports this module
    from .sources import Source

__all__ = [
    "warn_caller",
    "fmt_shape",
    "shape_error",
    "check_finite",
    "read_real",
    "read_complex",
    "read_text",
    "stack_layout",
    "ValueStats",
    "scan_values",
    "declared_units",
    "resolve_units",
    "bad_pixel_mask",
    "read_probe_modes",
    "dominant_mode",
    "read_objects",
    "read_scan_index",
    "read_patches",
    "check_nphotons",
]

_DATA_PREFIX = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_caller(message: str) -> None:
    """`warnings.warn(message)` attributed to the first caller outside `ptychopinn/data` (what
    `skip_file_prefixes` does on Python >= 3.12): the line that called `load_scan` / `make_scan`."""
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_DATA_PREFIX):
        frame = frame.f_back
        level += 1
    del frame
    warnings.warn(message, stacklevel=level)


def fmt_shape(shape: tuple[int, ...]) -> str:
    """A shape as Python prints a tuple: `(3,)`, `(2, 4)`."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def shape_error(label: str, key: str, shape: tuple[int, ...], dtype: np.dtype, expected: str) -> DataError:
    """`DataError`: `label: key 'k' has shape (..) dtype, expected <expected>`."""
    return DataError(f"{label}: key {key!r} has shape {fmt_shape(shape)} {dtype}, expected {expected}")


def check_finite(label: str, key: str, arr: np.ndarray) -> None:
    """No NaN/inf in a float or complex array."""
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{label}: key {key!r} contains {bad} NaN/inf values, expected finite numbers")


def read_real(label: str, key: str, src: Source, expected_shape: tuple[int, ...], spec: str) -> np.ndarray:
    """A real (float or integer) array of exactly `expected_shape`, finite, as float64."""
    shape, dtype = src.info(key)
    if dtype.kind not in "fiu" or shape != expected_shape:
        raise shape_error(label, key, shape, dtype, spec)
    arr = src.full(key).astype(np.float64)
    check_finite(label, key, arr)
    return arr


def read_complex(label: str, key: str, src: Source, check: Callable[[tuple[int, ...]], bool], spec: str) -> np.ndarray:
    """A real or complex array whose shape passes `check` (a trailing singleton axis of a 3-D
    array dropped), finite, as contiguous complex64."""
    shape, dtype = src.info(key)
    if len(shape) >= 1 and shape[-1] == 1 and len(shape) == 3:
        shape = shape[:-1]
        squeeze = True
    else:
        squeeze = False
    if dtype.kind not in "fiuc" or not check(shape):
        raise shape_error(label, key, src.info(key)[0], dtype, spec)
    arr = src.full(key)
    arr = arr[..., 0] if squeeze else arr
    arr = np.ascontiguousarray(arr, dtype=np.complex64)
    check_finite(label, key, arr)
    return arr


def read_text(src: Source, key: str, label: str) -> str:
    """A 0-d / 1-element string stored under `key`."""
    arr = np.asarray(src.full(key))
    if arr.size != 1 or arr.dtype.kind not in "USO":
        raise DataError(f"{label}: key {key!r} has shape {arr.shape} {arr.dtype}, expected one string ('counts' or 'amplitude')")
    value = arr.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def stack_layout(
    label: str, key: str, shape: tuple[int, ...], dtype: np.dtype, M: int, expected: str
) -> tuple[bool, bool, tuple[int, ...]]:
    """(legacy, squeeze, contract shape) of a stored (M, N, N)-like array.

    Rule: a trailing singleton axis of a 4-D array is dropped; a 3-D array is the legacy
    `(N, N, M)` layout when `shape[0] == shape[1] != shape[2] == M`; otherwise it must be `(M, N, N)`.
    """
    squeeze = len(shape) == 4 and shape[-1] == 1
    core = shape[:-1] if squeeze else shape
    if len(core) != 3:
        raise shape_error(label, key, shape, dtype, expected)
    legacy = core[0] == core[1] != core[2] and core[2] == M
    out = (core[2], core[0], core[1]) if legacy else core
    if out[0] != M or out[1] != out[2] or out[1] < 1:
        raise shape_error(label, key, shape, dtype, expected)
    return legacy, squeeze, out


@dataclass
class ValueStats:
    """What one chunked pass over the raw diffraction found (`scan_values`)."""

    mean_energy: float  # mean over patterns of Σ_measured intensity (photons per pattern)
    mean_pattern: np.ndarray | None  # (S, S) float64 mean intensity, bad pixels zeroed


def _check_block(label: str, key: str, start: int, block: np.ndarray, counts: bool) -> None:
    """One chunk of raw patterns: finite and >= 0 (the first bad pattern is named)."""
    finite = np.isfinite(block)
    if not finite.all():
        row = start + int(np.argwhere(~finite)[0][0])
        raise DataError(
            f"{label}: key {key!r} has NaN/inf at pattern {row}, expected finite {'counts' if counts else 'amplitudes'} >= 0"
        )
    if (block < 0).any():
        row = start + int(np.argwhere(block < 0)[0][0])
        unit = "counts" if counts else "amplitudes (sqrt of counts)"
        raise DataError(f"{label}: key {key!r} has negative values at pattern {row}, expected {unit} >= 0")


def scan_values(
    label: str, key: str, raw: Any, *, counts: bool, bad: np.ndarray | None, check: bool, mean_pattern: bool, energy: bool = True
) -> ValueStats:
    """One sequential, chunked pass over the raw data `(M, S, S)`: finite and non-negative (when
    `check`), the mean photons per pattern over the measured pixels, and (optionally) the mean
    pattern. `bad`: (S, S) bool, True = not measured, or None."""
    valid = None if bad is None else ~bad
    total = 0.0
    acc = None
    M = int(raw.shape[0])
    try:
        for start, block in iter_chunks(raw):
            if check:
                _check_block(label, key, start, block, counts)
            if not (energy or mean_pattern):
                continue
            inten = block.astype(np.float64) if counts else np.square(block, dtype=np.float64)
            if valid is not None:
                inten[:, ~valid] = 0.0
            total += float(inten.sum())
            if mean_pattern:
                part = inten.sum(axis=0)
                acc = part if acc is None else acc + part
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{label}: key {key!r} cannot be read ({exc})") from None
    return ValueStats(mean_energy=total / max(M, 1), mean_pattern=None if acc is None else acc / max(M, 1))


def declared_units(src: Source, meta: dict[str, Any], label: str, fmt: str = "ptychopinn") -> tuple[str | None, str]:
    """(declared units or None, where) from the `diffraction_units` key / HDF5 root attribute /
    `_metadata.diffraction_units` (popped from `meta`); `DataError` when one is not 'counts' or
    'amplitude' or they disagree.

    ptychodus exports (`fmt` 'ptychodus-*') hold detector counts (their `diff3d`/`patterns` are
    the measured intensities).
    """
    found: dict[str, str] = {}
    if "diffraction_units" in src.keys():
        found["key 'diffraction_units'"] = read_text(src, "diffraction_units", label)
    attr = src.attribute("diffraction_units")
    if attr is not None:
        found["attribute 'diffraction_units'"] = attr
    if "diffraction_units" in meta:
        found["key '_metadata.diffraction_units'"] = str(meta.pop("diffraction_units"))
    for where, value in found.items():
        if value not in UNITS:
            raise DataError(f"{label}: {where} is {value!r}, expected 'counts' or 'amplitude'")
    if len(set(found.values())) > 1:
        raise DataError(f"{label}: {' and '.join(f'{w}={v!r}' for w, v in found.items())} disagree")
    if found:
        where, value = next(iter(found.items()))
        return value, where
    if fmt.startswith("ptychodus"):
        return "counts", f"the {fmt} format (detector counts)"
    return None, ""


def resolve_units(label: str, dtype: np.dtype, declared: str | None, where: str, option: str | None) -> str:
    """'counts' | 'amplitude'. Precedence: the explicit option (`--diffraction-units`) > the
    file's declaration (`declared_units`) > the dtype (integers are counts, floats amplitudes).
    A flag that contradicts the file warns (one line)."""
    if option is not None:
        if option not in UNITS:
            raise ConfigError(f"--diffraction-units: expected counts or amplitude, got {option!r}")
        if declared is not None and declared != option:
            warn_caller(f"{label}: --diffraction-units {option} overrides {where} = {declared!r} (an explicit flag beats file metadata)")
        return option
    if declared is not None:
        return declared
    return "counts" if dtype.kind in "iub" else "amplitude"


def bad_pixel_mask(src: Source, label: str, S: int) -> np.ndarray | None:
    """The stored `(S, S)` bool mask (True = not measured), None when absent or all False."""
    if "bad_pixels" not in src.keys():
        return None
    shape, dtype = src.info("bad_pixels")
    if shape != (S, S) or dtype.kind != "b":
        raise shape_error(label, "bad_pixels", shape, dtype, f"(N, N) = ({S}, {S}) bool (True = not measured)")
    bad = np.ascontiguousarray(src.full("bad_pixels"), dtype=bool)
    if bad.all():
        raise DataError(f"{label}: key 'bad_pixels' flags all {S}x{S} pixels, expected at least one measured pixel")
    return bad if bad.any() else None


def read_probe_modes(src: Source, label: str, S: int, N: int, window: Any, bin: int) -> np.ndarray:
    """`probeGuess` as `(K, N, N)` complex64: `(N, N)`, `(K, N, N)` (or `(N, N, 1)`) at the model's
    size, or at the raw frame size S (then resampled like the detector: `detector.transform_probe`)."""
    key = "probeGuess"
    sizes = {(N, N), (S, S)}
    spec = f"(N, N) = ({N}, {N}) complex64 (or (K, {N}, {N}) modes" + (f"; or the frame size {S}" if S != N else "") + ")"
    if key not in src.keys():
        raise DataError(f"{label}: missing key {key!r}, expected {spec}")
    shape, dtype = src.info(key)
    core = shape[:-1] if len(shape) == 3 and shape[-1] == 1 else shape
    if dtype.kind not in "fiuc" or len(core) not in (2, 3) or tuple(core[-2:]) not in sizes or (len(core) == 3 and core[0] < 1):
        p = core[-1] if len(core) in (2, 3) and core[-1] == core[-2] else None
        hint = f" for {S}x{S} frames{size_hint(S, p)}" if p is not None and p < N == S else ""
        raise shape_error(label, key, shape, dtype, spec + hint)
    arr = np.asarray(src.full(key)).reshape(core)
    modes = np.ascontiguousarray(arr if arr.ndim == 3 else arr[None], dtype=np.complex128 if arr.dtype == np.complex128 else np.complex64)
    check_finite(label, key, modes)
    if modes.shape[-1] != N:
        modes = transform_probe(modes, S, window, bin)
    return np.ascontiguousarray(modes, dtype=np.complex64)


def dominant_mode(modes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(probe (N, N) = the mode of max Σ|P|², the modes (K, N, N) when K >= 2 else None)."""
    power = np.einsum("khw,khw->k", modes.real, modes.real) + np.einsum("khw,khw->k", modes.imag, modes.imag)
    probe = np.ascontiguousarray(modes[int(np.argmax(power))])
    return probe, (modes if modes.shape[0] >= 2 else None)


def read_objects(src: Source, label: str, fmt: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(object = ground truth, initial_object) as (H, W) complex64 or None. A ptychodus export's
    `objectGuess` is its initial guess, never ground truth; `initial_object` is always a guess."""
    keys = src.keys()
    obj = init = None
    if "objectGuess" in keys:
        arr = read_complex(label, "objectGuess", src, lambda s: len(s) == 2 and min(s) >= 1, "(H, W) complex64")
        if fmt.startswith("ptychodus"):
            init = arr
        else:
            obj = arr
    if "initial_object" in keys:
        init = read_complex(label, "initial_object", src, lambda s: len(s) == 2 and min(s) >= 1, "(H, W) complex64")
    return obj, init


def read_scan_index(src: Source, label: str, M: int) -> np.ndarray:
    """`scan_index` (M,) int64 (zeros when absent)."""
    if "scan_index" not in src.keys():
        return np.zeros(M, dtype=np.int64)
    sshape, sdtype = src.info("scan_index")
    if sdtype.kind not in "iu" or sshape != (M,):
        raise shape_error(label, "scan_index", sshape, sdtype, f"(M,) = ({M},) int64")
    return src.full("scan_index").astype(np.int64)


def read_patches(src: Source, label: str, M: int, S: int, N: int) -> LazyArray | np.ndarray | None:
    """`Y` (M, S, S) ground-truth patches as complex64 (lazy when the source is on disk), or None:
    absent, dropped with a warning when the detector was cropped/binned (N != S), ignored with a
    warning when its first axis is not M."""
    if "Y" not in src.keys():
        return None
    yshape, ydtype = src.info("Y")
    core = yshape[:-1] if len(yshape) == 4 and yshape[-1] == 1 else yshape
    if not (len(core) == 3 and core[0] == M):
        warn_caller(f"{label}: key 'Y' has shape {fmt_shape(yshape)}, not (M, N, N) = ({M}, {S}, {S}); ignored")
        return None
    if ydtype.kind not in "fiuc" or core[1:] != (S, S):
        raise shape_error(label, "Y", yshape, ydtype, f"(M, N, N) = ({M}, {S}, {S}) complex64")
    if N != S:
        warn_caller(f"{label}: key 'Y' ({S}x{S} patches) dropped: the detector was cropped/binned to {N}x{N}")
        return None
    yraw = src.lazy("Y")
    Y: LazyArray | np.ndarray = LazyArray(yraw, np.complex64, squeeze=len(yshape) == 4)
    if isinstance(yraw, np.ndarray) and not isinstance(yraw, np.memmap):
        Y = np.ascontiguousarray(Y[:])
    return Y


def check_nphotons(label: str, key: str, stats: ValueStats | None, nphot: Any, counts: bool) -> None:
    """Warn when the data's photons per pattern and `_metadata.nphotons` differ by > 10x in the
    direction a units mistake gives (amplitudes that hold intensities, counts that hold amplitudes)."""
    if stats is None or not isinstance(nphot, (int, float)) or not nphot > 0:
        return
    ratio = stats.mean_energy / float(nphot)
    if ratio > 10 and not counts:
        warn_caller(
            f"{label}: key {key!r} looks like intensities, not amplitudes: Σ d² per pattern is {stats.mean_energy:.3g} "
            f"but _metadata.nphotons = {float(nphot):.3g}; if it holds photon counts pass --diffraction-units counts"
        )
    elif ratio < 0.1 and counts:
        warn_caller(
            f"{label}: key {key!r} declared counts sums to {stats.mean_energy:.3g} photons per pattern "
            f"but _metadata.nphotons = {float(nphot):.3g}; if it holds amplitudes pass --diffraction-units amplitude"
        )
