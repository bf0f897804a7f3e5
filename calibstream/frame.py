"""What calibration needs of an exposure besides its sources: no pixels."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from astropy.io import fits
from astropy.wcs import WCS

from calibstream.io.exposure import Exposure, Metadata
from calibstream.summary_stats import SummaryStats


@dataclass(frozen=True)
class Frame:
    """What calibration needs of an exposure besides its sources: no pixels.

    The first-guess WCS is kept as its FITS header cards, the form in which it
    travels between processes, so every process builds the same WCS from it.
    """

    metadata: Metadata
    wcs_header: fits.Header
    shape: tuple[int, int]  # (height, width)
    psf_fwhm: float  # pixels
    #: The summary statistics measured on the pixels (None: the event that brought the
    #: frame is older than them).
    stats: SummaryStats | None = None

    @functools.cached_property
    def wcs(self) -> WCS:
        return WCS(self.wcs_header, relax=True)


def frame_of(exposure: Exposure) -> Frame:
    height, width = exposure.shape
    return Frame(
        metadata=exposure.metadata,
        wcs_header=exposure.wcs.to_header(relax=True),
        shape=(int(height), int(width)),
        psf_fwhm=float(exposure.psf.fwhm),
    )
