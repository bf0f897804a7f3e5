"""The read model tells the truth and heals itself (issue 13), on a real Redis.

An exposure's row is what its folder says (a failure that kept a complete folder leaves it
ok); its latency is that of its first persisted calibration (a replay or a redelivery does
not change it); an emptied Redis is rebuilt from the folders, by the command or by the
workers' check (one of them); the shard cache lives apart, and flushing it loses no row.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from astropy.io import fits
from conftest_services import *  # noqa: F403 (the fixtures: read_model, redis_url, redis_factory)
from conftest_services import fresh_prefix
from prometheus_client.parser import text_string_to_metric_families
from streaming import Worker, expid_of, make_survey, wait_for_folders, write_config

from calibstream.config import Config
from calibstream.io.outputs import exposure_dir, read_summary
from streams import rebuild, runner
from streams.cli import main as cli_main
from streams.codec import decode
from streams.metrics import metrics_text
from streams.monitor import Monitor
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings, load_deployment, write_stream_config
from streams.shard_cache import RedisShardCache
from streams.topology import CALIBRATE
from streams.worker import characterized_exposure

UNKNOWN_AFTER_REBUILD = {"latency_s": None, "submitted_ms": None, "timings": None}


@dataclass(frozen=True)
class Streamed:
    """The folders of a survey run through the chain, and the events its sinks took."""

    root: Path
    zeropoints: dict[int, bytes]
    failures: dict[int, bytes]

    @property
    def expids(self) -> list[int]:
        return sorted([*self.zeropoints, *self.failures])


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("truth"), n_good=3, size=768, seed=8)


def context(survey, root: Path, readmodel: RedisReadModel) -> runner.Context:
    settings = StreamSettings(refcat=str(survey.store), output_root=str(root))
    return runner.Context(settings, Config(), readmodel, None, CALIBRATE)


def message(value: bytes, role: str = "exposures") -> runner.Message:
    return runner.Message(f"calibstream.{role}", 0, 7, b"key", value, 1_700_000_000_000)


def submitted(path: Path) -> bytes:
    return characterized_exposure(path)[2]


@pytest.fixture(scope="module")
def streamed(survey, tmp_path_factory) -> Streamed:
    """Every exposure through the chain (no Redis): 3 ok folders, a partial one (no
    reference stars) and 2 failed ones."""
    root = tmp_path_factory.mktemp("truth-out")
    ctx = context(survey, root, RedisReadModel(None))
    zeropoints, failures = {}, {}
    for path in survey.exposures:
        for out in runner.run_chain(ctx, "detect", message(submitted(path))):
            expid = decode(out.value).record["exposure_id"]
            if out.role == "zeropoints":
                zeropoints[expid] = out.value
            elif out.role == "failures":
                failures[expid] = out.value
    assert len(zeropoints) == 4 and len(failures) == 2
    return Streamed(root, zeropoints, failures)


def copied(streamed: Streamed, tmp_path: Path) -> Path:
    """A copy of the folders (times kept) for a test that writes into them."""
    root = tmp_path / "out"
    shutil.copytree(streamed.root, root)
    return root


def sinks(ctx: runner.Context, streamed: Streamed) -> None:
    """Every sink event again, as the live sinks took them (the folders are left as they are)."""
    for value in streamed.zeropoints.values():
        assert [o.role for o in runner.run(ctx, "sink", message(value, "zeropoints"))] == [
            "outcomes"
        ]
    for value in streamed.failures.values():
        outputs = runner.run(ctx, "sink-failures", message(value, "failures"))
        assert [o.role for o in outputs] in ([], ["outcomes"])  # none: no visit named


def renumbered(path: Path, expid: int, dest: Path, truncate: bool = False) -> Path:
    """A copy of an exposure file under another EXPID (cut in half when ``truncate``)."""
    with fits.open(path) as hdul:
        hdul[0].header["EXPID"] = expid
        hdul.writeto(dest)
    if truncate:
        data = dest.read_bytes()
        dest.write_bytes(data[: len(data) // 2])
    return dest


#: The survey's exposures by status: the read model's count and the /metrics gauge.
BY_STATUS = {"ok": 3, "partial": 1, "failed": 2}
GAUGE = {"warning": 0, **BY_STATUS}


def exposures_gauge(model: RedisReadModel, root: Path) -> dict[str, float]:
    text = metrics_text(Monitor(model, root, Config().colorterms)).decode()
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "calibstream_exposures"
    )
    return {s.labels["status"]: s.value for s in family.samples}


def latency_count(model: RedisReadModel) -> int:
    histogram = model.histograms("latency_seconds").get("persisted")
    return 0 if histogram is None else histogram.count


# ------------------------------------------------------------------- status: the folder's


def test_a_failure_that_kept_a_complete_folder_leaves_the_row_ok(
    survey, streamed, read_model, tmp_path
):
    root = copied(streamed, tmp_path)
    ctx = context(survey, root, read_model)
    sinks(ctx, streamed)
    expid = expid_of(survey.good[0])
    before = read_model.metrics(expid)
    assert before["status"] == "ok" and before["latency_s"] > 0
    assert exposures_gauge(read_model, root) == GAUGE

    # A later, broken file under the same EXPID: read fails, write_failure keeps the folder.
    broken = renumbered(survey.good[1], expid, tmp_path / "broken.fits", truncate=True)
    outputs = runner.run_chain(ctx, "detect", message(submitted(broken)))
    assert [o.role for o in outputs] == ["failures", "outcomes"]
    assert read_summary(exposure_dir(root, expid))["status"] == "ok"
    assert read_model.metrics(expid) == before  # figures, time and latency untouched
    # ... and its failure event redelivered to the failures' sink, likewise
    runner.run(ctx, "sink-failures", message(outputs[0].value, "failures"))
    assert read_model.metrics(expid) == before
    assert exposures_gauge(read_model, root) == GAUGE
    page = Monitor(read_model, root, Config().colorterms).exposure(expid)
    assert page["metrics"]["status"] == page["summary"]["status"] == "ok"
    assert [r["expid"] for r in read_model.page_metrics(10, status="failed")] == [998, 997]
    assert [r["expid"] for r in read_model.page_metrics(10, status="partial")] == [999]


def test_rows_are_the_folders_summaries(survey, streamed, read_model):
    ctx = context(survey, streamed.root, read_model)
    sinks(ctx, streamed)
    for expid in streamed.expids:
        summary = read_summary(exposure_dir(streamed.root, expid))
        row = read_model.metrics(expid)
        assert row["status"] == summary["status"] and row["expid"] == summary["expid"]
        if summary["status"] == "ok":
            header = summary["header"]
            assert (row["magzero"], row["magzero_err"]) == (
                header["MAGZERO"],
                header["MAGZERO_ERR"],
            )
            assert (row["astrms_mas"], row["astnmatch"]) == (header["ASTRMS"], header["ASTNMATCH"])
            assert row["magzero_nobj"] == header["MAGZERO_NOBJ"]
            assert read_model.persisted(expid)["fingerprint"] == row["fingerprint"]
        else:
            assert (row["stage"], row["reason"]) == (summary["stage"], summary["reason"])
            assert (row["latency_s"] is None) == (summary["status"] == "failed")
    assert read_model.ledger_size() == 4  # ok and partial: persisted calibrations


# ------------------------------------------------------------------- latency: the first


def test_a_replayed_zeropoint_event_leaves_the_latency(survey, streamed, redis_factory, tmp_path):
    server = redis_factory()
    model = RedisReadModel(server.url, prefix=fresh_prefix())
    ctx = context(survey, copied(streamed, tmp_path), model)
    expid = expid_of(survey.good[0])
    value = streamed.zeropoints[expid]
    runner.run(ctx, "sink", message(value, "zeropoints"))
    first = model.metrics(expid)
    assert first["submitted_ms"] == decode(value).record["input"]["submitted_ms"]
    assert first["latency_s"] == (first["persisted_ms"] - first["submitted_ms"]) / 1000 > 0
    assert latency_count(model) == 1

    time.sleep(0.05)
    for _ in range(2):  # a redelivery, a replay: the same event, later
        runner.run(ctx, "sink", message(value, "zeropoints"))
    assert model.metrics(expid) == first
    assert latency_count(model) == 1, "only the first persistence is counted"

    server.stop()  # no persistence: Redis comes back empty ...
    server.start()
    runner.run(ctx, "sink", message(value, "zeropoints"))  # ... and the replay comes after
    assert model.metrics(expid) == first, "the folder still says when it was persisted"
    model.close()


def test_a_new_calibration_of_an_expid_replaces_the_row(survey, streamed, read_model, tmp_path):
    """A different file submitted under a used EXPID that calibrates: a new folder, and the
    row (figures, time, latency) follows it."""
    root = copied(streamed, tmp_path)
    ctx = context(survey, root, read_model)
    sinks(ctx, streamed)
    expid = expid_of(survey.good[0])
    before = read_model.metrics(expid)
    other = renumbered(survey.good[1], expid, tmp_path / "other.fits")
    outputs = runner.run_chain(ctx, "detect", message(submitted(other)))
    assert "zeropoints" in [o.role for o in outputs]
    after = read_model.metrics(expid)
    summary = read_summary(exposure_dir(root, expid))
    assert after["magzero"] == summary["header"]["MAGZERO"] != before["magzero"]
    assert after["fingerprint"] != before["fingerprint"]
    assert after["submitted_ms"] > before["submitted_ms"] and after["latency_s"] > 0
    assert after["persisted_ms"] > before["persisted_ms"]
    assert latency_count(read_model) == 5  # four first persistences (a partial one), and this


# ------------------------------------------------------------------- rebuilt from the folders


def test_rebuild_after_flushdb_gives_back_every_row(survey, streamed, redis_factory, tmp_path):
    server = redis_factory()
    model = RedisReadModel(server.url)  # the production prefix, as the command uses
    root = copied(streamed, tmp_path)
    staging = root / "exposures" / ".999.new-abc"  # a writer's staging folder: not an exposure
    shutil.copytree(exposure_dir(root, expid_of(survey.good[0])), staging)
    sinks(context(survey, root, model), streamed)
    before = {expid: model.metrics(expid) for expid in streamed.expids}
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    assert model.count_metrics() == 0 and model.built() is False

    config = write_stream_config(tmp_path / "stream.toml", redis=server.url, output_root=str(root))
    assert cli_main(["rebuild-read-model", "--config", str(config)]) == 0
    after = {expid: model.metrics(expid) for expid in streamed.expids}
    for expid, row in before.items():
        unknown = UNKNOWN_AFTER_REBUILD if row["status"] != "failed" else {}
        assert after[expid] == {**row, **unknown}, expid  # latency unknown: null
    assert model.count_metrics() == 6 and model.count_by_status() == BY_STATUS
    assert model.ledger_size() == 4 and model.built() is True
    assert exposures_gauge(model, root) == GAUGE

    # Rows that survived keep their latency; the others come back without one.
    client.flushdb()
    survivor = expid_of(survey.good[1])
    value = streamed.zeropoints[survivor]
    runner.run(context(survey, root, model), "sink", message(value, "zeropoints"))
    assert rebuild.rebuild_read_model(root, model) == 6
    assert model.metrics(survivor) == before[survivor]
    assert model.metrics(expid_of(survey.good[2]))["latency_s"] is None
    client.close()
    model.close()


def test_the_self_heal_check_rebuilds_once(streamed, redis_factory, monkeypatch, tmp_path):
    server = redis_factory()
    workers = [RedisReadModel(server.url) for _ in range(2)]  # two workers' checks
    calls = []
    real = rebuild.rebuild_read_model

    def slow_rebuild(root, model):  # long enough for the checks to overlap
        calls.append(model)
        time.sleep(0.3)
        return real(root, model)

    monkeypatch.setattr(rebuild, "rebuild_read_model", slow_rebuild)

    def checks_at_once() -> list[int | None]:
        start = threading.Barrier(len(workers))
        results: list[int | None] = [None] * len(workers)

        def check(i: int) -> None:
            start.wait()
            results[i] = rebuild.heal_read_model(streamed.root, workers[i])

        threads = [threading.Thread(target=check, args=(i,)) for i in range(len(workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return sorted(results, key=lambda r: r is not None)

    assert checks_at_once() == [None, 6] and len(calls) == 1  # an empty Redis: one rebuild
    assert workers[0].count_metrics() == 6 and workers[0].built() is True
    assert rebuild.heal_read_model(streamed.root, workers[1]) is None  # built: nothing to do
    assert len(calls) == 1

    server.stop()  # a restart without persistence: 0 of 6 rows left
    server.start()
    assert workers[0].count_metrics() == 0
    assert checks_at_once() == [None, 6] and len(calls) == 2
    assert workers[1].count_by_status() == BY_STATUS

    server.stop()  # Redis down: the check does nothing (and raises nothing)
    assert rebuild.heal_read_model(streamed.root, workers[0]) is None
    assert workers[0].state == "down"
    server.start()
    fresh = RedisReadModel(server.url)  # (the other one backs off for a while)
    assert rebuild.heal_read_model(tmp_path / "no-exposures-yet", fresh) is None
    assert fresh.built() is True and fresh.count_metrics() == 0  # nothing to rebuild
    assert len(calls) == 2
    for model in (*workers, fresh):
        model.close()


# ------------------------------------------------------------------- the cache apart


def test_flushing_the_shard_cache_leaves_every_row(streamed, redis_factory, tmp_path):
    server = redis_factory()
    model_url = server.url  # db 0
    cache_url = model_url.rsplit("/", 1)[0] + "/1"
    config = tmp_path / "stream.toml"
    config.write_text(f'[stream]\nredis = "{model_url}"\ncache_redis = "{cache_url}"\n')
    stream = load_deployment(config).stream
    assert (stream.redis, stream.cache_redis) == (model_url, cache_url)
    assert StreamSettings(redis=model_url).cache_redis is None  # None: the same as redis

    model = RedisReadModel(stream.redis)
    cache = RedisShardCache(stream.cache_redis, counters_url=stream.redis)
    assert rebuild.rebuild_read_model(streamed.root, model) == 6
    for i in range(50):
        assert cache.get(f"shard{i}") is None
        cache.set(f"shard{i}", bytes(1000))
        assert cache.get(f"shard{i}") == bytes(1000)
    assert model.counters() == {"cache:miss": 50, "cache:hit": 50}  # in the read model's Redis
    model_db, cache_db = (redis.Redis.from_url(u) for u in (model_url, cache_url))
    assert not list(model_db.scan_iter(match="*:shard:*")) and cache_db.dbsize() == 50

    cache_db.flushdb()
    assert model.count_metrics() == 6 and model.count_by_status() == BY_STATUS
    assert model.ledger_size() == 4 and model.built() is True
    assert cache.get("shard0") is None  # a miss: the shard is read from its file
    assert model.counters() == {"cache:miss": 51, "cache:hit": 50}
    for client in (model_db, cache_db, model, cache):
        client.close()


# ------------------------------------------------------------------- the worker heals it


@pytest.mark.slow
def test_a_worker_rebuilds_the_read_model_after_a_redis_restart(
    survey, tansu, redis_factory, tmp_path
):
    """Redis restarted without its data: within a few of the workers' checks (every 10 s)
    every row is back, as its folder says."""
    prefix = f"t{fresh_prefix()[-8:]}."
    server = redis_factory()
    config = write_config(
        tmp_path / "stream.toml",
        broker=tansu.url,
        redis=server.url,
        refcat=str(survey.store),
        output_root=str(tmp_path / "out"),
        app_id=prefix + "app",
        topic_prefix=prefix,
        session_timeout_s=6.0,
        science_processes=0,
    )
    worker = Worker(config, tmp_path / "worker.log")
    try:
        paths = [str(p) for p in survey.exposures]
        assert cli_main(["submit", *paths, "--config", str(config)]) == 0
        expected = {str(expid_of(p)) for p in survey.exposures}
        wait_for_folders(tmp_path / "out", expected, timeout=240, workers=[worker])
        model = RedisReadModel(server.url)
        assert _eventually(lambda: model.count_metrics() == 6, 20), worker.log_tail()
        before = {row["expid"]: row for row in model.page_metrics(10)}

        server.stop()
        server.start()  # empty: no persistence
        assert model.count_metrics() == 0
        assert _eventually(lambda: model.count_metrics() == 6, 40), worker.log_tail()
        assert model.count_by_status() == BY_STATUS
        for expid, row in before.items():
            unknown = UNKNOWN_AFTER_REBUILD if row["status"] != "failed" else {}
            assert model.metrics(expid) == {**row, **unknown}
        assert "read model rebuilt from 6 exposure folders" in worker.log.read_text()
        assert worker.running, worker.log_tail()
    finally:
        worker.stop()


def _eventually(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()
