"""Match → zero-point: colour terms, clipped zero-point, calibrated magnitudes."""

from __future__ import annotations

from streams.app import Service


def attach(service: Service) -> None:
    stream = service.deployment.stream

    @service.app.agent(service.topics["matches"], name="photometry", concurrency=stream.concurrency)
    async def photometry(events):
        async for event in events.events():
            await service.handle("photometry", event)
