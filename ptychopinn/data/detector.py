"""Detector frames → model-ready amplitudes: counts → sqrt, centred crop, B×B binning (numpy only).

`DetectorTransform` is applied by `LazyArray` to every gathered block, so a memory-mapped or
HDF5 scan is never materialised: `scan.diffraction[idx]` reads the raw frames `(k, S, S)` and
returns `(k, N, N)` float32 amplitudes.

Pipeline per read (raw frame `R (S, S)`, counts `c` or amplitudes `a`):

1. crop: `R[r0 : r0 + W, c0 : c0 + W]`, W = N·B raw pixels, one window for the whole scan
   (`crop_window`, centred on the centroid of the mean intensity pattern);
2. bin B > 1: intensities `I = c` (counts) or `a²` (amplitudes) are summed over B×B blocks
   (photon counts add; float32, exact for ≤ 16-bit counts, float64 for wider types), then
   `sqrt` → float32;
3. without binning: counts → `sqrt(float32(c))`; amplitudes → `float32(a)` (bit-identical to
   the plain contract path).

Geometry (far field): a detector window of W raw pixels makes the object pixel S/W times
larger; binning alone keeps the object pixel and shrinks the field of view by B. So positions
in object pixels scale by W/S and an `(S, S)` probe is resampled (`transform_probe`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

__all__ = [
    "DetectorTransform",
    "crop_window",
    "transform_mask",
    "transform_probe",
    "resample_object",
    "size_hint",
    "UNITS",
]

#: accepted values of the `diffraction_units` declaration
UNITS = ("counts", "amplitude")


@dataclass(frozen=True)
class DetectorTransform:
    """Raw detector block `(..., S, S)` → `(..., N, N)` float32 amplitudes (sqrt photons).

    counts: the raw values are photon counts (sqrt applied); else amplitudes.
    window: `(row0, col0, W)` crop in raw pixels, or None (whole frame).
    bin: B, sum of B×B blocks of counts after cropping (1 = none).
    """

    counts: bool
    window: tuple[int, int, int] | None = None
    bin: int = 1

    def out_size(self, S: int) -> int:
        W = S if self.window is None else int(self.window[2])
        return W // int(self.bin)

    @property
    def identity(self) -> bool:
        return not self.counts and self.window is None and self.bin == 1

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        a = np.asarray(raw)
        if self.window is not None:
            r0, c0, w = self.window
            a = a[..., r0 : r0 + w, c0 : c0 + w]
        B = int(self.bin)
        if B > 1:
            # float32 is exact for sums of <= 16-bit counts (B <= 16) and amplitudes stored as float32
            small = a.dtype.itemsize <= 2 and B <= 16 if self.counts else a.dtype.itemsize <= 4
            dt = np.float32 if small else np.float64
            inten = a.astype(dt) if self.counts else np.square(a, dtype=dt)
            n = inten.shape[-1] // B
            rows = inten[..., 0 : n * B : B, : n * B].copy()  # strided adds: ~10x a reshape-sum
            for i in range(1, B):
                rows += inten[..., i : n * B : B, : n * B]
            out = rows[..., 0 : n * B : B].copy()
            for j in range(1, B):
                out += rows[..., j : n * B : B]
            return np.sqrt(out, out=out).astype(np.float32, copy=False)
        if self.counts:
            if a.dtype.itemsize > 4 or (a.dtype.kind in "iu" and a.dtype.itemsize > 2):
                return np.sqrt(a.astype(np.float64)).astype(np.float32)  # exact for counts >= 2**24
            return np.sqrt(a.astype(np.float32))
        return np.asarray(a, dtype=np.float32)


def crop_window(
    mean_intensity: np.ndarray, out_size: int, bin: int, *, label: str = "scan"
) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """((row0, col0, W), (cy, cx)): the W = out_size·bin raw-pixel window centred on the centroid.

    mean_intensity: `(S, S)` float64 mean photon pattern (bad pixels already zeroed). The
    centroid `(cy, cx)` (intensity-weighted mean pixel) is placed at the centre of binned pixel
    `(N/2, N/2)`, the model's zero frequency: `row0 = floor(cy − W/2 − (B−1)/2 + 0.5)`, clamped
    to the frame (a one-line warning when it had to move).
    """
    import warnings

    S = int(mean_intensity.shape[-1])
    W = int(out_size) * int(bin)
    if W > S:
        raise DataError(
            f"{label}: key 'diffraction' has {S}x{S} frames, smaller than the crop window {W}x{W} "
            f"(N={out_size} x bin {bin})"
        )
    total = float(mean_intensity.sum())
    if not total > 0:
        raise DataError(f"{label}: key 'diffraction' is zero everywhere; cannot centre the detector crop")
    idx = np.arange(S, dtype=np.float64)
    cy = float(mean_intensity.sum(axis=1) @ idx / total)
    cx = float(mean_intensity.sum(axis=0) @ idx / total)
    shift = W // 2 + (bin - 1) / 2
    r0 = int(np.floor(cy - shift + 0.5))
    c0 = int(np.floor(cx - shift + 0.5))
    r0c, c0c = min(max(r0, 0), S - W), min(max(c0, 0), S - W)
    if (r0c, c0c) != (r0, c0):
        warnings.warn(
            f"{label}: the detector crop centred on the pattern centroid (row {cy:.1f}, col {cx:.1f}) "
            f"leaves the {S}x{S} frame; window moved to rows {r0c}:{r0c + W}, cols {c0c}:{c0c + W}",
            stacklevel=3,
        )
    return (r0c, c0c, W), (cy, cx)


def transform_mask(bad: np.ndarray | None, window: tuple[int, int, int] | None, bin: int) -> np.ndarray | None:
    """The `(N, N)` bad-pixel mask after cropping and binning (a binned pixel is bad if any sub-pixel is)."""
    if bad is None:
        return None
    m: np.ndarray = bad
    if window is not None:
        r0, c0, w = window
        m = m[r0 : r0 + w, c0 : c0 + w]
    if bin > 1:
        n = m.shape[-1] // bin
        m = m[: n * bin, : n * bin].reshape(n, bin, n, bin).any(axis=(1, 3))  # type: ignore[assignment]  # an array: any over axes, never the 0-d scalar the stubs allow
    m = np.ascontiguousarray(m, dtype=bool)
    return m if m.any() else None


def _fourier_crop(field: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resample `(..., S, S')` complex to `(..., size, size')` by cropping its centred spectrum.

    Sample values are kept (a constant stays that constant); grid index 0 stays at 0.
    """
    h, w = field.shape[-2:]
    th, tw = size if isinstance(size, tuple) else (size, size)
    spec = np.fft.fftshift(np.fft.fft2(field, norm="ortho"), axes=(-2, -1))
    r0, c0 = h // 2 - th // 2, w // 2 - tw // 2
    spec = spec[..., r0 : r0 + th, c0 : c0 + tw]
    out = np.fft.ifft2(np.fft.ifftshift(spec, axes=(-2, -1)), norm="ortho")
    return out * np.sqrt(th * tw / (h * w))


def transform_probe(probe: np.ndarray, S: int, window: tuple[int, int, int] | None, bin: int) -> np.ndarray:
    """An `(..., S, S)` probe at the raw detector's sampling → `(..., N, N)` complex64.

    Cropping the detector to W pixels coarsens the real-space pixel by S/W (Fourier crop of the
    probe to W×W); binning by B keeps the pixel and shrinks the field of view (central N×N).
    """
    p = np.asarray(probe, dtype=np.complex128)
    W = S if window is None else int(window[2])
    if W != S:
        p = _fourier_crop(p, W)
    if bin > 1:
        n = W // bin
        r0 = W // 2 - n // 2
        p = p[..., r0 : r0 + n, r0 : r0 + n]
    return np.ascontiguousarray(p, dtype=np.complex64)


def resample_object(obj: np.ndarray, factor: float) -> np.ndarray:
    """`(H, W)` complex object on a grid `factor` (< 1) times as fine (Fourier crop), complex64."""
    H, W = obj.shape
    th, tw = max(1, int(round(H * factor))), max(1, int(round(W * factor)))
    out = _fourier_crop(np.asarray(obj, dtype=np.complex128), (th, tw))
    return np.ascontiguousarray(out, dtype=np.complex64)


def size_hint(S: int, N: int) -> str:
    """The flags that make `S×S` frames fit a model of size N (for error messages)."""
    options = []
    if S > N:
        options.append(f"--crop-detector (crop to {N}x{N} around the pattern centroid)")
        if S % N == 0:
            options.append(f"--bin {S // N} (sum {S // N}x{S // N} blocks)")
        for b in (2, 4, 8):
            if S % b == 0 and S // b > N and S // N != b:
                options.append(f"--bin {b} --crop-detector")
                break
    if not options:
        return ""
    return "; pass " + " or ".join(options)
