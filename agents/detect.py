"""Characterized exposure → detection: read the pixels, detect and measure deep.

The event's URI is opened only if it names a regular file inside ``[stream] input_roots``
(:func:`calibstream.io.inputs.resolve_input`), and the file's EXPID must be the event's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream import stages
from calibstream.errors import stage
from calibstream.io.inputs import resolve_input
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    with stage("read"):
        path = resolve_input(event["uri"], ctx.settings.input_roots)
    frame, measurement = stages.detect(path, ctx.config, event["exposure_id"])
    return events.detection_event(
        event, frame, measurement.catalog, measurement.background, measurement.timings
    )
