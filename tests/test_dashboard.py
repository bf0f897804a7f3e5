"""The dashboard's data and API without a browser: the quality plots against a simulated
exposure's truth, the JSON API (paging, filters, summary figures, live events) and
/metrics parsed by prometheus-client's own parser, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from astropy.io import fits
from conftest_services import *  # noqa: F403 (the fixtures: read_model, redis_url)
from prometheus_client.parser import text_string_to_metric_families

from calibstream.config import Config
from calibstream.quality import distortion_grid, exposure_quality
from streams.cli import main as core_main
from streams.dashboard import build_app
from streams.metrics import metrics_text
from streams.monitor import ROW_FIELDS, Monitor
from streams.readmodel import HISTOGRAM_BUCKETS_S, RedisReadModel

# ---------------------------------------------------------------- quality plots vs truth


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("quality")
    sim = root / "sim"
    assert (
        core_main(["simulate", str(sim), "--n", "1", "--size", "1536", "1536", "--seed", "8"]) == 0
    )
    assert core_main(["ingest-refcat", str(sim / "refcat.fits"), "--out", str(root / "s")]) == 0
    [exposure] = sorted(sim.glob("exp_*[0-9].fits"))
    out = root / "out"
    assert (
        core_main(["calibrate", str(exposure), "--refcat", str(root / "s"), "--out", str(out)]) == 0
    )
    return out, exposure.with_suffix(".truth.fits"), int(fits.getheader(exposure)["EXPID"])


def test_residual_plots_reproduce_the_headers_scatter(calibrated):
    out, _, expid = calibrated
    quality = exposure_quality(out, expid, Config().colorterms)
    header = quality["summary"]["header"]

    a = quality["astrometry"]
    used = np.array(a["used"])
    east, north = np.array(a["east_mas"])[used], np.array(a["north_mas"])[used]
    assert used.sum() == header["ASTNMATCH"]
    # ASTRMS is the leave-one-out 2-D rms of the used matches: above their rms about the fit
    # (which the plot shows), by no more than the degrees of freedom the fit took (2n / dof).
    in_sample = np.sqrt(np.mean(east**2 + north**2))
    ratio = header["ASTRMS"] / in_sample
    assert 1.0 < ratio < 2 * header["ASTNMATCH"] / header["ASTDOF"]

    p = quality["photometry"]
    assert p["available"]
    residual = np.array(p["residual"], dtype=float)
    fitted = np.array(p["used"]) & ~np.array(p["reserved"])
    assert fitted.sum() == header["MAGZERO_NOBJ"]
    assert np.array(p["reserved"]).sum() >= 1
    assert not (np.array(p["reserved"]) & np.array(p["used"])).any()
    # The used stars' residuals scatter about 0 with MAGZERO_RMS (the fit's own figure).
    assert abs(np.median(residual[fitted])) < 0.01
    assert np.std(residual[fitted]) == pytest.approx(header["MAGZERO_RMS"], rel=0.1)


def test_distortion_grid_is_the_sip_polynomial(calibrated):
    out, truth_path, expid = calibrated
    truth = fits.getheader(truth_path)
    grid = distortion_grid(truth, 1536, 1536, n=5)
    # Evaluate A and B by hand at each grid point (0-based pixels, u = x - (CRPIX1 - 1)).
    x, y = np.array(grid["x"]), np.array(grid["y"])
    u, v = x - (truth["CRPIX1"] - 1), y - (truth["CRPIX2"] - 1)
    for axis, name in (("dx", "A"), ("dy", "B")):
        order = truth[f"{name}_ORDER"]
        expected = sum(
            truth.get(f"{name}_{p}_{q}", 0.0) * u**p * v**q
            for p in range(order + 1)
            for q in range(order + 1 - p)
        )
        assert np.allclose(grid[axis], expected, atol=2e-4), axis
    assert grid["sip_order"] == truth["A_ORDER"]
    assert max(np.hypot(grid["dx"], grid["dy"])) > 0.1  # the simulated camera distorts

    # The fitted distortion is the truth's up to an affine part (which the CD matrix takes).
    with fits.open(out / "exposures" / str(expid) / "calexp.fits") as hdul:
        fitted = distortion_grid(hdul[0].header, 1536, 1536, n=5)
    design = np.column_stack([np.ones_like(x), x, y])
    for axis in ("dx", "dy"):
        diff = np.array(fitted[axis]) - np.array(grid[axis])
        coeffs, *_ = np.linalg.lstsq(design, diff, rcond=None)
        assert np.max(np.abs(diff - design @ coeffs)) < 0.05, axis


def test_a_failed_exposure_has_a_summary_and_no_plots(tmp_path):
    folder = tmp_path / "exposures" / "7"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": "failed", "reason": "r"}))
    assert exposure_quality(tmp_path, 7, {}) == {"summary": {"status": "failed", "reason": "r"}}
    assert exposure_quality(tmp_path, 8, {}) is None


# ---------------------------------------------------------------- the read read_model and the API


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """A Prometheus exposition, parsed by prometheus-client: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


N_ROWS = 1000
T0_MS = 1_790_000_000_000


def fill(read_model: RedisReadModel, n: int = N_ROWS, seed: int = 3) -> list[dict]:
    """``n`` exposures, one every 5 s; every 10th failed; bands r/g; 10 visits x 4 detectors."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {
            "status": "failed" if i % 10 == 9 else "ok",
            "expid": 5000 + i,
            "visit": 100 + i // 100,
            "detector": i % 4,
            "band": "gr"[i % 2],
            "mjd_obs": 61000 + i / 1000,
            "persisted_ms": T0_MS + 5000 * i,
        }
        if row["status"] == "ok":
            row.update(
                magzero=28 + rng.normal(0, 0.02),
                magzero_err=0.001,
                magzero_rms=0.02,
                astrms_mas=12.0,
                astnmatch=70,
                latency_s=float(rng.uniform(1, 10)),
                submitted_ms=T0_MS + 5000 * i - 3000,
                timings={"detect": 0.5},
            )
        else:
            row.update(stage="astrometry", error="NoReferenceStarsError", reason=f"none {i}")
        read_model.record_metrics(row["expid"], row)
        rows.append(row)
    return rows


def api(read_model: RedisReadModel, root: Path, clock_ms: float, calls) -> object:
    """Run ``calls(client)`` against the dashboard app on a test server."""
    monitor = Monitor(read_model, root, Config().colorterms, clock=lambda: clock_ms / 1000)

    async def run():
        async with TestClient(TestServer(build_app(monitor))) as client:
            return await calls(client)

    return asyncio.run(run())


def test_pages_cover_every_exposure_once_newest_first(read_model, tmp_path):
    rows = fill(read_model)

    async def calls(client):
        seen, before = [], None
        while True:
            query = {"limit": "300", **({"before": str(before)} if before else {})}
            page = await (await client.get("/api/exposures", params=query)).json()
            seen += page["rows"]
            before = page["next_before"]
            if before is None:
                return seen

    seen = api(read_model, tmp_path, T0_MS, calls)
    assert [r["expid"] for r in seen] == [r["expid"] for r in reversed(rows)]
    assert set(seen[0]) == set(ROW_FIELDS)  # rows carry the listed fields (not the timings)


def test_filters_and_status(read_model, tmp_path):
    rows = fill(read_model)

    async def calls(client):
        params = {"band": "r", "visit": "104", "detector": "1", "limit": "5000"}
        filtered = await (await client.get("/api/exposures", params=params)).json()
        failed = await (await client.get("/api/exposures?status=failed&limit=5000")).json()
        bad = await client.get("/api/exposures?visit=x")
        missing = await client.get("/api/exposures/1")
        return filtered, failed, bad.status, missing.status

    filtered, failed, bad, missing = api(read_model, tmp_path, T0_MS, calls)
    expected = [
        r["expid"]
        for r in reversed(rows)
        if r["band"] == "r" and r["visit"] == 104 and r["detector"] == 1
    ]
    assert [r["expid"] for r in filtered["rows"]] == expected and expected
    assert len(failed["rows"]) == N_ROWS // 10
    assert all(r["reason"].startswith("none") for r in failed["rows"])
    assert (bad, missing) == (400, 404)


def test_summary_figures(read_model, tmp_path):
    rows = fill(read_model)
    now_ms = T0_MS + 5000 * (N_ROWS - 1) + 1000  # a second after the last exposure

    async def calls(client):
        return await (await client.get("/api/summary")).json()

    summary = api(read_model, tmp_path, now_ms, calls)
    ok = [r for r in rows if r["status"] == "ok"]
    assert summary["exposures"] == {"ok": len(ok), "failed": N_ROWS - len(ok)}
    latencies = [r["latency_s"] for r in ok]  # all within the 1000-exposure window
    assert summary["latency"]["p50_s"] == pytest.approx(np.percentile(latencies, 50))
    assert summary["latency"]["p95_s"] == pytest.approx(np.percentile(latencies, 95))
    # One exposure every 5 s: 12 per whole minute, 60 in the last five minutes.
    counts = summary["throughput"]["count"]
    assert counts[-3:-1] == [12, 12]
    assert summary["throughput"]["per_minute_5"] == pytest.approx(12.0)
    assert sum(counts) == sum(
        1 for r in rows if r["persisted_ms"] >= summary["throughput"]["minute_ms"][0]
    )


async def next_event(response) -> tuple[str, int | None, object]:
    """The next server-sent event: (name, id or None, data)."""
    fields = {}
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if not line:
            if fields:
                break
            continue
        key, _, value = line.partition(": ")
        fields[key] = value
    event_id = int(fields["id"]) if "id" in fields else None
    return fields["event"], event_id, json.loads(fields["data"])


def test_live_events_bring_new_exposures(read_model, tmp_path):
    fill(read_model, n=5)

    async def calls(client):
        page = await (await client.get("/api/exposures")).json()
        # Recorded after the page was read, before the stream opens: not missed.
        read_model.record_metrics(9999, {"status": "ok", "expid": 9999, "persisted_ms": T0_MS})
        response = await client.get(f"/api/events?after={page['cursor']}")
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = {}
        async with asyncio.timeout(10):
            while "exposures" not in events or "summary" not in events:
                name, event_id, data = await next_event(response)
                events[name] = (event_id, data)
        response.close()
        bad = await client.get("/api/events?after=x")
        return page, events, bad.status

    page, events, bad = api(read_model, tmp_path, T0_MS, calls)
    assert len(page["rows"]) == 5 and page["next_before"] is None and not page["partial"]
    event_id, rows = events["exposures"]
    assert [r["expid"] for r in rows] == [9999]  # only what came after the page
    assert event_id == page["cursor"] + 1  # the cursor to resume from
    assert events["summary"][1]["exposures"]["ok"] in (5, 6)  # before or after the new one
    assert bad == 400


def test_a_burst_arrives_in_full_in_order_a_page_at_a_time(read_model, tmp_path):
    """2,000 exposures recorded at once reach a live page all, oldest first, in messages of
    at most 500; a reconnection (Last-Event-ID) goes on where the last message ended."""
    fill(read_model, n=3)
    burst = [
        (20_000 + i, {"status": "ok", "expid": 20_000 + i, "band": "r", "persisted_ms": T0_MS + i})
        for i in range(2000)
    ]

    async def calls(client):
        response = await client.get("/api/events")
        messages = []
        async with asyncio.timeout(30):
            while (await next_event(response))[0] != "summary":
                pass  # the stream has taken its cursor (now) before its first summary
            await asyncio.to_thread(read_model.record_metrics_batch, burst)
            while sum(len(rows) for _, rows in messages) < len(burst):
                name, event_id, data = await next_event(response)
                if name == "exposures":
                    messages.append((event_id, data))
        response.close()
        resumed = await client.get("/api/events", headers={"Last-Event-ID": str(messages[1][0])})
        async with asyncio.timeout(10):
            name, _, first = await next_event(resumed)
        resumed.close()
        return messages, name, first

    messages, name, first = api(read_model, tmp_path, T0_MS, calls)
    sizes = [len(rows) for _, rows in messages]
    print(f"a burst of 2,000 exposures: {len(messages)} messages of {sizes} rows")
    assert [r["expid"] for _, rows in messages for r in rows] == [expid for expid, _ in burst]
    assert len(messages) >= 4 and max(sizes) <= 500
    assert [event_id for event_id, _ in messages] == sorted(event_id for event_id, _ in messages)
    assert name == "exposures" and first[0]["expid"] == messages[2][1][0]["expid"]


def test_metrics_parse_and_count(read_model, tmp_path):
    fill(read_model, n=20)
    for agent in ("detect", "astrometry"):
        for _ in range(3):
            read_model.incr(f"processed:{agent}")
    read_model.incr("failed:read", 2)
    read_model.incr("cache:hit", 5)
    read_model.incr("cache:miss")
    for seconds in (0.01, 0.3, 0.3, 400.0):
        read_model.observe("stage_seconds", "detect", seconds)
    read_model.observe("latency_seconds", "persisted", 2.0)

    monitor = Monitor(read_model, tmp_path, Config().colorterms)
    text = metrics_text(monitor).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = metric_samples(text)
    assert samples[("calibstream_events_processed_total", (("stage", "detect"),))] == 3
    assert samples[("calibstream_events_failed_total", (("stage", "read"),))] == 2
    assert samples[("calibstream_refcat_cache_hits_total", ())] == 5
    assert samples[("calibstream_refcat_cache_misses_total", ())] == 1
    assert samples[("calibstream_exposures", (("status", "ok"),))] == 18
    assert samples[("calibstream_exposures", (("status", "failed"),))] == 2
    detect = (("stage", "detect"),)
    assert samples[("calibstream_stage_duration_seconds_count", detect)] == 4
    assert samples[("calibstream_stage_duration_seconds_sum", detect)] == pytest.approx(400.61)
    bucket = "calibstream_stage_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.05"), ("stage", "detect")))] == 1
    assert samples[(bucket, (("le", "0.5"), ("stage", "detect")))] == 3
    assert samples[(bucket, (("le", str(HISTOGRAM_BUCKETS_S[-1])), ("stage", "detect")))] == 3
    assert samples[(bucket, (("le", "+Inf"), ("stage", "detect")))] == 4
    assert families["calibstream_latency_seconds"].type == "histogram"
    assert samples[("calibstream_redis_up", ())] == 1


def test_one_summary_serves_every_client_for_a_second(read_model, tmp_path):
    fill(read_model, n=10)
    now = [T0_MS / 1000]
    monitor = Monitor(read_model, tmp_path, Config().colorterms, clock=lambda: now[0])
    first = monitor.summary()
    read_model.record_metrics(7777, {"status": "ok", "expid": 7777, "persisted_ms": T0_MS})
    now[0] += 0.5
    assert monitor.summary() is first  # within the second: the same answer, no Redis reads
    now[0] += 0.6
    assert monitor.summary()["exposures"]["ok"] == first["exposures"]["ok"] + 1


# ---------------------------------------------------------------- 100,000 exposures

BIG = 100_000


def big_rows():
    """100,000 exposures: 2,000 visits of 50 detectors, a band per visit, every 10th failed."""
    for i in range(BIG):
        visit = 10_000 + i // 50
        yield (
            i,
            {
                "status": "failed" if i % 10 == 9 else "ok",
                "expid": i,
                "visit": visit,
                "detector": i % 50,
                "band": "ugrizy"[visit % 6],
                "magzero": 28.0,
                "persisted_ms": T0_MS + 100 * i,
            },
        )


@pytest.mark.slow
def test_filtered_queries_stay_fast_at_a_hundred_thousand_rows(read_model, tmp_path):
    rows = list(big_rows())
    for start in range(0, BIG, 5000):
        read_model.record_metrics_batch(rows[start : start + 5000])
    assert read_model.count_metrics() == BIG
    queries = {  # name: query (at most 1000 rows: the default page)
        "band matching nothing": "band=nothing",
        "visit and band matching nothing": "visit=10001&band=u",
        "one row (band+visit+detector)": "band=g&visit=10003&detector=7",
        "one visit": "visit=11999",
        "band and detector": "band=g&detector=3",
        "status failed": "status=failed",
        "status ok and band": "status=ok&band=y",
        "no filter": "",
    }
    expected = {}
    for name, query in queries.items():
        where = dict(part.split("=") for part in query.split("&") if part)
        found = [
            expid
            for expid, row in reversed(rows)
            if all(str(row[key]) == value for key, value in where.items())
        ]
        expected[name] = found[:1000]
    assert [len(expected[name]) for name in list(queries)[:3]] == [0, 0, 1]

    async def calls(client):
        timings = {}
        for name, query in queries.items():
            seconds = []
            for _ in range(7):
                start = time.perf_counter()
                response = await client.get(f"/api/exposures?{query}")
                page = await response.json()
                seconds.append(time.perf_counter() - start)
            assert [row["expid"] for row in page["rows"]] == expected[name], name
            timings[name] = statistics.median(seconds)
        # Eight of the costliest filtered pages at once, and a cheap call meanwhile.
        heavy = [
            asyncio.ensure_future(client.get(f"/api/exposures?band=g&detector={d}&limit=5000"))
            for d in range(8)
        ]
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        await (await client.get("/api/exposures/5")).json()
        timings["a cheap call beside 8 costly ones"] = time.perf_counter() - start
        for response in await asyncio.gather(*heavy):
            assert len((await response.json())["rows"]) in (333, 334)
        return timings

    timings = api(read_model, tmp_path, T0_MS, calls)
    beside = timings.pop("a cheap call beside 8 costly ones")
    for name, seconds in timings.items():
        print(f"100,000 exposures, {name}: median of 7 {seconds * 1000:.1f} ms")
    print(f"100,000 exposures, a cheap call beside 8 costly ones: {beside * 1000:.1f} ms")
    assert max(timings.values()) < 0.1, timings
    assert beside < 1.0
