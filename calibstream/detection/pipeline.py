"""Detect and measure deep: CalibrateTask's first step, as one pure function.

read → residual background → detection (PSF matched filter) → deblend →
measure → aperture corrections → copyIcSourceFields, and a writer for the
``measure`` command's outputs (src.fits, background.fits).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from calibstream import __version__
from calibstream.arrays import writable_alias
from calibstream.config import Config
from calibstream.detection.apcorr import apply_apcorr
from calibstream.detection.background import (
    Background,
    estimate_background,
    subtract_background,
)
from calibstream.detection.detect import find_sources, measured
from calibstream.detection.icsrc import copy_icsrc_flags
from calibstream.detection.maskbits import MaskBits, plane_of
from calibstream.detection.measure import PixelContext, measure_sources
from calibstream.io.columns import described_table_hdu
from calibstream.io.exposure import Exposure, Metadata, read_exposure
from calibstream.io.fitsio import atomic_write_bytes, hdulist_bytes

#: Catalog columns that lead src.fits, in this order; the rest follow as measured.
LEADING_COLUMNS = (
    "id",
    "parent",
    "x",
    "y",
    "x_err",
    "y_err",
    "ra",
    "dec",
    "psf_flux",
    "psf_flux_err",
)


@dataclass(frozen=True)
class Measurement:
    """The deep catalog of one exposure and the background that was subtracted."""

    catalog: dict[str, np.ndarray]
    background: Background
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.catalog["id"])


def measure_exposure(
    exposure: Exposure, config: Config, clock: Callable[[], float] = time.perf_counter
) -> Measurement:
    """The deep source catalog of a characterized exposure."""
    timings: dict[str, float] = {}
    start = clock()

    def lap(stage: str) -> None:
        nonlocal start
        now = clock()
        timings[stage] = now - start
        start = now

    mask = exposure.mask
    background_masked = any_bits(mask, exposure.bits(*config.background.mask_planes))
    background = estimate_background(exposure.image, config.background, background_masked)
    del background_masked
    raw = config.detection.filter == "psf"  # the S/N image subtracts the background itself
    invalid = _detection_invalid(exposure, config)
    lap("background")

    plane_variance = writable_alias(exposure.variance)
    variance = plane_variance if config.detection.noise == "variance" else background.global_rms**2
    image = None if raw else _subtracted(exposure, background, invalid)
    found = find_sources(
        exposure.image if raw else image,
        variance, invalid, exposure.psf.image, config.detection, background if raw else None,
    )  # fmt: skip
    invalid = plane_of(invalid)
    if image is None:
        image = _subtracted(exposure, background, invalid)
    detections = measured(found, image, config.detection)
    del found
    lap("detect")

    pixels = PixelContext(
        image, plane_variance, invalid, mask, exposure.mask_planes, raw_peak_image=exposure.image
    )
    columns = measure_sources(
        pixels, detections, config.measurement, exposure.psf.image, exposure.psf.fwhm
    )
    lap("measure")

    apply_aperture_corrections(columns, exposure)
    lap("apcorr")

    columns.update(
        copy_icsrc_flags(
            columns["x"], columns["y"], exposure.icsrc, config.measurement.icsrc_match_radius
        )
    )
    ra, dec = exposure.wcs.all_pix2world(columns["x"], columns["y"], 0)
    columns["ra"], columns["dec"] = np.asarray(ra, float), np.asarray(dec, float)
    lap("icsrc")
    return Measurement(catalog=_ordered(columns), background=background, timings=timings)


def _detection_invalid(exposure: Exposure, config: Config) -> MaskBits | np.ndarray:
    """The invalid pixels as detection reads them: for the S/N image the mask bits, read a
    band at a time (no 16 MB plane beside its own two at 4k×4k; measurement gets the plane
    after it), else the boolean plane."""
    invalid = MaskBits(exposure.mask, exposure.bits(*config.detection.mask_planes))
    return invalid if config.detection.filter == "psf" else invalid.plane()


def _subtracted(exposure: Exposure, background: Background, invalid: np.ndarray) -> np.ndarray:
    """The background-subtracted image, zero where ``invalid``."""
    image = subtract_background(exposure.image, background)
    if invalid.any():
        image[invalid] = 0.0  # no information there; keeps NaN under NO_DATA out of sums
    return image


def any_bits(mask: np.ndarray, bits: int) -> np.ndarray:
    """Boolean plane: where ``mask`` has any of ``bits`` set."""
    return MaskBits(mask, bits).plane()


def apply_aperture_corrections(columns: dict[str, np.ndarray], exposure: Exposure) -> None:
    """Correct every flux the APCORR map names; keep the factor as ``<flux>_apcorr``."""
    for name, term in exposure.apcorr.terms.items():
        if name not in columns or name + "_err" not in columns:
            continue
        factor = exposure.apcorr.evaluate(name, columns["x"], columns["y"])
        columns[name], columns[name + "_err"] = apply_apcorr(
            columns[name], columns[name + "_err"], factor, term.err
        )
        columns[name + "_apcorr"] = factor


def _ordered(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    lead = {name: columns[name] for name in LEADING_COLUMNS if name in columns}
    return lead | {name: value for name, value in columns.items() if name not in lead}


# ---------------------------------------------------------------- outputs


def metadata_cards(meta: Metadata) -> list[tuple[str, object, str]]:
    """The observation metadata every output file's primary header carries."""
    return [
        ("EXPID", meta.expid, "exposure id"),
        ("VISIT", meta.visit, "visit"),
        ("DETECTOR", meta.detector, "detector"),
        ("BAND", meta.band, "band"),
        ("MJD-OBS", meta.mjd_obs, "mid-exposure MJD (TAI)"),
        ("EXPTIME", meta.exptime, "[s] exposure time"),
        ("CSVERS", __version__, "calibstream version"),
    ]


def source_catalog_hdul(exposure: Exposure, measurement: Measurement) -> fits.HDUList:
    primary = fits.PrimaryHDU()
    for key, value, comment in metadata_cards(exposure.metadata):
        primary.header[key] = (value, comment)
    return fits.HDUList([primary, described_table_hdu(measurement.catalog, "SRC")])


def background_hdul(metadata: Metadata, background: Background) -> fits.HDUList:
    """The background model as its mesh of spline nodes (see ``background``)."""
    primary = fits.PrimaryHDU()
    for key, value, comment in metadata_cards(metadata):
        primary.header[key] = (value, comment)
    mesh = fits.ImageHDU(background.mesh, name="BACKGROUND")
    height, width = background.shape
    for key, value, comment in (
        ("BKGMESH", background.mesh_size, "[px] mesh cell size"),
        ("BKGFILT", background.filter_size, "median filter over mesh cells"),
        ("BKGLEVEL", background.global_level, "global background level"),
        ("BKGRMS", background.global_rms, "global background rms"),
        ("IMGWIDTH", width, "[px] width of the exposure"),
        ("IMGHEIGH", height, "[px] height of the exposure"),
        ("BKGINTRP", "natural bicubic spline", "nodes at cell centres (SExtractor)"),
    ):
        mesh.header[key] = (value, comment)
    return fits.HDUList([primary, mesh])


def read_background(hdul: fits.HDUList) -> Background:
    """The Background of a ``background.fits`` (its image rendered on demand)."""
    hdu = hdul["BACKGROUND"]
    header = hdu.header
    return Background(
        mesh=np.asarray(hdu.data, dtype=np.float32),
        shape=(int(header["IMGHEIGH"]), int(header["IMGWIDTH"])),
        global_level=float(header["BKGLEVEL"]),
        global_rms=float(header["BKGRMS"]),
        mesh_size=int(header["BKGMESH"]),
        filter_size=int(header["BKGFILT"]),
    )


def write_measurement(exposure: Exposure, measurement: Measurement, out_dir: Path) -> None:
    """Write src.fits and background.fits, each atomically."""
    atomic_write_bytes(
        hdulist_bytes(source_catalog_hdul(exposure, measurement)), out_dir / "src.fits"
    )
    atomic_write_bytes(
        hdulist_bytes(background_hdul(exposure.metadata, measurement.background)),
        out_dir / "background.fits",
    )


@dataclass(frozen=True)
class MeasureResult:
    catalog: dict[str, np.ndarray]
    out_dir: Path
    timings: dict[str, float]


def measure_file(path: Path, out_dir: Path, config: Config) -> MeasureResult:
    """The ``measure`` command for one exposure file."""
    start = time.perf_counter()
    exposure = read_exposure(path)
    read_time = time.perf_counter() - start
    measurement = measure_exposure(exposure, config)
    start = time.perf_counter()
    write_measurement(exposure, measurement, out_dir)
    timings = {"read": read_time, **measurement.timings, "write": time.perf_counter() - start}
    return MeasureResult(catalog=measurement.catalog, out_dir=out_dir, timings=timings)
