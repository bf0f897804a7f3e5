"""Typed errors: every bad input becomes one of these, never a crash.

Each error names the part of the input at fault (an HDU, a header key, a
column) so that a failure event or a summary.json can say *why* in words.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CalibstreamError(Exception):
    """Base of every error calibstream raises on purpose."""

    #: Short machine-readable kind, used in failure events and summaries.
    kind = "error"

    def __init__(self, reason: str, *, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        #: The pipeline stage it stopped ("read", "detect", "astrometry", ...),
        #: set by :func:`stage` on the way out.
        self.stage: str | None = None
        super().__init__(f"{where}: {reason}" if where else reason)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Label the calibstream errors raised inside with the stage they stopped."""
    try:
        yield
    except CalibstreamError as exc:
        if exc.stage is None:
            exc.stage = name
        raise


class ExposureError(CalibstreamError):
    """The characterized-exposure file does not follow the contract."""

    kind = "exposure"


class MissingFileError(ExposureError):
    kind = "missing_file"


class NotFitsError(ExposureError):
    kind = "not_fits"


class TruncatedFileError(ExposureError):
    kind = "truncated"


class MissingHduError(ExposureError):
    kind = "missing_hdu"


class InvalidHduError(ExposureError):
    """Wrong dtype, dimensionality or shape of an HDU."""

    kind = "invalid_hdu"


class InvalidPixelsError(ExposureError):
    """Non-finite image or variance pixels, or a non-positive variance."""

    kind = "invalid_pixels"


class InvalidPsfError(ExposureError):
    kind = "invalid_psf"


class InvalidApCorrError(ExposureError):
    kind = "invalid_apcorr"


class MissingKeyError(ExposureError):
    kind = "missing_key"


class InvalidKeyError(ExposureError):
    kind = "invalid_key"


class ExpidMismatchError(ExposureError):
    """The file's EXPID is not the exposure id of the event that names it."""

    kind = "expid_mismatch"


class ResourceLimitError(ExposureError):
    """The file's headers declare more than a ``[limits]`` value allows (pixels, PSF size,
    FWHM, header cards, HDUs, table bytes, estimated memory); checked before any plane is
    read. The reason names the limit and the value."""

    kind = "limit"


class InputRefusedError(CalibstreamError):
    """An event names an input the service may not open: a URI scheme other than file://,
    a relative path, a '..', a path outside ``[stream] input_roots`` (symbolic links
    resolved), or not a regular file. The reason never tells whether the path exists."""

    kind = "refused"


class ImplausibleValueError(CalibstreamError):
    """A value outside its plausible range (``[sanity]``): EXPTIME, MJD-OBS, AIRMASS, the
    aperture corrections over the chip, MAGZERO, MAGZERO_ERR. The reason names the value,
    the range and its configuration key."""

    kind = "implausible"


class ConfigError(CalibstreamError):
    """A configuration file or value is not understood."""

    kind = "config"


class MeasurementError(CalibstreamError):
    """Detection or measurement could not proceed (e.g. nothing to measure on)."""

    kind = "measurement"


class RefcatError(CalibstreamError):
    """A reference catalog (input table or sharded store) does not follow the contract."""

    kind = "refcat"


class PhotometryError(CalibstreamError):
    """The photometric zero-point cannot be fitted (e.g. too few calibration stars)."""

    kind = "photometry"


class AstrometryError(CalibstreamError):
    """The astrometric fit failed: too few reference stars, no pattern solution, a bad fit."""

    kind = "astrometry"


class CalibrationError(CalibstreamError):
    """Calibration cannot proceed (e.g. no reference stars in the footprint, no colour term)."""

    kind = "calibration"
