"""The wire forms of what events carry: pure conversions, no Kafka here.

* catalogs and tables as columns ``{name, dtype, data}``: a little-endian
  numpy dtype string and the column's bytes, zlib-compressed (exact, NaN
  payloads included);
* FITS headers as cards ``{key, value, type, comment}`` with the value as exact
  text: the rebuilt header prints the same bytes;
* metadata, the frame's fields, the background as its mesh of nodes (the core's
  :class:`Background` model), reference rows;
* claim files: the columns of an event too big to send, written once under the output
  root (``ROOT/claims/<sha256>.bin``, content-addressed) and read back verified.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import stat
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
from astropy.io import fits

from calibstream.astrometry.refcat import RefCatalog
from calibstream.astrometry.refcat_store import BASE_COLUMNS
from calibstream.detection.background import Background
from calibstream.errors import CalibstreamError
from calibstream.frame import Frame
from calibstream.io.exposure import Metadata
from calibstream.io.fitsio import atomic_write_bytes
from calibstream.summary_stats import SummaryStats

#: zlib level of every compressed column and mesh: 1 (zlib's default, 6, took 28 ms
#: against 19 ms to compress a 4k exposure's three events, for events 0.5% smaller: float
#: noise hardly compresses; integer and flag columns do at any level).
ZLIB_LEVEL = 1


# ---------------------------------------------------------------- columns


def array_to_column(name: str, values: np.ndarray, level: int = ZLIB_LEVEL) -> dict:
    """One 1-D array as ``{name, dtype, data}``: little-endian bytes, zlib-compressed."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {array.shape}")
    if array.dtype.hasobject or array.dtype.fields is not None or array.dtype.itemsize == 0:
        raise ValueError(f"column {name!r} has unsupported dtype {array.dtype}")
    little = array.dtype.newbyteorder("<")
    data = np.ascontiguousarray(array, dtype=little).tobytes()
    return {"name": str(name), "dtype": little.str, "data": zlib.compress(data, level)}


def column_to_array(column: Mapping[str, Any]) -> np.ndarray:
    """The array of a column record: a writable, native-endian copy."""
    dtype = np.dtype(column["dtype"])
    raw = zlib.decompress(column["data"])
    if len(raw) % dtype.itemsize:
        raise ValueError(f"column {column['name']!r}: {len(raw)} bytes do not hold {dtype}")
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


def catalog_to_columns(catalog: Mapping[str, np.ndarray]) -> list[dict]:
    """A catalog (name -> 1-D array) as column records, in its order."""
    return [array_to_column(name, values) for name, values in catalog.items()]


def columns_to_catalog(columns: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The inverse of :func:`catalog_to_columns`: same names, order, dtypes and values."""
    catalog: dict[str, np.ndarray] = {}
    for column in columns:
        if column["name"] in catalog:
            raise ValueError(f"column {column['name']!r} appears twice")
        catalog[column["name"]] = column_to_array(column)
    lengths = {len(v) for v in catalog.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths {sorted(lengths)}")
    return catalog


# ---------------------------------------------------------------- header cards

_COMMENTARY = {"COMMENT", "HISTORY", ""}


def header_to_cards(header: fits.Header) -> list[dict]:
    """Every card of ``header``, in order, its value as exact text."""
    cards = []
    for card in header.cards:
        key, value, comment = card.keyword, card.value, card.comment or ""
        if key in _COMMENTARY:
            kind, text, comment = "COMMENTARY", str(value), ""
        elif isinstance(value, fits.card.Undefined) or value is None:
            kind, text = "UNDEFINED", ""
        elif isinstance(value, bool | np.bool_):
            kind, text = "BOOL", "T" if value else "F"
        elif isinstance(value, numbers.Integral):
            kind, text = "INT", str(int(value))
        elif isinstance(value, numbers.Real):
            kind, text = "FLOAT", repr(float(value))
        elif isinstance(value, str):
            kind, text = "STRING", value
        else:
            raise ValueError(f"header card {key}: unsupported value {value!r}")
        cards.append({"key": key, "value": text, "type": kind, "comment": comment})
    return cards


_PARSE = {
    "UNDEFINED": lambda text: fits.card.UNDEFINED,
    "BOOL": lambda text: text == "T",
    "INT": int,
    "FLOAT": float,
    "STRING": str,
}


def cards_to_header(cards: Iterable[Mapping[str, Any]]) -> fits.Header:
    """The header of :func:`header_to_cards`, card for card (keys > 8 characters as HIERARCH)."""
    header = fits.Header()
    for card in cards:
        key, text, kind = card["key"], card["value"], card["type"]
        if kind == "COMMENTARY":
            header.append(fits.Card(key, text), bottom=True)
            continue
        standard = len(key) <= 8 and key == key.upper() and " " not in key
        keyword = key if standard else f"HIERARCH {key}"
        header.append(fits.Card(keyword, _PARSE[kind](text), card["comment"]), bottom=True)
    return header


# ---------------------------------------------------------------- frame, background, references

_METADATA_FIELDS = (
    "expid",
    "visit",
    "detector",
    "band",
    "mjd_obs",
    "exptime",
    "airmass",
    "bore_ra",
    "bore_dec",
)


def metadata_to_record(meta: Metadata) -> dict:
    record = {name: getattr(meta, name) for name in _METADATA_FIELDS}
    for name in ("expid", "visit", "detector"):
        record[name] = int(record[name])
    for name in ("mjd_obs", "exptime", "airmass", "bore_ra", "bore_dec"):
        if record[name] is not None:
            record[name] = float(record[name])
    return record


def metadata_from_record(record: Mapping[str, Any]) -> Metadata:
    return Metadata(**{name: record[name] for name in _METADATA_FIELDS})


def input_metadata(event: Mapping[str, Any]) -> dict:
    """The metadata record of a characterized-exposure event (its fields are the header's)."""
    renamed = {"expid": "exposure_id", "bore_ra": "boresight_ra", "bore_dec": "boresight_dec"}
    return {name: event[renamed.get(name, name)] for name in _METADATA_FIELDS}


def frame_fields(frame: Frame, wcs_field: str = "first_guess_wcs") -> dict:
    """The frame as event fields; the WCS cards under ``wcs_field``."""
    return {
        "metadata": metadata_to_record(frame.metadata),
        "image_height": frame.shape[0],
        "image_width": frame.shape[1],
        "psf_fwhm": float(frame.psf_fwhm),
        wcs_field: header_to_cards(frame.wcs_header),
        "summary_stats": stats_to_record(frame.stats),
    }


def frame_from_event(event: Mapping[str, Any], wcs_field: str = "first_guess_wcs") -> Frame:
    """The frame of an event; its pixels' statistics None when the event has none (an
    older writer's)."""
    return Frame(
        metadata=metadata_from_record(event["metadata"]),
        wcs_header=cards_to_header(event[wcs_field]),
        shape=(int(event["image_height"]), int(event["image_width"])),
        psf_fwhm=float(event["psf_fwhm"]),
        stats=SummaryStats.from_record(event.get("summary_stats")),
    )


def stats_to_record(stats: SummaryStats | None) -> dict | None:
    """Summary statistics as an ExposureSummaryStats record (Rubin's names; null unknown)."""
    return None if stats is None else stats.as_record()


def background_to_record(background: Background) -> dict:
    mesh = np.ascontiguousarray(background.mesh, dtype="<f4")
    return {
        "mesh_size": int(background.mesh_size),
        "filter_size": int(background.filter_size),
        "image_height": int(background.shape[0]),
        "image_width": int(background.shape[1]),
        "mesh_height": mesh.shape[0],
        "mesh_width": mesh.shape[1],
        "values": zlib.compress(mesh.tobytes(), ZLIB_LEVEL),
        "global_level": float(background.global_level),
        "global_rms": float(background.global_rms),
    }


def background_from_record(record: Mapping[str, Any]) -> Background:
    shape = (int(record["mesh_height"]), int(record["mesh_width"]))
    values = np.frombuffer(zlib.decompress(record["values"]), dtype="<f4")
    if values.size != shape[0] * shape[1]:
        raise ValueError(f"background mesh holds {values.size} values, expected {shape}")
    return Background(
        mesh=values.reshape(shape).astype(np.float32),
        shape=(int(record["image_height"]), int(record["image_width"])),
        global_level=float(record["global_level"]),
        global_rms=float(record["global_rms"]),
        mesh_size=int(record["mesh_size"]),
        filter_size=int(record["filter_size"]),
    )


def references_to_columns(refs: RefCatalog, rows: np.ndarray) -> list[dict]:
    """Reference ``rows`` as contract-named columns."""
    columns = {name: getattr(refs, name)[rows] for name in BASE_COLUMNS}
    for band, (mag, err) in sorted(refs.bands.items()):
        columns[f"{band}_mag"], columns[f"{band}_mag_err"] = mag[rows], err[rows]
    return catalog_to_columns(columns)


# ---------------------------------------------------------------- claim files

#: The folder of claim files under the output root.
CLAIMS_DIR = "claims"


class ClaimError(CalibstreamError):
    """A claim file whose bytes are not the ones its event names (length or SHA-256): the
    data's fault, permanent. A claim file that cannot be read (missing, unmounted store) is
    an :class:`OSError`, the machine's fault: the failure policy retries, then parks."""

    kind = "claim"


def write_claim(root: str | os.PathLike[str], blob: bytes) -> tuple[str, str]:
    """``blob`` as ``ROOT/claims/<sha256>.bin`` (staged, fsynced, renamed into place; a file
    already there with its length is left alone: its name is its digest). Returns the
    file's ``file://`` URI and the hex SHA-256."""
    digest = hashlib.sha256(blob).hexdigest()
    path = Path(root).resolve() / CLAIMS_DIR / f"{digest}.bin"
    if path.is_file() and path.stat().st_size == len(blob):
        return path.as_uri(), digest
    atomic_write_bytes(blob, path)
    return path.as_uri(), digest


def read_claim(uri: str, sha256: str, length: int) -> bytes:
    """The bytes of a claim file, checked against the length and SHA-256 its event names
    (:class:`ClaimError` when they differ; an unreadable file raises its OSError)."""
    path = claim_path(uri)
    # Only a claim file is opened: named by its digest in a claims folder, a regular file of
    # the length the event names (never a device, a FIFO or any other file an event names).
    if path.name != f"{sha256}.bin" or path.parent.name != "claims":
        raise ClaimError("not a claim file's name", where=uri)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode) or info.st_size != length:
        raise ClaimError(f"not a claim file of {length} bytes", where=uri)
    data = path.read_bytes()
    if len(data) != length:
        raise ClaimError(f"{len(data)} bytes, the event names {length}", where=str(path))
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ClaimError(f"SHA-256 {digest}, the event names {sha256}", where=str(path))
    return data


def claim_path(uri: str) -> Path:
    """The path of a claim's ``file://`` URI (a plain path is taken as it is)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ClaimError(f"unsupported claim URI scheme {parsed.scheme!r}", where=uri)
    return Path(uri)
