"""One lane per partition (streams.lanes): a record that waits holds its own partition
only, each partition keeps its order, nothing is acknowledged before it is handled, and a
waiting partition's backlog is bounded by pausing its fetching."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from conftest_services import *  # noqa: F403 (the fixtures: tansu)
from streaming import Worker, expid_of, folders, make_survey, own_config, wait_for_folders

from streams.batch import characterized_exposure
from streams.kafka_admin import run_sync
from streams.lanes import Lanes
from streams.settings import StreamSettings, load_deployment
from streams.worker import ensure_topics, producer


def test_a_waiting_partition_holds_only_itself_and_keeps_its_order():
    async def scenario() -> tuple[list, list, list]:
        gate = asyncio.Event()
        handled: list[tuple[int, int]] = []
        acked: list[tuple[int, int]] = []
        paused: list[tuple[str, int]] = []

        async def handle(record: tuple[int, int]) -> bool:
            if record == (0, 0):
                await gate.wait()  # a record waiting out a fault of the machine
            handled.append(record)
            return True

        lanes: Lanes[tuple[int, int]] = Lanes(
            handle,
            acked.append,
            backlog=4,
            pause=lambda lane: paused.append(("pause", lane)),
            resume=lambda lane: paused.append(("resume", lane)),
        )
        for offset in range(6):
            for partition in (0, 1):
                await lanes.put(partition, (partition, offset))
        for _ in range(20):
            await asyncio.sleep(0)
        during = (list(handled), list(acked), list(paused))
        assert lanes.pending(0) == 5  # offsets 1..5 wait behind offset 0, in order
        gate.set()
        for _ in range(50):
            await asyncio.sleep(0)
        await lanes.close()
        return during, (handled, acked), paused

    (handled, acked, paused_during), (handled_after, acked_after), paused = asyncio.run(scenario())
    # While partition 0's first record waits, partition 1 is served to its end, and
    # nothing of partition 0 is handled or acknowledged.
    assert handled == [(1, n) for n in range(6)] and acked == handled
    # Partition 0's backlog reached the bound: its fetching paused, partition 1's never.
    assert paused_during == [("pause", 0)]
    # Once the fault clears, partition 0 goes on in its order and resumes fetching.
    assert [r for r in handled_after if r[0] == 0] == [(0, n) for n in range(6)]
    assert acked_after == handled_after and ("resume", 0) in paused


def test_a_record_left_for_redelivery_is_not_acknowledged_and_an_error_is_retried():
    async def scenario() -> tuple[list, list]:
        acked: list[str] = []
        tries: list[str] = []

        async def handle(record: str) -> bool:
            tries.append(record)
            if record == "flaky" and tries.count("flaky") == 1:
                raise RuntimeError("a bug, once")
            return record != "stale"

        lanes: Lanes[str] = Lanes(handle, acked.append)
        for record in ("stale", "flaky", "fine"):
            await lanes.put(3, record)
        for _ in range(400):
            await asyncio.sleep(0.01)
            if "fine" in acked:
                break
        await lanes.close()
        return tries, acked

    tries, acked = asyncio.run(scenario())
    assert acked == ["flaky", "fine"]  # the stale record is left; the failed one retried
    assert tries == ["stale", "flaky", "flaky", "fine"]


# ------------------------------------------------- a real worker on the embedded broker


@pytest.mark.slow
def test_a_held_exposure_holds_its_partition_and_the_worker_serves_the_others(
    tansu, tmp_path_factory
):
    """Five exposures over four partitions, the first held at the relay by a fault of the
    machine before the others are sent, each agent taking its own events (``chain = false``:
    the chain would take the others past the relay in the detect step's call): the relay
    serves its other three partitions meanwhile, the fifth exposure (on the held partition)
    waits behind the held one, and both follow in order once the fault clears."""
    work = tmp_path_factory.mktemp("lanes")
    survey = make_survey(work / "survey", n_good=5, size=1024, seed=21)
    config = own_config(
        work, tansu.url, survey.store, "l",
        chain=False,
        retry_attempts=1000,  # never parked here: held until the test lets it go
        retry_first_s=0.2,
        retry_max_s=0.5,
    )  # fmt: skip
    script = REPO / "tests" / "passthrough_stage.py"
    (work / "out").mkdir()
    expids = [str(expid_of(p)) for p in survey.good]
    hold = work / "out" / f"hold-{expids[0]}"
    hold.touch()
    worker = Worker(config, work / "worker.log", argv=[sys.executable, str(script), str(config)])
    stream = load_deployment(config).stream
    log = work / "worker.log"
    try:
        send(stream, [(survey.good[0], 0)])  # the held one first, so the relay holds it
        deadline = time.monotonic() + 120
        while "waiting for the machine" not in log.read_text():
            assert time.monotonic() < deadline and worker.running, worker.log_tail()
            time.sleep(0.2)
        send(stream, [(path, n % 4) for n, path in enumerate(survey.good[1:], start=1)])
        others = set(expids[1:4])
        found = wait_for_folders(work / "out", others, timeout=180, workers=[worker])
        assert {k for k, v in found.items() if v and v["status"] == "ok"} == others
        time.sleep(2.0)  # the held partition has had time to go on, were it to skip
        assert set(folders(work / "out")) == others, worker.log_tail()
        hold.unlink()
        found = wait_for_folders(work / "out", set(expids), timeout=120, workers=[worker])
        assert {k for k, v in found.items() if v and v["status"] == "ok"} == set(expids)
        sunk = sink_order(log, {expids[0], expids[4]}, worker)  # the log lags the folders
        assert sunk.index(expids[0]) < sunk.index(expids[4]), sunk  # the partition's order
    finally:
        worker.stop()


def sink_order(log: Path, keys: set[str], worker: Worker, timeout: float = 30.0) -> list[str]:
    """The keys the sink logged, in order, once ``keys`` are among them (the worker's
    output reaches its log file a little after the folders)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text(errors="replace").splitlines()
        sunk = [line.split(" key ")[1].split()[0] for line in lines if " sink " in line]
        if keys <= set(sunk) or time.monotonic() > deadline or not worker.running:
            return sunk
        time.sleep(0.2)


def send(stream: StreamSettings, placed: list) -> None:
    """Each file's characterized-exposure event to the partition given (``submit`` chooses
    them in turn from a random one)."""

    async def go() -> None:
        await ensure_topics(stream)
        client = producer(stream)
        await client.start()
        try:
            for path, partition in placed:
                _, key, value = characterized_exposure(path)
                topic = stream.topic("exposures")
                await client.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await client.stop()

    run_sync(go)
