"""Event records from the core's results and back: pure conversions, no Kafka here.

The records are plain dicts shaped by ``schemas/*.avsc`` (encode them with
:mod:`streams.codec`). What travels, and how:

* catalogs and tables as columns ``{name, dtype, data}``: a little-endian
  numpy dtype string and the column's bytes, zlib-compressed (exact, NaN
  payloads included);
* FITS headers as cards ``{key, value, type, comment}`` with the value as exact
  text: the rebuilt header prints the same bytes;
* the background as its mesh of nodes (the core's :class:`Background` model).

Each event carries everything its consumer needs, so each topic replays on its
own: a detection event holds the :class:`Frame` and the deep catalog (no
pixels), a match event adds the fitted WCS and the matched references, and a
zero-point event is exactly the content of the exposure's output folder.
"""

from __future__ import annotations

import numbers
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from calibstream import __version__
from calibstream.astrometry.refcat import RefCatalog
from calibstream.astrometry.refcat_store import BASE_COLUMNS
from calibstream.calibrate import AstrometricSolution, Frame, Matches
from calibstream.detection.background import Background
from calibstream.errors import CalibstreamError
from calibstream.io.exposure import Metadata
from calibstream.io.outputs import CalibratedExposure, finite_or_none
from calibstream.photometry.photocal import PhotoCalResult
from streams.codec import schema_id_of

#: zlib level of every compressed column and mesh (6, zlib's default: level 1
#: is ~3x faster on float noise and ~2% bigger, level 9 no smaller).
ZLIB_LEVEL = 6


def now_ms() -> int:
    return int(time.time() * 1000)


def exposure_key(exposure_id: int) -> bytes:
    """The message key of every per-exposure event: the EXPID as decimal ASCII."""
    return str(int(exposure_id)).encode()


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
    }


def frame_from_event(event: Mapping[str, Any], wcs_field: str = "first_guess_wcs") -> Frame:
    return Frame(
        metadata=metadata_from_record(event["metadata"]),
        wcs_header=cards_to_header(event[wcs_field]),
        shape=(int(event["image_height"]), int(event["image_width"])),
        psf_fwhm=float(event["psf_fwhm"]),
    )


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


# ---------------------------------------------------------------- events


def characterized_exposure_event(
    metadata: Metadata, uri: str, *, submitted_ms: int | None = None
) -> dict:
    """The input event for one exposure file (``submitted_ms`` defaults to now)."""
    meta = metadata_to_record(metadata)
    return {
        "exposure_id": meta["expid"],
        "visit": meta["visit"],
        "detector": meta["detector"],
        "band": meta["band"],
        "mjd_obs": meta["mjd_obs"],
        "exptime": meta["exptime"],
        "uri": str(uri),
        "submitted_ms": now_ms() if submitted_ms is None else int(submitted_ms),
        "airmass": meta["airmass"],
        "boresight_ra": meta["bore_ra"],
        "boresight_dec": meta["bore_dec"],
        "attributes": {},
    }


def detection_event(
    input_event: Mapping[str, Any],
    frame: Frame,
    catalog: Mapping[str, np.ndarray],
    background: Background,
    timings: Mapping[str, float],
) -> dict:
    """The deep catalog of an exposure and all astrometry needs besides it."""
    return {
        "exposure_id": int(frame.metadata.expid),
        "input": dict(input_event),
        **frame_fields(frame),
        "n_sources": len(catalog["id"]),
        "catalog": catalog_to_columns(catalog),
        "background": background_to_record(background),
        "timings": dict(timings),
        "software_version": __version__,
    }


def detection_inputs(event: Mapping[str, Any]) -> tuple[Frame, dict[str, np.ndarray]]:
    return frame_from_event(event), columns_to_catalog(event["catalog"])


def match_event(
    detection: Mapping[str, Any], solution: AstrometricSolution, timings: Mapping[str, float]
) -> dict:
    """The detection event with the fitted WCS, sky positions and matched references.

    Only the matched reference rows travel, in match order: the photometric
    step indexes them as ``Matches.ref = 0..n-1``.
    """
    fit, matches = solution.astrometry, solution.matches
    pairs = {
        "source": np.asarray(matches.source, dtype=np.int64),
        "distance_mas": np.asarray(matches.distance_mas, dtype=np.float64),
    }
    return {
        **{name: detection[name] for name in ("exposure_id", "input", "metadata", "psf_fwhm")},
        "image_height": detection["image_height"],
        "image_width": detection["image_width"],
        "wcs": header_to_cards(fit.wcs.to_header(relax=True)),
        "astrms_mas": float(fit.rms_mas),
        "astnmatch": int(fit.n_matches),
        "distortion": str(fit.distortion),
        "fit_order": int(fit.fit_order),
        "n_refs": int(fit.n_refs),
        "match_radius_arcsec": float(fit.match_radius_arcsec),
        "n_sources": len(solution.catalog["id"]),
        "catalog": catalog_to_columns(solution.catalog),
        "matches": catalog_to_columns(pairs),
        "references": references_to_columns(solution.refs, matches.ref),
        "background": detection["background"],
        "timings": {**detection["timings"], **timings},
        "software_version": __version__,
    }


def match_inputs(
    event: Mapping[str, Any],
) -> tuple[Frame, dict[str, np.ndarray], RefCatalog, Matches]:
    """The fitted frame, the catalog with sky positions, the matched references, the matches."""
    pairs = columns_to_catalog(event["matches"])
    refs = RefCatalog.from_columns(columns_to_catalog(event["references"]))
    if len(refs) != len(pairs["source"]):
        raise ValueError("match event: references do not follow the matches row for row")
    matches = Matches(pairs["source"], np.arange(len(refs)), pairs["distance_mas"])
    return frame_from_event(event, "wcs"), columns_to_catalog(event["catalog"]), refs, matches


def zeropoint_event(
    match: Mapping[str, Any],
    calibrated: CalibratedExposure,
    photometry: PhotoCalResult,
    timings: Mapping[str, float],
) -> dict:
    """The calibrated exposure (exactly what the sink writes) and the dashboard's figures."""
    return {
        **{name: match[name] for name in ("exposure_id", "input", "metadata")},
        "calexp_header": header_to_cards(calibrated.header),
        "magzero": float(photometry.magzero),
        "magzero_err": float(photometry.magzero_err),
        "magzero_rms": float(photometry.magzero_rms),
        "magzero_nobj": int(photometry.nobj),
        "colorterm": [float(c) for c in photometry.colorterm],
        "nreserved": int(photometry.nreserved),
        "reserved_rms": calibrated.reserved_rms,
        "reserved_mean_offset": finite_or_none(photometry.reserved_mean_offset),
        "sigma_int": float(photometry.sigma_int),
        "astrms_mas": float(match["astrms_mas"]),
        "astnmatch": int(match["astnmatch"]),
        "n_sources": len(calibrated.catalog["id"]),
        "catalog": catalog_to_columns(calibrated.catalog),
        "matches": catalog_to_columns(calibrated.matches),
        "background": match["background"],
        "timings": {**match["timings"], **timings},
        "software_version": __version__,
    }


def calibrated_from_event(event: Mapping[str, Any]) -> CalibratedExposure:
    """What the sink persists, from a zero-point event."""
    return CalibratedExposure(
        metadata=metadata_from_record(event["metadata"]),
        header=cards_to_header(event["calexp_header"]),
        catalog=columns_to_catalog(event["catalog"]),
        matches=columns_to_catalog(event["matches"]),
        background=background_from_record(event["background"]),
        reserved_rms=event["reserved_rms"],
    )


def failure_event(
    stage: str,
    error: BaseException,
    *,
    input: bytes = b"",
    input_key: bytes | None = None,
    input_topic: str | None = None,
    input_partition: int | None = None,
    input_offset: int | None = None,
    exposure_id: int | None = None,
    uri: str | None = None,
    metadata: Metadata | None = None,
) -> dict:
    """A stage failed on an input message: the error's kind and reason, the input kept whole.

    A :class:`CalibstreamError` gives its ``kind``, its message and ``where``;
    any other exception is ``internal`` with its type and message as the reason.
    """
    if isinstance(error, CalibstreamError):
        kind, reason, where = error.kind, str(error), error.where
    else:
        kind, reason, where = "internal", f"{type(error).__name__}: {error}", None
    return {
        "stage": str(stage),
        "exposure_id": None if exposure_id is None else int(exposure_id),
        "error": kind,
        "reason": reason or kind,
        "where": where,
        "uri": uri,
        "metadata": None if metadata is None else metadata_to_record(metadata),
        "input": bytes(input),
        "input_key": None if input_key is None else bytes(input_key),
        "input_topic": input_topic,
        "input_partition": input_partition,
        "input_offset": input_offset,
        "software_version": __version__,
    }


def dead_letter_event(
    value: bytes,
    *,
    topic: str,
    partition: int,
    offset: int,
    error: BaseException,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """An undecodable message, kept byte for byte, with why."""
    if isinstance(error, CalibstreamError):
        kind, reason = error.kind, str(error)
    else:
        kind, reason = "undecodable", f"{type(error).__name__}: {error}"
    return {
        "value": bytes(value),
        "key": None if key is None else bytes(key),
        "topic": str(topic),
        "partition": int(partition),
        "offset": int(offset),
        "error": kind,
        "reason": reason,
        "schema_id": schema_id_of(bytes(value)),
        "timestamp_ms": timestamp_ms,
    }
