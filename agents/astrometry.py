"""Detection → match: reference stars at the epoch, TAN-SIP fit, matches. No pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibstream import stages
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    frame, catalog = events.detection_inputs(event)
    solution = stages.astrometry(frame, catalog, ctx.refcat, ctx.config, ctx.cache)
    return events.match_event(event, solution, solution.timings)
