"""A step longer than the consumer group's session timeout triggers no rebalance.

Two things keep a worker in its group through a long exposure: faust's Kafka consumer
heartbeats from its own thread, and the science runs in the worker's spawned pool, so the
agents' event loop stays free (a step run on the loop itself still passed this test,
thanks to the consumer thread; it would stall the other agents instead). The test checks
the property end to end through Apache Kafka, which evicts a member whose heartbeats stop
for the session timeout, and checks its own premise: the detect step really did outlast
the session.
"""

from __future__ import annotations

import re
import uuid

import pytest
from conftest_services import *  # noqa: F403 (the fixtures: kafka, redis_factory)
from streaming import Worker, expid_of, wait_for_folders, write_config

from calibstream.cli import main as core_main
from streams.cli import main as stream_main
from streams.readmodel import RedisReadModel

pytestmark = pytest.mark.slow

SESSION_TIMEOUT_S = 1.2  # the broker allows 1 s (harness); the 4096² detect step takes ~1.5-2.5 s


def test_a_step_longer_than_the_session_timeout_keeps_the_assignment(
    kafka, redis_factory, tmp_path
):
    sim = tmp_path / "sim"
    size = ["--size", "4096", "4096"]
    assert core_main(["simulate", str(sim), "--n", "1", *size, "--seed", "4"]) == 0
    assert core_main(["ingest-refcat", str(sim / "refcat.fits"), "--out", str(tmp_path / "s")]) == 0
    [exposure] = sorted(sim.glob("exp_*[0-9].fits"))
    prefix = f"l{uuid.uuid4().hex[:8]}."
    redis = redis_factory()
    config = write_config(
        tmp_path / "stream.toml",
        broker=kafka.url,
        redis=redis.url,
        refcat=str(tmp_path / "s"),
        output_root=str(tmp_path / "out"),
        app_id=prefix + "app",
        topic_prefix=prefix,
        session_timeout_s=SESSION_TIMEOUT_S,
        science_processes=1,
    )
    worker = Worker(config, tmp_path / "worker.log")
    try:
        assert stream_main(["submit", str(exposure), "--config", str(config)]) == 0
        expid = str(expid_of(exposure))
        found = wait_for_folders(tmp_path / "out", {expid}, timeout=300, workers=[worker])
        assert found[expid]["status"] == "ok"
        # Premise: the detect step (reading and measuring a 4096² exposure) outlasted the
        # session, so a worker that stopped heartbeating during it would have been evicted.
        detect = RedisReadModel(redis.url).histograms("stage_seconds")["detect"]
        assert detect.count == 1
        assert detect.sum > SESSION_TIMEOUT_S, f"the step took only {detect.sum:.1f} s"
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert log.count("Setting newly assigned partitions") == 1, log[-3000:]
    before_stop = log.split("Stopping")[0]  # (at start-up it revokes the empty set)
    assert not re.search(r"Revoking previously assigned partitions (?!set\(\))", before_stop)
    assert "Heartbeat failed" not in log
