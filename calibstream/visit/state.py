"""A visit's state: its detectors' outcomes keyed by detector, folded one event at a time.

Keyed by detector, so a redelivered or replayed event of a detector changes nothing,
and the order the detectors arrive in does not matter. The state is JSON in a faust
table; :meth:`VisitState.to_dict` lists the outcomes by detector id, so the same state
is always the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from calibstream.camera import Camera
from calibstream.visit.outcome import DetectorOutcome


@dataclass(frozen=True)
class VisitState:
    """What is folded so far of one visit: the latest outcome of each detector."""

    visit: int
    outcomes: Mapping[int, DetectorOutcome]

    def __post_init__(self) -> None:
        """Keys must be the outcomes' own detectors; stored read-only in id order."""
        for key, outcome in self.outcomes.items():
            if key != outcome.detector:
                raise ValueError(f"visit {self.visit}: key {key} holds detector {outcome.detector}")
        ordered = {k: self.outcomes[k] for k in sorted(self.outcomes)}
        object.__setattr__(self, "outcomes", MappingProxyType(ordered))

    def __eq__(self, other: object) -> bool:
        """Equal visits and equal outcomes (a mapping proxy compares by content)."""
        if not isinstance(other, VisitState):
            return NotImplemented
        return self.visit == other.visit and dict(self.outcomes) == dict(other.outcomes)

    def __hash__(self) -> int:
        return hash((self.visit, tuple(self.outcomes.items())))

    def to_dict(self) -> dict:
        """JSON-safe and deterministic: outcomes as a list in detector order."""
        return {"visit": self.visit, "outcomes": [o.to_dict() for o in self.outcomes.values()]}

    @classmethod
    def from_dict(cls, d: Mapping) -> VisitState:
        """Inverse of :meth:`to_dict`; a detector listed twice is the data's fault."""
        if not isinstance(d, Mapping) or "visit" not in d or "outcomes" not in d:
            raise ValueError("visit state: expected a table with 'visit' and 'outcomes'")
        outcomes = [DetectorOutcome.from_dict(o) for o in d["outcomes"]]
        by_id = {o.detector: o for o in outcomes}
        if len(by_id) != len(outcomes):
            raise ValueError(f"visit state {d['visit']}: a detector is listed twice")
        return cls(visit=int(d["visit"]), outcomes=by_id)


def _replaces(new: DetectorOutcome, old: DetectorOutcome | None) -> bool:
    """Whether ``new`` takes ``old``'s place: a later outcome does, but a failure never
    replaces a calibration (ok or partial), as a failure never replaces a calibrated
    exposure's folder (:func:`calibstream.io.outputs.write_failure`)."""
    if old is None:
        return True
    return not (new.status == "failed" and old.status != "failed")


def fold(state: VisitState | None, visit: int, outcome: DetectorOutcome) -> VisitState:
    """``state`` with ``outcome`` folded in (pure; ``state`` is not changed).

    The same outcome twice is the same as once (keyed by detector). A later outcome of a
    detector replaces the earlier: a detector that failed (say, a broken copy of its
    file, or a machine fault outlasting the retries) and was then redriven or replayed
    to a calibration must count as calibrated, as its folder does. The exception mirrors
    the folders: a failure arriving after a calibration leaves the calibration.
    """
    if state is None:
        state = VisitState(visit=visit, outcomes={})
    elif state.visit != visit:
        raise ValueError(f"outcome for visit {visit} folded into the state of visit {state.visit}")
    old = state.outcomes.get(outcome.detector)
    if old == outcome or not _replaces(outcome, old):
        return state
    return VisitState(visit=visit, outcomes={**state.outcomes, outcome.detector: outcome})


def is_complete(state: VisitState, camera: Camera) -> bool:
    """Every detector the camera expects has reported (in whatever status)."""
    return camera.expected <= set(state.outcomes)
