"""The APCORR table: aperture corrections as a FITS binary table, read and written.

One row per flux: NAME, polynomial ORDER, its (ORDER + 1)² COEFFS and ERR.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from astropy.io import fits

from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm
from calibstream.errors import InvalidApCorrError, InvalidHduError
from calibstream.io.exposure_checks import table_column


def read_apcorr(hdu, shape: tuple[int, int]) -> ApCorrMap:
    """The APCORR table as an :class:`ApCorrMap` over an image of numpy ``shape``, checked."""
    if not isinstance(hdu, fits.BinTableHDU):
        raise InvalidHduError("APCORR must be a binary table", where="APCORR")
    names = table_column(hdu, "NAME", "APCORR")
    orders = table_column(hdu, "ORDER", "APCORR")
    coeffs = table_column(hdu, "COEFFS", "APCORR")
    errs = table_column(hdu, "ERR", "APCORR")
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


def apcorr_hdu(apcorr: ApCorrMap) -> fits.BinTableHDU:
    """An :class:`ApCorrMap` as the APCORR binary table (the reader's inverse)."""
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
