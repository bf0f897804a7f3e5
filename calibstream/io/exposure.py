"""The characterized exposure: one immutable dataclass, its reader and its writer.

The layout is ``shared/contracts/characterized-exposure.md``: HDUs found by
EXTNAME, plain or tile-compressed; mask planes from ``MP_*`` keys. Every
missing or invalid part raises a subclass of :class:`ExposureError` naming
the HDU or key. Pixel planes are read once into native-endian arrays and
frozen (read-only); nothing else copies them.

The checks of the file's parts are :mod:`calibstream.io.exposure_checks`';
the APCORR table is read and written by :mod:`calibstream.io.apcorr_table`.

Before astropy parses anything, the file's raw headers are held to ``[limits]``
(:mod:`calibstream.io.inputs`: pixels, PSF size and FWHM, header cards, HDUs, tables,
estimated memory), so no plane is read of a file declaring more than a process may
spend; what it says is held to ``[sanity]`` (EXPTIME, MJD-OBS, AIRMASS, boresight, the
PSF's sum, the APCORR map over the chip). An OSError with an errno while opening (EACCES,
EIO: an unreadable input store) is the machine's fault and is raised as it is.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from calibstream.config_bounds import LimitsConfig, SanityConfig
from calibstream.detection.apcorr import ApCorrMap
from calibstream.errors import (
    CalibstreamError,
    InvalidHduError,
    InvalidKeyError,
    InvalidPsfError,
    MissingFileError,
    MissingKeyError,
)
from calibstream.io.apcorr_table import apcorr_hdu, read_apcorr
from calibstream.io.exposure_checks import (
    check_apcorr,
    check_complete,
    check_metadata,
    check_pixels,
    hdus_by_extname,
    header_key,
    image_plane,
    mask_planes,
    open_failure,
    optional_key,
    require_hdu,
    table_column,
)
from calibstream.io.inputs import check_declared, declared_hdus
from calibstream.io.metadata import Metadata

ICSRC_FLAGS = ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved")
ICSRC_COLUMNS = ("id", "x", "y", "ra", "dec", "psf_flux", "psf_flux_err", *ICSRC_FLAGS)


@dataclass(frozen=True)
class Psf:
    """The PSF model image (odd, centred, sum 1) and where it was evaluated."""

    image: np.ndarray
    x: float
    y: float
    fwhm: float


@dataclass(frozen=True)
class IcSrc:
    """Bright sources measured by characterization, with their PSF-star flags."""

    id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    psf_flux: np.ndarray
    psf_flux_err: np.ndarray
    calib_psf_candidate: np.ndarray
    calib_psf_used: np.ndarray
    calib_psf_reserved: np.ndarray

    def __len__(self) -> int:
        return len(self.id)


@dataclass(frozen=True)
class Exposure:
    """Everything calibration needs from one characterized exposure."""

    image: np.ndarray  # float32 electrons, background-subtracted
    mask: np.ndarray  # int32 bit mask
    variance: np.ndarray  # float32 electrons²
    mask_planes: Mapping[str, int]  # plane name (without MP_) -> bit index
    psf: Psf
    apcorr: ApCorrMap
    icsrc: IcSrc | None
    metadata: Metadata
    wcs: WCS  # first-guess WCS

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]

    def bits(self, *planes: str) -> int:
        """The OR of the bit values of the named planes that this mask defines."""
        value = 0
        for plane in planes:
            if plane in self.mask_planes:
                value |= 1 << self.mask_planes[plane]
        return value


# ---------------------------------------------------------------- reading


def read_metadata(path: str | os.PathLike[str], limits: LimitsConfig | None = None) -> Metadata:
    """The metadata of an exposure file's primary header (all a submitter needs to know)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}", where=path.name)
    try:
        declared_hdus(path, limits or LimitsConfig(), first_only=True)  # its cards, bounded
        header = fits.getheader(path, 0)
    except CalibstreamError:
        raise
    except Exception as exc:
        raise open_failure(exc, "no readable primary header", path.name) from exc
    return _read_metadata(header)


def read_exposure(
    path: str | os.PathLike[str],
    limits: LimitsConfig | None = None,
    sanity: SanityConfig | None = None,
) -> Exposure:
    """Read and validate a characterized-exposure file (``limits`` and ``sanity``: the
    configuration's ``[limits]`` and ``[sanity]``, their defaults if None)."""
    path = Path(path)
    limits, sanity = limits or LimitsConfig(), sanity or SanityConfig()
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}", where=path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            declared = declared_hdus(path, limits)
            hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
        except CalibstreamError:
            raise
        except Exception as exc:
            raise open_failure(exc, "not a FITS file", path.name) from exc
    with hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        check_complete(hdul, path)
        check_declared(declared, limits)  # before any plane is read
        hdus = hdus_by_extname(hdul)
        metadata = _read_metadata(hdul[0].header)
        check_metadata(metadata, sanity)
        image_hdu = require_hdu(hdus, "IMAGE")
        image = image_plane(image_hdu, "IMAGE", np.float32)
        shape = image.shape
        mask_hdu = require_hdu(hdus, "MASK")
        mask = image_plane(mask_hdu, "MASK", np.int32, shape)
        variance = image_plane(require_hdu(hdus, "VARIANCE"), "VARIANCE", np.float32, shape)
        planes = mask_planes(mask_hdu.header)
        check_pixels(image, variance, mask, planes)
        psf = _read_psf(require_hdu(hdus, "PSF"), sanity)
        apcorr = read_apcorr(require_hdu(hdus, "APCORR"), shape)
        check_apcorr(apcorr, sanity)
        icsrc = _read_icsrc(hdus["ICSRC"]) if "ICSRC" in hdus else None
        wcs = _read_wcs(image_hdu.header)
    return Exposure(
        image=image,
        mask=mask,
        variance=variance,
        mask_planes=MappingProxyType(planes),
        psf=psf,
        apcorr=apcorr,
        icsrc=icsrc,
        metadata=metadata,
        wcs=wcs,
    )


def _read_metadata(header: fits.Header) -> Metadata:
    """The primary header's observation metadata, checked."""
    band = header_key(header, "BAND", str).strip()
    if not band:
        raise InvalidKeyError("BAND is empty", where="BAND")
    exptime = header_key(header, "EXPTIME", float)
    if exptime <= 0:
        raise InvalidKeyError(f"EXPTIME must be positive, got {exptime}", where="EXPTIME")
    return Metadata(
        expid=header_key(header, "EXPID", int),
        visit=header_key(header, "VISIT", int),
        detector=header_key(header, "DETECTOR", int),
        band=band,
        mjd_obs=header_key(header, "MJD-OBS", float),
        exptime=exptime,
        airmass=optional_key(header, "AIRMASS"),
        bore_ra=optional_key(header, "BORE-RA"),
        bore_dec=optional_key(header, "BORE-DEC"),
    )


def _read_psf(hdu, sanity: SanityConfig) -> Psf:
    """The PSF HDU: an odd-sized, finite image summing to 1 (``[sanity] psf_sum``), with
    PSFX, PSFY, FWHM."""
    image = image_plane(hdu, "PSF", np.float32)
    ny, nx = image.shape
    if ny % 2 == 0 or nx % 2 == 0:
        raise InvalidPsfError(f"PSF image must have odd sizes, got {ny}x{nx}", where="PSF")
    if not np.all(np.isfinite(image)):
        raise InvalidPsfError("PSF image has non-finite pixels", where="PSF")
    total = float(image.sum(dtype=np.float64))
    low, high = sanity.psf_sum
    if not low <= total <= high:
        raise InvalidPsfError(
            f"PSF image must sum to 1, sums to {total:.6g} (outside [sanity] psf_sum "
            f"[{low:g}, {high:g}])",
            where="PSF",
        )
    header = hdu.header
    fwhm = header_key(header, "FWHM", float, "PSF")
    if fwhm <= 0:
        raise InvalidPsfError(f"FWHM must be positive, got {fwhm}", where="FWHM")
    return Psf(
        image=image,
        x=header_key(header, "PSFX", float, "PSF"),
        y=header_key(header, "PSFY", float, "PSF"),
        fwhm=fwhm,
    )


def _read_icsrc(hdu) -> IcSrc:
    """The ICSRC table's columns as read-only int64 / float64 / bool arrays."""
    if not isinstance(hdu, fits.BinTableHDU):
        raise InvalidHduError("ICSRC must be a binary table", where="ICSRC")
    values = {}
    for name in ICSRC_COLUMNS:
        column = np.array(table_column(hdu, name, "ICSRC"))
        if name in ICSRC_FLAGS:
            column = column.astype(bool)
        elif name == "id":
            column = column.astype(np.int64)
        else:
            column = column.astype(np.float64)
        column.setflags(write=False)
        values[name] = column
    return IcSrc(**values)


def _read_wcs(header: fits.Header) -> WCS:
    """The IMAGE header's first-guess WCS, which must be TAN or TAN-SIP."""
    for key in ("CTYPE1", "CTYPE2"):
        if key not in header:
            raise MissingKeyError(f"IMAGE header has no {key}: no first-guess WCS", where=key)
    ctypes = (str(header["CTYPE1"]), str(header["CTYPE2"]))
    if not (ctypes[0].startswith("RA---TAN") and ctypes[1].startswith("DEC--TAN")):
        raise InvalidKeyError(
            f"first-guess WCS must be TAN or TAN-SIP, got {ctypes}", where="CTYPE1"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, relax=True)
    except Exception as exc:
        raise InvalidKeyError(f"first-guess WCS is unreadable ({exc})", where="IMAGE") from exc
    return wcs


# ---------------------------------------------------------------- writing


def write_exposure(
    exposure: Exposure, path: str | os.PathLike[str], *, compress: bool = False
) -> None:
    """Write an exposure in the contract's layout (the reader's inverse)."""
    meta = exposure.metadata
    primary = fits.PrimaryHDU()
    h = primary.header
    h["EXPID"] = meta.expid
    h["VISIT"] = meta.visit
    h["DETECTOR"] = meta.detector
    h["BAND"] = meta.band
    h["MJD-OBS"] = meta.mjd_obs
    h["EXPTIME"] = meta.exptime
    for key, value in (
        ("AIRMASS", meta.airmass),
        ("BORE-RA", meta.bore_ra),
        ("BORE-DEC", meta.bore_dec),
    ):
        if value is not None:
            h[key] = value
    image_header = exposure.wcs.to_header(relax=True)
    mask_header = fits.Header()
    for plane, bit in exposure.mask_planes.items():
        key = f"MP_{plane}"
        mask_header[f"HIERARCH {key}" if len(key) > 8 else key] = bit
    hdu_type = fits.CompImageHDU if compress else fits.ImageHDU
    psf = exposure.psf
    psf_hdu = fits.ImageHDU(psf.image.astype(np.float32), name="PSF")
    psf_hdu.header["PSFX"] = psf.x
    psf_hdu.header["PSFY"] = psf.y
    psf_hdu.header["FWHM"] = psf.fwhm
    hdus = [
        primary,
        _image_hdu(hdu_type, exposure.image, image_header, "IMAGE"),
        _image_hdu(hdu_type, exposure.mask, mask_header, "MASK"),
        _image_hdu(hdu_type, exposure.variance, fits.Header(), "VARIANCE"),
        psf_hdu,
        apcorr_hdu(exposure.apcorr),
    ]
    if exposure.icsrc is not None:
        hdus.append(icsrc_hdu(exposure.icsrc))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _image_hdu(hdu_type, data: np.ndarray, header: fits.Header, name: str):
    """A pixel plane as an image HDU, or a lossless GZIP_2 tile-compressed one."""
    if hdu_type is fits.CompImageHDU:
        kwargs = {"compression_type": "GZIP_2"}
        if data.dtype.kind == "f":
            kwargs["quantize_level"] = 0.0  # lossless
        return fits.CompImageHDU(data, header=header, name=name, **kwargs)
    return fits.ImageHDU(data, header=header, name=name)


def icsrc_hdu(icsrc: IcSrc) -> fits.BinTableHDU:
    """The ICSRC table of an :class:`IcSrc` (the reader's inverse)."""
    formats = {"id": "K", **{flag: "L" for flag in ICSRC_FLAGS}}
    columns = [
        fits.Column(name, formats.get(name, "D"), array=getattr(icsrc, name))
        for name in ICSRC_COLUMNS
    ]
    return fits.BinTableHDU.from_columns(columns, name="ICSRC")
