"""The visit: a camera's detectors of one exposure folded into one summary (issue 19).

Pure functions over dataclasses: :func:`outcome_from_summary` makes a detector's
:class:`DetectorOutcome` from its exposure's summary.json and WCS, :func:`fold` adds it
to the visit's :class:`VisitState` (keyed by detector, so redeliveries change nothing),
:func:`is_complete` says whether every expected detector reported, and
:func:`summarize` / :func:`summary_json` give the :class:`VisitSummary` and its
canonical bytes. The stream side (a faust table keyed by visit) holds the state as
:meth:`VisitState.to_dict` JSON. Defined in :mod:`.outcome`, :mod:`.state`,
:mod:`.pointing` and :mod:`.summary`; re-exported here as the visit's one API.
"""

from calibstream.visit.outcome import DetectorOutcome, outcome_from_summary, wcs_points
from calibstream.visit.pointing import PointingFit, fit_pointing
from calibstream.visit.state import VisitState, fold, is_complete
from calibstream.visit.summary import VisitSummary, summarize, summary_json

__all__ = [
    "DetectorOutcome",
    "PointingFit",
    "VisitState",
    "VisitSummary",
    "fit_pointing",
    "fold",
    "is_complete",
    "outcome_from_summary",
    "summarize",
    "summary_json",
    "wcs_points",
]
