"""The simulation's knobs (:class:`SimConfig`) and the constants every part of it shares."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

#: LSST's mask-plane order.
MASK_PLANES = MappingProxyType(
    {
        "BAD": 0,
        "SAT": 1,
        "INTRP": 2,
        "CR": 3,
        "EDGE": 4,
        "DETECTED": 5,
        "DETECTED_NEGATIVE": 6,
        "SUSPECT": 7,
        "NO_DATA": 8,
    }
)
#: The mask value of each plane, typed as the MASK plane itself.
MASK_BITS = MappingProxyType({name: np.int32(1 << b) for name, b in MASK_PLANES.items()})
#: Source and cosmic-ray counts are given per this many pixels (a 4k×4k chip).
REFERENCE_AREA = 4096 * 4096
MAS_PER_DEG = 3.6e6
#: Gaia-like ids exceed 2**53: a pipeline that passes ids through float64 corrupts them.
REFCAT_ID_BASE = 3_836_264_017_000_000_000


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulation; defaults describe a 30-s r-band LSST-like exposure."""

    size: tuple[int, int] = (2048, 2048)  # (nx, ny): image shape is (ny, nx)
    pixel_scale: float = 0.2  # arcsec / px
    fwhm: float = 3.5  # px, Moffat FWHM (the PSF HDU's FWHM key)
    fwhm_jitter: float = 0.0  # fractional rms of the per-exposure FWHM
    moffat_beta: float = 3.5
    psf_size: int = 25  # odd side of the PSF HDU
    sky: float = 1000.0  # e-/px, already subtracted: only its Poisson noise remains
    read_noise: float = 5.0  # e-
    exptime: float = 30.0  # s
    zeropoint: float = 28.0  # mag giving 1 e-/s, mean over exposures
    zeropoint_scatter: float = 0.05  # mag rms per exposure (clouds, airmass)
    colorterm: tuple[float, float, float] = (0.0, 0.04, 0.0)  # r + c0 + c1(r-i) + c2(r-i)²
    saturation: float = 1.0e5  # e-, raw level including the sky
    n_sources: float = 3000.0  # per 4096² px (stars + galaxies), scaled with area
    star_fraction: float = 0.4
    star_mag_range: tuple[float, float] = (14.0, 25.0)  # true r
    star_count_slope: float = 0.15  # d log10 N / dm
    galaxy_mag_range: tuple[float, float] = (18.0, 25.5)  # true r
    galaxy_count_slope: float = 0.3
    galaxy_hlr_range: tuple[float, float] = (0.5, 6.0)  # px, log-uniform, major axis
    galaxy_devauc_fraction: float = 0.2  # fraction of n=4 galaxies (others n=1)
    galaxy_axis_ratio_range: tuple[float, float] = (0.3, 1.0)
    refcat_mag_limit: float = 21.5  # stars with true r below this are in the refcat
    refcat_epoch: float = 2016.0
    pm_sigma: float = 5.0  # mas/yr per component, typical stars
    pm_fast_fraction: float = 0.1
    pm_fast_sigma: float = 30.0  # mas/yr, the nearby minority
    n_cosmic_rays: float = 100.0  # per 4096² px
    repair_cosmic_rays: bool = True  # as characterization did: interpolated, CR|INTRP
    bad_column: bool = True
    bad_column_value: float = 2000.0  # e- of garbage added to the column
    sip_corner_shift: float = 3.0  # px, largest SIP displacement at a chip corner
    first_guess_offset: tuple[float, float] = (3.0, 8.0)  # arcsec, uniform range
    first_guess_rotation: float = 0.02  # deg, typical size (random sign)
    first_guess_sip: bool = True  # first guess carries the (true) camera distortion
    center: tuple[float, float] = (150.0, 2.0)  # deg, survey centre
    dither: float = 0.5  # pointing offsets, uniform within ± this fraction of the chip
    mjd_obs: float = 61000.0  # first exposure (~2025.9, ~10 yr after the refcat epoch)
    airmass: float = 1.2
    detect_nsigma: float = 5.0  # DETECTED where the noiseless model exceeds this × sky sigma
    icsrc_snr: float = 50.0  # characterization's bright-source threshold (true snr)
    apcorr_err: float = 0.0005
    add_noise: bool = True  # False: IMAGE is the noiseless model (VARIANCE unchanged)
    margin: int = 10  # px: sources centred this far off the chip still shed light on it

    def __post_init__(self) -> None:
        """Reject shapes the simulator cannot render and a star fraction outside [0, 1]."""
        if self.psf_size % 2 != 1 or self.psf_size < 3:
            raise ValueError(f"psf_size must be odd and >= 3, got {self.psf_size}")
        if min(self.size) < 16:
            raise ValueError(f"size must be at least 16x16, got {self.size}")
        if not 0.0 <= self.star_fraction <= 1.0:
            raise ValueError(f"star_fraction must be in [0, 1], got {self.star_fraction}")

    @property
    def area_scale(self) -> float:
        """This chip's area in reference chips: source and cosmic-ray counts scale with it."""
        return self.size[0] * self.size[1] / REFERENCE_AREA
