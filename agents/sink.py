"""Zero-point → the exposure's folder (atomic, byte-identical on a redelivery), then its
ledger entry and row as the folder says (:func:`streams.rebuild.record_folder`).

The latency is that of the first persisted calibration: a replay or a redelivery of the
same submission, or the same folder content again, leaves the row's time and latency as
they were (the read model's record script), and only a first persistence is counted in
the latency histogram.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream.io.outputs import write_calibration
from streams import events
from streams.rebuild import record_folder
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> None:
    folder = write_calibration(events.calibrated_from_event(event), ctx.root)
    latency_s = record_folder(
        ctx.readmodel,
        event["exposure_id"],
        folder,
        submitted_ms=event["input"]["submitted_ms"],
        timings=event["timings"],
    )
    if latency_s is not None:
        ctx.readmodel.observe("latency_seconds", "persisted", latency_s)
