"""The characterized exposure: one immutable dataclass, its reader and its writer.

The layout is ``shared/contracts/characterized-exposure.md``: HDUs found by
EXTNAME, plain or tile-compressed; mask planes from ``MP_*`` keys. Every
missing or invalid part raises a subclass of :class:`ExposureError` naming
the HDU or key. Pixel planes are read once into native-endian arrays and
frozen (read-only); nothing else copies them.
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

from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm
from calibstream.errors import (
    InvalidApCorrError,
    InvalidHduError,
    InvalidKeyError,
    InvalidPixelsError,
    InvalidPsfError,
    MissingFileError,
    MissingHduError,
    MissingKeyError,
    NotFitsError,
    TruncatedFileError,
)

PSF_SUM_TOLERANCE = 1e-3
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
class Metadata:
    """Observation metadata from the primary header."""

    expid: int
    visit: int
    detector: int
    band: str
    mjd_obs: float
    exptime: float
    airmass: float | None = None
    bore_ra: float | None = None
    bore_dec: float | None = None


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


def read_metadata(path: str | os.PathLike[str]) -> Metadata:
    """The metadata of an exposure file's primary header (all a submitter needs to know)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}", where=path.name)
    try:
        header = fits.getheader(path, 0)
    except Exception as exc:
        raise NotFitsError(f"no readable primary header ({exc})", where=path.name) from exc
    return _read_metadata(header)


def read_exposure(path: str | os.PathLike[str]) -> Exposure:
    """Read and validate a characterized-exposure file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}", where=path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
        except Exception as exc:
            raise NotFitsError(f"not a FITS file ({exc})", where=path.name) from exc
    with hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        _check_complete(hdul, path)
        hdus = _by_extname(hdul)
        metadata = _read_metadata(hdul[0].header)
        image_hdu = _require(hdus, "IMAGE")
        image = _plane(image_hdu, "IMAGE", np.float32)
        shape = image.shape
        mask_hdu = _require(hdus, "MASK")
        mask = _plane(mask_hdu, "MASK", np.int32, shape)
        variance = _plane(_require(hdus, "VARIANCE"), "VARIANCE", np.float32, shape)
        planes = _mask_planes(mask_hdu.header)
        _check_pixels(image, variance, mask, planes)
        psf = _read_psf(_require(hdus, "PSF"))
        apcorr = _read_apcorr(_require(hdus, "APCORR"), shape)
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


def _check_complete(hdul: fits.HDUList, path: Path) -> None:
    """A file shorter than its headers promise is truncated, whatever astropy tolerates."""
    try:
        hdul.readall()
    except Exception as exc:
        raise TruncatedFileError(f"cannot read all HDUs ({exc})", where=path.name) from exc
    size = path.stat().st_size
    end = 0
    for index, hdu in enumerate(hdul):
        info = hdul.fileinfo(index)
        if info is None:
            continue
        end = info["datLoc"] + info["datSpan"]
        if end > size:
            name = hdu.name or f"HDU {index}"
            raise TruncatedFileError(
                f"file is truncated: {name} needs {end} bytes, the file has {size}", where=name
            )
    # astropy silently drops an extension whose header is cut short: look for one.
    name = _cut_header(path, end) if end < size else None
    if name is not None:
        name = name or f"HDU {len(hdul)}"
        raise TruncatedFileError(f"file is truncated in the header of {name}", where=name)


def _cut_header(path: Path, start: int) -> str | None:
    """EXTNAME ('' if none) of an extension header starting at ``start``, else None."""
    with path.open("rb") as f:
        f.seek(start)
        tail = f.read(2880)
    if not tail or not b"XTENSION".startswith(tail[:8]):
        return None  # e.g. extra zero padding, which astropy tolerates
    for i in range(0, len(tail) - 79, 80):
        if tail[i : i + 8] == b"EXTNAME ":
            try:
                return str(fits.Card.fromstring(tail[i : i + 80].decode("ascii")).value).strip()
            except Exception:
                break
    return ""


def _by_extname(hdul: fits.HDUList) -> dict[str, fits.hdu.base.ExtensionHDU]:
    found: dict[str, fits.hdu.base.ExtensionHDU] = {}
    for hdu in hdul[1:]:
        name = str(hdu.header.get("EXTNAME", hdu.name)).strip().upper()
        found.setdefault(name, hdu)
    return found


def _require(hdus: Mapping[str, fits.hdu.base.ExtensionHDU], name: str):
    if name not in hdus:
        raise MissingHduError(f"required HDU {name} is missing", where=name)
    return hdus[name]


def _plane(hdu, name: str, dtype: type, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One native-endian, read-only copy of an image HDU's pixels, checked."""
    if not isinstance(hdu, (fits.ImageHDU, fits.CompImageHDU, fits.PrimaryHDU)):
        raise InvalidHduError(f"{name} must be an image HDU", where=name)
    data = hdu.data
    if data is None or data.ndim != 2:
        ndim = None if data is None else data.ndim
        raise InvalidHduError(f"{name} must be 2-D, got {ndim} dimensions", where=name)
    kind = np.dtype(dtype).kind
    if data.dtype.kind != kind or (kind == "f" and data.dtype.itemsize != 4):
        raise InvalidHduError(
            f"{name} must be {np.dtype(dtype).name}, got {data.dtype}", where=name
        )
    if shape is not None and data.shape != shape:
        raise InvalidHduError(f"{name} has shape {data.shape}, IMAGE has {shape}", where=name)
    native = np.array(data, dtype=np.dtype(dtype).newbyteorder("="), copy=True)
    native.setflags(write=False)
    return native


def _mask_planes(header: fits.Header) -> dict[str, int]:
    planes: dict[str, int] = {}
    for key, value in header.items():
        key = key.upper()
        if key.startswith("HIERARCH "):
            key = key[len("HIERARCH ") :]
        if not key.startswith("MP_"):
            continue
        if (
            not isinstance(value, (int, np.integer))
            or isinstance(value, bool)
            or not 0 <= value < 32
        ):
            raise InvalidKeyError(
                f"mask plane {key} must be a bit index 0..31, got {value!r}", where=key
            )
        planes[key[3:]] = int(value)
    return planes


def _check_pixels(
    image: np.ndarray, variance: np.ndarray, mask: np.ndarray, planes: Mapping[str, int]
) -> None:
    """Image and variance must be finite, and the variance positive, wherever there is data."""
    # Shift rather than AND with 1 << bit: 1 << 31 does not fit an int32.
    # Fast path: one reduction per plane proves the common, clean case.
    if (
        np.isfinite(image.sum(dtype=np.float64))
        and np.isfinite(variance.sum(dtype=np.float64))
        and variance.min() > 0
    ):
        return
    no_data = ((mask >> planes["NO_DATA"]) & 1) != 0 if "NO_DATA" in planes else None
    for name, bad in (
        ("IMAGE", ~np.isfinite(image)),
        ("VARIANCE", ~(np.isfinite(variance) & (variance > 0))),
    ):
        if no_data is not None:
            bad &= ~no_data
        count = int(np.count_nonzero(bad))
        if count:
            what = "non-finite" if name == "IMAGE" else "non-finite or non-positive"
            raise InvalidPixelsError(f"{count} {what} pixels outside the NO_DATA plane", where=name)


def _key(header: fits.Header, key: str, kind: type, hdu: str = "primary"):
    if key not in header:
        raise MissingKeyError(f"required key {key} is missing from the {hdu} header", where=key)
    value = header[key]
    try:
        if kind is int and (isinstance(value, bool) or float(value) != int(value)):
            raise ValueError
        if kind is str and not isinstance(value, str):
            raise ValueError
        converted = kind(value)
    except (TypeError, ValueError):
        raise InvalidKeyError(
            f"{key} must be {kind.__name__}, got {value!r} in the {hdu} header", where=key
        ) from None
    if kind is float and not np.isfinite(converted):
        raise InvalidKeyError(f"{key} must be finite, got {value!r}", where=key)
    return converted


def _optional(header: fits.Header, key: str) -> float | None:
    return _key(header, key, float) if key in header else None


def _read_metadata(header: fits.Header) -> Metadata:
    band = _key(header, "BAND", str).strip()
    if not band:
        raise InvalidKeyError("BAND is empty", where="BAND")
    exptime = _key(header, "EXPTIME", float)
    if exptime <= 0:
        raise InvalidKeyError(f"EXPTIME must be positive, got {exptime}", where="EXPTIME")
    return Metadata(
        expid=_key(header, "EXPID", int),
        visit=_key(header, "VISIT", int),
        detector=_key(header, "DETECTOR", int),
        band=band,
        mjd_obs=_key(header, "MJD-OBS", float),
        exptime=exptime,
        airmass=_optional(header, "AIRMASS"),
        bore_ra=_optional(header, "BORE-RA"),
        bore_dec=_optional(header, "BORE-DEC"),
    )


def _read_psf(hdu) -> Psf:
    image = _plane(hdu, "PSF", np.float32)
    ny, nx = image.shape
    if ny % 2 == 0 or nx % 2 == 0:
        raise InvalidPsfError(f"PSF image must have odd sizes, got {ny}x{nx}", where="PSF")
    if not np.all(np.isfinite(image)):
        raise InvalidPsfError("PSF image has non-finite pixels", where="PSF")
    total = float(image.sum(dtype=np.float64))
    if abs(total - 1.0) > PSF_SUM_TOLERANCE:
        raise InvalidPsfError(f"PSF image must sum to 1, sums to {total:.6g}", where="PSF")
    header = hdu.header
    fwhm = _key(header, "FWHM", float, "PSF")
    if fwhm <= 0:
        raise InvalidPsfError(f"FWHM must be positive, got {fwhm}", where="FWHM")
    return Psf(
        image=image,
        x=_key(header, "PSFX", float, "PSF"),
        y=_key(header, "PSFY", float, "PSF"),
        fwhm=fwhm,
    )


def _column(table, name: str, hdu: str) -> np.ndarray:
    if name not in table.columns.names:
        raise InvalidHduError(f"{hdu} table has no column {name}", where=f"{hdu}.{name}")
    return table.data[name]


def _read_apcorr(hdu, shape: tuple[int, int]) -> ApCorrMap:
    if not isinstance(hdu, fits.BinTableHDU):
        raise InvalidHduError("APCORR must be a binary table", where="APCORR")
    names = _column(hdu, "NAME", "APCORR")
    orders = _column(hdu, "ORDER", "APCORR")
    coeffs = _column(hdu, "COEFFS", "APCORR")
    errs = _column(hdu, "ERR", "APCORR")
    terms: dict[str, ApCorrTerm] = {}
    for name, order, row, err in zip(names, orders, coeffs, errs, strict=True):
        name = str(name).strip()
        integral = isinstance(order, np.floating | float) and float(order).is_integer()
        if not (isinstance(order, np.integer | int) or integral):
            raise InvalidApCorrError(
                f"{name}: ORDER must be an integer, got {order}", where="APCORR.ORDER"
            )
        order = int(order)
        row = np.asarray(row, dtype=float).ravel()
        if order < 0:
            raise InvalidApCorrError(
                f"{name}: ORDER must be >= 0, got {order}", where="APCORR.ORDER"
            )
        if row.size != (order + 1) ** 2:
            raise InvalidApCorrError(
                f"{name}: ORDER {order} needs {(order + 1) ** 2} COEFFS, got {row.size}",
                where="APCORR.COEFFS",
            )
        if not (np.all(np.isfinite(row)) and np.isfinite(err) and err >= 0):
            raise InvalidApCorrError(f"{name}: non-finite COEFFS or ERR", where="APCORR")
        row.setflags(write=False)
        terms[name] = ApCorrTerm(name, order, row.reshape(order + 1, order + 1), float(err))
    if "psf_flux" not in terms:
        raise InvalidApCorrError("APCORR has no psf_flux row", where="APCORR.NAME")
    return ApCorrMap(terms=MappingProxyType(terms), width=shape[1], height=shape[0])


def _read_icsrc(hdu) -> IcSrc:
    if not isinstance(hdu, fits.BinTableHDU):
        raise InvalidHduError("ICSRC must be a binary table", where="ICSRC")
    values = {}
    for name in ICSRC_COLUMNS:
        column = np.array(_column(hdu, name, "ICSRC"))
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
    if hdu_type is fits.CompImageHDU:
        kwargs = {"compression_type": "GZIP_2"}
        if data.dtype.kind == "f":
            kwargs["quantize_level"] = 0.0  # lossless
        return fits.CompImageHDU(data, header=header, name=name, **kwargs)
    return fits.ImageHDU(data, header=header, name=name)


def apcorr_hdu(apcorr: ApCorrMap) -> fits.BinTableHDU:
    terms = list(apcorr.terms.values())
    coeffs = np.empty(len(terms), dtype=object)
    for i, term in enumerate(terms):
        coeffs[i] = np.asarray(term.coeffs, dtype=np.float64).ravel()
    columns = [
        fits.Column("NAME", "32A", array=[t.name for t in terms]),
        fits.Column("ORDER", "J", array=[t.order for t in terms]),
        fits.Column("COEFFS", "PD()", array=coeffs),
        fits.Column("ERR", "D", array=[t.err for t in terms]),
    ]
    return fits.BinTableHDU.from_columns(columns, name="APCORR")


def icsrc_hdu(icsrc: IcSrc) -> fits.BinTableHDU:
    formats = {"id": "K", **{flag: "L" for flag in ICSRC_FLAGS}}
    columns = [
        fits.Column(name, formats.get(name, "D"), array=getattr(icsrc, name))
        for name in ICSRC_COLUMNS
    ]
    return fits.BinTableHDU.from_columns(columns, name="ICSRC")
