"""Consumer lag: how far the workers' group is behind the end of each topic it reads.

Lag per partition = the topic's end offset - the group's committed offset (the next record
it will read); a partition the group has never committed counts from the log's start.
Read from the broker by a long-lived admin client and a consumer that joins no group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from streams.settings import StreamSettings
from streams.topology import CALIBRATE, Topology

__all__ = ["LagProbe", "PartitionLag"]

log = logging.getLogger("calibstream.lag")


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end: int
    committed: int | None  # None: the group has not committed on this partition
    lag: int

    def as_dict(self) -> dict:
        return asdict(self)


class LagProbe:
    """Asks the broker for the group's lag; ``await probe.lag()`` as often as wanted."""

    def __init__(
        self, stream: StreamSettings, topology: Topology = CALIBRATE, timeout_s: float = 5.0
    ) -> None:
        self.stream = stream
        self.group = stream.app_id
        self.topics = [stream.topic(role) for role in topology.consumed]  # the agents' inputs
        self.timeout_ms = int(timeout_s * 1000)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect (aiokafka's clients are made inside the running loop)."""
        if self._admin is not None:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.stream.bootstrap,
            request_timeout_ms=self.timeout_ms,
            client_id="calibstream-lag",
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.stream.bootstrap,
            enable_auto_commit=False,
            request_timeout_ms=self.timeout_ms,
            client_id="calibstream-lag",
        )
        try:
            await admin.start()
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):  # half-started: close what can be closed
                await consumer.stop()
                await admin.close()
            raise
        self._admin, self._consumer = admin, consumer

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def _partitions(self, admin: AIOKafkaAdminClient) -> list[TopicPartition]:
        described = await admin.describe_topics(self.topics)
        return sorted(
            TopicPartition(topic["topic"], part["partition"])
            for topic in described
            if topic["error_code"] == 0
            for part in topic["partitions"]
        )

    async def _committed(
        self, admin: AIOKafkaAdminClient, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets, retrying what the broker calls retriable (Apache
        Kafka answers "coordinator not available" while it creates its offsets topic)."""
        deadline = time.monotonic() + self.timeout_ms / 1000
        while True:
            try:
                return await admin.list_consumer_group_offsets(self.group, partitions=partitions)
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def lag(self) -> list[PartitionLag]:
        """Every partition of the consumed topics, with its lag (raises on a broker error)."""
        await self.start()
        admin, consumer = self._admin, self._consumer
        assert admin is not None and consumer is not None
        partitions = await self._partitions(admin)
        if not partitions:
            return []
        committed = await self._committed(admin, partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        rows = []
        for tp in partitions:
            meta = committed.get(tp)
            offset = None if meta is None or meta.offset < 0 else int(meta.offset)
            end = int(ends[tp])
            base = starts[tp] if offset is None else offset
            rows.append(PartitionLag(tp.topic, tp.partition, end, offset, max(0, end - base)))
        return rows
