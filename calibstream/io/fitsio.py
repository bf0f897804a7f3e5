"""Writing FITS outputs atomically and byte-identically.

A file is written beside its destination and renamed over it, so a reader
sees the old file or the new one, never half of one. Nothing time-dependent
goes into a header, so the same inputs always give the same bytes.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

#: astropy stamps checksum comments with the time by default: not byte-identical.
CHECKSUM_COMMENT = "calibstream"


def atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hdulist_bytes(hdul: fits.HDUList) -> bytes:
    """The file's bytes, with CHECKSUM/DATASUM cards whose comments carry no timestamp."""
    buffer = io.BytesIO()
    for hdu in hdul:
        hdu.add_checksum(when=CHECKSUM_COMMENT)
    hdul.writeto(buffer, checksum=False)
    return buffer.getvalue()


def table_hdu(columns: Mapping[str, np.ndarray], name: str) -> fits.BinTableHDU:
    """A binary table with one column per array, booleans as FITS logicals."""
    cols = []
    for key, values in columns.items():
        values = np.asarray(values)
        cols.append(fits.Column(name=key, format=_format(values), array=values))
    return fits.BinTableHDU.from_columns(cols, name=name)


def _format(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind == "b":
        return "L"
    if kind in "iu":
        return "K" if values.dtype.itemsize > 4 else "J"
    if kind == "f":
        return "D" if values.dtype.itemsize > 4 else "E"
    if kind in "US":
        width = max(1, int(max((len(str(v)) for v in values), default=1)))
        return f"{width}A"
    raise TypeError(f"cannot write a column of dtype {values.dtype}")
