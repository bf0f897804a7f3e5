"""``calibstream worker``: one faust worker of the consumer group, and ``submit``.

Several workers with the same ``app_id`` split the partitions between them.
``submit`` spreads the exposures over the partitions in turn (not by key: the
events are self-contained and every effect idempotent, so any worker may take
any exposure), and each worker keeps an exposure's downstream events in the
partition it came from (see :mod:`streams.app`), so the group shares the work
evenly whatever the EXPIDs hash to.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from pathlib import Path

import faust
from aiokafka import AIOKafkaProducer

from streams.app import build_service
from streams.batch import characterized_exposure
from streams.kafka_admin import acreate_topics, run_sync
from streams.limits import check_limits
from streams.readmodel import RedisReadModel
from streams.rebuild import heal_read_model
from streams.settings import Deployment, StreamSettings
from streams.topology import CALIBRATE, Topology

log = logging.getLogger("calibstream.worker")

#: How often each worker looks whether Redis came back empty, to rebuild the read model
#: from the folders (streams.rebuild; one worker does it).
HEAL_INTERVAL_S = 10.0


async def ensure_topics(stream: StreamSettings, topology: Topology = CALIBRATE) -> None:
    """Create every topic of ``topology`` with its partition count (never let the broker
    auto-create one)."""
    topics = Deployment(stream, topology=topology).topics
    config = {"max.message.bytes": str(stream.max_message_bytes)}
    await acreate_topics(
        stream.bootstrap,
        topics,
        replication_factor=stream.replication,
        configs={name: config for name in topics},
    )


def run_worker(deployment: Deployment, loglevel: str = "info") -> int:
    """Run a worker until it is stopped (SIGTERM, SIGINT)."""
    run_sync(lambda: ensure_topics(deployment.stream, deployment.topology))
    check_limits(deployment.stream, deployment.topology)  # one line naming a mismatch
    service = build_service(deployment)

    @service.app.task
    async def warm_up() -> None:
        await service.science.warm_up()
        log.info("science pool ready (%d process(es))", deployment.stream.science_processes)

    healed = RedisReadModel(deployment.stream.redis)

    @service.app.timer(HEAL_INTERVAL_S)
    async def heal() -> None:  # the scan runs in a thread: the event loop keeps going
        try:
            await asyncio.to_thread(heal_read_model, deployment.stream.output_root, healed)
        except Exception:
            log.exception("the read model's self-heal check failed")

    worker = faust.Worker(service.app, loglevel=loglevel, redirect_stdouts=False)
    service.science.stopping = lambda: worker.should_stop
    worker.execute_from_commandline()
    return 0


def producer(stream: StreamSettings) -> AIOKafkaProducer:
    """A plain producer as the service's: acks=all, one record per batch, not idempotent."""
    return AIOKafkaProducer(
        bootstrap_servers=stream.bootstrap,
        acks="all",
        linger_ms=0,
        max_batch_size=max(16384, stream.max_message_bytes),
        max_request_size=stream.max_message_bytes,
        enable_idempotence=False,
    )


async def asubmit(
    paths: Iterable[Path], stream: StreamSettings, topology: Topology = CALIBRATE
) -> list[tuple[Path, int]]:
    """A characterized-exposure event per file, keyed by EXPID; returns (path, EXPID) sent.

    The metadata is the file's primary header; a file without a readable one
    raises (its producer must describe it). The URI is the absolute path. The
    events go to the partitions in turn from a random one (round robin: N
    exposures split evenly over the workers; the key names the exposure but
    does not choose its partition).
    """
    await ensure_topics(stream, topology)
    sent = []
    client = producer(stream)
    await client.start()
    try:
        topic = stream.topic(topology.stages[0].consumes)
        partitions = sorted(await client.partitions_for(topic))
        turn = random.randrange(len(partitions))
        for path in paths:
            path = Path(path).resolve()
            expid, key, value = characterized_exposure(path)
            partition = partitions[turn % len(partitions)]
            await client.send_and_wait(topic, value, key=key, partition=partition)
            turn += 1
            sent.append((path, expid))
    finally:
        await client.stop()
    return sent


def submit(
    paths: Iterable[Path], stream: StreamSettings, topology: Topology = CALIBRATE
) -> list[tuple[Path, int]]:
    return run_sync(lambda: asubmit(list(paths), stream, topology))
