"""The generic runner: one consumed message through its stage, and on down the chain.

Every stage runs the same way (:func:`run`): decode the input as the stage's subject,
call the stage's ``step`` (its module in ``agents/``), encode what it returns. Every
outcome is a message: the next event; a failure event, decided by the one failure
policy (:func:`calibstream.failures.failure_of`); or a dead letter (bytes that are not
an event of the expected subject). So a step never raises on bad input, and an agent
never stalls.

:func:`run_chain` takes the outputs on through their consumers' steps in the same
call: the live worker for the stages whose partitions it owns, replay and the batch
command for all of them. Stream, replay and batch therefore run the same code on the
same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibstream import __version__
from calibstream.astrometry.refcat import ShardCache
from calibstream.config import Config
from calibstream.failures import TransientFailure, failure_of
from streams import events, wire
from streams.codec import CodecError, decode, encode
from streams.readmodel import ReadModel
from streams.settings import StreamSettings
from streams.topology import DEADLETTER, FAILURES, PARKED, Stage, Topology
from streams.visit_store import FolderVisitStore, VisitStore

log = logging.getLogger("calibstream.runner")


@dataclass(frozen=True)
class Message:
    """A consumed record, as much of it as a step needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    @classmethod
    def of(cls, record: Any) -> Message:
        """The message of a consumed record (faust's: a timestamp in seconds, or None)."""
        stamp = record.timestamp
        return cls(record.topic, record.partition, record.offset, record.key, record.value,
                   None if stamp is None else int(stamp * 1000))  # fmt: skip


@dataclass(frozen=True)
class Output:
    """A record to produce: the topic role (``detections``, ``failures``, ...), key, value.

    ``handled``: its consumer's step already ran on it in the same call (see
    :func:`run_chain`); that agent only acknowledges it.
    """

    role: str
    key: bytes | None
    value: bytes
    handled: bool = False


@dataclass
class Context:
    """What the steps share in one process: settings, science configuration, the read
    model, the reference-shard cache and the topology."""

    settings: StreamSettings
    config: Config
    readmodel: ReadModel
    cache: ShardCache | None
    topology: Topology
    #: The visit agent's state (a faust table in the live worker); None: the visits'
    #: folders under the output root (the batch command, replay).
    visits: VisitStore = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.visits is None:
            self.visits = FolderVisitStore(self.root)

    @property
    def root(self) -> Path:
        return Path(self.settings.output_root)

    @property
    def refcat(self) -> Path:
        return Path(self.settings.refcat)

    @property
    def photometry_refcat(self) -> Path | None:
        store = self.settings.photometry_refcat
        return None if store is None else Path(store)


def run(ctx: Context, agent: str, message: Message) -> list[Output]:
    """One message through one agent's step; every outcome is a list of records to produce,
    but for a fault of the machine, which raises :class:`TransientFailure` (nothing was
    recorded: the caller retries the same message)."""
    stage = ctx.topology.stage(agent)
    try:
        if not message.value:
            raise CodecError("the record has no value (a tombstone or an empty record)")
        event = decode(message.value, expected_subject=stage.subject).record
    except CodecError as exc:
        log.warning("%s: %s to the dead-letter topic: %s", agent, _where(message), exc)
        ctx.readmodel.incr(f"deadletter:{agent}")
        return [_dead_letter(message, exc)]
    start = time.perf_counter()
    try:
        return _counted(ctx, stage, event)
    except Exception as exc:  # the failure policy decides what it becomes
        ctx.readmodel.observe("stage_seconds", agent, time.perf_counter() - start)
        failure = failure_of(exc, agent)
        if failure.transient:  # the machine's fault: the caller retries, then parks
            raise TransientFailure(failure.stage, failure.reason) from exc
        if stage.consumes == FAILURES:  # never answer a failure with a failure
            log.exception("%s: cannot persist failure %s", agent, _where(message))
            return []
        if failure.kind == "internal":
            log.exception("%s: unexpected error on %s", agent, _where(message))
        ctx.readmodel.incr(f"failed:{failure.stage}")
        return [failure_output(agent, exc, message, event)]


def _counted(ctx: Context, stage: Stage, event: Mapping[str, Any]) -> list[Output]:
    """``stage``'s step on ``event``, its duration and success counted for /metrics (a
    failure is counted by the caller, which decides what it becomes)."""
    start = time.perf_counter()
    record = stage.step(ctx, event)
    ctx.readmodel.observe("stage_seconds", stage.agent, time.perf_counter() - start)
    ctx.readmodel.incr(f"processed:{stage.agent}")
    if record is None or stage.produces is None:
        return []
    return [encoded(ctx, stage, record)]


def encoded(ctx: Context, stage: Stage, record: Mapping[str, Any]) -> Output:
    """``record``, made by ``stage``, as the message it sends."""
    assert stage.produces is not None and stage.produces_subject is not None
    key = events.exposure_key(record[stage.key])
    value = events.encode_event(stage.produces_subject, record, ctx.settings)
    return Output(stage.produces, key, value)


def run_chain(
    ctx: Context, agent: str, message: Message, onward: Collection[str] | None = None
) -> list[Output]:
    """:func:`run`, then each output through its consumer's step right here, and so on
    down the chain: through every stage when ``onward`` is None (replay, the batch
    command), else through the agents named in ``onward`` (the live worker: those whose
    input partition it owns).

    Every output is returned, to be published or counted; the ones taken on here come
    back ``handled``. In the live worker a step that fails ahead is not answered here:
    its event goes out unhandled and its agent runs it as usual, so the failure event
    names the offset of the event it failed on.
    """
    done: list[Output] = []
    todo = [(output, message) for output in reversed(run(ctx, agent, message))]
    while todo:
        output, parent = todo.pop()
        stage = ctx.topology.consumer_of(output.role)
        if stage is None or (onward is not None and stage.agent not in onward):
            done.append(output)
            continue
        child = Message(
            output.role, parent.partition, parent.offset, output.key, output.value,
            parent.timestamp_ms,
        )  # fmt: skip
        outputs = run(ctx, stage.agent, child) if onward is None else _ahead(ctx, stage, child)
        if outputs is None:
            done.append(output)
            continue
        done.append(dataclasses.replace(output, handled=True))
        todo += [(o, child) for o in reversed(outputs)]
    return done


def finish(ctx: Context) -> list[Output]:
    """The end of a batch or a replay, when nothing more is coming: the keys of each
    stateful stage this run touched, taken past their timeout (a visit with detectors
    missing is summarised as it stands, as the live worker does after a while)."""
    outputs = []
    for stage in ctx.topology:
        if stage.stateful:
            timeout = importlib.import_module(stage.module).timeout
            for key in ctx.visits.visits():
                record = timeout(ctx, key, math.inf)
                if record is not None:
                    outputs.append(encoded(ctx, stage, record))
    return outputs


def _ahead(ctx: Context, stage: Stage, message: Message) -> list[Output] | None:
    """``stage``'s step on an event just made, or None when it fails (left to its agent)."""
    try:
        event = decode(message.value, expected_subject=stage.subject).record
        return _counted(ctx, stage, event)
    except Exception as exc:
        log.info("%s: left to its agent (%s: %s)", stage.agent, type(exc).__name__, exc)
        return None


def failure_output(
    agent: str, exc: BaseException, message: Message, event: Mapping[str, Any] | None = None
) -> Output:
    """The failure event of ``agent`` on ``message`` (``event``: the decoded input, if any)."""
    if event is None:
        try:
            event = decode(message.value or b"").record
        except CodecError:
            event = {}
    original = event.get("input", event)  # a downstream event keeps its input event whole
    if not isinstance(original, Mapping):  # a failure event keeps its input as bytes
        original = {}
    failure = failure_of(exc, agent)
    metadata = None
    if failure.stage != "read":  # the metadata, unless the file could not be read
        metadata = event.get("metadata")
        if metadata is None and "exposure_id" in original:
            metadata = wire.input_metadata(original)
    record = events.failure_event(
        failure,
        input=message.value or b"",
        input_key=message.key,
        input_topic=message.topic,
        input_partition=message.partition,
        input_offset=message.offset,
        exposure_id=event.get("exposure_id"),
        uri=original.get("uri"),
        metadata=None if metadata is None else wire.metadata_from_record(metadata),
    )
    return Output(FAILURES, message.key, encode("failure", record))


def _dead_letter(message: Message, exc: BaseException) -> Output:
    record = events.dead_letter_event(
        message.value or b"",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        error=exc,
        key=message.key,
        timestamp_ms=message.timestamp_ms,
    )
    return Output(DEADLETTER, message.key, encode("dead_letter", record))


def parked_output(agent: str, message: Message, reason: str, attempts: int) -> Output:
    """The parked record of a message ``agent`` could not take for a fault of the machine:
    where the record is (it stays in its topic), its digest, and why."""
    value = message.value or b""
    record = {
        "agent": agent,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "length": len(value),
        "sha256": hashlib.sha256(value).digest(),
        "reason": reason,
        "attempts": attempts,
        "parked_ms": events.now_ms(),
        "software_version": __version__,
    }
    return Output(PARKED, message.key, encode("parked", record))


def _where(message: Message) -> str:
    return f"{message.topic}[{message.partition}]@{message.offset}"
