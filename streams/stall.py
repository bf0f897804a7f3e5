"""A partition that holds records nobody takes is sought back to its committed offset.

faust 0.15 can skip a record fetched while a worker takes its first assignment (or
while a rebalance settles) and never fetch it again until the next rebalance: its
offset stays uncommitted, so nothing is lost, but its partition waits (README, "Known
defects"). A worker therefore looks at the partitions it owns every ``[stream]
stall_check_s``: one whose broker holds records past its committed offset while this
worker has none of them in hand, unchanged over two looks, is sought back to the
committed offset, and its records come again (at least once: the effects are
idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("calibstream.stall")

#: Looks in a row that must find a partition stalled, unchanged, before it is sought back.
LOOKS = 2


@dataclass(frozen=True)
class Observed:
    """One partition at one look: its committed offset (the next to read; None when
    unknown), the broker's end offset and whether this worker holds any of its records."""

    committed: int | None
    end: int | None
    idle: bool


@dataclass
class StallWatch:
    """Which partitions to seek back, look after look (pure: no consumer here)."""

    looks: int = LOOKS
    _same: dict[Hashable, tuple[tuple[int, int], int]] = field(default_factory=dict)

    def stalled(self, observed: Mapping[Hashable, Observed]) -> dict[Hashable, int]:
        """The partitions stalled for ``looks`` looks in a row, with the offset to seek to."""
        seek: dict[Hashable, int] = {}
        for tp in set(self._same) - set(observed):
            del self._same[tp]
        for tp, seen in observed.items():
            waiting = seen.committed is not None and seen.end is not None
            if not (seen.idle and waiting and seen.end > seen.committed):  # type: ignore[operator]
                self._same.pop(tp, None)
                continue
            state = (seen.committed, seen.end)
            before, count = self._same.get(tp, (None, 0))
            count = count + 1 if before == state else 1
            if count >= self.looks:
                seek[tp] = int(seen.committed)  # type: ignore[arg-type]
                self._same.pop(tp, None)
            else:
                self._same[tp] = (state, count)  # type: ignore[assignment]
        return seek

    def clear(self) -> None:
        self._same.clear()


async def watch_partitions(
    app: Any, topic: str, idle: Callable[[Hashable], bool], every_s: float
) -> None:
    """Every ``every_s``, seek back the partitions of ``topic`` this worker owns that
    :class:`StallWatch` finds stalled; nothing while the group rebalances. A look that
    fails (the broker unreachable) is skipped: the watch goes on."""
    watch = StallWatch()
    while True:
        await asyncio.sleep(every_s)
        if getattr(app, "rebalancing", False):
            watch.clear()
            continue
        try:
            await _look(app, topic, idle, watch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the machine's: the next look tries again
            log.info("%s: no look at its partitions this time (%s)", topic, exc)
            watch.clear()


async def _look(app: Any, topic: str, idle: Callable[[Hashable], bool], watch: StallWatch) -> None:
    tps = [tp for tp in app.consumer.assignment() if tp.topic == topic]
    if not tps:
        return
    ends = await app.consumer.highwaters(*tps)
    committed = app.consumer._committed_offset  # what faust committed or sought to
    observed = {tp: Observed(committed.get(tp), ends.get(tp), idle(tp)) for tp in tps}
    for tp, offset in watch.stalled(observed).items():
        log.warning(
            "%s[%d]: records up to offset %s wait past the committed %d and none is "
            "in hand: seeking back to it",
            tp.topic, tp.partition, ends.get(tp), offset,
        )  # fmt: skip
        await app.consumer.seek(tp, offset)
