"""``calibstream redrive``: send parked records back to their topics once the fault is fixed.

A parked record names a record a stage could not take for a fault of the machine (see
:mod:`streams.delivery`); the record itself stays in its topic. Redrive reads the parked
topic from where the last redrive stopped (its own consumer group's committed offsets),
fetches each named record, checks its digest, and produces it again to its topic and
partition, where its stage takes it as any other. A record no longer in its topic (past
retention) or with other bytes is reported and skipped. Running it twice sends nothing
twice: each parked record's offset is committed once its record is delivered.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.codec import CodecError, decode
from streams.kafka_admin import run_sync, topic_partitions
from streams.readmodel import RedisReadModel
from streams.settings import Deployment, StreamSettings
from streams.topology import PARKED
from streams.worker import producer

log = logging.getLogger("calibstream.redrive")


@dataclass
class RedriveReport:
    redriven: list[tuple[str, int, int]] = field(default_factory=list)  # topic, partition, offset
    missing: list[str] = field(default_factory=list)  # why each skipped record was skipped
    agents: list[str] = field(default_factory=list)  # the stage that parked each redriven one

    def describe(self) -> str:
        text = f"redrove {len(self.redriven)} parked record(s)"
        return text + (
            f"; skipped {len(self.missing)}: " + "; ".join(self.missing) if self.missing else ""
        )


def redrive(deployment: Deployment) -> RedriveReport:
    """Redrive every parked record not redriven yet; the dashboard's parked count drops."""
    report = run_sync(lambda: aredrive(deployment.stream))
    readmodel = RedisReadModel(deployment.stream.redis)
    for agent in report.agents:
        readmodel.incr(f"parked_now:{agent}", -1)
    return report


async def aredrive(stream: StreamSettings) -> RedriveReport:
    report = RedriveReport()
    topic = stream.topic(PARKED)
    partitions = await topic_partitions(stream.bootstrap, topic)
    parked = _consumer(stream, group_id=stream.app_id + "-redrive")
    records = _consumer(stream, group_id=None)
    send = producer(stream)
    await parked.start()
    await records.start()
    await send.start()
    try:
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            parked.assign([tp])
            end = (await parked.end_offsets([tp]))[tp]
            committed = await parked.committed(tp)
            position = committed if committed is not None else (
                await parked.beginning_offsets([tp]))[tp]  # fmt: skip
            while position < end:
                batch = await parked.getmany(tp, timeout_ms=2000)
                for record in batch.get(tp, []):
                    await _redrive_one(record.value, records, send, report)
                    position = record.offset + 1
                    await parked.commit({tp: position})
                if not batch:
                    break
    finally:
        await send.stop()
        await records.stop()
        await parked.stop()
    return report


async def _redrive_one(value: bytes, records, send, report: RedriveReport) -> None:
    """Fetch the record a parked record names, check it, and produce it again."""
    try:
        note = decode(value, expected_subject="parked").record
    except CodecError as exc:
        report.missing.append(f"not a parked record ({exc})")
        return
    where = f"{note['topic']}[{note['partition']}]@{note['offset']}"
    tp = TopicPartition(note["topic"], note["partition"])
    records.assign([tp])
    records.seek(tp, note["offset"])
    batch = await records.getmany(tp, timeout_ms=5000, max_records=1)
    found = [r for r in batch.get(tp, []) if r.offset == note["offset"]]
    if not found or hashlib.sha256(found[0].value or b"").digest() != note["sha256"]:
        report.missing.append(f"{where} is no longer in its topic as parked")
        return
    await send.send_and_wait(
        note["topic"], found[0].value, key=found[0].key, partition=note["partition"]
    )
    log.info("redrove %s (parked by %s: %s)", where, note["agent"], note["reason"])
    report.redriven.append((note["topic"], note["partition"], note["offset"]))
    report.agents.append(note["agent"])


def _consumer(stream: StreamSettings, group_id: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=stream.bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=stream.max_message_bytes,
        fetch_max_bytes=stream.max_message_bytes,
    )
