"""Validation of a characterized-exposure file's parts: completeness, HDUs, pixels, keys.

Each check raises the :class:`~calibstream.errors.ExposureError` subclass that
names what is wrong and where (the HDU or key), as
:func:`calibstream.io.exposure.read_exposure` reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from calibstream.config_bounds import SanityConfig
from calibstream.detection.apcorr import ApCorrMap
from calibstream.errors import (
    CalibstreamError,
    ExposureError,
    ImplausibleValueError,
    InvalidHduError,
    InvalidKeyError,
    InvalidPixelsError,
    MissingFileError,
    MissingHduError,
    MissingKeyError,
    NotFitsError,
    TruncatedFileError,
)
from calibstream.io.metadata import Metadata

#: The APCORR map is checked on this many points per axis over the chip, corners included.
APCORR_GRID = 9


def check_complete(hdul: fits.HDUList, path: Path) -> None:
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


def hdus_by_extname(hdul: fits.HDUList) -> dict[str, fits.hdu.base.ExtensionHDU]:
    """The extension HDUs by upper-cased EXTNAME (the first of a name wins)."""
    found: dict[str, fits.hdu.base.ExtensionHDU] = {}
    for hdu in hdul[1:]:
        name = str(hdu.header.get("EXTNAME", hdu.name)).strip().upper()
        found.setdefault(name, hdu)
    return found


def require_hdu(hdus: Mapping[str, fits.hdu.base.ExtensionHDU], name: str):
    """The HDU named ``name``; its absence is a :class:`MissingHduError`."""
    if name not in hdus:
        raise MissingHduError(f"required HDU {name} is missing", where=name)
    return hdus[name]


def image_plane(hdu, name: str, dtype: type, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One native-endian, read-only copy of an image HDU's pixels, checked."""
    if not isinstance(hdu, (fits.ImageHDU, fits.CompImageHDU, fits.PrimaryHDU)):
        raise InvalidHduError(f"{name} must be an image HDU", where=name)
    try:
        data = _read_plain(hdu)
        if data is None:
            data = hdu.data  # tile-compressed: decompressed here
    except (MemoryError, CalibstreamError):
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # EIO and the like: the machine's
        raise InvalidHduError(f"{name}'s pixels cannot be read ({exc})", where=name) from exc
    if data is None or data.ndim != 2:
        ndim = None if data is None else data.ndim
        raise InvalidHduError(f"{name} must be 2-D, got {ndim} dimensions", where=name)
    if data.size == 0:
        raise InvalidHduError(f"{name} has no pixels (shape {data.shape})", where=name)
    kind = np.dtype(dtype).kind
    if data.dtype.kind != kind or (kind == "f" and data.dtype.itemsize != 4):
        raise InvalidHduError(
            f"{name} must be {np.dtype(dtype).name}, got {data.dtype}", where=name
        )
    if shape is not None and data.shape != shape:
        raise InvalidHduError(f"{name} has shape {data.shape}, IMAGE has {shape}", where=name)
    native = np.asarray(data, dtype=np.dtype(dtype).newbyteorder("="))
    native.setflags(write=False)
    return native


#: BITPIX of the planes read straight from the file (no scaling).
_PLAIN_BITPIX = {-32: ">f4", 32: ">i4", -64: ">f8", 16: ">i2"}


def _read_plain(hdu) -> np.ndarray | None:
    """An uncompressed, unscaled 2-D plane read once from its file into one native-endian
    array (byte-swapped in place): no memory map, no second copy. None: any other case
    (compressed, scaled, short file), left to astropy."""
    header = hdu.header
    if isinstance(hdu, fits.CompImageHDU) or header.get("NAXIS") != 2:
        return None
    big = _PLAIN_BITPIX.get(header.get("BITPIX"))
    if big is None or header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0:
        return None
    try:
        info = hdu.fileinfo()
        name, offset = info["file"].name, info["datLoc"]
    except (AttributeError, KeyError, TypeError):
        return None
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    data = np.empty(shape, dtype=big)
    if data.size == 0 or not isinstance(name, str):
        return None
    with open(name, "rb") as stream:
        stream.seek(offset)
        if stream.readinto(memoryview(data).cast("B")) != data.nbytes:
            return None
    data.byteswap(inplace=True)
    return data.view(data.dtype.newbyteorder("="))


def mask_planes(header: fits.Header) -> dict[str, int]:
    """Mask plane name → bit index from the ``MP_*`` keys, each a bit 0..31."""
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


def check_pixels(
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


def header_key(header: fits.Header, key: str, kind: type, hdu: str = "primary"):
    """A required header value converted to ``kind`` (floats finite), or an error naming it."""
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


def optional_key(header: fits.Header, key: str) -> float | None:
    """A finite float header value, or None when the key is absent."""
    return header_key(header, key, float) if key in header else None


def table_column(table, name: str, hdu: str) -> np.ndarray:
    """A binary table's column; its absence is an :class:`InvalidHduError`."""
    if name not in table.columns.names:
        raise InvalidHduError(f"{hdu} table has no column {name}", where=f"{hdu}.{name}")
    return table.data[name]


# ---------------------------------------------------------------- the input store, plausibility


def open_failure(exc: Exception, reason: str, where: str) -> ExposureError:
    """What a failure to open or parse a file means (call it while handling ``exc``): an
    OSError with an errno (EACCES, EIO, ...) is the machine's (an unreadable input store)
    and is raised again as it is, for the failure policy to retry; a vanished file is a
    MissingFileError; anything else (astropy's own format errors carry no errno) is the
    file's: a NotFitsError saying ``reason``."""
    if isinstance(exc, FileNotFoundError):
        return MissingFileError(f"no such file: {exc.filename or where}", where=where)
    if isinstance(exc, OSError) and exc.errno is not None:
        raise exc
    return NotFitsError(f"{reason} ({exc})", where=where)


def check_metadata(metadata: Metadata, sanity: SanityConfig) -> None:
    """EXPTIME, MJD-OBS and the optional AIRMASS, BORE-RA, BORE-DEC inside ``[sanity]``."""
    sanity.check("exptime", metadata.exptime, "EXPTIME")
    sanity.check("mjd_obs", metadata.mjd_obs, "MJD-OBS")
    for name, value, key in (
        ("airmass", metadata.airmass, "AIRMASS"),
        ("boresight_ra", metadata.bore_ra, "BORE-RA"),
        ("boresight_dec", metadata.bore_dec, "BORE-DEC"),
    ):
        if value is not None:
            sanity.check(name, value, key)


def check_apcorr(apcorr: ApCorrMap, sanity: SanityConfig) -> None:
    """Every aperture correction, on a coarse grid over the chip, inside ``[sanity] apcorr``."""
    low, high = sanity.apcorr
    x = np.linspace(0.0, apcorr.width - 1.0, APCORR_GRID)
    y = np.linspace(0.0, apcorr.height - 1.0, APCORR_GRID)
    gx, gy = np.meshgrid(x, y)
    for name in apcorr.terms:
        with np.errstate(all="ignore"):
            values = apcorr.evaluate(name, gx, gy)
        bad = np.flatnonzero(~((values >= low) & (values <= high)))
        if bad.size:
            i = bad[np.argmax(np.abs(np.nan_to_num(values.flat[bad], nan=np.inf) - 1.0))]
            raise ImplausibleValueError(
                f"APCORR {name} = {values.flat[i]:.6g} at (x, y) = ({gx.flat[i]:g}, "
                f"{gy.flat[i]:g}), outside its plausible range [{low:g}, {high:g}] "
                "([sanity] apcorr)",
                where=f"APCORR.{name}",
            )
