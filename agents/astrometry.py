"""Detection → match: reference stars at the epoch, TAN-SIP fit, matches. No pixels.

When the fit fails for the data's fault (no reference stars, no pattern solution...), the
match event still goes on, marked partial: the first-guess WCS and positions, nothing
matched (:func:`calibstream.stages.astrometry_or_partial`), so the folder keeps the
catalogue."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from calibstream import stages
from calibstream.partial import first_guess_positions
from calibstream.verdicts import Partial
from streams import events
from streams.quality_events import partial_match_event
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    frame, catalog = events.detection_inputs(event)
    start = time.perf_counter()
    outcome = stages.astrometry_or_partial(frame, catalog, ctx.refcat, ctx.config, ctx.cache)
    if isinstance(outcome, Partial):
        timings = {"astrometry": time.perf_counter() - start}
        return partial_match_event(event, first_guess_positions(catalog), outcome, timings)
    return events.match_event(event, outcome, outcome.timings)
