"""Characterized exposure → detection: read the pixels, detect and measure deep."""

from __future__ import annotations

from streams.app import Service


def attach(service: Service) -> None:
    stream = service.deployment.stream

    @service.app.agent(service.topics["exposures"], name="detect", concurrency=stream.concurrency)
    async def detect(events):
        async for event in events.events():
            await service.handle("detect", event)
