"""One lane per partition: a record that waits out a fault holds its own partition only.

faust's agent takes the records of all its partitions from one stream, in the order
they arrive; a record retried for two minutes there would hold every partition behind
it. Here the agent hands each record to its partition's lane and goes on: the lanes run
side by side, each one record at a time in its partition's order, and each record is
acknowledged when its lane is done with it (faust commits a partition's offsets only up
to its first unacknowledged record, so the waiting partition's offset stays put).

Bounded: a lane that holds ``backlog`` records pauses its partition's fetching until it
has drained to half of that, so a waiting partition costs no memory however long it
waits. ``limit`` bounds how many lanes run a step at once (the science pool bounds the
CPU; a lane waiting between retries holds no slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

from streams.stall import watch_partitions

Record = TypeVar("Record")

log = logging.getLogger("calibstream.lanes")


class Lanes(Generic[Record]):
    """Runs ``handle(record)`` for each record put, in order within its lane, lanes in
    parallel; then ``ack(record)`` if ``handle`` says it is done with it (False: the
    record is left to be delivered again, e.g. one from before a rebalance)."""

    def __init__(
        self,
        handle: Callable[[Record], Awaitable[bool]],
        ack: Callable[[Record], object],
        *,
        backlog: int = 64,
        pause: Callable[[Hashable], object] = lambda lane: None,
        resume: Callable[[Hashable], object] = lambda lane: None,
    ) -> None:
        self._handle = handle
        self._ack = ack
        self._backlog = backlog
        self._pause = pause
        self._resume = resume
        self._queues: dict[Hashable, asyncio.Queue[Record]] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._paused: set[Hashable] = set()
        self._in_hand: set[Hashable] = set()

    async def put(self, lane: Hashable, record: Record) -> None:
        """Queue ``record`` on ``lane`` (started on first use); never waits on a lane."""
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = asyncio.Queue()
            self._tasks[lane] = asyncio.create_task(self._run(lane, queue), name=f"lane {lane}")
        queue.put_nowait(record)
        if queue.qsize() >= self._backlog and lane not in self._paused:
            self._paused.add(lane)
            self._pause(lane)
        await asyncio.sleep(0)  # let the lanes start before the next record

    def drop(self, lanes: Iterable[Hashable]) -> None:
        """Forget the queued records of ``lanes`` (their partitions moved to another worker,
        which takes them from the committed offset: nothing is acknowledged here)."""
        for lane in lanes:
            task = self._tasks.pop(lane, None)
            if task is not None:
                task.cancel()
            self._queues.pop(lane, None)
            self._paused.discard(lane)
            self._in_hand.discard(lane)

    async def close(self) -> None:
        """Stop every lane; records not yet handled stay unacknowledged."""
        tasks = list(self._tasks.values())
        self.drop(list(self._tasks))
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def pending(self, lane: Hashable) -> int:
        queue = self._queues.get(lane)
        return 0 if queue is None else queue.qsize()

    def idle(self, lane: Hashable) -> bool:
        """No record of ``lane`` queued or in hand."""
        return lane not in self._in_hand and self.pending(lane) == 0

    async def _run(self, lane: Hashable, queue: asyncio.Queue[Record]) -> None:
        while True:
            record = await queue.get()
            self._in_hand.add(lane)
            try:
                if await self._handled(lane, record):
                    self._ack(record)
            finally:
                self._in_hand.discard(lane)
            if lane in self._paused and queue.qsize() <= self._backlog // 2:
                self._paused.discard(lane)
                self._resume(lane)

    async def _handled(self, lane: Hashable, record: Record) -> bool:
        """``handle(record)``; an error it lets out (a bug: the policy answers the data's
        faults and waits out the machine's) is logged and the record tried again, never
        skipped, 1 s apart doubling to a minute."""
        delay = 1.0
        while True:
            try:
                return await self._handle(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lane %s: a record failed; trying it again in %g s", lane, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 60.0)


def lane_agent(
    app: Any, handle: Callable[[Any], Awaitable[None]], topic: str, stall_check_s: float = 0.0
) -> Callable[[Any], Awaitable[None]]:
    """A faust agent that hands each event to its partition's lane, where ``handle(event)``
    runs; the event is acknowledged when it returns. One from before a rebalance is left
    unacknowledged: faust seeks the partition back to its committed offset, so it comes
    again (to whoever owns the partition now). Every ``stall_check_s`` (0: never) the
    partitions of ``topic`` are watched for records nobody takes (:mod:`streams.stall`)."""

    async def handled(event: Any) -> bool:
        message = event.message
        if message.generation_id != app.consumer_generation_id:
            log.warning(
                "%s[%d]@%d: taken in generation %s, now %s: left to be delivered again",
                message.topic, message.partition, message.offset,
                message.generation_id, app.consumer_generation_id,
            )  # fmt: skip
            return False
        await handle(event)
        return True

    async def agent(events: Any) -> None:
        lanes: Lanes[Any] = Lanes(
            handled,
            lambda event: event.ack(),
            pause=lambda tp: app.consumer.pause_partitions([tp]),
            resume=lambda tp: app.consumer.resume_partitions([tp]),
        )
        watch = None
        if stall_check_s > 0:
            watch = asyncio.create_task(
                watch_partitions(app, topic, lanes.idle, stall_check_s), name=f"watch {topic}"
            )
        try:
            async for event in events.noack().events():
                await lanes.put(event.message.tp, event)
        finally:
            if watch is not None:
                watch.cancel()
            await lanes.close()

    return agent
