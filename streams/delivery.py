"""How a worker waits out the machine's faults: retries with back-off, then parking.

A step stopped by a fault of the machine (:class:`~calibstream.failures.TransientFailure`)
is tried again with the same message, its offset not acknowledged meanwhile: the
partition waits rather than skipping, and nothing is recorded as the exposure's failure.
Past the policy's last try the record is parked (a parked record names it; the record
stays in its topic) and the partition moves on; ``calibstream redrive`` sends parked
records back once the fault is fixed. Publishing waits out an unreachable broker the
same way, without end: nothing is acknowledged before its outputs are delivered.

The log says what a worker waits for once per outage, not once per record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from calibstream.failures import RetryPolicy, TransientFailure
from streams.readmodel import ReadModel
from streams.runner import Message, Output, parked_output

log = logging.getLogger("calibstream.delivery")


class Outage:
    """Logs the start and the end of a fault once, however many records wait on it."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def waiting(self, what: str, reason: str, delay: float) -> None:
        if what not in self._since:
            self._since[what] = time.monotonic()
            log.warning("%s: waiting for the machine (%s); retrying every %g s or so",
                        what, reason, delay)  # fmt: skip

    def over(self, what: str) -> None:
        since = self._since.pop(what, None)
        if since is not None:
            log.warning("%s: going on after %.1f s", what, time.monotonic() - since)


async def run_retrying(
    step: Callable[[], Awaitable[list[Output]]],
    agent: str,
    message: Message,
    policy: RetryPolicy,
    readmodel: ReadModel,
    outage: Outage,
) -> list[Output]:
    """``step()``'s outputs; retried on a fault of the machine; past the last try, the
    record parked."""
    attempt = 0
    try:
        while True:
            try:
                outputs = await step()
            except TransientFailure as exc:
                attempt += 1
                if attempt == 1:
                    readmodel.incr(f"waiting:{agent}")
                if attempt > policy.attempts:
                    log.error("%s: %s[%d]@%d parked after %d tries: %s", agent, message.topic,
                              message.partition, message.offset, attempt, exc.reason)  # fmt: skip
                    readmodel.incr(f"parked:{agent}")  # ever (a counter)
                    readmodel.incr(f"parked_now:{agent}")  # until redriven (a gauge)
                    return [parked_output(agent, message, exc.reason, attempt)]
                readmodel.incr(f"retried:{agent}")
                outage.waiting(agent, exc.reason, policy.delay(attempt))
                await asyncio.sleep(policy.delay(attempt))
                continue
            outage.over(agent)
            return outputs
    finally:
        if attempt:
            readmodel.incr(f"waiting:{agent}", -1)


async def send_retrying(
    send: Callable[[], Awaitable[object]], what: str, policy: RetryPolicy, outage: Outage
) -> None:
    """``send()`` until the broker acknowledges it (an unreachable broker is waited out)."""
    attempt = 0
    while True:
        try:
            await send()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker's fault: wait, never drop
            attempt += 1
            delay = policy.delay(min(attempt, 16))
            outage.waiting(what, f"{type(exc).__name__}: {exc}", delay)
            await asyncio.sleep(delay)
            continue
        if attempt:
            outage.over(what)
        return
