"""A visit's folder, ``ROOT/visits/<VISIT>/``: written whole and atomically, as an
exposure's is (:func:`calibstream.io.outputs.publish_folder`), the same state always the
same bytes.

- ``detectors.json``: the visit's state, every detector's outcome so far
  (:meth:`calibstream.visit.VisitState.to_dict`);
- ``summary.json``: the visit's summary (:func:`calibstream.visit.summary_json`), once
  every expected detector has reported or the visit has timed out.

The folder is the visit's state for the batch command and replay, and the truth the
read model is rebuilt from.
"""

from __future__ import annotations

import json
from pathlib import Path

from calibstream.io.outputs import publish_folder
from calibstream.visit import VisitState, VisitSummary, summary_json


def visit_dir(root: Path, visit: int) -> Path:
    return Path(root) / "visits" / str(int(visit))


def write_visit(root: Path, state: VisitState, summary: VisitSummary | None) -> Path:
    """``state`` (and ``summary``, when there is one) as the visit's folder."""
    text = json.dumps(state.to_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"
    files = {"detectors.json": text.encode()}
    if summary is not None:
        files["summary.json"] = summary_json(summary)
    return publish_folder(visit_dir(root, state.visit), files)


def read_visit(root: Path, visit: int) -> tuple[VisitState | None, dict | None]:
    """The visit's state and summary as its folder holds them (None: not there)."""
    folder = visit_dir(root, visit)
    try:
        state = VisitState.from_dict(json.loads((folder / "detectors.json").read_bytes()))
    except FileNotFoundError:
        return None, None
    try:
        summary = json.loads((folder / "summary.json").read_bytes())
    except FileNotFoundError:
        summary = None
    return state, summary
