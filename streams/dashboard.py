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
    /visits                            the night's visits: zero-point chart and list
    /visits/{visit}                    one visit's focal plane
    /api/visits?limit&after            visit rows newest first (after: the last visit of
                                       the page before), counts by completeness
    /api/visits/{visit}                one visit: summary, detectors, camera geometry
    /api/events?after=CURSOR           server-sent events: ``exposures`` (rows recorded
                                       after the cursor, paged, in order) and ``summary``
    /metrics                           Prometheus text format
    /static/...                        the page's scripts and plotly.js (vendored, offline)

Everything is served by this process: the page works offline. Redis calls are blocking
(redis-py), so they run in threads, never on the event loop. Every request passes the guard
(:mod:`streams.dashboard_guard`: Host allow list, and a token off loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from calibstream.camera import DEFAULT_CAMERA, Camera
from streams.dashboard_guard import Guard, GuardError, guard_middleware, make_guard, read_token
from streams.lag import LagProbe
from streams.metrics import metrics_text
from streams.monitor import LIVE_PAGE, ExposureQuery, LagState, Monitor
from streams.readmodel import RedisReadModel, json_text
from streams.readmodel_visits import MAX_VISITS_PAGE
from streams.rebuild import read_visit_folder
from streams.settings import Deployment, StreamSettings

__all__ = ["build_app", "run_dashboard"]

log = logging.getLogger("calibstream.dashboard")

STATIC = Path(__file__).with_name("static")
LIVE_INTERVAL_S = 1.0  # how often the live stream looks for new exposures
LIVE_PAGES_PER_LOOK = 20  # pages of LIVE_PAGE rows sent at most before the summary is due
SUMMARY_INTERVAL_S = 2.0  # how often it sends the summary
LAG_INTERVAL_S = 2.0

MONITOR = web.AppKey("monitor", Monitor)
CAMERA = web.AppKey("camera", Camera)
VISITS_PAGE = 500  # visits a page of /api/visits holds by default


def _dumps(value: Any) -> str:
    """Strict JSON; rows read back from Redis are plain already, so the quick way first
    (json_text's conversions cost ~10 ms a page of 1,000 rows), json_text for the rest."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # numpy values, NaN
        return json_text(value)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(value), status=status, content_type="application/json")


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


def _visit_id(request: web.Request) -> int:
    try:
        return int(request.match_info["visit"])
    except ValueError:
        raise web.HTTPBadRequest(text="VISIT must be an integer") from None


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None


async def _visits(request: web.Request) -> web.Response:
    """A page of visits newest first; ``next_after`` goes on from its last one."""
    limit = _int_param(request, "limit", VISITS_PAGE) or 0
    if not 1 <= limit <= MAX_VISITS_PAGE:
        raise web.HTTPBadRequest(text=f"limit must be 1 to {MAX_VISITS_PAGE}")
    readmodel = request.app[MONITOR].readmodel
    rows = await _off_loop(readmodel.visits, limit, _int_param(request, "after", None))
    counts = await _off_loop(readmodel.count_visits)
    more = rows[-1]["visit"] if len(rows) == limit else None
    return _json({"visits": rows, "next_after": more, "counts": counts})


def camera_geometry(camera: Camera) -> dict:
    """The camera as the focal-plane view draws it: name, and each detector's centre (px
    from the boresight), rotation (deg) and size (px)."""
    return {"name": camera.name, "detectors": [dataclasses.asdict(d) for d in camera.detectors]}


async def _visit(request: web.Request) -> web.Response:
    """One visit: its summary row, its detectors' outcomes and the camera they sit in."""
    monitor, visit = request.app[MONITOR], _visit_id(request)
    found = await _off_loop(monitor.readmodel.visit, visit)
    if found is None:  # not in the read model (Redis down, or not rebuilt yet): the folder
        folder = monitor.output_root / "visits" / str(visit)
        found = await _off_loop(read_visit_folder, folder)
        if found is None:
            raise web.HTTPNotFound(text="no such visit")
        found["summary"] = {**found["summary"], "persisted_ms": found["persisted_ms"]}
    detectors = found["state"].get("outcomes") or []
    camera = camera_geometry(request.app[CAMERA])
    return _json({"summary": found["summary"], "detectors": detectors, "camera": camera})


async def _lag(request: web.Request) -> web.Response:
    return _json(request.app[MONITOR].lag.as_dict())


async def _metrics(request: web.Request) -> web.Response:
    body = await _off_loop(metrics_text, request.app[MONITOR])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def _live_cursor(request: web.Request) -> int | None:
    """Where a live stream starts: the browser's ``Last-Event-ID`` when it reconnects, else
    ``after`` (a page's ``cursor``), else now."""
    text = request.headers.get("Last-Event-ID") or request.query.get("after")
    if not text:
        return None
    try:
        cursor = int(text)
    except ValueError:
        cursor = -1
    if cursor < 0:
        raise web.HTTPBadRequest(text="after must be an arrival cursor (an integer >= 0)")
    return cursor


async def _send_arrivals(
    monitor: Monitor, cursor: int | None, send: Callable[..., Awaitable[None]]
) -> tuple[int | None, bool]:
    """Send the rows recorded after ``cursor``, ``LIVE_PAGE`` a message, oldest first;
    returns the new cursor and whether it caught up (else more pages wait)."""
    for _ in range(LIVE_PAGES_PER_LOOK):
        found = await _off_loop(monitor.arrivals, cursor)
        if found["cursor"] is not None:
            cursor = found["cursor"]
        if found["rows"]:
            await send("exposures", found["rows"], cursor)
        if len(found["rows"]) < LIVE_PAGE:
            return cursor, True
    return cursor, False


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every exposure row recorded (new or changed) after the cursor,
    a page at a time (each message's ``id`` is the cursor after it), and the summary."""
    monitor = request.app[MONITOR]
    cursor = _live_cursor(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)

    async def send(event: str, data: Any, event_id: int | None = None) -> None:
        head = "" if event_id is None else f"id: {event_id}\n"
        await response.write(f"{head}event: {event}\ndata: {_dumps(data)}\n\n".encode())

    summary_due = 0.0
    with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
        while True:
            cursor, caught_up = await _send_arrivals(monitor, cursor, send)
            if time.monotonic() >= summary_due:
                await send("summary", await _off_loop(monitor.summary))
                summary_due = time.monotonic() + SUMMARY_INTERVAL_S
            await asyncio.sleep(LIVE_INTERVAL_S if caught_up else 0)
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


def build_app(
    monitor: Monitor,
    probe: LagProbe | None = None,
    *,
    guard: Guard | None = None,
    camera: Camera = DEFAULT_CAMERA,
) -> web.Application:
    """The aiohttp application; ``probe`` (optional) keeps the consumer lag current;
    ``guard`` checks every request (default: loopback Host names only, no token);
    ``camera`` is where the visits' detectors are drawn (the science config's)."""
    guard = guard or make_guard(StreamSettings(), "127.0.0.1", None)
    app = web.Application(middlewares=[guard_middleware(guard)])
    app[MONITOR] = monitor
    app[CAMERA] = camera
    app.router.add_get("/", _page("dashboard.html"))
    app.router.add_get("/exposure/{expid}", _page("exposure.html"))
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/api/exposures", _exposures)
    app.router.add_get("/api/exposures/{expid}", _exposure)
    app.router.add_get("/api/exposures/{expid}/quality", _quality)
    app.router.add_get("/api/lag", _lag)
    app.router.add_get("/visits", _page("visits.html"))
    app.router.add_get("/visits/{visit}", _page("visit.html"))
    app.router.add_get("/api/visits", _visits)
    app.router.add_get("/api/visits/{visit}", _visit)
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


def deployment_camera(deployment: Deployment) -> Camera:
    """The camera of the deployment's science config (``[camera]``)."""
    return deployment.science.camera


def run_dashboard(
    deployment: Deployment,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token: str | None = None,
    token_file: str | None = None,
) -> int:
    """Serve the dashboard of a deployment until interrupted; 2 (and one line on stderr)
    when it may not: a token is needed (not loopback, or asked for) and there is none."""
    stream = deployment.stream
    try:
        guard = make_guard(stream, host, read_token(stream, token, token_file))
    except GuardError as exc:
        print(f"calibstream dashboard: {exc}", file=sys.stderr)
        return 2
    monitor = Monitor(
        RedisReadModel(stream.redis), Path(stream.output_root), deployment.science.colorterms
    )
    if stream.redis is None:
        log.warning("no Redis configured: the dashboard has no read model to show")
    probe = LagProbe(stream, deployment.topology)
    app = build_app(monitor, probe, guard=guard, camera=deployment_camera(deployment))
    # Bound before the address is printed: with port 0, the port the system gave.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    print(f"dashboard at http://{host}:{sock.getsockname()[1]}/", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0
