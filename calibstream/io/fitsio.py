"""Writing FITS outputs atomically and byte-identically.

A file is written beside its destination and renamed over it, so a reader
sees the old file or the new one, never half of one. Nothing time-dependent
goes into a header, so the same inputs always give the same bytes. Files are
0644 and folders 0755, less the umask (as ``open`` and ``mkdir`` make them), not
the 0600 and 0700 of ``mkstemp`` and ``mkdtemp``: another user (a dashboard, a
reader of the outputs) can read them.

Importing this module reads astropy.io.fits's configuration once for the process
(:func:`read_fits_config_once`): astropy looks its items up on every header card it
makes or writes, ~7,500 times a folder, 60% of the time writing a catalogue's table took.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

#: astropy stamps checksum comments with the time by default: not byte-identical.
CHECKSUM_COMMENT = "calibstream"

#: The modes of the files and folders written (less the umask).
FILE_MODE, DIR_MODE = 0o644, 0o755


def read_fits_config_once() -> None:
    """astropy.io.fits's configuration items as plain class attributes, their values read
    now (the astropy configuration files and defaults still decide them, at this call)."""
    from astropy.config import ConfigItem

    conf = type(fits.conf)
    for name, item in list(vars(conf).items()):
        if isinstance(item, ConfigItem):
            setattr(conf, name, getattr(fits.conf, name))


read_fits_config_once()


def umask() -> int:
    """The process's umask: from /proc (leaving it alone), else set and set back."""
    with (
        contextlib.suppress(OSError, ValueError, IndexError, StopIteration),
        open("/proc/self/status") as f,
    ):
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE & ~umask())  # mkstemp's are 0600
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
