"""Match → zero-point: colour terms, clipped zero-point, the folder's content.

The match event carries the matched reference rows but not their catalogue's name, which
the colour terms are chosen by (``[colorterms.<name>.<band>]``): it is the name of the
store this worker's astrometry read them from (``[stream] refcat``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from calibstream import stages
from calibstream.astrometry.refcat import store_name
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    fitted = events.fitted_from_event(event)
    if not fitted.refs.name and fitted.partial is None:
        refs = dataclasses.replace(fitted.refs, name=store_name(ctx.refcat))
        fitted = dataclasses.replace(fitted, refs=refs)
    result, calibrated, timings = stages.photometry(
        fitted, ctx.config, ctx.photometry_refcat, ctx.cache
    )
    return events.zeropoint_event(event, calibrated, result, timings)
