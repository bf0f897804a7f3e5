"""Event records from the core's results and back: pure conversions, no Kafka here.

The records are plain dicts shaped by ``schemas/*.avsc`` (encode them with
:mod:`streams.codec`); the forms of their parts are :mod:`streams.wire`'s. Each
event carries everything its consumer needs, so each topic replays on its own:
a detection event holds the :class:`Frame` and the deep catalog (no pixels), a
match event adds the fitted WCS and the matched references, and a zero-point
event is exactly the content of the exposure's output folder.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calibstream import __version__
from calibstream.astrometry.refcat import RefCatalog
from calibstream.detection.background import Background
from calibstream.errors import CalibstreamError
from calibstream.failures import Failure
from calibstream.frame import Frame
from calibstream.io.exposure import Metadata
from calibstream.io.outputs import CalibratedExposure
from calibstream.stages import Fitted, first_guess_fitted
from streams import limits
from streams.codec import decode, encode, schema_id_of
from streams.limits import EventTooLargeError
from streams.quality_events import (
    assessment_fields,
    assessment_from_event,
    partial_of_event,
    photometry_fields,
)
from streams.settings import StreamSettings
from streams.wire import (
    background_from_record,
    background_to_record,
    cards_to_header,
    catalog_to_columns,
    columns_to_catalog,
    frame_fields,
    frame_from_event,
    header_to_cards,
    metadata_from_record,
    metadata_to_record,
    read_claim,
    references_to_columns,
    write_claim,
)

if TYPE_CHECKING:  # the fit's modules load scipy.spatial: imported where they are used
    from calibstream.astrometry.solve import AstrometricSolution
    from calibstream.photometry.photocal import PhotoCalResult


def now_ms() -> int:
    return int(time.time() * 1000)


def exposure_key(exposure_id: int) -> bytes:
    """The message key of every per-exposure event: the EXPID as decimal ASCII."""
    return str(int(exposure_id)).encode()


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
    event = claimed(event)
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
        "wcs": header_to_cards(_fitted_header(fit)),  # with ASTMODEL, ASTDOF, ASTERR
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
        "summary_stats": detection.get("summary_stats"),
        "partial": None,
        "first_guess_wcs": detection["first_guess_wcs"],
    }


def _fitted_header(fit: Any) -> Any:
    from calibstream.astrometry.fit import fitted_header

    return fitted_header(fit)


def fitted_from_event(event: Mapping[str, Any]) -> Fitted:
    """What the photometric stage starts from: the fitted frame, the catalog with sky
    positions, the matched references (row for row with the matches) and the background;
    for an exposure whose astrometry did not fit (``partial``), the first guess's."""
    event = claimed(event)
    partial = partial_of_event(event)
    if partial is not None:
        return first_guess_fitted(
            frame_from_event(event, "wcs"),
            columns_to_catalog(event["catalog"]),
            background_from_record(event["background"]),
            partial,
        )
    from calibstream.astrometry.solve import Matches

    pairs = columns_to_catalog(event["matches"])
    refs = RefCatalog.from_columns(columns_to_catalog(event["references"]))
    if len(refs) != len(pairs["source"]):
        raise ValueError("match event: references do not follow the matches row for row")
    return Fitted(
        frame=frame_from_event(event, "wcs"),
        catalog=columns_to_catalog(event["catalog"]),
        refs=refs,
        matches=Matches(pairs["source"], np.arange(len(refs)), pairs["distance_mas"]),
        astrms_mas=event["astrms_mas"],
        astnmatch=event["astnmatch"],
        background=background_from_record(event["background"]),
    )


#: The zero-point event's figures the read model keeps for the dashboard.
ZEROPOINT_FIGURES = (
    "magzero",
    "magzero_err",
    "magzero_rms",
    "magzero_nobj",
    "astrms_mas",
    "astnmatch",
    "n_sources",
)


def zeropoint_event(
    match: Mapping[str, Any],
    calibrated: CalibratedExposure,
    photometry: PhotoCalResult | None,
    timings: Mapping[str, float],
) -> dict:
    """The calibrated exposure (exactly what the sink writes), the dashboard's figures and
    the assessment; ``photometry`` None: it did not fit (a partial calibration)."""
    matches = calibrated.matches
    return {
        **{name: match[name] for name in ("exposure_id", "input", "metadata")},
        "calexp_header": header_to_cards(calibrated.header),
        **photometry_fields(photometry),
        "reserved_rms": calibrated.reserved_rms,
        "astrms_mas": float(match["astrms_mas"]),
        "astnmatch": int(match["astnmatch"]),
        "n_sources": len(calibrated.catalog["id"]),
        "catalog": catalog_to_columns(calibrated.catalog),
        "matches": [] if matches is None else catalog_to_columns(matches),
        "background": match["background"],
        "timings": {**match["timings"], **timings},
        "software_version": __version__,
        **assessment_fields(calibrated.assessment),
        "first_guess_wcs": match.get("first_guess_wcs", []),  # [] from a match event before v4
    }


def calibrated_from_event(event: Mapping[str, Any]) -> CalibratedExposure:
    """What the sink persists, from a zero-point event (not assessed when the event is older
    than the statistics: :func:`calibstream.io.outputs.assessed` does it)."""
    event = claimed(event)
    return CalibratedExposure(
        metadata=metadata_from_record(event["metadata"]),
        header=cards_to_header(event["calexp_header"]),
        catalog=columns_to_catalog(event["catalog"]),
        matches=columns_to_catalog(event["matches"]) if event["matches"] else None,
        background=background_from_record(event["background"]),
        reserved_rms=event["reserved_rms"],
        assessment=assessment_from_event(event),
    )


def failure_event(
    failure: Failure,
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
    """A stage failed on an input message: the failure policy's verdict and where the input
    is (it stays in its topic); the first :data:`~streams.limits.INPUT_PREFIX_BYTES` of it,
    its length and SHA-256. Every text is cut to :data:`~streams.limits.TEXT_BYTES`."""
    meta = None if metadata is None else metadata_to_record(metadata)
    if meta is not None:
        meta["band"] = _clip(meta["band"])
    prefix, length, digest, truncated = _bounded(input)
    return {
        "stage": failure.stage,
        "exposure_id": None if exposure_id is None else int(exposure_id),
        "error": failure.kind,
        "reason": _clip(failure.reason),
        "where": _clip(failure.where),
        "uri": _clip(uri),
        "metadata": meta,
        "input": prefix,
        "input_key": _key(input_key),
        "input_topic": input_topic,
        "input_partition": input_partition,
        "input_offset": input_offset,
        "software_version": __version__,
        "input_length": length,
        "input_sha256": digest,
        "input_truncated": truncated,
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
    """An undecodable message and why: where it is (it stays in its topic), its first
    :data:`~streams.limits.INPUT_PREFIX_BYTES`, its length and SHA-256."""
    if isinstance(error, CalibstreamError):
        kind, reason = error.kind, str(error)
    else:
        kind, reason = "undecodable", f"{type(error).__name__}: {error}"
    prefix, length, digest, truncated = _bounded(value)
    return {
        "value": prefix,
        "key": _key(key),
        "topic": str(topic),
        "partition": int(partition),
        "offset": int(offset),
        "error": kind,
        "reason": _clip(reason),
        "schema_id": schema_id_of(bytes(value)),
        "timestamp_ms": timestamp_ms,
        "value_length": length,
        "value_sha256": digest,
        "value_truncated": truncated,
    }


def _bounded(data: bytes) -> tuple[bytes, int, str, bool]:
    """(the first INPUT_PREFIX_BYTES, the length, the hex SHA-256, whether it was cut)."""
    data = bytes(data)
    prefix = data[: limits.INPUT_PREFIX_BYTES]
    return prefix, len(data), hashlib.sha256(data).hexdigest(), len(prefix) < len(data)


def _key(key: bytes | None) -> bytes | None:
    return None if key is None else bytes(key[: limits.KEY_PREFIX_BYTES])


def _clip(text: str | None) -> str | None:
    """``text`` cut to TEXT_BYTES of UTF-8 (on a character boundary), marked when cut."""
    if text is None:
        return None
    data = str(text).encode()
    if len(data) <= limits.TEXT_BYTES:
        return str(text)
    kept = data[: limits.TEXT_BYTES - 64].decode(errors="ignore")
    return f"{kept}… [{len(data)} bytes, cut]"


# ---------------------------------------------------------------- claim checks

#: The subject of claim files (Confluent-framed Avro, as the events).
CLAIM_SUBJECT = "claim"
#: The fields of an event that may travel in a claim file.
CLAIMABLE = ("catalog", "matches", "references")


def encode_event(subject: str, record: Mapping[str, Any], stream: StreamSettings) -> bytes:
    """``record`` as an event of ``subject``, claim-checked with ``stream``'s limits
    (:func:`encode_claimed`), its claim file under ``stream.output_root``."""
    return encode_claimed(
        subject,
        record,
        root=stream.output_root,
        threshold=limits.claim_threshold(stream),
        limit=limits.max_event_bytes(stream),
    )


def encode_claimed(
    subject: str, record: Mapping[str, Any], *, root: str | Path, threshold: int, limit: int
) -> bytes:
    """``record`` encoded as an event of ``subject``; when that is over ``threshold`` bytes,
    its columns (:data:`CLAIMABLE`) go to a claim file under ``root`` (written once: its name
    is its digest) and the event carries its URI, length and SHA-256 instead. An event still
    over ``limit`` raises :class:`~streams.limits.EventTooLargeError`."""
    value = encode(subject, record)
    fields = [name for name in CLAIMABLE if record.get(name)]
    if len(value) > threshold and fields:
        blob = encode(CLAIM_SUBJECT, {name: record.get(name, []) for name in CLAIMABLE})
        uri, digest = write_claim(root, blob)
        claim = {"uri": uri, "sha256": digest, "length": len(blob), "fields": fields}
        value = encode(subject, {**record, **{name: [] for name in fields}, "claim": claim})
    if len(value) > limit:
        raise EventTooLargeError(
            f"{len(value)} bytes encoded, over the {limit} an event may have", where=subject
        )
    return value


def claimed(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """``event`` with the columns its claim file holds back in place (``event`` itself when
    it has no claim). A claim file whose bytes are not the ones named is a
    :class:`~streams.wire.ClaimError` (permanent); one that cannot be read, an OSError."""
    claim = event.get("claim")
    if claim is None:
        return event
    blob = read_claim(claim["uri"], claim["sha256"], claim["length"])
    columns = decode(blob, expected_subject=CLAIM_SUBJECT).record
    return {**event, **{name: columns[name] for name in claim["fields"]}, "claim": None}
