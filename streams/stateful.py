"""A stateful stage as a faust agent: its state in a table, its step run in the worker.

The table (named after the stage, in memory, backed by its changelog topic) is keyed
as the stage's input, and the input's messages are partitioned by that key with the
producer's partitioner, as the table's changelog records are (``use_partitioner``):
every message of one key reaches one partition, whose owner holds the key's state and
recovers it from the changelog after a rebalance or a restart. One record per producer
batch (the app's setting) keeps the embedded broker's end offsets right, which the
changelog's recovery reads to.

The step is cheap (a fold and a summary), so it runs on the worker's event loop next to
its table, in its partition's lane (streams.lanes), the machine's faults retried as in
every agent. A timer gives the stage's module ``timeout(ctx, key, now_ms)`` each key
this worker owns (the visit summarised as it stands once its timeout has passed).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import faust
from aiokafka.partitioner import DefaultPartitioner

from streams import runner
from streams.delivery import Outage, run_retrying
from streams.events import now_ms
from streams.readmodel import ReadModel
from streams.runner import Message, Output
from streams.science import context
from streams.settings import Deployment
from streams.topology import Stage
from streams.visit_store import TableVisitStore


class Service(Protocol):
    """What a stateful agent takes of the worker's service (streams.app.Service)."""

    app: faust.App
    topics: Mapping[str, Any]
    deployment: Deployment
    readmodel: ReadModel
    outage: Outage

    async def publish(self, outputs: Iterable[Output], partition: int) -> None: ...

    def attach_lanes(
        self, stage: Stage, handle: Callable[[faust.EventT], Awaitable[None]]
    ) -> None: ...


log = logging.getLogger("calibstream.stateful")


def attach_stateful(service: Service, stage: Stage) -> None:
    app, stream = service.app, service.deployment.stream
    table = app.Table(stage.agent, partitions=stream.partitions, use_partitioner=True,
                      key_type=bytes, value_type=bytes)  # fmt: skip
    ctx = context(service.deployment)
    ctx.visits = TableVisitStore(table)

    async def handle(event: faust.EventT) -> None:
        record = event.message
        message = Message.of(record)

        async def step() -> list[Output]:
            return runner.run(ctx, stage.agent, message)

        outputs = await run_retrying(step, stage.agent, message, stream.retry,
                                     service.readmodel, service.outage)  # fmt: skip
        await service.publish(outputs, record.partition)
        ctx.visits.flush()  # the table's changelog after the outputs: see TableVisitStore
        log.info("%s %s[%d]@%d key %s -> %s", stage.agent, record.topic, record.partition,
                 record.offset, record.key, ",".join(o.role for o in outputs) or "-")  # fmt: skip

    service.attach_lanes(stage, handle)
    topic = stream.topic(stage.consumes)
    timeout = importlib.import_module(stage.module).timeout
    partitioner = DefaultPartitioner()

    @app.timer(stream.visit_check_s)
    async def time_out() -> None:
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
        partitions = list(range(stream.partitions))
        for key in ctx.visits.visits():
            owned = partitioner(str(key).encode(), partitions, partitions) in assigned
            if not owned:
                continue  # its partition moved to another worker: that worker's to say
            try:
                record = timeout(ctx, key, now_ms())
            except Exception:  # the machine's fault (the folder): tried again next tick
                log.exception("%s: the timeout of %s failed; trying again", stage.agent, key)
                continue
            if record is not None:
                await service.publish([runner.encoded(ctx, stage, record)], 0)
            ctx.visits.flush()
            await asyncio.sleep(0)
