"""The topology, declared once: a stage added in one row is created, wired, replayed and
shown in lag with no other edit; the README's table is the topology's."""

from __future__ import annotations

import asyncio
import dataclasses
import sys

import pytest
from conftest import REPO
from conftest_services import *  # noqa: F403 (the fixtures: tansu)
from passthrough_stage import topology
from streaming import (
    Worker,
    expid_of,
    folders,
    make_survey,
    own_config,
    read_topic,
    wait_for_folders,
)

from streams.cli import build_parser
from streams.cli import main as stream_main
from streams.kafka_admin import run_sync, topic_partitions
from streams.lag import LagProbe
from streams.replay import Point, replay
from streams.settings import load_deployment
from streams.topology import CALIBRATE, Stage, Topology

pytestmark = pytest.mark.slow


def test_the_topology_derives_the_roles_the_replay_choices_and_the_readme_table():
    assert CALIBRATE.roles == (
        "exposures", "detections", "matches", "zeropoints", "outcomes", "visits", "failures",
        "deadletter", "parked",
    )  # fmt: skip
    assert CALIBRATE.consumed == (
        "exposures", "detections", "matches", "zeropoints", "failures", "outcomes",
    )  # fmt: skip
    assert CALIBRATE.keyed_roles == {"outcomes", "visits"}
    replay_topic = next(a for a in build_parser()._actions if a.dest == "command").choices["replay"]
    choices = next(a for a in replay_topic._actions if a.dest == "topic").choices
    assert tuple(choices) == CALIBRATE.consumed
    assert CALIBRATE.table() in (REPO / "README.md").read_text()
    relayed = topology()
    assert relayed.consumer_of("relayed").agent == "sink"
    assert relayed.roles.index("relayed") == relayed.roles.index("zeropoints") + 1


def test_a_stage_named_twice_is_refused():
    detect = CALIBRATE.stage("detect")
    with pytest.raises(ValueError, match="named twice"):
        Topology((detect, dataclasses.replace(detect, consumes="other")))
    with pytest.raises(ValueError, match="named twice"):
        Topology((detect, dataclasses.replace(detect, agent="other")))
    assert isinstance(CALIBRATE.stage("sink"), Stage)


def test_a_stage_declared_in_one_row_is_created_wired_replayed_and_in_the_lag(
    tansu, tmp_path_factory
):
    work = tmp_path_factory.mktemp("relay")
    survey = make_survey(work / "survey", n_good=3, size=1024, seed=9)
    config = own_config(work, tansu.url, survey.store, "r")
    deployment = dataclasses.replace(load_deployment(config), topology=topology())
    script = REPO / "tests" / "passthrough_stage.py"
    worker = Worker(config, work / "worker.log", argv=[sys.executable, str(script), str(config)])
    try:
        good = [str(p) for p in survey.good]
        assert stream_main(["submit", *good, "--config", str(config)]) == 0
        expected = {str(expid_of(p)) for p in survey.good}
        found = wait_for_folders(work / "out", expected, timeout=180, workers=[worker])
        assert {k for k, v in found.items() if v and v["status"] == "ok"} == expected
    finally:
        worker.stop()
    # created (with the stream's partitions) and wired: the relay's events are on its topic
    relayed = deployment.stream.topic("relayed")
    assert len(run_sync(lambda: topic_partitions(tansu.bootstrap, relayed))) == 4
    assert sorted(r[2] for r in read_topic(tansu.bootstrap, relayed)) == sorted(
        str(e).encode() for e in expected
    )
    # replayed: the sink reads the new topic; from the start, the chain runs through the relay
    before = folders(work / "out")
    report = replay(deployment, role="relayed", start=Point(offset=0))
    assert report.records == 3 and report.failed == 0
    report = replay(deployment, role="exposures", start=Point(offset=0))
    assert report.outcomes["relayed"] == 3 and report.outcomes["zeropoints"] == 3
    assert folders(work / "out") == before
    # in the lag
    lags = asyncio.run(_lag(deployment))
    assert relayed in {lag.topic for lag in lags}


async def _lag(deployment):
    probe = LagProbe(deployment.stream, deployment.topology)
    try:
        return await probe.lag()
    finally:
        await probe.close()
