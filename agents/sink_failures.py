"""Failure → the exposure's failure summary (never over a complete folder), then its row as
the folder says: a failure that did not replace a complete calibration leaves the row ok,
with its figures (:func:`streams.rebuild.record_folder`); and the exposure's outcome for
its visit, as its folder says (none for the visit agent's own failures, which would
come back to it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream.io.outputs import write_failure
from streams import wire
from streams.codec import CodecError, decode
from streams.rebuild import record_folder
from streams.runner import Context
from streams.visit_events import exposure_outcome


def step(ctx: Context, event: Mapping[str, Any]) -> dict | None:
    expid = event["exposure_id"]
    if expid is None:  # no exposure to write a summary for: the failure event is the record
        return None
    metadata = event["metadata"]
    folder = write_failure(
        ctx.root,
        expid,
        event["stage"],
        event["error"],
        event["reason"],
        None if metadata is None else wire.metadata_from_record(metadata),
        {} if event["uri"] is None else {"input": event["uri"]},
    )
    record_folder(ctx.readmodel, expid, folder)
    if event["stage"] == "visit":
        return None
    visit, detector = _place(event)
    return exposure_outcome(folder, visit, detector, event["uri"], ctx.settings.input_roots)


def _place(event: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The exposure's visit and detector: its metadata's, else (a file that could not be
    read) those its characterized-exposure event gave."""
    if event["metadata"] is not None:
        return event["metadata"]["visit"], event["metadata"]["detector"]
    try:
        given = decode(event["input"], expected_subject="characterized_exposure").record
    except CodecError:
        return None, None
    return given["visit"], given["detector"]
