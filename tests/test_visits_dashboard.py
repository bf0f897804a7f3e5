"""Visits in the read model and on the dashboard's API, on a real Redis (issue 19).

Visit folders are written by hand with the core functions, as the visit agent writes them:
``ROOT/visits/<V>/summary.json`` (``summary_json(summarize(...))``) and ``detectors.json``
(``VisitState.to_dict()``), a 3×3 camera with detector 4 failed and detector 8 missing.
On them: the rows the read model keeps (replays keep their first persistence's time, a late
detector replaces the row but not its place), paging, the counts by completeness, the
rebuild from the folders, ``/api/visits`` and ``/api/visits/<V>`` (with the camera), the
guard on the new routes, and the ``calibstream_visits`` gauge.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from pathlib import Path

import redis
from aiohttp.test_utils import TestClient, TestServer
from conftest_services import *  # noqa: F403 (the fixtures: read_model, redis_url)
from prometheus_client.parser import text_string_to_metric_families

from calibstream.camera import DEFAULT_CAMERA
from calibstream.config import Config
from calibstream.visit import DetectorOutcome, VisitState, fold, summarize, summary_json
from streams.dashboard import build_app
from streams.dashboard_guard import make_guard
from streams.metrics import metrics_text
from streams.monitor import Monitor
from streams.readmodel import ReadModel, RedisReadModel
from streams.readmodel_visits import VisitReadModel
from streams.rebuild import rebuild_read_model, record_visit_folder
from streams.settings import StreamSettings

VISIT = 7
FAILED, MISSING = 4, 8
MJD0 = 61000.1


def expid_of(visit: int, detector: int) -> int:
    return visit * 100 + detector


def outcome(visit: int, detector: int, *, zp: float = 28.0) -> DetectorOutcome:
    """A detector's outcome: detector ``FAILED`` of ``VISIT`` failed, the others ok with
    figures that differ by detector (so that every colouring has something to show)."""
    expid = expid_of(visit, detector)
    if detector == FAILED and visit == VISIT:
        reason = "truncated file: 1 of 2 HDUs"
        return DetectorOutcome(detector, expid, "failed", reason=reason, band="r")
    return DetectorOutcome(
        detector, expid, "ok", band="r", magzero=zp + 0.003 * (detector - 4), magzero_err=0.002,
        seeing=0.7 + 0.05 * detector, sky=1000.0 + detector, m5=24.2,
        astrms=10.0 + (5 * detector) % 9,  # not in detector order, unlike the seeing
    )  # fmt: skip


def visit_state(visit: int, detectors=None, zp: float = 28.0) -> VisitState:
    """The visit folded from its detectors (all but ``MISSING`` by default)."""
    state = None
    for detector in detectors if detectors is not None else range(MISSING):
        state = fold(state, visit, outcome(visit, detector, zp=zp))
    assert state is not None
    return state


def write_visit_folder(root: Path, state: VisitState, *, timed_out: bool = True) -> Path:
    """``ROOT/visits/<V>/`` as the visit agent writes it; returns the folder."""
    folder = Path(root) / "visits" / str(state.visit)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(state, DEFAULT_CAMERA, timed_out=timed_out)
    (folder / "summary.json").write_bytes(summary_json(summary))
    text = json.dumps(state.to_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"
    (folder / "detectors.json").write_text(text)
    return folder


def record_exposures(model: RedisReadModel, state: VisitState, mjd: float) -> None:
    """The visit's exposure rows, as the sinks record them (their MJD-OBS dates the visit)."""
    for o in state.outcomes.values():
        row = {"expid": o.expid, "visit": state.visit, "detector": o.detector, "band": "r"}
        model.record_metrics(o.expid, {**row, "status": o.status, "mjd_obs": mjd})


def summary_dict(state: VisitState) -> dict:
    return json.loads(summary_json(summarize(state, DEFAULT_CAMERA, timed_out=True)))


# ---------------------------------------------------------------- the read model


def test_the_visit_protocol_is_part_of_the_read_model(read_model: RedisReadModel) -> None:
    assert isinstance(read_model, ReadModel) and isinstance(RedisReadModel(None), ReadModel)
    for name in ("record_visit", "visit", "visits", "count_visits"):
        ours = inspect.signature(getattr(RedisReadModel, name))
        assert ours == inspect.signature(getattr(VisitReadModel, name)), name
    down = RedisReadModel(None)  # no Redis: no-ops and empty answers, never an error
    assert down.record_visit(1, {"visit": 1}, {"visit": 1, "outcomes": []}, 5) is False
    assert down.visit(1) is None and down.visits() == []
    assert down.count_visits() == {"complete": 0, "incomplete": 0}


def test_a_visit_row_keeps_its_first_persistence(read_model: RedisReadModel) -> None:
    state = visit_state(VISIT)
    summary, detectors = summary_dict(state), state.to_dict()
    record_exposures(read_model, state, MJD0)
    assert read_model.record_visit(VISIT, summary, detectors, 1_000) is True
    found = read_model.visit(VISIT)
    assert found is not None and found["state"] == detectors
    row = found["summary"]
    assert row["failed"] == [FAILED] and row["missing"] == [MISSING]
    assert row["failures"] == {str(FAILED): "truncated file: 1 of 2 HDUs"}
    assert row["first_ms"] == row["persisted_ms"] == 1_000 and row["mjd_obs"] == MJD0
    assert row["expids"] == [expid_of(VISIT, d) for d in range(MISSING)]
    assert {k: row[k] for k in summary} == summary  # the folder's summary, as it is
    assert read_model.count_visits() == {"complete": 0, "incomplete": 1}

    # A replay (the same content, later): nothing of its first persistence changes.
    assert read_model.record_visit(str(VISIT), summary, detectors, 9_000) is False
    assert read_model.visit(VISIT) == found

    # The late detector: the visit completes; a new row, at its place in the night.
    other = visit_state(VISIT + 1)
    read_model.record_visit(VISIT + 1, summary_dict(other), other.to_dict(), 2_000)
    late = visit_state(VISIT, range(9))
    late_summary = json.loads(summary_json(summarize(late, DEFAULT_CAMERA)))
    assert read_model.record_visit(VISIT, late_summary, late.to_dict(), 3_000) is True
    row = read_model.visit(VISIT)["summary"]
    assert row["complete"] and row["missing"] == [] and len(row["expids"]) == 9
    assert row["first_ms"] == 1_000 and row["persisted_ms"] == 3_000
    assert [r["visit"] for r in read_model.visits()] == [VISIT + 1, VISIT]
    assert read_model.count_visits() == {"complete": 1, "incomplete": 1}


def test_visits_page_newest_first(read_model: RedisReadModel) -> None:
    for i, ms in enumerate([500, 100, 400, 200, 300]):
        state = visit_state(100 + i, [0])
        read_model.record_visit(100 + i, summary_dict(state), state.to_dict(), ms)
    order = [r["visit"] for r in read_model.visits()]
    assert order == [100, 102, 104, 103, 101]
    pages, after = [], None
    while True:
        page = read_model.visits(2, after=after)
        if not page:
            break
        pages.append([r["visit"] for r in page])
        after = page[-1]["visit"]
    assert pages == [[100, 102], [104, 103], [101]]
    assert read_model.visits(2, after=999) == [] and read_model.visits(0) == []
    assert all(r["mjd_obs"] is None for r in read_model.visits())  # no exposure rows


# ---------------------------------------------------------------- the rebuild


def test_the_rebuild_restores_visits_from_their_folders(tmp_path, redis_url) -> None:
    root = tmp_path / "out"
    first, second = visit_state(VISIT), visit_state(VISIT + 1, range(9), zp=27.9)
    folders = [write_visit_folder(root, first), write_visit_folder(root, second, timed_out=False)]
    os.utime(folders[0], ns=(1_700_000_000_000_000_000,) * 2)  # the folder's time
    os.utime(folders[1], ns=(1_700_000_060_000_000_000,) * 2)
    (root / "visits" / ".9.new-x").mkdir()  # a writer's staging: not a visit
    waiting = write_visit_folder(root, visit_state(10))  # no summary yet: not shown
    (waiting / "summary.json").unlink()
    model = RedisReadModel(redis_url, prefix=f"test-visits-{os.getpid()}")
    try:
        assert rebuild_read_model(root, model) == 0  # no exposure folders
        assert [r["visit"] for r in model.visits()] == [VISIT + 1, VISIT]
        for folder in folders:
            found = model.visit(int(folder.name))
            summary = json.loads((folder / "summary.json").read_text())
            assert found["state"] == json.loads((folder / "detectors.json").read_text())
            assert {k: found["summary"][k] for k in summary} == summary
        assert model.visit(VISIT)["summary"]["persisted_ms"] == 1_700_000_000_000
        assert model.count_visits() == {"complete": 1, "incomplete": 1}
        before = model.visits()

        client = redis.Redis.from_url(redis_url)  # Redis loses everything: rebuilt the same
        client.delete(*client.scan_iter(match=f"{model.prefix}:*"))
        assert model.visits() == [] and model.count_visits()["incomplete"] == 0
        rebuild_read_model(root, model)
        assert model.visits() == before
        assert record_visit_folder(model, folders[0]) is True  # the agent's call: a replay
        assert model.visits() == before
        client.delete(*client.scan_iter(match=f"{model.prefix}:*"))
        client.close()
    finally:
        model.close()


# ---------------------------------------------------------------- the API


def call(monitor: Monitor, calls, **app_options):
    async def run():
        async with TestClient(TestServer(build_app(monitor, **app_options))) as client:
            return await calls(client)

    return asyncio.run(run())


async def get(client, path: str, **headers: str) -> tuple[int, object]:
    response = await client.get(path, headers=headers, allow_redirects=False)
    kind = response.headers.get("Content-Type", "")
    body = await (response.json() if kind.startswith("application/json") else response.text())
    return response.status, body


def test_the_visits_api(read_model: RedisReadModel, tmp_path) -> None:
    state = visit_state(VISIT)
    record_exposures(read_model, state, MJD0)
    read_model.record_visit(VISIT, summary_dict(state), state.to_dict(), 1_000)
    for i in range(3):
        other = visit_state(200 + i, [0, 1])
        read_model.record_visit(200 + i, summary_dict(other), other.to_dict(), 2_000 + i)
    monitor = Monitor(read_model, tmp_path, Config().colorterms)

    async def calls(client):
        paths = ("/api/visits", "/api/visits?limit=2", "/api/visits?limit=2&after=201")
        found = {path: await get(client, path) for path in paths}
        for path in ("/api/visits/7", "/api/visits/99", "/api/visits/x", "/api/visits?limit=0"):
            found[path] = await get(client, path)
        for path in ("/visits", "/visits/7", "/static/visits.js"):
            found[path] = await get(client, path)
        return found

    found = call(monitor, calls)
    status, body = found["/api/visits"]
    assert status == 200 and [r["visit"] for r in body["visits"]] == [202, 201, 200, VISIT]
    assert body["next_after"] is None and body["counts"] == {"complete": 0, "incomplete": 4}
    assert [r["visit"] for r in found["/api/visits?limit=2"][1]["visits"]] == [202, 201]
    assert found["/api/visits?limit=2"][1]["next_after"] == 201
    assert [r["visit"] for r in found["/api/visits?limit=2&after=201"][1]["visits"]] == [200, 7]
    status, body = found["/api/visits/7"]
    assert status == 200 and body["summary"]["missing"] == [MISSING]
    assert body["summary"]["mjd_obs"] == MJD0
    assert [d["detector"] for d in body["detectors"]] == list(range(MISSING))
    assert body["detectors"][FAILED]["status"] == "failed"
    camera = body["camera"]
    assert camera["name"] == DEFAULT_CAMERA.name and len(camera["detectors"]) == 9
    assert camera["detectors"][0] == {
        "id": 0, "x": -2148.0, "y": -2148.0, "rotation": 0.0, "nx": 2048, "ny": 2048,
    }  # fmt: skip
    assert found["/api/visits/99"][0] == 404
    assert found["/api/visits/x"][0] == 400 and found["/api/visits?limit=0"][0] == 400
    assert all(found[p][0] == 200 for p in ("/visits", "/visits/7", "/static/visits.js"))
    assert "focal" in found["/visits/7"][1].lower()


def test_the_visit_routes_are_guarded(tmp_path) -> None:
    token = "t" * 32
    monitor = Monitor(RedisReadModel(None), tmp_path, Config().colorterms)
    guard = make_guard(StreamSettings(dashboard_require_token=True), "127.0.0.1", token)
    paths = ("/visits", "/visits/7", "/api/visits", "/api/visits/7", "/static/visits.js")

    async def calls(client):
        bare = [(await get(client, p))[0] for p in paths]
        right = [(await get(client, p, Authorization=f"Bearer {token}"))[0] for p in paths]
        return bare, right

    bare, right = call(monitor, calls, guard=guard)
    assert bare == [401] * len(paths)
    assert right == [200, 200, 200, 404, 200]  # no Redis: no visit 7


def test_the_visits_gauge(read_model: RedisReadModel, tmp_path) -> None:
    complete, partial = visit_state(1, range(9)), visit_state(2)
    read_model.record_visit(1, summary_dict(complete), complete.to_dict(), 1)
    read_model.record_visit(2, summary_dict(partial), partial.to_dict(), 2)
    text = metrics_text(Monitor(read_model, tmp_path, Config().colorterms)).decode()
    samples = {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "calibstream_visits"
        for s in family.samples
    }
    assert samples == {"complete": 1.0, "incomplete": 1.0}


def test_a_visit_without_redis_is_read_from_its_folder(tmp_path) -> None:
    folder = write_visit_folder(tmp_path, visit_state(VISIT))
    monitor = Monitor(RedisReadModel(None), tmp_path, Config().colorterms)

    async def calls(client):
        return await get(client, f"/api/visits/{VISIT}"), await get(client, "/api/visits/99")

    (status, body), (missing, _) = call(monitor, calls)
    assert status == 200 and missing == 404
    summary = json.loads((folder / "summary.json").read_text())
    assert {k: body["summary"][k] for k in summary} == summary
    assert body["summary"]["persisted_ms"] == folder.stat().st_mtime_ns // 1_000_000
    assert len(body["detectors"]) == MISSING and len(body["camera"]["detectors"]) == 9
