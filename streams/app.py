"""The faust app, built from configuration: topics, the science pool, and the agents.

At-least-once with idempotent effects: an agent acknowledges a message only
after what it produced is on the broker (delivery awaited), and the sink's
writes are atomic and byte-identical on a redelivery. Every topic is declared
with its partition count (never auto-created); the producer sends one record
per batch (the embedded broker mis-reports end offsets after multi-record
batches) and is not idempotent (the embedded broker refuses it).

Every topic has the same partition count and faust assigns the same partition
numbers of all of them to one worker, so an agent sends what it produces to the
partition number of its input: an exposure's whole chain stays with the worker
that took its characterized-exposure event (``submit`` spreads those evenly).
So the worker takes each event on down the chain in the same science call
(``[stream] chain``, :func:`streams.runner.run_chain`): one call per exposure
instead of four, no wait for the broker between the steps. It still publishes
every event (the topics stay complete for replay and any other reader), and its
own agent, when the event comes back, only acknowledges it.

The agents are made from the topology (:mod:`streams.topology`), one per stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import limits
from streams.delivery import Outage, run_retrying, send_retrying
from streams.lanes import lane_agent
from streams.readmodel import ReadModel, RedisReadModel
from streams.runner import Message, Output
from streams.science import SciencePool
from streams.settings import Deployment
from streams.stateful import attach_stateful
from streams.topology import Stage

log = logging.getLogger("calibstream.app")


class Handled:
    """The events this worker published already taken through their consumer's step.

    Marked (topic, partition, key and a digest of the value) before they are sent, so
    the mark is there when the event comes back; taken once. Bounded: the mark of an
    event whose partition moved to another worker meanwhile is never taken (that worker
    runs the step again: at-least-once, idempotent) and ages out.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._marks: OrderedDict[tuple, int] = OrderedDict()

    @staticmethod
    def _mark(topic: str, partition: int, key: bytes | None, value: bytes | None) -> tuple:
        return topic, partition, key, hashlib.blake2b(value or b"", digest_size=16).digest()

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        mark = self._mark(topic, partition, key, value)
        self._marks[mark] = self._marks.get(mark, 0) + 1
        self._marks.move_to_end(mark)
        while len(self._marks) > self.limit:
            self._marks.popitem(last=False)

    def take(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> bool:
        mark = self._mark(topic, partition, key, value)
        count = self._marks.get(mark, 0)
        if count > 1:
            self._marks[mark] = count - 1
        elif count == 1:
            del self._marks[mark]
        return count > 0

    def __len__(self) -> int:
        return sum(self._marks.values())


@dataclass
class Service:
    """What the agents share: the app, its topics by role, and the science pool."""

    app: faust.App
    topics: dict[str, faust.TopicT]
    science: SciencePool
    deployment: Deployment
    readmodel: ReadModel
    handled: Handled = field(default_factory=Handled)
    outage: Outage = field(default_factory=Outage)

    async def handle(
        self, agent: str, event: faust.EventT, slots: asyncio.Semaphore | None = None
    ) -> None:
        """One message through ``agent``'s step; returns once its outputs are delivered.

        A fault of the machine is waited out (retried with back-off, then parked: see
        :mod:`streams.delivery`); the message is acknowledged only after that. ``slots``
        bounds the agent's steps at once (``[stream] concurrency``); a step waiting
        between its tries holds none."""
        message = Message.of(event.message)
        if self.handled.take(message.topic, message.partition, message.key, message.value):
            outputs: list[Output] = []
            made = "(done upstream in this worker)"
        else:

            async def step() -> list[Output]:
                async with slots or contextlib.nullcontext():
                    return await self.science.run(agent, message, self.onward(message.partition))

            outputs = await run_retrying(
                step,
                agent,
                message,
                self.deployment.stream.retry,
                self.readmodel,
                self.outage,
            )
            await self.publish(outputs, message.partition)
            made = ",".join(o.role for o in outputs) or "-"
        log.info(
            "%s %s[%d]@%d key %s -> %s",
            agent,
            message.topic,
            message.partition,
            message.offset,
            None if message.key is None else message.key.decode(errors="replace"),
            made,
        )

    def attach_lanes(self, stage: Stage, handle: Callable[[faust.EventT], Awaitable[None]]) -> None:
        """``stage``'s faust agent: each event to its partition's lane, ``handle(event)``
        there (:func:`streams.lanes.lane_agent`), its topic's partitions watched for
        records nobody takes every ``[stream] stall_check_s``."""
        stream = self.deployment.stream
        lanes = lane_agent(self.app, handle, stream.topic(stage.consumes), stream.stall_check_s)
        self.app.agent(self.topics[stage.consumes], name=stage.agent)(lanes)

    def onward(self, partition: int) -> frozenset[str]:
        """The agents down the chain whose input partition ``partition`` this worker owns."""
        stream = self.deployment.stream
        if not stream.chain:
            return frozenset()
        assigned = self.app.consumer.assignment()
        return frozenset(
            stage.agent
            for stage in self.deployment.topology
            if not stage.stateful and TP(stream.topic(stage.consumes), partition) in assigned
        )

    async def publish(self, outputs: Iterable[Output], partition: int) -> None:
        """Send ``outputs`` to ``partition`` of their topics (the input's: see above), but
        those a stateful stage reads or sends, which go where their key hashes to (the
        producer's partitioner, as the stage's table changelog: see streams.stateful).

        The topics are sent to side by side, each topic's records in order: one round trip
        to the broker for an exposure's events, not one per event; returns when every one
        is delivered (acks=all), so the input is acknowledged only after that."""
        stream = self.deployment.stream
        by_role: dict[str, list[Output]] = {}
        for output in outputs:
            if output.handled:
                self.handled.add(stream.topic(output.role), partition, output.key, output.value)
            by_role.setdefault(output.role, []).append(output)
        await asyncio.gather(
            *(self._send_all(role, outs, partition) for role, outs in by_role.items())
        )

    async def _send_all(self, role: str, outputs: list[Output], partition: int) -> None:
        """``outputs`` (all of ``role``) one after the other, each until delivered."""
        topic = self.topics[role]
        to = None if role in self.deployment.topology.keyed_roles else partition
        what = f"publishing to {topic.get_topic_name()}"
        for output in outputs:

            async def send(output: Output = output) -> None:
                pending = await topic.send(key=output.key, value=output.value, partition=to)
                await pending  # delivered (acks=all) before the input is acknowledged

            await send_retrying(send, what, self.deployment.stream.retry, self.outage)


def _shorter_fetch_wait() -> None:
    """faust 0.15 hard-codes its worker consumer's ``fetch_max_wait_ms`` to 1500; the
    embedded broker answers a multi-partition fetch only at that deadline when it has no
    data, which put ~0.5 s on each of an exposure's four hops. Use the app's setting."""
    create = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "calibstream", False):
        return

    def create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create(self, transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    create_worker_consumer.calibstream = True  # type: ignore[attr-defined]
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def build_service(deployment: Deployment, science: SciencePool | None = None) -> Service:
    stream = deployment.stream
    datadir = Path(tempfile.gettempdir()) / "calibstream-faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        stream.app_id,
        broker=stream.broker,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        topic_partitions=stream.partitions,
        topic_replication_factor=stream.replication,
        topic_allow_declare=True,
        topic_disable_leader=True,
        producer_max_batch_size=1,
        producer_linger=0.0,
        producer_acks=-1,
        **limits.client_settings(stream),
        broker_session_timeout=stream.session_timeout_s,
        broker_heartbeat_interval=stream.session_timeout_s / 3,
        broker_commit_interval=1.0,
        # The lanes (streams.lanes) hold records taken but not yet handled; faust's wait for
        # every taken record before a rebalance or a stop would wait on them all. Not
        # waiting is safe: only acknowledged offsets are committed, the rest comes again.
        stream_wait_empty=False,
        web_enabled=stream.web_port is not None,
        web_port=stream.web_port or 6066,
        web_bind="127.0.0.1",
        store="memory://",
        # faust keeps table state there (this app has none): local, not the cwd
        datadir=str(datadir / stream.app_id),
    )
    _shorter_fetch_wait()
    app.fetch_max_wait_ms = stream.fetch_max_wait_ms
    topics = {
        role: app.topic(
            stream.topic(role),
            partitions=stream.partitions,
            replicas=stream.replication,
            config={"max.message.bytes": str(stream.max_message_bytes)},
            key_serializer="raw",
            value_serializer="raw",
        )
        for role in deployment.topology.roles
    }
    readmodel = RedisReadModel(stream.redis)
    service = Service(app, topics, science or SciencePool(deployment), deployment, readmodel)
    for stage in deployment.topology:
        if stage.stateful:
            attach_stateful(service, stage)
        else:
            _attach(service, stage)

    @app.on_before_shutdown.connect
    async def _close_pool(app: faust.App, **kwargs: object) -> None:
        service.science.close()

    return service


def _attach(service: Service, stage: Stage) -> None:
    """The faust agent of ``stage``: each event to its partition's lane (streams.lanes),
    through the science pool there, acknowledged when its outputs are delivered."""
    step = asyncio.Semaphore(service.deployment.stream.concurrency if stage.concurrency else 1)

    async def handle(event: faust.EventT) -> None:
        await service.handle(stage.agent, event, step)

    service.attach_lanes(stage, handle)
