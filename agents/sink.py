"""Zero-point → the exposure's folder (atomic, byte-identical on a redelivery), its ledger
entry and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream.io.outputs import write_calibration
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> None:
    folder = write_calibration(events.calibrated_from_event(event), ctx.root)
    done_ms = events.now_ms()
    latency_s = (done_ms - event["input"]["submitted_ms"]) / 1000
    ctx.readmodel.observe("latency_seconds", "persisted", latency_s)
    ctx.readmodel.record_persisted(event["exposure_id"], {"status": "ok", "folder": str(folder)})
    ctx.readmodel.record_metrics(
        event["exposure_id"],
        {
            "status": "ok",
            **event["metadata"],
            **{name: event[name] for name in events.ZEROPOINT_FIGURES},
            "submitted_ms": event["input"]["submitted_ms"],
            "persisted_ms": done_ms,
            "latency_s": latency_s,
            "timings": event["timings"],
        },
    )
