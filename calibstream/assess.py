"""An exposure's assessment: its summary statistics, verdicts and status, from what its
folder holds (the calexp header, the matches) and the pixels' statistics (pure).

The photometric stage assesses every exposure it finishes, whole or partial; the sink
assesses an exposure whose event predates the statistics (an archived v1 or v2 zero-point
event), from the same header and matches, so the statistics that need no pixels are there
and the others are None. The assessment's FITS cards join the calexp header
(:func:`assessment_cards`; keys of at most 8 characters, documented in the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from calibstream.config import Config
from calibstream.io.exposure import Metadata
from calibstream.summary_stats import SummaryStats, exposure_summary
from calibstream.verdicts import CODES, Figures, Partial, Verdict, judge, status_of


@dataclass(frozen=True)
class Assessment:
    stats: SummaryStats
    verdicts: tuple[Verdict, ...]
    status: str  # ok, warning, partial
    partial: Partial | None

    @property
    def first_guess(self) -> bool:
        """The positions are the first guess's: astrometry did not fit."""
        return self.partial is not None and self.partial.stage == "astrometry"


def _figure(header: fits.Header, key: str) -> float | None:
    value = header.get(key)
    undefined = isinstance(value, bool | str | fits.card.Undefined)  # ASTRMS without freedom
    return None if value is None or undefined else float(value)


def assess(
    metadata: Metadata,
    header: fits.Header,
    matches: Mapping[str, np.ndarray] | None,
    image: SummaryStats | None,
    partial: Partial | None,
    shape: tuple[int, int],
    config: Config,
) -> Assessment:
    """The assessment of a calibrated exposure: ``header`` is its calexp header (the fitted
    WCS unless astrometry did not fit, ASTRMS, MAGZERO... when fitted), ``matches`` its
    matches table (None: none), ``image`` the pixels' statistics (None: unknown)."""
    fitted = partial is None or partial.stage != "astrometry"
    offsets = colours = None
    if matches and fitted:
        offsets = matches["distance_mas"][np.asarray(matches["calib_astrometry_used"], bool)]
    magzero = _figure(header, "MAGZERO")
    if matches and magzero is not None:
        colours = _colours(matches, metadata.band, config)
    fiducial = config.fiducials.get(metadata.band)
    stats = exposure_summary(
        image, metadata, shape, header if fitted else None, offsets, magzero, fiducial,
        config.summary,
    )  # fmt: skip
    nobj = _figure(header, "MAGZERO_NOBJ")
    nmatch = _figure(header, "ASTNMATCH")
    figures = Figures(
        astrms_mas=_figure(header, "ASTRMS") if fitted else None,
        astnmatch=None if nmatch is None or not fitted else int(nmatch),
        magzero_rms=_figure(header, "MAGZERO_RMS") if magzero is not None else None,
        magzero_nobj=None if nobj is None or magzero is None else int(nobj),
        colours=colours,
    )
    verdicts = judge(stats, figures, metadata.exptime, fiducial, config.verdicts)
    return Assessment(stats, verdicts, status_of(verdicts, partial), partial)


def _colours(matches: Mapping[str, np.ndarray], band: str, config: Config) -> np.ndarray | None:
    """The reference colour (primary - secondary) of each star used in the zero-point."""
    term = config.colorterms.get(band)
    if term is None:
        return None
    columns = (f"ref_{term.primary}_mag", f"ref_{term.secondary}_mag")
    if any(c not in matches for c in columns) or "calib_photometry_used" not in matches:
        return None
    used = np.asarray(matches["calib_photometry_used"], dtype=bool)
    return (matches[columns[0]] - matches[columns[1]])[used]


#: Summary statistic -> (FITS key, comment); corners as RACORN1..4, DECCORN1..4.
STAT_CARDS = {
    "psfSigma": ("PSFSIGMA", "[px] PSF model sigma (adaptive moments)"),
    "psfArea": ("PSFAREA", "[px] PSF effective area (sum p)^2/sum p^2"),
    "psfIxx": ("PSFIXX", "[px2] PSF model adaptive moment xx"),
    "psfIyy": ("PSFIYY", "[px2] PSF model adaptive moment yy"),
    "psfIxy": ("PSFIXY", "[px2] PSF model adaptive moment xy"),
    "nPsfStar": ("NPSFSTAR", "PSF stars (calib_psf_used)"),
    "psfStarDeltaE1Median": ("PSFDE1MD", "median PSF-star e1 - model e1"),
    "psfStarDeltaE2Median": ("PSFDE2MD", "median PSF-star e2 - model e2"),
    "psfStarDeltaE1Scatter": ("PSFDE1SC", "MAD scatter of PSF-star e1 - model e1"),
    "psfStarDeltaE2Scatter": ("PSFDE2SC", "MAD scatter of PSF-star e2 - model e2"),
    "psfStarDeltaSizeMedian": ("PSFDSZMD", "[px] median PSF-star size - model size"),
    "psfStarDeltaSizeScatter": ("PSFDSZSC", "[px] MAD scatter of star size - model"),
    "skyBg": ("SKYBG", "[e-/px] sky: mean sky variance - read noise^2"),
    "skyNoise": ("SKYNOISE", "[e-] clipped std of the sky pixels"),
    "meanVar": ("MEANVAR", "[e-2] clipped mean variance of sky pixels"),
    "zeroPoint": ("ZEROPNT", "[mag] mag of 1 e- (MAGZERO+2.5log10 EXPTIME)"),
    "magLim": ("MAGLIM", "[mag] 5-sigma point-source depth (SMTN-002)"),
    "effTime": ("EFFTIME", "[s] effective exposure time (DES t_eff)"),
    "effTimePsfSigmaScale": ("EFFTPSF", "t_eff PSF factor (fid/psfSigma)^2"),
    "effTimeSkyBgScale": ("EFFTSKY", "t_eff sky factor fid sky rate/sky rate"),
    "effTimeZeroPointScale": ("EFFTZP", "t_eff transparency factor"),
    "astromOffsetMean": ("ASTOFFMN", "[arcsec] mean offset of astrometric matches"),
    "astromOffsetStd": ("ASTOFFSD", "[arcsec] std of astrometric match offsets"),
    "ra": ("CENRA", "[deg] RA of the chip centre"),
    "dec": ("CENDEC", "[deg] Dec of the chip centre"),
    "pixelScale": ("PIXSCALE", "[arcsec/px] pixel scale at the chip centre"),
    "zenithDistance": ("ZENDIST", "[deg] zenith distance of the chip centre"),
}


def assessment_cards(assessment: Assessment) -> list[tuple[str, object, str]]:
    """The calexp header's cards of an assessment: the known statistics, the seeing, the
    corners, the status, one flag per verdict judged, what a partial calibration lacks."""
    stats = assessment.stats
    cards: list[tuple[str, object, str]] = []
    for name, (key, comment) in STAT_CARDS.items():
        value = getattr(stats, name)
        if value is not None:
            cards.append((key, value, comment))
    if stats.psf_fwhm_arcsec is not None:
        cards.append(("PSFFWHM", stats.psf_fwhm_arcsec, "[arcsec] seeing psfSigma*2.3548*PIXSCALE"))
    for axis, corners in (("RA", stats.raCorners), ("DEC", stats.decCorners)):
        for i, value in enumerate(corners or (), start=1):
            cards.append((f"{axis}CORN{i}", value, f"[deg] corner {i} {axis} (pixel grid edge)"))
    cards.append(("QSTATUS", assessment.status, "ok, warning or partial"))
    for verdict in assessment.verdicts:
        key, what = CODES[verdict.code][1], CODES[verdict.code][2]
        cards.append((key, verdict.flag, f"flagged: {what}"))
    if assessment.partial is not None:
        cards.append(("PARTIAL", assessment.partial.stage, "stage that could not fit"))
    if assessment.first_guess:
        cards.append(("WCSGUESS", True, "WCS and positions are the first guess"))
    return cards
