"""The configuration of exposure quality: per-band fiducials, the summary statistics' settings
and the verdicts' thresholds (the ``[fiducials.<band>]``, ``[summary]`` and ``[verdicts]``
tables of :class:`calibstream.config.Config`).

A fiducial is a band's nominal observation (Rubin's ``fiducialPsfSigma``,
``fiducialSkyBackground``, ``fiducialZeroPoint``, ``fiducialReadNoise``, ``fiducialExpTime``,
``fiducialMagLim``): ``effTime`` and the image verdicts compare an exposure with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from calibstream.errors import ConfigError


def _positive(instance: object, table: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(instance, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"must be a positive number, got {value!r}", where=f"{table}.{name}")


@dataclass(frozen=True)
class Fiducial:
    """A band's nominal observation, in the units of this pipeline (electrons, MAGZERO's
    zero-point: the magnitude of 1 e-/s)."""

    psf_sigma: float  # px: psfSigma (determinant radius of the PSF's adaptive moments)
    sky: float  # e-/s per pixel
    zero_point: float  # mag of 1 e-/s (as MAGZERO)
    read_noise: float  # e- per pixel
    exptime: float  # s: the exposure time m5 is given for
    m5: float  # mag: 5σ point-source depth (SMTN-002) at ``exptime``

    def __post_init__(self) -> None:
        for name in ("psf_sigma", "sky", "zero_point", "read_noise", "exptime", "m5"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"must be a number, got {value!r}", where=f"fiducials.{name}")
            object.__setattr__(self, name, float(value))
        _positive(self, "fiducials", ("psf_sigma", "sky", "exptime"))
        if self.read_noise < 0:
            raise ConfigError(f"must be >= 0, got {self.read_noise}", where="fiducials.read_noise")


#: Fiducials per band. r is the simulated camera's (``simulate.config.SimConfig``: Moffat
#: FWHM 3.5 px, beta 3.5; sky 1000 e- in 30 s; MAGZERO 28; read noise 5 e-), its m5 the
#: SMTN-002 depth of those figures. The others are LSSTCam's (obs_lsst, SMTN-002 v2024:
#: psfSigma, sky in ADU/s, 1-s zero-point, m5 for a 30-s visit) with a gain of 1 assumed:
#: set ``[fiducials.<band>]`` for a real instrument.
DEFAULT_FIDUCIALS: Mapping[str, Fiducial] = MappingProxyType(
    {
        "u": Fiducial(1.72, 0.91, 25.97, 5.4, 30.0, 23.70),
        "g": Fiducial(1.63, 9.35, 27.96, 5.4, 30.0, 24.97),
        "r": Fiducial(1.682, 1000.0 / 30.0, 28.0, 5.0, 30.0, 24.12),
        "i": Fiducial(1.51, 32.04, 27.62, 5.4, 30.0, 24.13),
        "z": Fiducial(1.47, 48.05, 27.23, 5.4, 30.0, 23.56),
        "y": Fiducial(1.44, 54.81, 26.27, 5.4, 30.0, 22.55),
    }
)


@dataclass(frozen=True)
class SummaryConfig:
    """How the summary statistics are measured (``calibstream.summary_image``,
    ``calibstream.summary_stats``)."""

    #: S/N of magLim (Rubin's ``magLimSnr``).
    maglim_snr: float = 5.0
    #: Pixels left out of skyBg, skyNoise and meanVar: defects, and DETECTED (the sources
    #: characterization found), so that the statistics are the sky's.
    sky_mask_planes: tuple[str, ...] = (
        "BAD", "SAT", "CR", "INTRP", "EDGE", "NO_DATA", "SUSPECT", "DETECTED",
    )  # fmt: skip
    sky_clip_sigma: float = 3.0  # Rubin's sigmaClip
    sky_clip_iterations: int = 2  # Rubin's clipIter
    #: At most this many pixels (a regular sub-grid) enter the sky statistics.
    sky_max_pixels: int = 1_000_000
    #: PSF stars for the PSF-star residuals: calib_psf_used with a PSF-flux S/N in this range
    #: (Rubin's starSelector).
    psf_star_min_snr: float = 50.0
    psf_star_max_snr: float = 1000.0
    #: Upper bound of effTimeZeroPointScale (Rubin's ``maxEffectiveTransparency``).
    max_effective_transparency: float = math.inf
    #: The observatory, for zenithDistance (default: Rubin on Cerro Pachón).
    site_longitude: float = -70.749417  # deg, east positive
    site_latitude: float = -30.244639  # deg
    site_elevation: float = 2663.0  # m

    def __post_init__(self) -> None:
        _positive(self, "summary", ("maglim_snr", "sky_clip_sigma", "sky_max_pixels"))
        _positive(self, "summary", ("psf_star_min_snr", "psf_star_max_snr"))
        _positive(self, "summary", ("max_effective_transparency",))
        if self.sky_clip_iterations < 0:
            raise ConfigError("must be >= 0", where="summary.sky_clip_iterations")
        if not -90.0 <= self.site_latitude <= 90.0:
            raise ConfigError("must be within [-90, 90]", where="summary.site_latitude")


@dataclass(frozen=True)
class VerdictConfig:
    """The thresholds of the quality verdicts (``calibstream.verdicts``): a figure past its
    threshold flags the exposure ("ok with warnings"), with a reason code and words."""

    #: Astrometric: astromOffsetMean, arcsec (Rubin's ``maxMeanDistanceArcsec``).
    max_astrom_offset: float = 0.5
    #: Astrometric: ASTRMS, mas (the fit itself fails past ``[astrometry] max_rms_mas``).
    max_astrms: float = 50.0
    #: Astrometric: fewer matches than this in the fit (a sparse chip's fit by direct
    #: matching, below ``[astrometry] min_matches``, down to a one-star shift).
    min_astrometric_matches: int = 10
    #: Photometric: MAGZERO_RMS, mag.
    max_magzero_rms: float = 0.05
    #: Photometric: fewer stars than this in the zero-point (6: the few-star zero-points
    #: that MAGZERO_FEW marks, ``[photometry] few_stars`` = 5 or fewer).
    min_photometric_stars: int = 6
    #: Photometric colour coverage: the span (5th to 95th percentile) of the reference
    #: colours (primary - secondary) of the stars used, mag.
    min_colour_span: float = 0.2
    #: Image: psfSigma over the band's fiducial.
    max_psf_sigma_ratio: float = 1.5
    #: Image: the sky rate (skyBg / EXPTIME) over the band's fiducial.
    max_sky_ratio: float = 2.0
    #: Image: magLim shallower than the band's fiducial m5 (scaled to the exposure time,
    #: + 1.25 log10(EXPTIME / fiducial exptime)) by more than this, mag.
    max_depth_loss: float = 0.5

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                where = f"verdicts.{item.name}"
                raise ConfigError(f"must be a number >= 0, got {value!r}", where=where)
