"""Consumer lag from the broker (``streams.lag.LagProbe``), on both brokers: records not yet
committed by the workers' group count, committed ones do not, per topic and partition."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from conftest_services import *  # noqa: F403 (the fixtures: tansu, kafka)

from streams.kafka_admin import acreate_topics
from streams.lag import LagProbe
from streams.settings import Deployment, StreamSettings
from streams.topology import CALIBRATE

pytestmark = pytest.mark.slow


@pytest.fixture(params=["tansu", "kafka"])
def broker(request):
    return request.getfixturevalue(request.param)


def test_lag_counts_what_the_group_has_not_committed(broker):
    prefix = f"lag{uuid.uuid4().hex[:8]}."
    stream = StreamSettings(broker=broker.url, topic_prefix=prefix, app_id=prefix + "app")

    async def scenario() -> tuple[list, list, list]:
        await acreate_topics(stream.bootstrap, Deployment(stream).topics)
        exposures = stream.topic("exposures")
        producer = AIOKafkaProducer(bootstrap_servers=stream.bootstrap, max_batch_size=1)
        await producer.start()
        try:
            for i in range(5):  # 3 to partition 1, 2 to partition 2
                await producer.send_and_wait(exposures, b"x", partition=1 if i < 3 else 2)
        finally:
            await producer.stop()
        probe = LagProbe(stream)
        try:
            before = await probe.lag()
            # The group commits 2 of partition 1's records (the next to read is offset 2).
            consumer = AIOKafkaConsumer(
                bootstrap_servers=stream.bootstrap,
                group_id=stream.app_id,
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                tp = TopicPartition(exposures, 1)
                consumer.assign([tp])
                await consumer.commit({tp: OffsetAndMetadata(2, "")})
            finally:
                await consumer.stop()
            after = await probe.lag()
        finally:
            await probe.close()
        return before, after

    before, after = asyncio.run(scenario())
    consumed = {stream.topic(role) for role in CALIBRATE.consumed}
    assert {row.topic for row in before} == consumed  # every topic the workers read
    assert len(before) == len(consumed) * stream.partitions  # every partition of each

    def lags(rows) -> dict:
        return {(r.topic[len(prefix) :], r.partition): (r.committed, r.lag) for r in rows if r.lag}

    assert lags(before) == {("exposures", 1): (None, 3), ("exposures", 2): (None, 2)}
    assert lags(after) == {("exposures", 1): (2, 1), ("exposures", 2): (None, 2)}
