"""Real-data peer check: SExtractor's own catalog of an NTT frame, reproduced.

The frame, SExtractor's configuration and its catalog are in
``shared/data/sep-ntt``; the settings are read from ``default.sex`` and
``default.conv`` rather than restated here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

from calibstream.config import config_from_dict
from calibstream.detection.background import estimate_background
from calibstream.detection.detect import detect_sources
from calibstream.detection.measure import PixelContext, aperture_name, measure_sources

# image.cat columns (0-based), as listed in its header.
NUMBER, X, Y, XWIN, YWIN, X2, Y2, XY, FLUX_APER, FLUXERR_APER, KRON, FLUX_AUTO, FLAGS = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    12,
    13,
    14,
    15,
    20,
)
ZERO_KRON_SOURCE = 10  # SExtractor's Kron radius is 0: no AUTO flux to compare
WINDOW_DIFFERS = (18, 31)  # windowed centroids differ between SExtractor versions


def sextractor_settings(folder: Path) -> dict[str, str]:
    settings = {}
    for line in (folder / "default.sex").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition(" ")
            settings[key] = value.strip()
    return settings


def conv_kernel(path: Path) -> list[list[float]]:
    rows = [line.split() for line in path.read_text().splitlines()[1:] if line and line[0] != "#"]
    return [[float(v) for v in row] for row in rows if row]


@pytest.fixture(scope="module")
def peer(shared_dir):
    folder = shared_dir / "data" / "sep-ntt"
    se = sextractor_settings(folder)
    kron_factor, kron_min = (float(v) for v in se["PHOT_AUTOPARAMS"].split(","))
    config = config_from_dict(
        {
            "background": {
                "mesh_size": int(se["BACK_SIZE"]),
                "filter_size": int(se["BACK_FILTERSIZE"]),
            },
            "detection": {
                "filter": "kernel",
                "kernel": conv_kernel(folder / se["FILTER_NAME"]),
                "noise": "global",
                "threshold": float(se["DETECT_THRESH"]),
                "min_area": int(se["DETECT_MINAREA"]),
                "deblend_nthresh": int(se["DEBLEND_NTHRESH"]),
                "deblend_cont": float(se["DEBLEND_MINCONT"]),
                "clean_param": float(se["CLEAN_PARAM"]),
            },
            "measurement": {
                "aperture_radii": [float(se["PHOT_APERTURES"]) / 2],
                "kron_factor": kron_factor,
                "kron_min_radius": kron_min,
                "saturation": float(se["SATUR_LEVEL"]),
            },
        }
    )
    with fits.open(folder / "image.fits") as hdul:
        raw = hdul[0].data.astype(np.float32)
    background = estimate_background(raw, config.background)
    image = raw - background.image
    noise = background.global_rms**2
    detections = detect_sources(image, noise, None, None, config.detection)
    pixels = PixelContext(
        image=image, variance=noise, invalid=np.zeros(image.shape, bool), raw_peak_image=raw
    )
    ours = measure_sources(pixels, detections, config.measurement)
    reference = np.loadtxt(folder / "image.cat")
    se_back = fits.getdata(folder / "back.fits")
    return ours, reference, background, se_back, config


def _match(ours, reference):
    tree = cKDTree(np.column_stack([ours["x_isophotal"], ours["y_isophotal"]]))
    # SExtractor's pixel coordinates are 1-based.
    distance, index = tree.query(reference[:, [X, Y]] - 1.0)
    return distance, index


def test_background_is_sextractors(peer):
    _, _, background, se_back, _ = peer
    np.testing.assert_allclose(background.image, se_back, rtol=1e-5)


def test_detections_match_sextractor(peer):
    ours, reference, *_ = peer
    distance, index = _match(ours, reference)
    matched = distance < 1.0
    assert matched.sum() >= 64, f"only {matched.sum()} of {len(reference)} matched"
    extra = len(ours["id"]) - len(set(index[matched]))
    assert extra <= 1, f"{extra} detections SExtractor did not make"
    assert np.median(distance[matched]) < 1e-3


def test_windowed_centroids_match(peer):
    ours, reference, *_ = peer
    distance, index = _match(ours, reference)
    keep = (distance < 1.0) & ~np.isin(reference[:, NUMBER], WINDOW_DIFFERS)
    dx = ours["x"][index[keep]] - (reference[keep, XWIN] - 1)
    dy = ours["y"][index[keep]] - (reference[keep, YWIN] - 1)
    offset = np.hypot(dx, dy)
    assert np.median(offset) < 1e-3
    # Source 10 is degenerate (SExtractor's Kron radius 0, so its window differs).
    regular = reference[keep, NUMBER] != ZERO_KRON_SOURCE
    assert np.max(offset[regular]) < 1e-3


def test_second_moments_match(peer):
    ours, reference, *_ = peer
    _, index = _match(ours, reference)
    for column, ref in (("shape_xx", X2), ("shape_yy", Y2), ("shape_xy", XY)):
        np.testing.assert_allclose(ours[column][index], reference[:, ref], rtol=1e-3, atol=1e-4)


def test_aperture_and_auto_fluxes_within_0p1_percent(peer):
    ours, reference, _, _, config = peer
    _, index = _match(ours, reference)
    aperture = aperture_name(config.measurement.aperture_radii[0])
    np.testing.assert_allclose(ours[aperture][index], reference[:, FLUX_APER], rtol=1e-3)
    np.testing.assert_allclose(
        ours[aperture + "_err"][index], reference[:, FLUXERR_APER], rtol=1e-3
    )
    auto = reference[:, NUMBER] != ZERO_KRON_SOURCE
    np.testing.assert_allclose(
        ours["kron_flux"][index[auto]], reference[auto, FLUX_AUTO], rtol=1e-3
    )


def test_flags_match(peer):
    ours, reference, *_ = peer
    _, index = _match(ours, reference)
    sextractor_style = (
        2 * ours["flag_deblended"]
        + 4 * ours["flag_saturated"]
        + 8 * ours["flag_edge"]
        + 16 * ours["flag_aperture_truncated"]
    )[index]
    agree = sextractor_style == reference[:, FLAGS].astype(int)
    assert agree.sum() >= 63, f"FLAGS differ for sources {reference[~agree, NUMBER]}"
