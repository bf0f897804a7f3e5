"""The service's topology, declared once: each stage, the topic it reads, what it makes.

Everything that names topics or agents derives from this table: topic creation, the
faust agents, the chain a worker runs ahead, replay's "run on from this topic", the
``--topic`` choices, consumer lag and the README's table. Adding a stage is one row and
its module.

A stage's code is named by its module (``agents.detect``), which defines ``step(ctx,
event) -> record | None``: the table stays plain data (picklable into the science
processes), and no import circle ties it to the agents.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

#: Where the failure policy sends what it decides (see :mod:`streams.runner`): the data's
#: faults, records that are no event, and records the machine's faults kept from their
#: stage past every retry (``calibstream redrive`` sends them back).
FAILURES = "failures"
DEADLETTER = "deadletter"
PARKED = "parked"
#: What each persisted exposure contributes to its visit (the sinks send it, keyed by visit).
OUTCOMES = "outcomes"


@dataclass(frozen=True)
class Stage:
    """One agent: it consumes ``consumes`` (events of ``subject``) and sends one event of
    ``produces_subject`` to ``produces`` per input (or nothing, when ``produces`` is None)."""

    agent: str
    consumes: str  # topic role (topic name = prefix + role)
    subject: str  # schema subject of its input events
    produces: str | None
    produces_subject: str | None
    module: str  # defines ``step``
    concurrency: bool = True  # False: one event at a time, whatever [stream] concurrency says
    #: The field of the produced record that keys its message.
    key: str = "exposure_id"
    #: Keeps state across events (in a faust table keyed as its input, whose messages are
    #: then partitioned by key, not sent on in their input's partition); runs in the
    #: worker beside its table, never ahead in another stage's science call.
    stateful: bool = False

    @property
    def step(self) -> Callable[..., Any]:
        return _step_of(self.module)


@functools.cache
def _step_of(module: str) -> Callable[..., Any]:
    return importlib.import_module(module).step


@dataclass(frozen=True)
class Topology:
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        agents = [s.agent for s in self.stages]
        inputs = [s.consumes for s in self.stages]
        for name, values in (("agent", agents), ("input topic", inputs)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"topology: {name} named twice: {repeated}")

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    @property
    def roles(self) -> tuple[str, ...]:
        """Every topic role, in the order of the chain (the policy's topics last)."""
        seen: dict[str, None] = {}
        for stage in self.stages:
            seen[stage.consumes] = None
            if stage.produces is not None:
                seen[stage.produces] = None
        for role in (FAILURES, DEADLETTER, PARKED):
            seen.pop(role, None)
            seen[role] = None
        return tuple(seen)

    @property
    def consumed(self) -> tuple[str, ...]:
        """The roles some agent reads (what consumer lag reports on)."""
        return tuple(s.consumes for s in self.stages)

    @property
    def keyed_roles(self) -> frozenset[str]:
        """The roles a stateful stage reads or sends: partitioned by their key."""
        stateful = [s for s in self.stages if s.stateful]
        return frozenset(s.consumes for s in stateful) | {
            s.produces for s in stateful if s.produces is not None
        }

    def stage(self, agent: str) -> Stage:
        for stage in self.stages:
            if stage.agent == agent:
                return stage
        raise KeyError(f"no stage named {agent!r}")

    def consumer_of(self, role: str) -> Stage | None:
        """The stage that reads ``role`` (None for an end topic such as the dead letters)."""
        return next((s for s in self.stages if s.consumes == role), None)

    def table(self) -> str:
        """The README's table of the topology (Markdown)."""
        rows = ["| agent | reads (subject) | sends (subject) |", "|---|---|---|"]
        for s in self.stages:
            sends = "—" if s.produces is None else f"`{s.produces}` ({s.produces_subject})"
            rows.append(f"| `{s.agent}` | `{s.consumes}` ({s.subject}) | {sends} |")
        return "\n".join(rows)


#: CalibrateTask as a stream.
CALIBRATE = Topology(
    (
        Stage(
            "detect", "exposures", "characterized_exposure", "detections", "detection",
            "agents.detect",
        ),
        Stage("astrometry", "detections", "detection", "matches", "match", "agents.astrometry"),
        Stage("photometry", "matches", "match", "zeropoints", "zeropoint", "agents.photometry"),
        Stage(
            "sink", "zeropoints", "zeropoint", OUTCOMES, "exposure_outcome", "agents.sink",
            concurrency=False, key="visit",
        ),
        Stage(
            "sink-failures", FAILURES, "failure", OUTCOMES, "exposure_outcome",
            "agents.sink_failures", concurrency=False, key="visit",
        ),
        Stage(
            "visit", OUTCOMES, "exposure_outcome", "visits", "visit_summary", "agents.visit",
            concurrency=False, key="visit", stateful=True,
        ),
    )
)  # fmt: skip
