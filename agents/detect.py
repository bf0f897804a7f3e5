"""Characterized exposure → detection: read the pixels, detect and measure deep.

The event's URI is opened only if it names a regular file inside ``[stream] input_roots``
(:func:`calibstream.io.inputs.resolve_input`), and the file's EXPID must be the event's.

While the pixels are measured, a thread preloads the exposure's reference stars (the
shared shard cache warmed for every worker, the rows kept for the astrometric step that
runs next in this process: :mod:`calibstream.astrometry.preload`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calibstream import stages
from calibstream.astrometry import preload
from calibstream.errors import stage
from calibstream.io.inputs import resolve_input
from streams import events
from streams.runner import Context


def step(ctx: Context, event: Mapping[str, Any]) -> dict:
    with stage("read"):
        path = resolve_input(event["uri"], ctx.settings.input_roots)
    _preload(ctx, path)
    frame, measurement = stages.detect(path, ctx.config, event["exposure_id"])
    return events.detection_event(
        event, frame, measurement.catalog, measurement.background, measurement.timings
    )


def _preload(ctx: Context, path) -> None:
    """Start preloading the references of the exposure at ``path`` (``[stream] refcat``, and
    ``photometry_refcat`` when given)."""
    margin = ctx.config.calibration.footprint_margin_deg
    for store in (ctx.settings.refcat, ctx.settings.photometry_refcat):
        if store and Path(store).is_dir():  # a help, never a condition: silent when it fails
            preload.start(path, Path(store), margin, ctx.cache, ctx.config.limits)
