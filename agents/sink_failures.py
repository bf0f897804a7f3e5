"""Failure → the exposure's failure summary (never over a complete folder), and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream.io.outputs import write_failure
from streams import events, wire
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> None:
    expid = event["exposure_id"]
    if expid is None:  # no exposure to write a summary for: the failure event is the record
        return
    metadata = event["metadata"]
    write_failure(
        ctx.root,
        expid,
        event["stage"],
        event["error"],
        event["reason"],
        None if metadata is None else wire.metadata_from_record(metadata),
        {} if event["uri"] is None else {"input": event["uri"]},
    )
    ctx.readmodel.record_metrics(
        expid,
        {
            "status": "failed",
            **(metadata or {"expid": expid}),
            **{name: event[name] for name in ("stage", "error", "reason")},
            "persisted_ms": events.now_ms(),
        },
    )
