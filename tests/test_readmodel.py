"""``streams.readmodel.RedisReadModel`` and ``streams.shard_cache.RedisShardCache`` against a
real redis-server: the shard cache, the ledger, the metrics read model and counters, the
``ReadModel`` interface, and how both degrade (and recover) when Redis stops."""

from __future__ import annotations

import inspect
import json
import logging
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from conftest_services import *  # noqa: F403 (the fixtures: read_model, redis_url, redis_factory)
from conftest_services import fresh_prefix
from test_refcat import catalog, write

from calibstream.astrometry.refcat import ingest_refcat, load_refcat
from calibstream.config import Config
from streams.monitor import Monitor
from streams.readmodel import ReadModel, RedisReadModel
from streams.shard_cache import RedisShardCache

LOGGER = "calibstream.redis"


class FakeClock:
    """A monotonic clock the test moves by hand (the back-off is read from it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def shard_cache(read_model: RedisReadModel, redis_url: str) -> Iterator[RedisShardCache]:
    """A shard cache under the read model's prefix (whose fixture deletes the keys)."""
    cache = RedisShardCache(redis_url, prefix=read_model.prefix)
    yield cache
    cache.close()


def metric(exposure_id: int, ms: int, status: str = "ok", **extra) -> dict:
    return {
        "exposure_id": exposure_id,
        "band": "r",
        "visit": exposure_id // 10,
        "detector": exposure_id % 10,
        "status": status,
        "magzero": 31.2,
        "persisted_ms": ms,
        **extra,
    }


# --------------------------------------------------------------------------- shard cache


def test_shard_cache_round_trip_counts_hits_and_misses(
    shard_cache: RedisShardCache, redis_url
) -> None:
    assert shard_cache.state == "up"
    assert shard_cache.get("calibstream:refcat:abc") is None
    shard_cache.set("calibstream:refcat:abc", b"\x00shard bytes\xff")
    assert shard_cache.get("calibstream:refcat:abc") == b"\x00shard bytes\xff"
    assert shard_cache.get("calibstream:refcat:abc") == b"\x00shard bytes\xff"
    status = shard_cache.status()
    assert (status["cache_hits"], status["cache_misses"], status["errors"]) == (2, 1, 0)
    client = redis.Redis.from_url(redis_url)
    key = f"{shard_cache.prefix}:shard:calibstream:refcat:abc"
    assert 0 < client.ttl(key) <= 86400

    forever = RedisShardCache(redis_url, prefix=shard_cache.prefix, shard_ttl_s=None)
    forever.set("k2", b"x")
    assert client.ttl(f"{shard_cache.prefix}:shard:k2") == -1  # no expiry
    forever.close()
    client.close()


def test_cache_reads_show_in_the_read_models_counters(
    shard_cache: RedisShardCache, read_model: RedisReadModel, tmp_path
) -> None:
    """Every process's cache counts into the counters the dashboard's /metrics reads."""
    read_model.incr("processed:detect")
    assert shard_cache.get("a") is None
    shard_cache.set("a", b"shard")
    assert shard_cache.get("a") == b"shard" and shard_cache.get("a") == b"shard"
    assert read_model.counters() == {"processed:detect": 1, "cache:miss": 1, "cache:hit": 2}
    monitor = Monitor(read_model, tmp_path, Config().colorterms)
    assert monitor.counters()["cache"] == {"hit": 2, "miss": 1}


def test_is_the_shard_cache_of_load_refcat(
    shard_cache: RedisShardCache, read_model: RedisReadModel, tmp_path
) -> None:
    cols = catalog(3000, seed=7, ra=(140.0, 160.0), dec=(10.0, 30.0), bands="g")
    ingest_refcat([write(cols, tmp_path / "cat.parquet")], tmp_path / "store", nside=8)
    first = load_refcat(tmp_path / "store", 150.0, 20.0, 8.0, shard_cache=shard_cache)
    assert first.stats.shards > 1
    assert first.stats.cache_misses == first.stats.shards and first.stats.cache_hits == 0
    second = load_refcat(tmp_path / "store", 150.0, 20.0, 8.0, shard_cache=shard_cache)
    assert second.stats.cache_hits == second.stats.shards and second.stats.cache_misses == 0
    assert second.stats.cache_errors == 0
    np.testing.assert_array_equal(second.id, first.id)
    np.testing.assert_array_equal(second.ra, first.ra)
    assert shard_cache.status()["cache_hits"] == second.stats.shards
    counters = read_model.counters()
    assert (counters["cache:hit"], counters["cache:miss"]) == (first.stats.shards,) * 2


# --------------------------------------------------------------------------- the interface


def _protocol_members(protocol: type) -> dict[str, object]:
    return {
        name: member
        for name, member in vars(protocol).items()
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


def test_redis_read_model_is_a_read_model(read_model: RedisReadModel) -> None:
    def throughput(model: ReadModel) -> dict[str, int]:  # what a caller typed on it sees
        model.incr("processed:detect", 2)
        return model.counters()

    assert throughput(read_model) == {"processed:detect": 2}
    assert isinstance(read_model, ReadModel) and isinstance(RedisReadModel(None), ReadModel)
    assert not isinstance(RedisShardCache(None), ReadModel)
    members = _protocol_members(ReadModel)
    assert {"incr", "observe", "record_persisted", "record_metrics", "state"} <= set(members)
    for name, member in members.items():  # the same signatures, not just the same names
        ours = getattr(RedisReadModel, name)
        if isinstance(member, property):
            assert isinstance(ours, property), name
        else:
            assert inspect.signature(ours) == inspect.signature(member), name
    assert not hasattr(read_model, "get") and not hasattr(read_model, "set")  # the cache's


# --------------------------------------------------------------------------- ledger


def test_ledger_is_idempotent(read_model: RedisReadModel) -> None:
    assert read_model.persisted(42) is None and read_model.ledger_size() == 0
    entry = {"status": "ok", "folder": "out/42", "fingerprint": "ab" * 32, "persisted_ms": 5}
    read_model.record_persisted(42, entry)
    read_model.record_persisted("42", {**entry, "persisted_ms": 6})  # same exposure, int or str
    read_model.record_persisted(43, {**entry, "status": "failed", "folder": "out/43"})
    assert read_model.ledger_size() == 2
    assert read_model.persisted(42) == {**entry, "persisted_ms": 6}
    assert read_model.persisted("43")["status"] == "failed"


# --------------------------------------------------------------------------- metrics


def test_metrics_replace_order_page_and_filter(read_model: RedisReadModel, redis_url) -> None:
    for i, ms in enumerate([500, 100, 400, 200, 300]):
        read_model.record_metrics(1000 + i, metric(1000 + i, ms, "failed" if i % 2 else "ok"))
    # 1000:500 ok, 1001:100 failed, 1002:400 ok, 1003:200 failed, 1004:300 ok
    assert read_model.count_metrics() == 5
    ids = [m["exposure_id"] for m in read_model.recent_metrics()]
    assert ids == [1000, 1002, 1004, 1003, 1001]  # newest persisted_ms first
    assert [m["exposure_id"] for m in read_model.recent_metrics(2, 1)] == [1002, 1004]
    assert [m["exposure_id"] for m in read_model.recent_metrics(10, 4)] == [1001]
    assert read_model.recent_metrics(10, 5) == [] and read_model.recent_metrics(0) == []
    assert [m["exposure_id"] for m in read_model.recent_metrics(status="failed")] == [1003, 1001]

    # Recording an exposure again replaces it: new time, new status, no duplicate.
    read_model.record_metrics(1001, metric(1001, 900, "ok", magzero=31.5))
    read_model.record_metrics(1001, metric(1001, 900, "ok", magzero=31.5))
    assert read_model.count_metrics() == 5
    assert read_model.recent_metrics(1)[0] == metric(1001, 900, "ok", magzero=31.5)
    assert [m["exposure_id"] for m in read_model.recent_metrics(status="failed")] == [1003]
    assert [m["exposure_id"] for m in read_model.recent_metrics(status="ok")][:2] == [1001, 1000]
    assert read_model.recent_metrics(status="nonesuch") == []
    assert read_model.metrics(1001)["magzero"] == 31.5 and read_model.metrics(999) is None

    # Stored as strict JSON with sorted keys: NaN/inf become null, numpy values plain.
    read_model.record_metrics(
        7, {"status": "failed", "magzero": float("nan"), "astnmatch": np.int64(3),
            "astrms_mas": np.float32(12.5), "latency_s": np.inf, "reason": "no matches"}
    )  # fmt: skip
    got = read_model.metrics(7)
    assert got["magzero"] is None and got["latency_s"] is None
    assert got["astnmatch"] == 3 and got["astrms_mas"] == 12.5 and got["exposure_id"] == 7
    assert isinstance(got["persisted_ms"], int)  # absent: stamped with the time of recording
    raw = redis.Redis.from_url(redis_url).hget(f"{read_model.prefix}:metrics", "7").decode()
    assert list(json.loads(raw)) == sorted(json.loads(raw)) and "NaN" not in raw


def test_first_persistence_is_kept_for_the_same_content_or_submission(
    read_model: RedisReadModel,
) -> None:
    """A row keeps the time, latency and timings of its first persistence when recorded
    again with the same folder content (fingerprint) or, ok, the same submission."""
    first = metric(5, 1000, fingerprint="aa", submitted_ms=900, latency_s=0.1, timings={"x": 1})
    assert read_model.record_metrics(5, first) is True
    again = {**first, "persisted_ms": 9000, "latency_s": 8.1, "timings": {"x": 2}, "n": 1}
    assert read_model.record_metrics(5, again) is False  # a redelivery: same content
    assert read_model.metrics(5) == {**first, "n": 1}  # the rest follows the record
    replayed = {**again, "fingerprint": "bb"}  # a replay after an upgrade: same submission
    assert read_model.record_metrics(5, replayed) is False
    assert read_model.metrics(5) == {**first, "n": 1, "fingerprint": "bb"}  # the new content
    assert read_model.record_metrics(5, {**replayed, "submitted_ms": None}) is False  # rebuilt
    assert read_model.metrics(5) == {**first, "n": 1, "fingerprint": "bb"}
    assert [m["exposure_id"] for m in read_model.page_metrics(10, before_ms=1001)] == [5]

    new = {**first, "fingerprint": "cc", "submitted_ms": 5000, "persisted_ms": 6000}
    assert read_model.record_metrics(5, {**new, "latency_s": 1.0}) is True  # a new calibration
    assert read_model.metrics(5) == {**new, "latency_s": 1.0}
    rebuilt = {**new, "latency_s": None, "submitted_ms": None, "timings": None}
    assert read_model.record_metrics(5, rebuilt) is False  # the same folder, from a rebuild
    assert read_model.metrics(5) == {**new, "latency_s": 1.0}

    failed = metric(5, 7000, "failed", fingerprint="dd")  # a failure that replaced the folder
    assert read_model.record_metrics(5, failed) is True
    assert read_model.metrics(5) == failed and read_model.count_by_status()["failed"] == 1
    assert read_model.record_metrics(5, {**failed, "persisted_ms": 8000}) is False
    ok = metric(5, 9000, fingerprint="cc", submitted_ms=5000, latency_s=4.0)
    assert read_model.record_metrics(5, ok) is True  # failed -> ok: a first ok persistence
    assert read_model.metrics(5) == ok and read_model.count_by_status() == {"ok": 1, "failed": 0}

    plain = metric(6, 100)  # rows without fingerprint or submission: replaced as they come
    assert read_model.record_metrics(6, plain) is True
    assert read_model.record_metrics(6, {**plain, "persisted_ms": 200}) is True
    assert read_model.metrics(6)["persisted_ms"] == 200


def ids(rows: list[dict]) -> list[int]:
    return [row["exposure_id"] for row in rows]


def test_value_indexes_follow_every_record(read_model: RedisReadModel, redis_url) -> None:
    """Band, visit, detector and status are indexed by the record script: a changed value
    leaves its old set, a kept first persistence keeps its place in every set."""
    read_model.record_metrics(11, metric(11, 100, fingerprint="a", submitted_ms=50))
    read_model.record_metrics(12, metric(12, 200, "failed"))
    read_model.record_metrics(21, metric(21, 300, band="g"))
    assert ids(read_model.page_metrics(where={"band": "r"})) == [12, 11]
    assert ids(read_model.page_metrics(where={"visit": 1, "detector": 2})) == [12]
    assert ids(read_model.page_metrics(where={"visit": 1.0}, status="ok")) == [11]
    assert read_model.page_metrics(where={"band": "r", "visit": 2}) == []
    assert read_model.page_metrics(where={"band": "nonesuch"}) == []
    with pytest.raises(ValueError):
        read_model.page_metrics(where={"magzero": 31.2})  # not indexed: never a scan

    read_model.record_metrics(12, metric(12, 400, band="g", visit=7))  # new values, now ok
    assert ids(read_model.page_metrics(where={"band": "r"})) == [11]
    assert ids(read_model.page_metrics(where={"band": "g"})) == [12, 21]
    assert read_model.page_metrics(where={"visit": 1}, status="failed") == []
    assert ids(read_model.page_metrics(where={"visit": 7}, before_ms=400)) == []
    read_model.record_metrics(12, {**metric(12, 500), "band": None, "visit": None})
    assert ids(read_model.page_metrics(where={"band": "g"})) == [21]
    client = redis.Redis.from_url(redis_url)
    assert (
        not client.exists(f"{read_model.prefix}:metrics:by_band:g")
        or client.zcard(f"{read_model.prefix}:metrics:by_band:g") == 1
    )

    # A redelivery keeps the first persistence's time: in every index too.
    read_model.record_metrics(11, metric(11, 900, fingerprint="a", submitted_ms=50))
    assert ids(read_model.page_metrics(where={"band": "r"}, before_ms=101)) == [11]
    assert client.zscore(f"{read_model.prefix}:metrics:by_detector:1", "11") == 100
    client.close()


def test_pages_read_a_bounded_number_of_entries_and_still_cover_everything(
    read_model: RedisReadModel,
) -> None:
    # 2,000 rows; detector 0 on every 10th, band r on every 7th: 29 rows have both.
    rows = [(i, metric(i, 1000 + i, band="r" if i % 7 == 0 else "g")) for i in range(2000)]
    read_model.record_metrics_batch(rows)
    expected = [i for i in reversed(range(2000)) if i % 70 == 0]
    page = read_model.query_metrics(1000, where={"band": "r", "detector": 0}, budget=50)
    assert page.partial and page.next_before == 1000 + 1500  # the 50 newest of detector 0
    assert ids(page.rows) == [i for i in expected if i >= 1500]
    seen, before, pages = [], None, 0
    while True:  # following next_before reads the whole intersection, 50 entries a page
        page = read_model.query_metrics(
            1000, where={"band": "r", "detector": 0}, budget=50, before_ms=before
        )
        seen += ids(page.rows)
        pages += 1
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == expected and pages == 4
    full = read_model.query_metrics(10, where={"band": "r"})
    assert len(full.rows) == 10 and not full.partial and full.next_before == 1000 + 1932


def test_arrivals_page_every_change_in_order(read_model: RedisReadModel, redis_url) -> None:
    start = read_model.arrivals(None)
    assert start.rows == [] and start.cursor == 0
    read_model.record_metrics_batch([(i, metric(i, 5000 - i)) for i in range(1200)])
    got, cursor = [], start.cursor
    while True:
        found = read_model.arrivals(cursor, 500)
        assert len(found.rows) <= 500
        if not found.rows:
            break
        got += ids(found.rows)
        cursor = found.cursor
    assert got == list(range(1200))  # in the order recorded, not by persisted time
    read_model.record_metrics(5, metric(5, 4995))  # the same row again: nothing new
    assert read_model.arrivals(cursor).rows == []
    read_model.record_metrics(5, metric(5, 4995, magzero=30.0))  # changed: sent again
    assert ids(read_model.arrivals(cursor).rows) == [5]
    assert ids(read_model.query_metrics(1).rows) == [0] and read_model.query_metrics(1).cursor
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.keys(f"{read_model.prefix}:*"))  # Redis emptied: the counter too
    read_model.record_metrics(7, metric(7, 1))
    assert ids(read_model.arrivals(cursor + 1).rows) == [7]  # from 0 again, not silence
    client.close()
    assert RedisReadModel(None).arrivals(None).cursor is None


def test_rows_from_before_the_indexes_are_indexed_once(read_model: RedisReadModel, redis_url):
    from streams.rebuild import heal_indexes

    client = redis.Redis.from_url(redis_url)
    for i in range(5):  # rows as the record script wrote them before the value indexes
        row = json.dumps(metric(i, 100 + i, band="z"), sort_keys=True)
        client.hset(f"{read_model.prefix}:metrics", str(i), row)
        client.zadd(f"{read_model.prefix}:metrics:by_time", {str(i): 100 + i})
    read_model.record_metrics(9, metric(9, 200, band="z"))
    assert ids(read_model.page_metrics(where={"band": "z"})) == [9]
    assert read_model.indexed() is False
    assert heal_indexes(read_model) == 5 and read_model.indexed() is True
    assert ids(read_model.page_metrics(where={"band": "z"})) == [9, 4, 3, 2, 1, 0]
    assert heal_indexes(read_model) is None  # once
    assert RedisReadModel(None).indexed() is None and heal_indexes(RedisReadModel(None)) is None
    client.close()


def test_rebuild_marker_and_claim(read_model: RedisReadModel, redis_url) -> None:
    assert read_model.built() is False
    assert read_model.claim_rebuild(5.0) is True and read_model.claim_rebuild(5.0) is False
    other = RedisReadModel(redis_url, prefix=read_model.prefix)
    assert other.claim_rebuild(5.0) is False  # one process at a time
    read_model.renew_rebuild(60.0)
    client = redis.Redis.from_url(redis_url)
    assert 5000 < client.pttl(f"{read_model.prefix}:rebuilding") <= 60000
    read_model.mark_built()
    read_model.release_rebuild()
    assert other.built() is True and other.claim_rebuild(0.05) is True
    assert client.ttl(f"{read_model.prefix}:built") == -1  # the marker never expires
    time.sleep(0.1)
    assert read_model.claim_rebuild(5.0) is True  # a claim of a process that died expires
    assert RedisReadModel(None).built() is None  # unknown, not "empty"
    other.close()
    client.close()


def test_counters(read_model: RedisReadModel) -> None:
    assert read_model.counters() == {}
    read_model.incr("processed:detect")
    read_model.incr("processed:detect", 4)
    read_model.incr("failed:astrometry")
    assert read_model.counters() == {"processed:detect": 5, "failed:astrometry": 1}


# --------------------------------------------------------------------------- degrading


def test_outage_degrades_quietly_backs_off_and_recovers(redis_factory, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = redis_factory()
    clock = FakeClock()
    rm = RedisReadModel(server.url, prefix=fresh_prefix(), retry_after=5.0, clock=clock)
    rm.record_metrics(1, metric(1, 10))
    assert rm.metrics(1)["exposure_id"] == 1 and rm.state == "up"

    server.stop()
    t0 = time.perf_counter()
    assert rm.metrics(1) is None  # the first failure: connection refused
    first = time.perf_counter() - t0
    assert rm.state == "down" and rm.status()["errors"] == 1
    assert first < rm.socket_timeout + 0.5
    for _ in range(20):  # during the back-off Redis is not even asked
        t0 = time.perf_counter()
        assert rm.metrics(1) is None
        assert time.perf_counter() - t0 < 0.1
    rm.record_persisted(1, {"status": "ok"})
    rm.record_metrics(2, metric(2, 20))
    rm.incr("processed:detect")
    rm.observe("stage_seconds", "detect", 0.5)
    assert rm.persisted(1) is None and rm.ledger_size() == 0
    assert rm.recent_metrics() == [] and rm.recent_metrics(status="ok") == []
    assert rm.page_metrics(10) == [] and rm.count_between([(0.0, 1e15)]) == [0]
    assert rm.count_metrics() == 0 and rm.count_by_status() == {"ok": 0, "failed": 0}
    assert rm.counters() == {} and rm.histograms("stage_seconds") == {}
    assert rm.ping() is False
    status = rm.status()
    assert status["state"] == "down" and status["errors"] == 1 and status["skipped"] >= 30
    assert "Error" in status["last_error"]
    assert status["url"] == server.url

    clock.now += 5.0  # back-off over, Redis still down: one more try, no second warning
    assert rm.metrics(1) is None and rm.state == "down" and rm.status()["errors"] == 2
    assert len(warnings_of(caplog)) == 1
    assert "read model" in warnings_of(caplog)[0].getMessage()
    assert "unreachable" in warnings_of(caplog)[0].getMessage()

    server.start()  # same port, empty (no persistence)
    assert rm.ping() is False and rm.state == "down"  # still backing off
    clock.now += 5.0
    assert rm.metrics(1) is None and rm.state == "up"  # asked, answered: not there
    rm.record_metrics(3, metric(3, 30))
    assert rm.metrics(3)["exposure_id"] == 3
    assert any("is back" in r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert len(warnings_of(caplog)) == 1  # one warning for the whole outage

    server.stop()  # a second outage warns once more
    clock.now += 1.0
    rm.incr("x")
    rm.incr("x")
    assert rm.state == "down" and len(warnings_of(caplog)) == 2
    rm.close()


def test_a_cache_outage_is_an_uncounted_miss(redis_factory, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = redis_factory()
    clock = FakeClock()
    prefix = fresh_prefix()
    cache = RedisShardCache(server.url, prefix=prefix, retry_after=5.0, clock=clock)
    rm = RedisReadModel(server.url, prefix=prefix)
    cache.set("s", b"shard")
    assert cache.get("s") == b"shard" and cache.state == "up"

    server.stop()
    t0 = time.perf_counter()
    assert cache.get("s") is None  # the first failure: connection refused
    assert time.perf_counter() - t0 < cache.socket_timeout + 0.5
    assert cache.state == "down"
    t0 = time.perf_counter()
    for _ in range(20):  # during the back-off Redis is not even asked
        assert cache.get("s") is None
    cache.set("s", b"dropped")
    assert time.perf_counter() - t0 < 0.5
    status = cache.status()
    assert (status["cache_hits"], status["cache_misses"]) == (1, 0)  # skipped: neither
    assert status["errors"] == 1 and status["skipped"] == 21
    [warning] = warnings_of(caplog)
    assert "shard cache" in warning.getMessage() and "unreachable" in warning.getMessage()

    server.start()  # same port, empty (no persistence)
    clock.now += 5.0
    assert cache.get("s") is None and cache.state == "up"  # asked, answered: a miss
    cache.set("s", b"again")
    assert cache.get("s") == b"again"
    assert (cache.status()["cache_hits"], cache.status()["cache_misses"]) == (2, 1)
    assert rm.counters() == {"cache:miss": 1, "cache:hit": 1}  # the restart emptied Redis
    assert len(warnings_of(caplog)) == 1
    cache.close()
    rm.close()


def test_a_restart_between_calls_goes_unnoticed(redis_factory, caplog) -> None:
    """Pooled sockets die with the server: one immediate reconnect, no outage; the metrics
    script, gone from the restarted server's script cache, is loaded again."""
    server = redis_factory()
    rm = RedisReadModel(server.url, prefix=fresh_prefix())
    rm.record_metrics(1, metric(1, 10))
    assert rm.count_metrics() == 1
    server.stop()
    server.start()
    rm.record_metrics(2, metric(2, 20))
    assert rm.state == "up" and rm.status()["errors"] == 0
    assert [m["exposure_id"] for m in rm.recent_metrics()] == [2]  # Redis came back empty
    assert warnings_of(caplog) == []
    rm.close()


def test_a_silent_server_costs_one_timeout_not_one_per_call(caplog) -> None:
    """A peer that accepts connections and never answers (a hung Redis, a black hole)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        t0 = time.perf_counter()
        rm = RedisReadModel(url, socket_timeout=0.2)  # the constructor's ping times out
        assert 0.15 < time.perf_counter() - t0 < 1.0
        cache = RedisShardCache(url, socket_timeout=0.2)  # and so does this one's
        assert rm.state == "down" and cache.state == "down"
        t0 = time.perf_counter()
        for i in range(100):
            assert cache.get(f"k{i}") is None and rm.metrics(i) is None
            rm.record_metrics(i, metric(i, i))
        assert time.perf_counter() - t0 < 0.1
        assert rm.status()["errors"] == 1 and "Timeout" in rm.status()["last_error"]
        assert cache.status()["errors"] == 1 and cache.status()["cache_misses"] == 0
        assert len(warnings_of(caplog)) == 2  # one per client
        rm.close()
        cache.close()


def test_no_url_is_disabled_and_every_call_a_no_op(caplog) -> None:
    rm = RedisReadModel(None)
    cache = RedisShardCache(None)
    assert rm.state == "disabled" and cache.state == "disabled"
    cache.set("k", b"v")
    rm.record_persisted(1, {"status": "ok"})
    rm.record_metrics(1, metric(1, 1))
    rm.incr("n")
    rm.observe("stage_seconds", "detect", 1.0)
    assert cache.get("k") is None and rm.persisted(1) is None and rm.metrics(1) is None
    assert rm.recent_metrics() == [] and rm.page_metrics() == [] and rm.counters() == {}
    assert rm.ledger_size() == 0 and rm.count_metrics() == 0 and rm.ping() is False
    assert rm.histograms("stage_seconds") == {} and cache.ping() is False
    disabled = {"state": "disabled", "url": None, "errors": 0, "last_error": None, "skipped": 0}
    assert rm.status() == disabled
    assert cache.status() == {**disabled, "cache_hits": 0, "cache_misses": 0}
    rm.close()
    cache.close()
    assert warnings_of(caplog) == []


def test_closed_clients_are_disabled_and_password_is_hidden(redis_url) -> None:
    for client in (RedisReadModel, RedisShardCache):
        rm = client(redis_url, prefix=fresh_prefix())
        assert rm.ping() is True
        rm.close()
        assert rm.state == "disabled" and rm.ping() is False
        secret = client("redis://:hunter2@127.0.0.1:1/0", retry_after=60)
        assert "hunter2" not in str(secret.status()) and secret.state == "down"
        secret.close()
    closed = RedisShardCache(redis_url, prefix=fresh_prefix())
    closed.close()
    assert closed.get("k") is None
