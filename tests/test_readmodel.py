"""``streams.readmodel.RedisReadModel`` against a real redis-server: the shard cache, the
ledger, the metrics read read_model and counters, and how it degrades (and recovers) when Redis
stops."""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np
import pytest
import redis
from conftest_services import *  # noqa: F403 (the fixtures: read_model, redis_url, redis_factory)
from conftest_services import fresh_prefix
from test_refcat import catalog, write

from calibstream.astrometry.refcat import ingest_refcat, load_refcat
from streams.readmodel import RedisReadModel

LOGGER = "calibstream.redis"


class FakeClock:
    """A monotonic clock the test moves by hand (the back-off is read from it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


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
    read_model: RedisReadModel, redis_url
) -> None:
    assert read_model.state == "up"
    assert read_model.get("calibstream:refcat:abc") is None
    read_model.set("calibstream:refcat:abc", b"\x00shard bytes\xff")
    assert read_model.get("calibstream:refcat:abc") == b"\x00shard bytes\xff"
    assert read_model.get("calibstream:refcat:abc") == b"\x00shard bytes\xff"
    status = read_model.status()
    assert (status["cache_hits"], status["cache_misses"], status["errors"]) == (2, 1, 0)
    client = redis.Redis.from_url(redis_url)
    key = f"{read_model.prefix}:shard:calibstream:refcat:abc"
    assert 0 < client.ttl(key) <= 86400

    forever = RedisReadModel(redis_url, prefix=read_model.prefix, shard_ttl_s=None)
    forever.set("k2", b"x")
    assert client.ttl(f"{read_model.prefix}:shard:k2") == -1  # no expiry
    forever.close()
    client.close()


def test_is_the_shard_cache_of_load_refcat(read_model: RedisReadModel, tmp_path) -> None:
    cols = catalog(3000, seed=7, ra=(140.0, 160.0), dec=(10.0, 30.0), bands="g")
    ingest_refcat([write(cols, tmp_path / "cat.parquet")], tmp_path / "store", nside=8)
    first = load_refcat(tmp_path / "store", 150.0, 20.0, 8.0, shard_cache=read_model)
    assert first.stats.shards > 1
    assert first.stats.cache_misses == first.stats.shards and first.stats.cache_hits == 0
    second = load_refcat(tmp_path / "store", 150.0, 20.0, 8.0, shard_cache=read_model)
    assert second.stats.cache_hits == second.stats.shards and second.stats.cache_misses == 0
    assert second.stats.cache_errors == 0
    np.testing.assert_array_equal(second.id, first.id)
    np.testing.assert_array_equal(second.ra, first.ra)
    assert read_model.status()["cache_hits"] == second.stats.shards


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
    rm.set("s", b"shard")
    rm.record_metrics(1, metric(1, 10))
    assert rm.get("s") == b"shard" and rm.state == "up"

    server.stop()
    t0 = time.perf_counter()
    assert rm.get("s") is None  # the first failure: connection refused
    first = time.perf_counter() - t0
    assert rm.state == "down" and rm.status()["errors"] == 1
    assert first < rm.socket_timeout + 0.5
    for _ in range(20):  # during the back-off Redis is not even asked
        t0 = time.perf_counter()
        assert rm.get("s") is None
        assert time.perf_counter() - t0 < 0.1
    rm.set("s", b"dropped")
    rm.record_persisted(1, {"status": "ok"})
    rm.record_metrics(2, metric(2, 20))
    rm.incr("processed:detect")
    assert rm.persisted(1) is None and rm.metrics(1) is None
    assert rm.recent_metrics() == [] and rm.recent_metrics(status="ok") == []
    assert rm.count_metrics() == 0 and rm.ledger_size() == 0 and rm.counters() == {}
    assert rm.ping() is False
    status = rm.status()
    assert status["state"] == "down" and status["errors"] == 1 and status["skipped"] >= 30
    assert "Error" in status["last_error"]
    assert status["url"] == server.url
    assert (status["cache_hits"], status["cache_misses"]) == (1, 0)  # skipped: neither

    clock.now += 5.0  # back-off over, Redis still down: one more try, no second warning
    assert rm.get("s") is None and rm.state == "down" and rm.status()["errors"] == 2
    assert len(warnings_of(caplog)) == 1
    assert "unreachable" in warnings_of(caplog)[0].getMessage()

    server.start()  # same port, empty (no persistence)
    assert rm.get("s") is None and rm.state == "down"  # still backing off
    clock.now += 5.0
    assert rm.get("s") is None and rm.state == "up"  # asked, answered: a miss
    rm.set("s", b"again")
    assert rm.get("s") == b"again"
    assert any("is back" in r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert len(warnings_of(caplog)) == 1  # one warning for the whole outage

    server.stop()  # a second outage warns once more
    clock.now += 1.0
    rm.incr("x")
    rm.incr("x")
    assert rm.state == "down" and len(warnings_of(caplog)) == 2
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
        assert rm.state == "down"
        t0 = time.perf_counter()
        for i in range(100):
            assert rm.get(f"k{i}") is None
            rm.record_metrics(i, metric(i, i))
        assert time.perf_counter() - t0 < 0.1
        assert rm.status()["errors"] == 1 and "Timeout" in rm.status()["last_error"]
        assert len(warnings_of(caplog)) == 1
        rm.close()


def test_no_url_is_disabled_and_every_call_a_no_op(caplog) -> None:
    rm = RedisReadModel(None)
    assert rm.state == "disabled"
    rm.set("k", b"v")
    rm.record_persisted(1, {"status": "ok"})
    rm.record_metrics(1, metric(1, 1))
    rm.incr("n")
    assert rm.get("k") is None and rm.persisted(1) is None and rm.metrics(1) is None
    assert rm.recent_metrics() == [] and rm.counters() == {}
    assert rm.ledger_size() == 0 and rm.count_metrics() == 0 and rm.ping() is False
    assert rm.status() == {
        "state": "disabled",
        "url": None,
        "errors": 0,
        "last_error": None,
        "cache_hits": 0,
        "cache_misses": 0,
        "skipped": 0,
    }
    rm.close()
    assert warnings_of(caplog) == []


def test_closed_model_is_disabled_and_password_is_hidden(redis_url) -> None:
    rm = RedisReadModel(redis_url, prefix=fresh_prefix())
    assert rm.ping() is True
    rm.close()
    assert rm.state == "disabled" and rm.get("k") is None and rm.ping() is False
    secret = RedisReadModel("redis://:hunter2@127.0.0.1:1/0", retry_after=60)
    assert "hunter2" not in str(secret.status()) and secret.state == "down"
    secret.close()
