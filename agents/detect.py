"""Characterized exposure → detection: read the pixels, detect and measure deep."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calibstream import stages
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    frame, measurement = stages.detect(Path(event["uri"]), ctx.config)
    return events.detection_event(
        event, frame, measurement.catalog, measurement.background, measurement.timings
    )
