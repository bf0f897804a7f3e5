"""The science pool: where the CPU-bound steps run, off the worker's event loop.

A long exposure never blocks the loop, so the worker keeps heartbeating and the
group never rebalances because of it. Processes are spawned (not forked from a
process with threads) and each builds its :class:`~streams.runner.Context` once.
``processes = 0`` runs the steps in one thread of the worker itself.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from calibstream.failures import TransientFailure
from calibstream.runtime import reuse_freed_memory
from streams import runner
from streams.readmodel import RedisReadModel
from streams.runner import Message, Output
from streams.settings import Deployment
from streams.shard_cache import RedisShardCache

log = logging.getLogger("calibstream.science")

#: How long a worker whose science process died waits to see whether it is stopping too.
STOP_GRACE_S = 0.5

_CONTEXT: runner.Context | None = None


def _die_with_worker() -> None:
    """In a science process: SIGKILL when the worker that started it dies (Linux), so a
    killed worker leaves no orphan; ^C at a terminal stops the worker alone, which then
    shuts the pool down in order (SIGTERM keeps its default: the pool uses it)."""
    import ctypes
    import os
    import signal
    import sys

    parent = multiprocessing.parent_process()
    if parent is None:  # not a pool's process (processes = 0: the worker itself)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:  # the worker died before the line above
        os._exit(1)


def _init(deployment: Deployment) -> None:
    global _CONTEXT
    _die_with_worker()
    reuse_freed_memory()
    _CONTEXT = context(deployment)


def context(deployment: Deployment) -> runner.Context:
    """The steps' context of a deployment: its Redis as read model and shard cache."""
    stream = deployment.stream
    return runner.Context(
        stream,
        deployment.science,
        RedisReadModel(stream.redis),
        RedisShardCache(stream.cache_redis or stream.redis, counters_url=stream.redis),
        deployment.topology,
    )


def _run(agent: str, message: Message, onward: frozenset[str]) -> list[Output]:
    assert _CONTEXT is not None, "the science pool was not initialised"
    return runner.run_chain(_CONTEXT, agent, message, onward)


class SciencePool:
    """Runs :func:`streams.runner.run_chain` for the agents, in a pool sized by
    configuration."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        #: Whether the worker is stopping (set by the worker): a science process that dies
        #: then was stopped with it (a signal to the process group), not by a fault.
        self.stopping: Callable[[], bool] = lambda: False
        self._closed = False
        self._executor = self._start()

    def _start(self) -> Executor:
        n = self.deployment.stream.science_processes
        if n <= 0:
            _init(self.deployment)
            return ThreadPoolExecutor(1, thread_name_prefix="science")
        return ProcessPoolExecutor(
            n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(self.deployment,),
        )

    async def run(
        self, agent: str, message: Message, onward: frozenset[str] = frozenset()
    ) -> list[Output]:
        """``agent``'s step on ``message``; then on down the chain through the agents in
        ``onward`` in the same call (:func:`streams.runner.run_chain`)."""
        loop = asyncio.get_running_loop()
        if self._closed:  # the worker is stopping: the record stays unacknowledged
            raise asyncio.CancelledError("the science pool is closed")
        try:
            return await loop.run_in_executor(self._executor, _run, agent, message, onward)
        except BrokenProcessPool:
            # A signal to the whole process group (a service manager's stop) reaches the
            # worker as it kills the pool: give the worker's own handler a moment to run,
            # then leave the record unacknowledged for the stop, without a retry.
            await asyncio.sleep(STOP_GRACE_S)
            if self.stopping():
                raise asyncio.CancelledError("the worker is stopping") from None
            # A science process died (killed, out of memory, a crash in C): the machine's
            # fault as far as anyone can tell here. A fresh pool takes the retry; an
            # event that kills its process every time ends parked, not failed.
            log.error(
                "%s: a science process died on %s[%d]@%d; restarting the pool",
                agent,
                message.topic,
                message.partition,
                message.offset,
            )
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            raise TransientFailure(agent, "the science process died on this event") from None

    async def warm_up(self) -> None:
        """Start every process now (imports take seconds), not on the first exposure."""
        loop = asyncio.get_running_loop()
        n = max(1, self.deployment.stream.science_processes)
        await asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(n)))

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)


def _ready() -> bool:
    return _CONTEXT is not None
