"""``calibstream replay``: re-process an archived topic from an offset or a time.

The replay reads the topic itself (no consumer group: live workers are not
disturbed) and runs the chain on from that topic's stage in this process, with
the same steps as the agents, up to the persisted folders. Outputs are
byte-identical and written only when they differ, so replaying changes
nothing that is already right and never duplicates a folder or a ledger row.
Replayed results are not re-published: downstream topics keep one event per
processing of the live stream.

A start time is found by the records' own timestamps (a binary search per
partition, assuming timestamps grow with offsets as a single submitter's do),
never by the broker's time index, which the embedded broker gets wrong.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from calibstream.errors import ConfigError
from streams.kafka_admin import run_sync, topic_partitions
from streams.runner import Message, finish, run_chain
from streams.science import context
from streams.settings import Deployment

log = logging.getLogger("calibstream.replay")


@dataclass(frozen=True)
class Point:
    """A place in a partition: an offset, or a time (ms since the epoch)."""

    offset: int | None = None
    time_ms: int | None = None


def start_point(offset: int | None, iso_time: str | None) -> Point:
    if offset is not None:
        if offset < 0:
            raise ConfigError(f"offset must be >= 0, got {offset}", where="replay")
        return Point(offset=offset)
    if iso_time is None:
        raise ConfigError("give an offset or a time", where="replay")
    try:
        moment = dt.datetime.fromisoformat(iso_time)
    except ValueError as exc:
        raise ConfigError(f"not an ISO time: {iso_time!r}", where="replay") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return Point(time_ms=int(moment.timestamp() * 1000))


@dataclass
class ReplayReport:
    topic: str
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition: [first, end)
    records: int = 0
    outcomes: Counter = field(default_factory=Counter)  # output role -> count
    folders_before: int = 0
    folders_after: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.outcomes["failures"] + self.outcomes["deadletter"]

    def describe(self) -> str:
        ranges = ", ".join(f"p{p} [{a}, {b})" for p, (a, b) in sorted(self.ranges.items()))
        made = ", ".join(f"{role} {n}" for role, n in sorted(self.outcomes.items())) or "none"
        return (
            f"replayed {self.records} record(s) of {self.topic} ({ranges}) in "
            f"{self.seconds:.1f} s; produced: {made}; exposure folders "
            f"{self.folders_before} -> {self.folders_after}"
        )


def replay(
    deployment: Deployment,
    role: str = "exposures",
    start: Point = Point(offset=0),
    until: Point | None = None,
    partitions: list[int] | None = None,
) -> ReplayReport:
    return run_sync(lambda: areplay(deployment, role, start, until, partitions))


async def areplay(
    deployment: Deployment,
    role: str = "exposures",
    start: Point = Point(offset=0),
    until: Point | None = None,
    partitions: list[int] | None = None,
) -> ReplayReport:
    stream = deployment.stream
    topic = stream.topic(role)
    if deployment.topology.consumer_of(role) is None:
        raise ConfigError(f"no stage reads the topic role {role!r}", where="replay")
    ctx = context(deployment)
    report = ReplayReport(topic, folders_before=_folders(ctx.root))
    began = time.perf_counter()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stream.bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=stream.max_message_bytes,
        fetch_max_bytes=stream.max_message_bytes,
    )
    await consumer.start()
    try:
        known = await topic_partitions(stream.bootstrap, topic)
        if not known:
            raise ConfigError(f"topic {topic} does not exist", where="replay")
        tps = [TopicPartition(topic, p) for p in sorted(partitions or known)]
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            begin = await _offset_of(consumer, tp, start, first[tp], end[tp])
            stop = (
                end[tp]
                if until is None
                else await _offset_of(consumer, tp, until, first[tp], end[tp], after=True)
            )
            report.ranges[tp.partition] = (begin, max(begin, stop))
        for tp in tps:
            begin, stop = report.ranges[tp.partition]
            if begin < stop:
                await _replay_partition(consumer, tp, begin, stop, role, ctx, report)
        report.outcomes.update(o.role for o in finish(ctx))  # the visits it touched
    finally:
        await consumer.stop()
    report.folders_after = _folders(ctx.root)
    report.seconds = time.perf_counter() - began
    return report


async def _replay_partition(consumer, tp, begin, stop, role, ctx, report) -> None:
    consumer.seek(tp, begin)
    position = begin
    idle = 0
    while position < stop and idle < 10:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        records = batch.get(tp, [])
        idle = 0 if records else idle + 1
        for record in records:
            if record.offset >= stop:
                return
            position = record.offset + 1
            report.records += 1
            message = Message(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                record.value,
                record.timestamp,
            )
            agent = ctx.topology.consumer_of(role).agent
            report.outcomes.update(o.role for o in run_chain(ctx, agent, message))


async def _offset_of(consumer, tp, point: Point, first: int, end: int, after: bool = False) -> int:
    """The offset of ``point`` in ``tp``: the first record at or after a time (or, ``after``,
    the first record later than it), found by the records' own timestamps."""
    if point.offset is not None:
        return min(max(point.offset, first), end)
    lo, hi = first, end
    while lo < hi:
        mid = (lo + hi) // 2
        timestamp = await _timestamp_at(consumer, tp, mid)
        if timestamp is None:  # nothing readable there: the end is earlier than reported
            hi = mid
        elif timestamp < point.time_ms or (after and timestamp == point.time_ms):
            lo = mid + 1
        else:
            hi = mid
    return lo


async def _timestamp_at(consumer, tp, offset: int) -> int | None:
    consumer.seek(tp, offset)
    for _ in range(5):
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
        for record in batch.get(tp, []):
            return record.timestamp
    return None


def _folders(root: Path) -> int:
    base = root / "exposures"
    return (
        sum(1 for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if (base.is_dir())
        else 0
    )
