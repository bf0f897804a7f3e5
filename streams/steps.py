"""What each agent does to one message, as a plain function: bytes in, messages out.

A step decodes its input, runs the science core, and encodes what goes
downstream. Every outcome is a message: the next event, a failure event (a
calibstream error, or any other exception, on a decodable input), or a
dead-letter record (bytes that are not an event of the expected subject). So
a step never raises on bad input and an agent never stalls.

Steps run in the science pool's processes (see :mod:`streams.science`): each
holds one :class:`Context` (the configuration, the Redis read model) made
once per process.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibstream.calibrate import calibrate_photometry, frame_of, solve_astrometry
from calibstream.config import Config
from calibstream.detection.pipeline import measure_exposure
from calibstream.errors import CalibstreamError, stage
from calibstream.io.exposure import read_exposure
from calibstream.io.outputs import persisted_exposure, write_calibration, write_failure
from streams import events
from streams.codec import CodecError, Decoded, decode, encode
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings

log = logging.getLogger("calibstream.steps")


@dataclass(frozen=True)
class Message:
    """A consumed record, as much of it as a step needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Output:
    """A record to produce: the topic role (``detections``, ``failures``, ...), key, value.

    ``handled``: its consumer's step already ran on it in the same call (see
    :func:`run_chained`); that agent only acknowledges it.
    """

    role: str
    key: bytes | None
    value: bytes
    handled: bool = False


@dataclass
class Context:
    """Per-process state of the science pool."""

    settings: StreamSettings
    config: Config
    readmodel: RedisReadModel

    @property
    def root(self) -> Path:
        return Path(self.settings.output_root)


# ---------------------------------------------------------------- the science steps


def detect(ctx: Context, event: Mapping[str, Any]) -> list[Output]:
    """Characterized exposure → detection: read the file, detect and measure deep."""
    start = time.perf_counter()
    with stage("read"):
        exposure = read_exposure(Path(event["uri"]))
    read = time.perf_counter() - start
    with stage("detect"):
        measurement = measure_exposure(exposure, ctx.config)
    record = events.detection_event(
        event,
        frame_of(exposure),
        measurement.catalog,
        measurement.background,
        {"read": read, **measurement.timings},
    )
    return [_event("detections", "detection", record)]


def astrometry(ctx: Context, event: Mapping[str, Any]) -> list[Output]:
    """Detection → match: references in the footprint, the TAN-SIP fit, matches."""
    frame, catalog = events.detection_inputs(event)
    with stage("astrometry"):
        solution = solve_astrometry(
            frame, catalog, Path(ctx.settings.refcat), ctx.config, ctx.readmodel
        )
    return [_event("matches", "match", events.match_event(event, solution, solution.timings))]


def photometry(ctx: Context, event: Mapping[str, Any]) -> list[Output]:
    """Match → zero-point: the photometric calibration and everything the sink writes."""
    frame, catalog, refs, matches = events.match_inputs(event)
    store = ctx.settings.photometry_refcat
    with stage("photometry"):
        result, catalog, timings = calibrate_photometry(
            frame,
            catalog,
            refs,
            matches,
            ctx.config,
            None if store is None else Path(store),
            ctx.readmodel,
        )
    calibrated = persisted_exposure(
        frame.metadata,
        frame.wcs_header,
        event["astrms_mas"],
        event["astnmatch"],
        result,
        catalog,
        refs,
        matches,
        events.background_from_record(event["background"]),
    )
    record = events.zeropoint_event(event, calibrated, result, timings)
    return [_event("zeropoints", "zeropoint", record)]


def persist(ctx: Context, event: Mapping[str, Any]) -> list[Output]:
    """Zero-point → the exposure's folder (atomic, idempotent), its ledger entry and metrics."""
    calibrated = events.calibrated_from_event(event)
    folder = write_calibration(calibrated, ctx.root)
    expid = int(event["exposure_id"])
    done_ms = events.now_ms()
    latency_s = (done_ms - event["input"]["submitted_ms"]) / 1000
    ctx.readmodel.observe("latency_seconds", "persisted", latency_s)
    ctx.readmodel.record_persisted(expid, {"status": "ok", "folder": str(folder)})
    ctx.readmodel.record_metrics(
        expid,
        {
            "status": "ok",
            **event["metadata"],
            "magzero": event["magzero"],
            "magzero_err": event["magzero_err"],
            "magzero_rms": event["magzero_rms"],
            "magzero_nobj": event["magzero_nobj"],
            "astrms_mas": event["astrms_mas"],
            "astnmatch": event["astnmatch"],
            "n_sources": event["n_sources"],
            "submitted_ms": event["input"]["submitted_ms"],
            "persisted_ms": done_ms,
            "latency_s": latency_s,
            "timings": event["timings"],
        },
    )
    return []


def persist_failure(ctx: Context, event: Mapping[str, Any]) -> list[Output]:
    """Failure → the exposure's failure summary (never over a complete folder), and metrics."""
    expid = event["exposure_id"]
    if expid is None:  # no exposure to write a summary for: the failure event is the record
        return []
    metadata = None if event["metadata"] is None else events.metadata_from_record(event["metadata"])
    extra = {} if event["uri"] is None else {"input": event["uri"]}
    write_failure(ctx.root, expid, event["stage"], event["error"], event["reason"], metadata, extra)
    ctx.readmodel.record_metrics(
        expid,
        {
            "status": "failed",
            **(event["metadata"] or {"expid": expid}),
            "stage": event["stage"],
            "error": event["error"],
            "reason": event["reason"],
            "persisted_ms": events.now_ms(),
        },
    )
    return []


# ---------------------------------------------------------------- running a step on a message

Step = Callable[[Context, Mapping[str, Any]], list[Output]]

#: agent name -> (subject of its input events, the step)
STEPS: dict[str, tuple[str, Step]] = {
    "detect": ("characterized_exposure", detect),
    "astrometry": ("detection", astrometry),
    "photometry": ("match", photometry),
    "sink": ("zeropoint", persist),
    "sink-failures": ("failure", persist_failure),
}


def run(ctx: Context, agent: str, message: Message) -> list[Output]:
    """One message through one agent's step; every outcome is a list of records to produce."""
    subject, step = STEPS[agent]
    try:
        decoded: Decoded = decode(message.value, expected_subject=subject)
    except CodecError as exc:
        log.warning(
            "%s: %s[%d]@%d to the dead-letter topic: %s",
            agent,
            message.topic,
            message.partition,
            message.offset,
            exc,
        )
        ctx.readmodel.incr(f"deadletter:{agent}")
        return [_dead_letter(message, exc)]
    event = decoded.record
    start = time.perf_counter()
    try:
        return _counted(ctx, agent, step, event)
    except Exception as exc:  # a calibstream error, or a bug: either way a failure event
        ctx.readmodel.observe("stage_seconds", agent, time.perf_counter() - start)
        if agent == "sink-failures":  # never answer a failure with a failure
            log.exception(
                "sink: cannot persist failure %s[%d]@%d",
                message.topic,
                message.partition,
                message.offset,
            )
            return []
        if not isinstance(exc, CalibstreamError):
            log.exception(
                "%s: unexpected error on %s[%d]@%d",
                agent,
                message.topic,
                message.partition,
                message.offset,
            )
        ctx.readmodel.incr(f"failed:{getattr(exc, 'stage', None) or agent}")
        return [failure_output(agent, exc, message, event)]


def _counted(ctx: Context, agent: str, step: Step, event: Mapping[str, Any]) -> list[Output]:
    """``step`` on ``event``, its duration and success counted for /metrics (a failure is
    counted by the caller, which decides what it becomes)."""
    start = time.perf_counter()
    outputs = step(ctx, event)
    ctx.readmodel.observe("stage_seconds", agent, time.perf_counter() - start)
    ctx.readmodel.incr(f"processed:{agent}")
    return outputs


#: The agent that consumes each role's events down the chain (failures and dead letters
#: are left to their own agents).
NEXT_AGENT: dict[str, str] = {
    "detections": "astrometry",
    "matches": "photometry",
    "zeropoints": "sink",
}


def run_chained(
    ctx: Context, agent: str, message: Message, onward: Collection[str]
) -> list[Output]:
    """:func:`run`, then each output through its consumer's step right here when that
    agent is in ``onward`` (the worker owns its partition), and so on down the chain.

    The events are all still returned, to be published: the topics stay complete for
    replay and other readers; the ones taken on here come back ``handled``. A step that
    fails here (or an event it cannot read) is not answered here: its event goes out
    unhandled and its agent runs it as usual, so the failure event names the offset of
    the event it failed on.
    """
    done: list[Output] = []
    todo = list(reversed(run(ctx, agent, message)))
    while todo:
        output = todo.pop()
        follow = NEXT_AGENT.get(output.role)
        outputs = None if follow not in onward else _step_ahead(ctx, follow, output)
        if outputs is None:
            done.append(output)
            continue
        done.append(dataclasses.replace(output, handled=True))
        todo += reversed(outputs)
    return done


def _step_ahead(ctx: Context, agent: str, output: Output) -> list[Output] | None:
    """``agent``'s step on an event just made, or None when it fails (left to the agent)."""
    subject, step = STEPS[agent]
    try:
        return _counted(ctx, agent, step, decode(output.value, expected_subject=subject).record)
    except Exception as exc:
        log.info("%s: left to its agent (%s: %s)", agent, type(exc).__name__, exc)
        return None


def _event(role: str, subject: str, record: Mapping[str, Any]) -> Output:
    return Output(role, events.exposure_key(record["exposure_id"]), encode(subject, record))


def failure_output(
    agent: str, exc: BaseException, message: Message, event: Mapping[str, Any] | None = None
) -> Output:
    """The failure event of ``agent`` on ``message`` (``event``: the decoded input, if any)."""
    if event is None:
        try:
            event = decode(message.value).record
        except CodecError:
            event = {}
    original = event.get("input", event)  # a downstream event keeps its input event whole
    if not isinstance(original, Mapping):  # a failure event keeps its input as bytes
        original = {}
    metadata = None
    # As the batch command: the metadata, unless the file could not be read.
    if getattr(exc, "stage", None) != "read":
        metadata = event.get("metadata")
        if metadata is None and "exposure_id" in original:
            metadata = events.input_metadata(original)
    record = events.failure_event(
        getattr(exc, "stage", None) or agent,
        exc,
        input=message.value,
        input_key=message.key,
        input_topic=message.topic,
        input_partition=message.partition,
        input_offset=message.offset,
        exposure_id=event.get("exposure_id"),
        uri=original.get("uri"),
        metadata=None if metadata is None else events.metadata_from_record(metadata),
    )
    return Output("failures", message.key, encode("failure", record))


def _dead_letter(message: Message, exc: BaseException) -> Output:
    record = events.dead_letter_event(
        message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        error=exc,
        key=message.key,
        timestamp_ms=message.timestamp_ms,
    )
    return Output("deadletter", message.key, encode("dead_letter", record))
