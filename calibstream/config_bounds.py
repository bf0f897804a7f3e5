"""The configuration's ``[limits]`` and ``[sanity]`` tables (registered in ``calibstream.config``).

``[limits]``: what one exposure file may make a process spend, each checked from the
file's headers before any plane is read (:mod:`calibstream.io.inputs`). ``[sanity]``: the
plausible range of what an exposure says or its calibration gives (read and checked by
:mod:`calibstream.io.exposure`; MAGZERO by :func:`calibstream.stages.photometry`). Both
are typed failures of the exposure, never an "ok".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from calibstream.errors import ConfigError, ImplausibleValueError


@dataclass(frozen=True)
class LimitsConfig:
    """What one exposure file may make a process spend, checked from its headers before any
    plane is read (``calibstream.io.inputs``); over a limit is a ResourceLimitError naming it."""

    #: Pixels of each of IMAGE, MASK and VARIANCE (an LSST CCD: 4096 x 4072).
    max_image_pixels: int = 8192 * 8192
    #: Side of the PSF image (pixels): measuring costs ~64 bytes x side² per detected source.
    max_psf_size: int = 63
    #: The PSF header's FWHM (pixels): centroid windows and stamps grow with it.
    max_psf_fwhm: float = 25.0
    max_header_cards: int = 10_000  # cards in one header
    max_hdus: int = 64  # HDUs in one file
    max_table_bytes: int = 64 * 2**20  # of the APCORR and ICSRC tables (rows and heap)
    #: Memory one exposure's detection and measurement may take, as estimated from its
    #: shape (``inputs.estimated_memory``: 160 MiB + 64 bytes per pixel + compressed bytes).
    max_memory_bytes: int = 3 * 2**30

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not value > 0:
                raise ConfigError(f"must be positive, got {value!r}", where=f"limits.{item.name}")


@dataclass(frozen=True)
class SanityConfig:
    """Plausible ranges [low, high] of what an exposure says or its calibration gives; a value
    outside (or NaN) is an ImplausibleValueError (the PSF's sum: an InvalidPsfError)."""

    exptime: tuple[float, float] = (0.001, 10_000.0)  # s
    mjd_obs: tuple[float, float] = (33282.0, 88069.0)  # 1950-01-01 to 2100-01-01
    airmass: tuple[float, float] = (0.99, 10.0)  # 1 at the zenith (0.99: rounding)
    boresight_ra: tuple[float, float] = (-360.0, 360.0)  # deg
    boresight_dec: tuple[float, float] = (-90.0, 90.0)  # deg
    #: Every APCORR term, evaluated on a 9 x 9 grid over the chip (corners included):
    #: total over measured flux (10: a 3-px aperture under a FWHM of ~12 px).
    apcorr: tuple[float, float] = (0.5, 10.0)
    psf_sum: tuple[float, float] = (0.999, 1.001)  # the PSF image is normalised to 1
    magzero: tuple[float, float] = (15.0, 40.0)  # mag of 1 e-/s (LSST r: ~28.4)
    magzero_err: tuple[float, float] = (0.0, 0.5)  # mag

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            bounds = getattr(self, item.name)
            if not (len(bounds) == 2 and bounds[0] <= bounds[1]):  # NaN fails too
                raise ConfigError(
                    f"must be [low, high] with low <= high, got {list(bounds)!r}",
                    where=f"sanity.{item.name}",
                )
            object.__setattr__(self, item.name, (float(bounds[0]), float(bounds[1])))

    def check(self, name: str, value: float, where: str) -> None:
        """``value`` (of ``where``, e.g. ``EXPTIME``) inside the range ``name``, else an error."""
        low, high = getattr(self, name)
        if not low <= value <= high:
            raise ImplausibleValueError(
                f"{where} = {value:.6g} is outside its plausible range [{low:g}, {high:g}] "
                f"([sanity] {name})",
                where=where,
            )
