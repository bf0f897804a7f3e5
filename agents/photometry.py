"""Match → zero-point: colour terms, clipped zero-point, the folder's content."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream import stages
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    fitted = events.fitted_from_event(event)
    result, calibrated, timings = stages.photometry(
        fitted, ctx.config, ctx.photometry_refcat, ctx.cache
    )
    return events.zeropoint_event(event, calibrated, result, timings)
