"""Zero-points and failures → the exposures' folders, the ledger and the metrics.

Writes are atomic and byte-identical on a redelivery or a replay, so
at-least-once delivery never duplicates anything.
"""

from __future__ import annotations

from streams.app import Service


def attach(service: Service) -> None:
    @service.app.agent(service.topics["zeropoints"], name="sink")
    async def sink(events):
        async for event in events.events():
            await service.handle("sink", event)

    @service.app.agent(service.topics["failures"], name="sink-failures")
    async def sink_failures(events):
        async for event in events.events():
            await service.handle("sink-failures", event)
