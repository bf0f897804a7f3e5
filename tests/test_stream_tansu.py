"""End to end through the embedded broker: a worker, submitted exposures, bad input, replay.

12 exposures, 3 of them bad (a truncated file, a missing HDU, a field with no
reference stars): 9 complete folders, 3 failure summaries with their reasons,
3 failure events; every output byte-identical to ``calibstream calibrate``'s.
Undecodable messages go to the dead-letter topic and the worker goes on.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from conftest_services import *  # noqa: F403 (the fixtures: tansu, redis_factory)
from streaming import (
    OUTPUT_FILES,
    Worker,
    expid_of,
    folders,
    make_survey,
    read_topic,
    same_folders,
    wait_for_folders,
    write_config,
)

from streams.cli import main as core_main
from streams.cli import main as stream_main
from streams.codec import HEADER
from streams.readmodel import RedisReadModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("tansu-survey"), n_good=9, size=1024, seed=5)


@pytest.fixture(scope="module")
def streamed(survey, tansu, redis_factory, tmp_path_factory):
    """The survey through one worker on the embedded broker, plus two undecodable messages."""
    work = tmp_path_factory.mktemp("tansu-stream")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    redis = redis_factory()
    config = write_config(
        work / "stream.toml",
        broker=tansu.url,
        redis=redis.url,
        refcat=str(survey.store),
        output_root=str(work / "out"),
        app_id=prefix + "app",
        topic_prefix=prefix,
        session_timeout_s=6.0,
        science_processes=1,
    )
    worker = Worker(config, work / "worker.log")
    try:
        paths = [str(p) for p in survey.exposures]
        assert stream_main(["submit", *paths, "--config", str(config)]) == 0
        asyncio.run(_produce_garbage(tansu.bootstrap, prefix + "exposures"))
        expected = {str(expid_of(p)) for p in survey.good} | {"997", "998", "999"}
        found = wait_for_folders(work / "out", expected, timeout=240, workers=[worker])
        yield work, prefix, config, found, redis.url, worker
    finally:
        worker.stop()


async def _produce_garbage(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not an event", key=b"garbage")
        await producer.send_and_wait(topic, HEADER.pack(0, 4242) + b"\x02", key=b"unknown")
    finally:
        await producer.stop()


def test_good_exposures_are_complete_and_bad_ones_fail_with_reasons(survey, streamed):
    work, _, _, found, _, worker = streamed
    assert worker.running, worker.log_tail()
    ok = {k for k, v in found.items() if v["status"] == "ok"}
    assert ok == {str(expid_of(p)) for p in survey.good}
    for name in ok:
        assert sorted(p.name for p in (work / "out" / "exposures" / name).iterdir()) == sorted(
            OUTPUT_FILES
        )
    failed = {k: v for k, v in found.items() if v["status"] == "failed"}
    assert set(failed) == {"997", "998"}
    assert failed["997"]["stage"] == "read" and "truncated" in failed["997"]["reason"]
    assert failed["998"]["stage"] == "read" and "PSF" in failed["998"]["reason"]
    for name in failed:
        assert [p.name for p in (work / "out" / "exposures" / name).iterdir()] == ["summary.json"]
    # no reference stars: a partial calibration, the catalogue with first-guess positions
    assert found["999"]["status"] == "partial" and found["999"]["stage"] == "astrometry"
    assert "no reference stars" in found["999"]["reason"]
    kept = sorted(p.name for p in (work / "out" / "exposures" / "999").iterdir())
    assert kept == sorted(set(OUTPUT_FILES) - {"matches.fits", "matches.parquet"})


def test_outputs_equal_the_batch_commands(survey, streamed, tmp_path):
    work, *_ = streamed
    batch = tmp_path / "batch"
    status = core_main(
        [
            "calibrate",
            *map(str, survey.exposures),
            "--refcat",
            str(survey.store),
            "--out",
            str(batch),
        ]
    )
    assert status == 1  # two failed, one partial
    names = sorted(folders(batch))
    assert names == sorted(folders(work / "out"))
    assert same_folders(work / "out", batch, names) == []


def test_two_failure_events_keep_their_input(tansu, streamed):
    _, prefix, *_ = streamed
    failures = read_topic(tansu.bootstrap, prefix + "failures")
    by_id = {d.record["exposure_id"]: d.record for *_, d in failures}
    assert len(failures) == 2 and set(by_id) == {997, 998}
    assert {r["stage"] for r in by_id.values()} == {"read"}
    assert by_id[997]["input_topic"] == prefix + "exposures"
    # the partial calibration went on down the chain, marked partial
    zeropoints = read_topic(tansu.bootstrap, prefix + "zeropoints")
    partial = [d.record for *_, d in zeropoints if d.record["exposure_id"] == 999]
    assert len(partial) == 1 and partial[0]["status"] == "partial"
    assert partial[0]["partial"]["stage"] == "astrometry"
    for record in by_id.values():
        assert record["reason"] and record["input"]  # the input message, byte for byte


def test_undecodable_messages_go_to_the_dead_letter_topic(tansu, streamed):
    _, prefix, *_ = streamed
    dead = read_topic(tansu.bootstrap, prefix + "deadletter")
    by_key = {d.record["key"]: d.record for *_, d in dead}
    assert set(by_key) == {b"garbage", b"unknown"}
    assert by_key[b"garbage"]["value"] == b"not an event"
    assert "magic byte" in by_key[b"garbage"]["reason"]
    assert by_key[b"unknown"]["schema_id"] == 4242
    assert "4242" in by_key[b"unknown"]["reason"]


def test_redis_holds_the_ledger_and_metrics(survey, streamed):
    *_, redis_url, _ = streamed
    model = RedisReadModel(redis_url)
    assert model.ledger_size() == len(survey.good) + 1  # and the partial calibration
    assert model.count_metrics() == len(survey.exposures)
    rows = model.recent_metrics(limit=100)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(survey.good)
    assert all(r["latency_s"] > 0 and 20 < r["magzero"] < 40 for r in ok)
    assert {r["exposure_id"] for r in rows if r["status"] == "failed"} == {997, 998}
    assert [r["exposure_id"] for r in rows if r["status"] == "partial"] == [999]


def test_replay_from_offset_zero_changes_nothing(survey, streamed):
    work, _, config, *_ = streamed
    before = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (work / "out" / "exposures").glob("*/*")
    }
    assert stream_main(["replay", "--from-offset", "0", "--config", str(config)]) == 1
    after = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (work / "out" / "exposures").glob("*/*")
    }
    assert after == before  # no new folder, no file rewritten
