"""Exposure outcome → its visit's state, keyed by detector; the visit's summary once
every expected detector has reported (or at the timeout, :func:`timeout`, naming the
missing ones), and again whenever a detector changes it.

The state lives in ``ctx.visits`` (a faust table live, the visits' folders in the batch
command and replay), with the digest of the summary sent last: a redelivered or
replayed outcome changes nothing and sends nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from calibstream.io.visits import write_visit
from calibstream.visit import fold, is_complete, summarize, summary_json
from streams import events
from streams.rebuild import record_visit_folder
from streams.runner import Context
from streams.visit_events import outcome_of_event, visit_event
from streams.visit_store import VisitRecord


def step(ctx: Context, event: Mapping[str, Any]) -> dict | None:
    visit, outcome = int(event["visit"]), outcome_of_event(event)
    ctx.config.camera.detector(outcome.detector)  # one the camera has, else the data's fault
    before = ctx.visits.get(visit)
    state = fold(None if before is None else before.state, visit, outcome)
    if before is None:
        record = VisitRecord(state, first_ms=events.now_ms())
    else:
        record = dataclasses.replace(before, state=state)
    return _summary(ctx, record, before)


def timeout(ctx: Context, visit: int, now_ms: float) -> dict | None:
    """The summary of ``visit`` as it stands, if its timeout has passed with detectors
    missing (once: a late detector then sends an update through :func:`step`)."""
    before = ctx.visits.get(visit)
    if before is None or before.timed_out or is_complete(before.state, ctx.config.camera):
        return None
    if now_ms - before.first_ms < 1000 * ctx.settings.visit_timeout_s:
        return None
    return _summary(ctx, dataclasses.replace(before, timed_out=True), before)


def _summary(ctx: Context, record: VisitRecord, before: VisitRecord | None) -> dict | None:
    """The visit's folder as ``record`` says; its summary event when there is one and it
    is not the one sent last."""
    camera = ctx.config.camera
    complete = is_complete(record.state, camera)
    summary = None
    if complete or record.timed_out:
        summary = summarize(record.state, camera, timed_out=not complete)
    folder = write_visit(ctx.root, record.state, summary)
    digest = None if summary is None else hashlib.sha256(summary_json(summary)).hexdigest()
    new = record if digest is None else dataclasses.replace(record, sent=digest)
    if new != before:
        ctx.visits.put(record.state.visit, new)
    if summary is None or digest == record.sent:
        return None
    record_visit_folder(ctx.readmodel, folder)  # the row as the folder says, as a rebuild
    return visit_event(summary)
