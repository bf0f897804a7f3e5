"""calexp.fits: the calibrated exposure's header, and its pixels when asked.

Header only (the default): one primary HDU with ``NAXIS = 2`` and ``NAXIS1 = NAXIS2 = 0``
(the standard's "no data array"), so that its two WCS axes have image axes and astropy reads
the WCS without "The WCS transformation has more axes (2) than the image it is associated
with (0)".

With pixels (``[outputs] pixels = true``): that primary HDU, then ``IMAGE`` (float32
electrons, the residual background of ``background.fits`` subtracted, as LSST's calexp),
``MASK`` (int32, the input's planes and their ``MP_*`` cards) and ``VARIANCE`` (float32
electrons²), each with the fitted WCS in its header. The pixels are not in any event (an
exposure's planes are ~200 MB): the sink reads them again from the input file the event
names (:func:`read_pixels`), which must still hold the same exposure (its EXPID and shape
are checked). An input it cannot read then is the machine's fault (an ``OSError``:
retried, then parked), as at the detect step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from calibstream.config_bounds import LimitsConfig
from calibstream.detection.background import Background
from calibstream.errors import ExpidMismatchError
from calibstream.io.exposure import Metadata, read_exposure

#: The WCS's cards, copied from the primary header into each pixel HDU.
_WCS_PREFIXES = (
    *("WCSAXES", "CRPIX", "CRVAL", "CTYPE", "CUNIT", "CDELT", "PC", "CD"),
    *("A_", "B_", "AP_", "BP_", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "DATEREF"),
)


@dataclass(frozen=True, eq=False)
class CalexpPixels:
    image: np.ndarray  # float32, background-subtracted
    mask: np.ndarray  # int32
    variance: np.ndarray  # float32
    mask_planes: Mapping[str, int]  # plane -> bit


def read_pixels(
    path: Path, metadata: Metadata, background: Background, limits: LimitsConfig | None = None
) -> CalexpPixels:
    """The exposure's planes read again from ``path`` (held to ``limits``), the residual
    ``background`` subtracted; the file must be the exposure of ``metadata``."""
    exposure = read_exposure(path, limits)
    if exposure.metadata.expid != metadata.expid:
        raise ExpidMismatchError(
            f"the input's EXPID {exposure.metadata.expid} is no longer {metadata.expid}",
            where="EXPID",
        )
    if tuple(exposure.shape) != tuple(background.shape):
        raise ExpidMismatchError(
            f"the input's image is {exposure.shape}, the calibration's {background.shape}",
            where="IMAGE",
        )
    image = (exposure.image - background.image).astype(np.float32)
    return CalexpPixels(image, exposure.mask, exposure.variance, dict(exposure.mask_planes))


def calexp_hdul(header: fits.Header, pixels: CalexpPixels | None = None) -> fits.HDUList:
    """calexp.fits: the header (no data, two empty axes), then the pixel HDUs if given."""
    primary = fits.PrimaryHDU(data=np.zeros((0, 0), np.float32), header=header)
    if pixels is None:
        return fits.HDUList([primary])
    primary.header["EXTEND"] = (True, "IMAGE, MASK and VARIANCE follow")
    wcs = [c for c in header.cards if c.keyword.startswith(_WCS_PREFIXES)]
    planes = [
        ("IMAGE", pixels.image, "ct", "electrons, background-subtracted"),
        ("MASK", pixels.mask, "", "bit mask (MP_* name the planes)"),
        ("VARIANCE", pixels.variance, "ct2", "variance of IMAGE, electrons squared"),
    ]
    hdus = [primary]
    for name, data, unit, text in planes:
        hdu = fits.ImageHDU(data=np.ascontiguousarray(data), name=name)
        for card in wcs:
            hdu.header.append(fits.Card(card.keyword, card.value, card.comment))
        if unit:
            hdu.header["BUNIT"] = (unit, text)
        if name == "MASK":
            for plane, bit in sorted(pixels.mask_planes.items(), key=lambda kv: kv[1]):
                hdu.header[f"HIERARCH MP_{plane}"] = (int(bit), "mask plane bit")
        hdus.append(hdu)
    return fits.HDUList(hdus)
