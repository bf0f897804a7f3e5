"""The visit's events: what a persisted exposure contributes to its visit (sent by the
sinks) and the visit's summary (sent by the visit agent)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astropy.io import fits

from calibstream import __version__
from calibstream.io.inputs import resolve_input
from calibstream.io.outputs import read_summary
from calibstream.visit import DetectorOutcome, VisitSummary, outcome_from_summary
from streams.wire import cards_to_header

#: The exposure-outcome event's fields that make a DetectorOutcome.
OUTCOME_FIELDS = tuple(DetectorOutcome.__dataclass_fields__)


def exposure_outcome(
    folder: Path,
    visit: int | None,
    detector: int | None,
    uri: str | None,
    input_roots: Sequence[str] | None,
    shape: tuple[int, int] | None = None,
    first_guess: Sequence[Mapping[str, Any]] = (),
) -> dict | None:
    """The exposure-outcome event of the exposure in ``folder`` (as the folder says: a
    failure that left a calibration in place is the calibration's); None when its visit
    is unknown (a record that names no exposure). The first guess is the event's header
    cards (``first_guess``, a v4 zero-point event's), else read again from the input's
    IMAGE header; an input no longer there leaves the detector's points out (its visit's
    pointing is fitted from the others)."""
    summary = read_summary(folder)
    if summary is None:
        return None
    visit = summary.get("visit", visit)  # the folder's exposure's, if it names one
    if visit is None:
        return None
    if first_guess and shape is not None:
        guess: dict | None = dict(cards_to_header(first_guess))
    else:
        guess, guess_shape = _first_guess(uri, input_roots)
        shape = shape or guess_shape
    if shape is None:
        guess, fitted = None, None
    else:
        fitted = summary.get("header")
    outcome = outcome_from_summary(summary, guess, fitted, shape or (1, 1), detector=detector)
    return {**outcome.to_dict(), "exposure_id": outcome.expid, "visit": int(visit),
            "software_version": __version__}  # fmt: skip


def outcome_of_event(event: Mapping[str, Any]) -> DetectorOutcome:
    return DetectorOutcome.from_dict({name: event[name] for name in OUTCOME_FIELDS})


def visit_event(summary: VisitSummary) -> dict:
    """The visit-summary event: the summary's JSON fields, as summary.json holds them."""
    return {**summary.to_dict(), "exposure_id": None, "software_version": __version__}


def _first_guess(
    uri: str | None, input_roots: Sequence[str] | None
) -> tuple[dict | None, tuple[int, int] | None]:
    """The input's first-guess WCS header and its shape, or (None, None) if unreadable."""
    if uri is None:
        return None, None
    try:
        header = fits.getheader(resolve_input(uri, input_roots), "IMAGE")
        return dict(header), (int(header["NAXIS2"]), int(header["NAXIS1"]))
    except Exception:  # optional: the visit does without this detector's points
        return None, None
