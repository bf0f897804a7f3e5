"""Failure → the exposure's failure summary (never over a complete folder), then its row as
the folder says: a failure that did not replace a complete calibration leaves the row ok,
with its figures (:func:`streams.rebuild.record_folder`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream.io.outputs import write_failure
from streams import wire
from streams.rebuild import record_folder
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> None:
    expid = event["exposure_id"]
    if expid is None:  # no exposure to write a summary for: the failure event is the record
        return
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
