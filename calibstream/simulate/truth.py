"""What really is in one exposure (:class:`Truth`) and its FITS file (``exp_<EXPID>.truth.fits``).

The truth file's primary header is the true WCS plus the scalars below; its
'SOURCES' table is :attr:`Truth.sources`, one row per sky object on (or
just off) the chip: ``id``, ``ref_id`` (-1 unless in the refcat),
``is_star``, 0-based ``x``/``y``, ``in_chip``, ``ra``/``dec`` at the
exposure's epoch, total ``flux`` in e-, the colour-corrected ``mag``,
``r_mag``/``i_mag``, ``pmra``/``pmdec``, the galaxy shape
(``half_light_radius`` in px, ``sersic_n``, ``axis_ratio``, ``pa_pixel``),
then ``snr``/``snr_full``, ``saturated``, ``near_bad_column`` and
``icsrc_id`` (-1 unless in ICSRC).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning


@dataclass(frozen=True)
class Truth:
    """What really is in one exposure (``sources`` columns: see this module)."""

    expid: int
    wcs: WCS  # true TAN-SIP, 1-based in its header; use origin=0 for 0-based pixels
    magzero: float  # mag = MAGZERO - 2.5 log10(total flux / EXPTIME), colour term applied
    colorterm: tuple[float, float, float]
    fwhm: float  # px, Moffat FWHM
    moffat_beta: float
    sky: float  # e-/px subtracted sky level
    read_noise: float
    sky_variance: float  # sky + read_noise²: the variance of a source-free pixel
    exptime: float
    mjd_obs: float
    epoch: float  # Julian year of MJD-OBS
    saturation: float  # clip level in image units (saturation - sky)
    bad_column: int  # 0-based x of the bad column, -1 if none
    apcorr_psf: float  # 1 / f_in: the psf_flux aperture correction
    apcorr_ap12: float  # 1 / enclosed fraction at r = 12 px
    first_guess_offset: float  # arcsec between first-guess and true chip centre
    first_guess_rotation: float  # deg
    sip_corner_shift: float  # px, largest SIP displacement at the corners
    size: tuple[int, int]
    sources: Table


_TRUTH_KEYS = {
    # attribute: (header key, comment)
    "expid": ("EXPID", "exposure id"),
    "magzero": ("MAGZERO", "mag = MAGZERO - 2.5 log10(flux_e / EXPTIME)"),
    "fwhm": ("FWHM", "Moffat FWHM, px"),
    "moffat_beta": ("MOFFBETA", "Moffat beta"),
    "sky": ("SKYLEVEL", "e-/px subtracted sky"),
    "read_noise": ("RDNOISE", "e-"),
    "sky_variance": ("SKYVAR", "sky + read_noise^2, e-^2"),
    "exptime": ("EXPTIME", "s"),
    "mjd_obs": ("MJD-OBS", "mid-exposure MJD"),
    "epoch": ("EPOCHOBS", "Julian year of MJD-OBS"),
    "saturation": ("SATLEVEL", "image-unit clip level (saturation - sky)"),
    "bad_column": ("BADCOL", "0-based x of the bad column, -1 none"),
    "apcorr_psf": ("APCORPSF", "psf_flux aperture correction = 1/f_in"),
    "apcorr_ap12": ("APCOR12", "ap_flux_12 aperture correction"),
    "first_guess_offset": ("FGOFFSET", "arcsec, first guess - true at chip centre"),
    "first_guess_rotation": ("FGROT", "deg, first-guess rotation"),
    "sip_corner_shift": ("SIPSHIFT", "px, largest SIP displacement at corners"),
}
_INT_KEYS = ("expid", "bad_column")


def write_truth(truth: Truth, path: str | os.PathLike[str]) -> None:
    """Primary header: true WCS + scalars (_TRUTH_KEYS, COLORTERM1..3, IMNX, IMNY); 'SOURCES'."""
    header = truth.wcs.to_header(relax=True)
    for attr, (key, comment) in _TRUTH_KEYS.items():
        header[key] = (getattr(truth, attr), comment)
    for k, value in enumerate(truth.colorterm, start=1):
        header[f"HIERARCH COLORTERM{k}"] = (float(value), f"c{k - 1}")
    header["IMNX"] = (truth.size[0], "image width (px)")
    header["IMNY"] = (truth.size[1], "image height (px)")
    table_hdu = fits.table_to_hdu(truth.sources)
    table_hdu.name = "SOURCES"
    fits.HDUList([fits.PrimaryHDU(header=header), table_hdu]).writeto(path, overwrite=True)


def read_truth(path: str | os.PathLike[str]) -> Truth:
    """Inverse of :func:`write_truth`."""
    with fits.open(path) as hdul:
        header = hdul[0].header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, relax=True)
        size = (int(header["IMNX"]), int(header["IMNY"]))
        wcs.pixel_shape = size
        values = {attr: header[key] for attr, (key, _) in _TRUTH_KEYS.items()}
        sources = _native_table(hdul["SOURCES"].data)
    for attr in _INT_KEYS:
        values[attr] = int(values[attr])
    for attr in set(values) - set(_INT_KEYS):
        values[attr] = float(values[attr])
    colorterm = tuple(float(header[f"COLORTERM{k}"]) for k in (1, 2, 3))
    return Truth(wcs=wcs, colorterm=colorterm, size=size, sources=sources, **values)


def _native_table(data: fits.FITS_rec) -> Table:
    """A FITS table's columns as native-byte-order copies, still valid once the file is closed."""
    return Table(
        {
            name: np.asarray(data[name]).astype(data[name].dtype.newbyteorder("="))
            for name in data.names
        }
    )
