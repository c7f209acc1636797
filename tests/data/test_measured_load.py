"""Measured-data loading: detector counts, declared units and their precedence, bad pixels,
probe modes, positions in metres, and the one-line warnings (all on scans without objectGuess)."""
from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest

from ptychopinn.data import LoadOptions, load_scan, make_scan, normalization_factor, save_scan
from ptychopinn.errors import ConfigError, DataError


def _counts_arrays(M: int = 12, N: int = 16, *, seed: int = 0, dtype=np.uint32) -> dict[str, np.ndarray]:
    """A scan shaped like a measurement: photon counts, probe, positions, no objectGuess."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] - N / 2
    mean = 400.0 * np.exp(-(xx**2 + yy**2) / (2 * 3.0**2)) + 2.0
    return {
        "diffraction": rng.poisson(mean, (M, N, N)).astype(dtype),
        "xcoords": rng.uniform(20, 40, M),
        "ycoords": rng.uniform(20, 40, M),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex128),
    }


def _one_warning(record, *needles: str) -> str:
    msgs = [str(w.message) for w in record]
    hits = [m for m in msgs if all(n in m for n in needles)]
    assert len(hits) == 1, msgs
    assert "\n" not in hits[0]
    return hits[0]


# -- counts ---------------------------------------------------------------------------------
def test_integer_counts_read_as_sqrt_amplitudes_lazily(tmp_path):
    a = _counts_arrays()
    np.savez(tmp_path / "c.npz", **a)
    scan = load_scan(tmp_path / "c.npz")
    assert scan.diffraction_units == "counts" and scan.object is None
    assert isinstance(scan.diffraction.source, np.memmap)  # still memory-mapped: nothing materialised
    assert scan.diffraction.dtype == np.float32 and scan.diffraction.shape == (12, 16, 16)
    np.testing.assert_array_equal(scan.diffraction[[3, 1, 3]], np.sqrt(a["diffraction"][[3, 1, 3]].astype(np.float32)))
    np.testing.assert_array_equal(np.asarray(scan.diffraction), np.sqrt(a["diffraction"].astype(np.float32)))
    # the equivalent amplitude file gives the same arrays and the same normalisation, bit for bit
    amp = dict(a, diffraction=np.sqrt(a["diffraction"].astype(np.float32)))
    np.savez(tmp_path / "a.npz", **amp)
    scan_a = load_scan(tmp_path / "a.npz")
    assert scan_a.diffraction_units == "amplitude"
    np.testing.assert_array_equal(np.asarray(scan_a.diffraction), np.asarray(scan.diffraction))
    assert normalization_factor(scan.diffraction) == normalization_factor(scan_a.diffraction)


@pytest.mark.parametrize("where", ["option", "key", "metadata", "h5attr"])
def test_float_counts_declared(tmp_path, where):
    a = _counts_arrays(dtype=np.float32)
    kwargs = {}
    if where == "key":
        a["diffraction_units"] = np.array("counts")
    elif where == "metadata":
        a["_metadata"] = np.array(json.dumps({"diffraction_units": "counts"}))
    elif where == "option":
        kwargs["diffraction_units"] = "counts"
    if where == "h5attr":
        path = tmp_path / "c.h5"
        with h5py.File(path, "w") as f:
            for k, v in a.items():
                f.create_dataset(k, data=v)
            f.attrs["diffraction_units"] = "counts"
    else:
        path = tmp_path / "c.npz"
        np.savez(path, **a)
    scan = load_scan(path, **kwargs)
    assert scan.diffraction_units == "counts"
    np.testing.assert_array_equal(np.asarray(scan.diffraction), np.sqrt(a["diffraction"]))
    assert "diffraction_units" not in scan.metadata  # consumed: a re-saved file holds amplitudes
    save_scan(tmp_path / "re.npz", scan)
    again = load_scan(tmp_path / "re.npz")
    assert again.diffraction_units == "amplitude"
    np.testing.assert_array_equal(np.asarray(again.diffraction), np.asarray(scan.diffraction))


def test_load_warnings_point_at_the_callers_file(tmp_path):
    """Data warnings name the code that called load_scan / make_scan / save_scan, never a line
    inside ptychopinn/data (the default filter then shows one per calling line)."""
    a = _counts_arrays(dtype=np.float32)
    a["diffraction_units"] = np.array("counts")
    np.savez(tmp_path / "c.npz", **a)
    metres = {**a, "xcoords": a["xcoords"] * 1e-9, "ycoords": a["ycoords"] * 1e-9}  # span < 1 px: warns
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_scan(tmp_path / "c.npz", diffraction_units="amplitude")
        make_scan(**a, options=LoadOptions(diffraction_units="amplitude"))
        save_scan(tmp_path / "s.npz", **metres)
    assert len(rec) == 3 and "overrides" in str(rec[1].message) and "span" in str(rec[2].message)
    assert [w.filename for w in rec] == [__file__] * 3, [(w.filename, w.lineno) for w in rec]


def test_flag_beats_file_metadata_with_one_warning(tmp_path):
    a = _counts_arrays(dtype=np.float32)
    a["_metadata"] = np.array(json.dumps({"diffraction_units": "counts"}))
    np.savez(tmp_path / "c.npz", **a)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        scan = load_scan(tmp_path / "c.npz", diffraction_units="amplitude")
    assert scan.diffraction_units == "amplitude"
    np.testing.assert_array_equal(np.asarray(scan.diffraction), a["diffraction"])
    _one_warning(rec, "--diffraction-units amplitude overrides", "'counts'", "explicit flag beats file metadata")
    # the key and _metadata disagreeing is an error; a bad value is a one-line error
    a["diffraction_units"] = np.array("amplitude")
    np.savez(tmp_path / "d.npz", **a)
    with pytest.raises(DataError, match="disagree"):
        load_scan(tmp_path / "d.npz")
    with pytest.raises(ConfigError, match="--diffraction-units"):
        load_scan(tmp_path / "c.npz", diffraction_units="photons")


def test_intensities_given_as_amplitudes_warn_once(tmp_path):
    a = _counts_arrays(dtype=np.float32)
    nphot = float(a["diffraction"].sum(axis=(1, 2)).mean())
    a["_metadata"] = np.array(json.dumps({"nphotons": nphot}))
    np.savez(tmp_path / "i.npz", **a)  # counts stored as float, not declared
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_scan(tmp_path / "i.npz")
    _one_warning(rec, "looks like intensities", "--diffraction-units counts")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared correctly: no warning
        load_scan(tmp_path / "i.npz", diffraction_units="counts")
        amp = dict(a, diffraction=np.sqrt(a["diffraction"]))
        np.savez(tmp_path / "ok.npz", **amp)
        load_scan(tmp_path / "ok.npz")


def test_negative_counts_are_one_line_errors(tmp_path):
    a = _counts_arrays(dtype=np.int32)
    a["diffraction"][4, 2, 2] = -3
    np.savez(tmp_path / "n.npz", **a)
    with pytest.raises(DataError, match=r"n\.npz: key 'diffraction' has negative values at pattern 4, expected counts >= 0"):
        load_scan(tmp_path / "n.npz")


# -- bad pixels -----------------------------------------------------------------------------
def test_bad_pixels_loaded_and_validated(tmp_path):
    a = _counts_arrays()
    bad = np.zeros((16, 16), bool)
    bad[3, 4] = bad[10, 11] = True
    np.savez(tmp_path / "b.npz", **a, bad_pixels=bad)
    scan = load_scan(tmp_path / "b.npz")
    np.testing.assert_array_equal(scan.bad_pixels, bad)
    np.testing.assert_array_equal(scan.valid, ~bad)
    np.savez(tmp_path / "none.npz", **a, bad_pixels=np.zeros((16, 16), bool))
    assert load_scan(tmp_path / "none.npz").bad_pixels is None  # nothing flagged
    for wrong, needle in (
        (np.zeros((15, 16), bool), r"key 'bad_pixels' has shape \(15, 16\) bool, expected \(N, N\) = \(16, 16\) bool"),
        (np.zeros((16, 16), np.uint8), r"key 'bad_pixels' has shape \(16, 16\) uint8, expected \(N, N\) = \(16, 16\) bool"),
        (np.ones((16, 16), bool), "flags all 16x16 pixels"),
    ):
        np.savez(tmp_path / "w.npz", **a, bad_pixels=wrong)
        with pytest.raises(DataError, match=needle) as info:
            load_scan(tmp_path / "w.npz")
        assert "\n" not in str(info.value) and "w.npz" in str(info.value)
    # the mask survives save_scan / save_scan_h5 round trips
    save_scan(tmp_path / "re.npz", scan)
    np.testing.assert_array_equal(load_scan(tmp_path / "re.npz").bad_pixels, bad)


def test_normalisation_over_measured_pixels_only():
    a = _counts_arrays()
    clean = make_scan(**a)
    f_clean = normalization_factor(clean.diffraction)
    assert normalization_factor(clean.diffraction, bad_pixels=None) == f_clean  # no mask: today's value, bit for bit
    bad = np.zeros((16, 16), bool)
    bad[[1, 2, 13], [14, 3, 1]] = True  # dark corner pixels
    hot = dict(a, diffraction=a["diffraction"].copy())
    hot["diffraction"][:, bad] = 10**6
    hot_scan = make_scan(**hot, bad_pixels=bad)
    f_hot = normalization_factor(hot_scan.diffraction, bad_pixels=hot_scan.bad_pixels)
    d = np.asarray(clean.diffraction, np.float64)
    expected = np.sqrt(8**2 / np.mean((d[:, ~bad] ** 2).sum(axis=1)))
    assert f_hot == np.float32(expected)
    assert abs(f_hot / f_clean - 1) < 0.01  # the hot pixels do not move f
    assert normalization_factor(hot_scan.diffraction) < 0.2 * f_clean  # ... which they would unmasked


# -- probe modes ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["2d", "1mode", "3modes"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_probe_modes(tmp_path, layout, dtype):
    a = _counts_arrays()
    rng = np.random.default_rng(3)
    modes = (rng.standard_normal((3, 16, 16)) + 1j * rng.standard_normal((3, 16, 16))).astype(dtype)
    modes[1] *= 3  # the dominant mode (max Σ|P|²) is mode 1
    probe = {"2d": modes[1], "1mode": modes[1:2], "3modes": modes}[layout]
    np.savez(tmp_path / "p.npz", **dict(a, probeGuess=probe))
    scan = load_scan(tmp_path / "p.npz")
    assert scan.probe.shape == (16, 16) and scan.probe.dtype == np.complex64
    np.testing.assert_array_equal(scan.probe, modes[1].astype(np.complex64))
    if layout == "3modes":
        assert scan.probe_modes.shape == (3, 16, 16) and scan.probe_modes.dtype == np.complex64
        np.testing.assert_array_equal(scan.probe_modes, modes.astype(np.complex64))
        save_scan(tmp_path / "re.npz", scan)
        np.testing.assert_array_equal(load_scan(tmp_path / "re.npz").probe_modes, scan.probe_modes)
    else:
        assert scan.probe_modes is None
    np.savez(tmp_path / "bad.npz", **dict(a, probeGuess=modes[:, :8]))
    with pytest.raises(DataError, match=r"key 'probeGuess' has shape \(3, 8, 16\)"):
        load_scan(tmp_path / "bad.npz")


# -- positions ------------------------------------------------------------------------------
def test_positions_in_metres(tmp_path):
    a = _counts_arrays()
    px = 12.5e-9
    metres = dict(a, xcoords=a["xcoords"] * px, ycoords=a["ycoords"] * px)
    np.savez(tmp_path / "m.npz", **metres)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        plain = load_scan(tmp_path / "m.npz")  # metres read as pixels: spans far less than a pixel
    _one_warning(rec, "span", "less than one", "--pixel-size")
    assert np.ptp(plain.xcoords) < 1
    scan = load_scan(tmp_path / "m.npz", pixel_size=px)
    np.testing.assert_allclose(scan.xcoords, a["xcoords"], rtol=1e-12)
    np.testing.assert_allclose(scan.ycoords_start, a["ycoords"], rtol=1e-12)
    assert scan.metadata["object_pixel_width_m"] == px
    # file metadata: position_units = 'm' + object_pixel_size_m
    meta = dict(metres, _metadata=np.array(json.dumps({"position_units": "m", "object_pixel_size_m": px})))
    np.savez(tmp_path / "mm.npz", **meta)
    np.testing.assert_allclose(load_scan(tmp_path / "mm.npz").xcoords, a["xcoords"], rtol=1e-12)
    with warnings.catch_warnings(record=True) as rec:  # the flag wins over the metadata, with one line
        warnings.simplefilter("always")
        s2 = load_scan(tmp_path / "mm.npz", pixel_size=2 * px)
    _one_warning(rec, "--pixel-size", "overrides", "explicit flag beats file metadata")
    np.testing.assert_allclose(s2.xcoords, a["xcoords"] / 2, rtol=1e-12)
    np.savez(tmp_path / "nom.npz", **dict(metres, _metadata=np.array(json.dumps({"position_units": "m"}))))
    with pytest.raises(DataError, match="pass --pixel-size"):
        load_scan(tmp_path / "nom.npz")
