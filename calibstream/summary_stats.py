"""An exposure's summary statistics: Rubin's ``computeExposureSummaryStats`` quantities,
with its names and definitions, from what the chain has (pure functions, no pixels here).

The figures that need pixels (the PSF model's moments, the PSF stars' residuals, the sky)
are measured at detection (:mod:`calibstream.summary_image`) and travel in the events; the
rest follow from the fitted WCS, the astrometric matches and the zero-point
(:func:`exposure_summary`). A quantity whose inputs are missing (a partial calibration, an
event older than the statistics) is None, never a guess.

Units: pixels for the PSF (``psfSigma`` px, ``psfArea`` px, ``psfIxx`` px²), electrons for
the sky (the image is in electrons: gain 1), ``zeroPoint`` the magnitude of 1 e- in the
whole exposure (Rubin's: MAGZERO + 2.5 log10 EXPTIME), arcsec for ``astromOffset*`` and
``pixelScale``, degrees for the corners, the centre and ``zenithDistance``, seconds for
``effTime``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import erfa
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from calibstream.io.exposure import Metadata
from calibstream.quality_config import Fiducial, SummaryConfig

#: sqrt(8 ln 2): a Gaussian's FWHM over its sigma (seeing = psfSigma x this x pixelScale).
FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))


@dataclass(frozen=True)
class SummaryStats:
    """Rubin's ExposureSummaryStats fields this pipeline computes; None where unknown."""

    psfSigma: float | None = None
    psfArea: float | None = None
    psfIxx: float | None = None
    psfIyy: float | None = None
    psfIxy: float | None = None
    nPsfStar: int | None = None
    psfStarDeltaE1Median: float | None = None
    psfStarDeltaE2Median: float | None = None
    psfStarDeltaE1Scatter: float | None = None
    psfStarDeltaE2Scatter: float | None = None
    psfStarDeltaSizeMedian: float | None = None
    psfStarDeltaSizeScatter: float | None = None
    skyBg: float | None = None
    skyNoise: float | None = None
    meanVar: float | None = None
    zeroPoint: float | None = None
    magLim: float | None = None
    effTime: float | None = None
    effTimePsfSigmaScale: float | None = None
    effTimeSkyBgScale: float | None = None
    effTimeZeroPointScale: float | None = None
    astromOffsetMean: float | None = None
    astromOffsetStd: float | None = None
    ra: float | None = None
    dec: float | None = None
    raCorners: tuple[float, ...] | None = None
    decCorners: tuple[float, ...] | None = None
    pixelScale: float | None = None
    zenithDistance: float | None = None

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple | list | np.ndarray):
                clean = tuple(_number(v) for v in value)
                object.__setattr__(self, item.name, None if None in clean else clean)
            elif item.name == "nPsfStar":
                object.__setattr__(self, item.name, None if value is None else int(value))
            else:
                object.__setattr__(self, item.name, _number(value))

    def as_record(self) -> dict[str, Any]:
        """By Rubin's names, None for unknown: summary.json's and the events' form."""
        record = dataclasses.asdict(self)
        for name in ("raCorners", "decCorners"):
            record[name] = None if record[name] is None else list(record[name])
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> SummaryStats | None:
        if record is None:
            return None
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in record.items() if name in known})

    @property
    def psf_fwhm_arcsec(self) -> float | None:
        """The seeing: psfSigma x sqrt(8 ln 2) x pixelScale (as Rubin's visit tables)."""
        if self.psfSigma is None or self.pixelScale is None:
            return None
        return self.psfSigma * FWHM_PER_SIGMA * self.pixelScale


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


#: The statistics measured on the pixels, at detection (the rest come later).
IMAGE_FIELDS = (
    "psfSigma", "psfArea", "psfIxx", "psfIyy", "psfIxy", "nPsfStar",
    "psfStarDeltaE1Median", "psfStarDeltaE2Median", "psfStarDeltaE1Scatter",
    "psfStarDeltaE2Scatter", "psfStarDeltaSizeMedian", "psfStarDeltaSizeScatter",
    "skyBg", "skyNoise", "meanVar",
)  # fmt: skip


# ---------------------------------------------------------------- depth and effective time


def magnitude_limit(
    psf_area: float, sky_bg: float, zero_point: float, read_noise: float, snr: float = 5.0
) -> float:
    """The magnitude of a point source at S/N ``snr`` (SMTN-002, LSE-40 Eq. 45, gain 1):
    ``snr = C / sqrt(C + (B + σ_read²) n_eff)`` solved for the counts C, with
    ``n_eff = psfArea`` and B the sky per pixel; ``zero_point`` includes the exposure time."""
    background = (sky_bg + read_noise**2) * psf_area
    counts = snr**2 / 2.0 + math.sqrt(snr**4 / 4.0 + snr**2 * background)
    return zero_point - 2.5 * math.log10(counts)


@dataclass(frozen=True)
class EffectiveTime:
    """DES t_eff (Neilsen et al. 2016), as Rubin computes it: ``effTime = f c b EXPTIME``."""

    time: float | None
    psf: float | None  # f = (psfSigma / fiducial)^-2
    sky: float | None  # b = fiducial sky rate / (skyBg / EXPTIME)
    zero_point: float | None  # c = 10^(-0.8 (fiducial - MAGZERO)), at most the configured bound


def effective_time(
    stats: SummaryStats, magzero: float | None, exptime: float, fiducial: Fiducial | None,
    max_transparency: float = math.inf,
) -> EffectiveTime:  # fmt: skip
    """effTime and its three factors; a factor whose input is unknown is None, and so is
    effTime then."""
    if fiducial is None:
        return EffectiveTime(None, None, None, None)
    psf = None if stats.psfSigma is None else (stats.psfSigma / fiducial.psf_sigma) ** -2
    sky = None
    if stats.skyBg is not None and stats.skyBg > 0:
        sky = fiducial.sky / (stats.skyBg / exptime)
    zp = None
    if magzero is not None:
        zp = min(10.0 ** (-0.8 * (fiducial.zero_point - magzero)), max_transparency)
    total = None if None in (psf, sky, zp) else psf * sky * zp * exptime
    return EffectiveTime(total, psf, sky, zp)


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """Where the chip is: its centre, its corners (the pixel grid's outer edges) and the
    pixel scale at the centre (sqrt of the WCS Jacobian's determinant)."""

    ra: float
    dec: float
    ra_corners: tuple[float, ...]
    dec_corners: tuple[float, ...]
    pixel_scale: float  # arcsec


def wcs_geometry(header: fits.Header, shape: tuple[int, int]) -> Geometry:
    """The chip's centre and corners on the sky (Rubin: Box2D corners in the order
    (min x, min y), (max, min), (max, max), (min, max); centre ((W-1)/2, (H-1)/2))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, relax=True)
    height, width = shape
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    corners_x = np.array([-0.5, width - 0.5, width - 0.5, -0.5])
    corners_y = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
    h = 0.5
    x = np.concatenate([[cx, cx + h, cx - h, cx, cx], corners_x])
    y = np.concatenate([[cy, cy, cy, cy + h, cy - h], corners_y])
    ra, dec = (np.asarray(v, dtype=float) for v in wcs.all_pix2world(x, y, 0))
    cos_dec = math.cos(math.radians(dec[0]))
    dra = (ra[1:5] - ra[0] + 180.0) % 360.0 - 180.0
    xi, eta = dra * cos_dec, dec[1:5] - dec[0]
    jacobian = np.array([[xi[0] - xi[1], xi[2] - xi[3]], [eta[0] - eta[1], eta[2] - eta[3]]])
    scale = math.sqrt(abs(np.linalg.det(jacobian / (2 * h)))) * 3600.0
    return Geometry(
        float(ra[0] % 360.0), float(dec[0]), tuple(ra[5:] % 360.0), tuple(dec[5:]), scale
    )


def zenith_distance(ra: float, dec: float, mjd_tai: float, config: SummaryConfig) -> float:
    """Topocentric zenith distance (deg, no refraction) of (ra, dec) from the configured site
    at MJD-OBS (TAI): erfa's ICRS-to-observed transform (UT1 = UTC, no polar motion)."""
    utc1, utc2 = erfa.taiutc(2400000.5, mjd_tai)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dubious year" past the leap-second table's end
        _, zenith, *_ = erfa.atco13(
            math.radians(ra), math.radians(dec), 0.0, 0.0, 0.0, 0.0, utc1, utc2, 0.0,
            math.radians(config.site_longitude), math.radians(config.site_latitude),
            config.site_elevation, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5,
        )  # fmt: skip
    return math.degrees(float(zenith))


def astrometric_offsets(distance_mas: np.ndarray) -> tuple[float | None, float | None]:
    """astromOffsetMean and astromOffsetStd (arcsec): the mean and standard deviation of the
    distances between the sources used in the astrometric fit and their references."""
    distance = np.asarray(distance_mas, dtype=float)
    distance = distance[np.isfinite(distance)] / 1000.0
    if distance.size == 0:
        return None, None
    std = float(np.std(distance)) if distance.size > 1 else None
    return float(np.mean(distance)), std


# ---------------------------------------------------------------- the exposure's summary


def exposure_summary(
    image: SummaryStats | None,
    metadata: Metadata,
    shape: tuple[int, int],
    wcs_header: fits.Header | None,
    offsets_mas: np.ndarray | None,
    magzero: float | None,
    fiducial: Fiducial | None,
    config: SummaryConfig,
) -> SummaryStats:
    """Everything: the pixels' statistics (``image``, None when the event that brought them
    is older than them), the geometry of the fitted WCS (None: astrometry did not fit), the
    astrometric offsets, the zero-point (MAGZERO; None: photometry did not fit), then magLim
    and effTime where their inputs are known."""
    stats = image or SummaryStats()
    updates: dict[str, Any] = {}
    if wcs_header is not None:
        geometry = wcs_geometry(wcs_header, shape)
        updates.update(
            ra=geometry.ra, dec=geometry.dec, raCorners=geometry.ra_corners,
            decCorners=geometry.dec_corners, pixelScale=geometry.pixel_scale,
            zenithDistance=zenith_distance(geometry.ra, geometry.dec, metadata.mjd_obs, config),
        )  # fmt: skip
        if offsets_mas is not None:
            updates["astromOffsetMean"], updates["astromOffsetStd"] = astrometric_offsets(
                offsets_mas
            )
    zero_point = None
    if magzero is not None and math.isfinite(magzero):
        zero_point = magzero + 2.5 * math.log10(metadata.exptime)
        if None not in (stats.psfArea, stats.skyBg):
            read_noise = 0.0 if fiducial is None else fiducial.read_noise
            updates["magLim"] = magnitude_limit(
                stats.psfArea, stats.skyBg, zero_point, read_noise, config.maglim_snr
            )
    updates["zeroPoint"] = zero_point
    eff = effective_time(
        stats, None if zero_point is None else magzero, metadata.exptime, fiducial,
        config.max_effective_transparency,
    )  # fmt: skip
    updates.update(
        effTime=eff.time, effTimePsfSigmaScale=eff.psf, effTimeSkyBgScale=eff.sky,
        effTimeZeroPointScale=eff.zero_point,
    )  # fmt: skip
    return dataclasses.replace(stats, **updates)
