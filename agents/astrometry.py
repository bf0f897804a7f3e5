"""Detection → match: reference stars at the epoch, TAN-SIP fit, matches. No pixels."""

from __future__ import annotations

from streams.app import Service


def attach(service: Service) -> None:
    stream = service.deployment.stream

    @service.app.agent(
        service.topics["detections"], name="astrometry", concurrency=stream.concurrency
    )
    async def astrometry(events):
        async for event in events.events():
            await service.handle("astrometry", event)
