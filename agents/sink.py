"""Zero-point → the exposure's folder (atomic, byte-identical on a redelivery), then its
ledger entry and row as the folder says (:func:`streams.rebuild.record_folder`), and
what it contributes to its visit (an exposure-outcome event, keyed by visit).

An event older than the summary statistics (an archived v1 or v2 zero-point event) is
assessed here, from what it holds (:func:`calibstream.io.outputs.assessed`): the statistics
that need no pixels are computed, the others are null.

The latency is that of the first persisted calibration: a replay or a redelivery of the
same submission, or the same folder content again, leaves the row's time and latency as
they were (the read model's record script), and only a first persistence is counted in
the latency histogram.

With ``[outputs] pixels = true`` calexp.fits also holds IMAGE, MASK and VARIANCE: no event
carries pixels, so they are read again from the input file the event names (confined as
at the detect step; the same EXPID and shape), the residual background subtracted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from calibstream.errors import stage
from calibstream.io.calexp import CalexpPixels, read_pixels
from calibstream.io.inputs import resolve_input
from calibstream.io.outputs import CalibratedExposure, assessed, write_calibration
from streams import events
from streams.rebuild import record_folder
from streams.runner import Context
from streams.visit_events import exposure_outcome


def step(ctx: Context, event: Mapping[str, Any]) -> dict | None:
    calibrated = events.calibrated_from_event(event)
    if calibrated.assessment is None:  # an event older than the statistics
        calibrated = assessed(calibrated, None, None, ctx.config)
    if ctx.config.outputs.pixels:  # calexp.fits's planes, read again from the event's input
        calibrated = dataclasses.replace(calibrated, pixels=_pixels(ctx, event, calibrated))
    folder = write_calibration(calibrated, ctx.root)
    latency_s = record_folder(
        ctx.readmodel,
        event["exposure_id"],
        folder,
        submitted_ms=event["input"]["submitted_ms"],
        timings=event["timings"],
    )
    if latency_s is not None:
        ctx.readmodel.observe("latency_seconds", "persisted", latency_s)
    meta = calibrated.metadata
    shape = calibrated.background.shape
    return exposure_outcome(folder, meta.visit, meta.detector, event["input"]["uri"],
                            ctx.settings.input_roots, shape,
                            event.get("first_guess_wcs", ()))  # fmt: skip


def _pixels(ctx: Context, event: Mapping[str, Any], calibrated: CalibratedExposure) -> CalexpPixels:
    """The input's planes (confined to ``[stream] input_roots`` as at the detect step), the
    residual background subtracted: :func:`calibstream.io.calexp.read_pixels`."""
    with stage("sink"):
        path = resolve_input(event["input"]["uri"], ctx.settings.input_roots)
        return read_pixels(path, calibrated.metadata, calibrated.background, ctx.config.limits)
