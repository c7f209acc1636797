"""Real ptychodus inputs built from a small simulated scan (shared by tests/interop/test_ptychodus*.py).

The scan is turned into what a beamline ptychodus session holds: detector counts (uint32), a
bad-pixel mask, positions in metres about a non-zero object centre, an all-ones initial object
and a one-mode probe, all as ptychodus 1.7 classes (`Product`, `ReconstructInput`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DISTANCE_M = 1.9
ENERGY_EV = 8800.0
DETECTOR_PIXEL_M = 75e-6
CENTER_M = (3.0e-6, -1.25e-6)


def far_field_pixel_m(N: int = 64) -> float:
    """Object pixel size λ·z / (N·p) of the far-field geometry above (about 55.8 nm at N = 64)."""
    from ptychodus.api.constants import energy_eV_to_wavelength_m

    return energy_eV_to_wavelength_m(ENERGY_EV) * DISTANCE_M / (N * DETECTOR_PIXEL_M)


@dataclass
class PtychodusSession:
    reconstruct_input: object
    product: object
    truth: np.ndarray
    counts: np.ndarray
    bad_pixels: np.ndarray


def simulated_session(
    N: int = 64, object_size: int = 112, n_positions: int = 24, seed: int = 3, n_bad: int = 5, n_modes: int = 1
) -> PtychodusSession:
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.object import Object, ObjectCenter
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
    from ptychodus.api.product import Product, ProductMetadata
    from ptychodus.api.reconstruct import ReconstructInput

    from ptychopinn.config import SimulationConfig
    from ptychopinn.data import make_scan
    from ptychopinn.simulate import simulate

    arrays = simulate(SimulationConfig(N=N, object_size=object_size, n_positions=n_positions, nphotons=1e6, seed=seed))
    arrays.pop("_metadata")
    scan = make_scan(**arrays)
    amp = np.asarray(scan.diffraction, dtype=np.float64)
    counts = np.rint(amp**2).astype(np.uint32)
    rng = np.random.default_rng(seed)
    bad = np.zeros((N, N), dtype=bool)
    bad[rng.integers(0, N, n_bad), rng.integers(0, N, n_bad)] = True
    counts[:, bad] = 60000  # hot pixels, flagged
    H, W = scan.object.shape
    PIXEL_M = far_field_pixel_m(N)
    cx, cy = CENTER_M
    x_m = cx + PIXEL_M * (scan.xcoords - (W - 1) / 2)
    y_m = cy + PIXEL_M * (scan.ycoords - (H - 1) / 2)
    # scan indexes need not start at 0 nor be contiguous
    points = [ProbePosition(int(10 + 2 * i), float(x), float(y)) for i, (x, y) in enumerate(zip(x_m, y_m))]
    pixel = PixelGeometry(width_m=PIXEL_M, height_m=PIXEL_M)
    product = Product(
        metadata=ProductMetadata(
            name="sim",
            comments="simulated for ptychopinn tests",
            detector_distance_m=DISTANCE_M,
            photon_energy_eV=ENERGY_EV,
            probe_photon_count=1e6,
            exposure_time_s=0.1,
            mass_attenuation_m2_per_kg=0.0,
            tomography_angle_deg=0.0,
        ),
        probe_positions=ProbePositionSequence(points),
        probes=ProbeSequence(array=_modes(np.asarray(scan.probe, dtype=np.complex128), n_modes), opr_weights=None, pixel_geometry=pixel),
        object_=Object(array=np.ones((H, W), dtype=np.complex64), pixel_geometry=pixel, center=ObjectCenter(cx, cy)),
        losses=[],
    )
    ri = ReconstructInput(diffraction_patterns=counts, bad_pixels=bad, product=product)
    return PtychodusSession(reconstruct_input=ri, product=product, truth=np.asarray(scan.object), counts=counts, bad_pixels=bad)


def _modes(probe: np.ndarray, n_modes: int) -> np.ndarray:
    """(n_modes, N, N): the probe, then weaker tilted copies (mode k carries 0.3^k of the amplitude)."""
    N = probe.shape[-1]
    ramp = np.exp(2j * np.pi * np.arange(N) / N)[None, :]
    return np.stack([probe * (0.3**k) * ramp**k for k in range(n_modes)])


def write_diffraction_file(path: Path, session: PtychodusSession) -> Path:
    """ptychodus's own `save_diffraction_data` of the session's patterns (indexes = the product's)."""
    from ptychodus.api.assemble import AssembledDiffractionData
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.io import save_diffraction_data

    indexes = np.asarray(session.product.probe_positions.get_indexes())
    data = AssembledDiffractionData(indexes, session.counts, PixelGeometry(DETECTOR_PIXEL_M, DETECTOR_PIXEL_M), session.bad_pixels)
    save_diffraction_data(path, data)
    return path


def mapped_positions(product) -> np.ndarray:
    """(M, 2) `[x, y]` object-array pixels of each position, by ptychodus's own map."""
    g = product.object_.get_geometry()
    pos = product.probe_positions
    return np.stack([g.map_probe_positions_to_object_x_px(pos), g.map_probe_positions_to_object_y_px(pos)], axis=-1)
