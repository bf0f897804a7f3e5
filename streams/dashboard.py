"""``calibstream dashboard``: the monitoring web page, its JSON API, live updates, /metrics.

Routes (the JSON API is documented in the README)::

    /                                  the dashboard page
    /exposure/{expid}                  one exposure's page
    /api/summary                       counts, throughput, latency, counters, lag, Redis
    /api/exposures?limit&before&since&status&band&visit&detector
                                       exposure rows, newest first, paged by time
    /api/exposures/{expid}             one exposure: read-model row and summary.json
    /api/exposures/{expid}/quality     the per-exposure plots' data
    /api/lag                           consumer lag per topic and partition
    /api/events?since=MS               server-sent events: ``exposures`` (new rows) and
                                       ``summary`` (as /api/summary), live
    /metrics                           Prometheus text format
    /static/...                        the page's scripts and plotly.js (vendored, offline)

Everything is served by this process: the page works offline. Redis calls are blocking
(redis-py), so they run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.lag import LagProbe
from streams.metrics import metrics_text
from streams.monitor import ExposureQuery, LagState, Monitor
from streams.readmodel import RedisReadModel, json_text
from streams.settings import Deployment

__all__ = ["build_app", "run_dashboard"]

log = logging.getLogger("calibstream.dashboard")

STATIC = Path(__file__).with_name("static")
LIVE_INTERVAL_S = 1.0  # how often the live stream looks for new exposures
SUMMARY_EVERY = 2  # ... and sends a summary (every this many looks)
LAG_INTERVAL_S = 2.0

MONITOR = web.AppKey("monitor", Monitor)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=json_text(value), status=status, content_type="application/json")


def _expid(request: web.Request) -> int:
    try:
        return int(request.match_info["expid"])
    except ValueError:
        raise web.HTTPBadRequest(text="EXPID must be an integer") from None


def _query(request: web.Request) -> ExposureQuery:
    try:
        return ExposureQuery.from_params(request.query)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


# ---------------------------------------------------------------- handlers


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name)

    return page


async def _summary(request: web.Request) -> web.Response:
    return _json(await _off_loop(request.app[MONITOR].summary))


async def _exposures(request: web.Request) -> web.Response:
    return _json(await _off_loop(request.app[MONITOR].exposures, _query(request)))


async def _exposure(request: web.Request) -> web.Response:
    found = await _off_loop(request.app[MONITOR].exposure, _expid(request))
    if found is None:
        raise web.HTTPNotFound(text="no such exposure")
    return _json(found)


async def _quality(request: web.Request) -> web.Response:
    found = await _off_loop(request.app[MONITOR].quality, _expid(request))
    if found is None:
        raise web.HTTPNotFound(text="no folder for this exposure")
    return _json(found)


async def _lag(request: web.Request) -> web.Response:
    return _json(request.app[MONITOR].lag.as_dict())


async def _metrics(request: web.Request) -> web.Response:
    body = await _off_loop(metrics_text, request.app[MONITOR])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: new exposure rows as they are persisted, and the summary."""
    monitor = request.app[MONITOR]
    try:
        since = float(request.query.get("since") or time.time() * 1000.0)
    except ValueError:
        raise web.HTTPBadRequest(text="since must be a time in ms") from None
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)

    async def send(event: str, data: Any) -> None:
        await response.write(f"event: {event}\ndata: {json_text(data)}\n\n".encode())

    looks = 0
    with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
        while True:
            page = await _off_loop(monitor.exposures, ExposureQuery(limit=500, since_ms=since))
            if page["rows"]:
                since = max(row["persisted_ms"] for row in page["rows"])
                await send("exposures", page["rows"][::-1])  # oldest first
            if looks % SUMMARY_EVERY == 0:
                await send("summary", await _off_loop(monitor.summary))
            looks += 1
            await asyncio.sleep(LIVE_INTERVAL_S)
    return response


# ---------------------------------------------------------------- the app


async def _poll_lag(probe: LagProbe, state: LagState) -> None:
    """Keep ``state`` current; a broker that does not answer is reported, not fatal."""
    while True:
        try:
            state.partitions = await probe.lag()
            state.error = None
            state.updated_ms = time.time() * 1000.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker is down or unknown: say so on the page
            if state.error is None:
                log.warning("consumer lag unavailable: %s", exc)
            state.error = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(LAG_INTERVAL_S)


def build_app(monitor: Monitor, probe: LagProbe | None = None) -> web.Application:
    """The aiohttp application; ``probe`` (optional) keeps the consumer lag current."""
    app = web.Application()
    app[MONITOR] = monitor
    app.router.add_get("/", _page("dashboard.html"))
    app.router.add_get("/exposure/{expid}", _page("exposure.html"))
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/api/exposures", _exposures)
    app.router.add_get("/api/exposures/{expid}", _exposure)
    app.router.add_get("/api/exposures/{expid}/quality", _quality)
    app.router.add_get("/api/lag", _lag)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", _metrics)

    if probe is not None:

        async def lag_task(app: web.Application) -> Any:
            task = asyncio.create_task(_poll_lag(probe, monitor.lag))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await probe.close()

        app.cleanup_ctx.append(lag_task)
    return app


def run_dashboard(deployment: Deployment, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serve the dashboard of a deployment until interrupted."""
    stream = deployment.stream
    monitor = Monitor(
        RedisReadModel(stream.redis), Path(stream.output_root), deployment.science.colorterms
    )
    if stream.redis is None:
        log.warning("no Redis configured: the dashboard has no read model to show")
    app = build_app(monitor, LagProbe(stream, deployment.topology))
    print(f"dashboard at http://{host}:{port}/", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0
