"""End to end through Apache Kafka 4 (KRaft): the service as it runs in production.

- 12 exposures, 3 of them bad: 9 complete folders, 3 failure summaries with their reasons,
  3 failure events; every output byte-identical to ``calibstream calibrate``'s.
- ``kill -9`` of a worker mid-stream, another worker takes over: every exposure persisted
  exactly once (redeliveries rewrite nothing), no staging folder left behind.
- ``kill -9`` of the broker mid-stream, started again on its data: nothing lost.
- ``calibstream replay`` from an offset and from a time (between two submissions): only the
  records after it, no new folder, no file rewritten.
- Two workers of one consumer group split the partitions and both calibrate exposures.
- A client no one here wrote (kcat) reads a zero-point event, and plain fastavro decodes it
  from the schema file alone.

Without Java 17+ or the Kafka jars (or kcat, for its test) the tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import re
import shutil
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pytest
from conftest_services import *  # noqa: F403 (the fixtures: kafka, kafka_factory, redis_factory)
from streaming import (
    OUTPUT_FILES,
    READY,
    Survey,
    Worker,
    expid_of,
    folders,
    make_survey,
    read_topic,
    same_folders,
    wait_for_folders,
    wait_for_log,
    write_config,
)

import streams.replay
from streams.cli import main as core_main
from streams.cli import main as stream_main
from streams.codec import SCHEMAS_DIR
from streams.readmodel import RedisReadModel

pytestmark = pytest.mark.slow

SESSION_TIMEOUT_S = 6.0
FAILED = {"997", "998"}  # unreadable; 999 (no reference stars) is a partial calibration
# What Service.handle logs per event: "<agent> <topic>[<partition>]@<offset> key <key> -> ..."
HANDLED = re.compile(r"\b(\S+) (\S+)\[(\d+)\]@(\d+) key (\S+) -> ")


# ---------------------------------------------------------------- helpers


def start_worker(config: Path, log: Path) -> Worker:
    """A worker subprocess run in the log's folder (faust writes its data folder there)."""
    with contextlib.chdir(log.parent):
        return Worker(config, log)


def complete(root: Path) -> set[str]:
    return {name for name, summary in folders(root).items() if summary is not None}


def wait_for_some(root: Path, n: int, timeout: float, worker: Worker) -> set[str]:
    """Poll (fast) until at least ``n`` folders are complete; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = complete(root)
        if len(done) >= n:
            return done
        assert worker.running, worker.log_tail()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} folders after {timeout:.0f} s\n{worker.log_tail()}")


def handled(log: Path, agent: str, topic: str) -> list[tuple[int, int, str]]:
    """(partition, offset, key) of every event ``agent`` handled on ``topic``, from a log."""
    return [
        (int(m[3]), int(m[4]), m[5])
        for m in HANDLED.finditer(log.read_text(errors="replace"))
        if m[1] == agent and m[2] == topic
    ]


def wait_for_handled(
    workers: list[Worker], agent: str, topic: str, keys: set[str], timeout: float = 60.0
) -> None:
    """Until the workers' logs show ``agent`` handled every key on ``topic``: a folder is
    complete (written in the chain) before the agent that handled its event logs it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = {key for w in workers for *_, key in handled(w.log, agent, topic)}
        if keys <= logged:
            return
        time.sleep(0.2)
    raise AssertionError(f"{agent} never logged {sorted(keys - logged)} on {topic}")


def wait_for_ledger(redis_url: str, size: int, timeout: float = 60.0) -> None:
    """Until the read model's ledger holds ``size`` entries: a sink records an exposure's
    entry just after its folder is complete, so a worker stopped at once could leave the
    last one to its successor."""
    model = RedisReadModel(redis_url)
    deadline = time.monotonic() + timeout
    while model.ledger_size() < size and time.monotonic() < deadline:
        time.sleep(0.2)


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """(inode, mtime) of every file of every exposure folder."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.glob("exposures/*/*")}


def check_persisted_once(out: Path, batch: Path, expected: set[str]) -> None:
    """Exactly the expected folders, each complete, no staging left, equal to batch's."""
    entries = sorted(p.name for p in (out / "exposures").iterdir())
    assert entries == sorted(expected), "missing, extra or staging folders"
    for name in expected:
        files = sorted(p.name for p in (out / "exposures" / name).iterdir())
        assert files == sorted(OUTPUT_FILES), name
    assert same_folders(out, batch, sorted(expected)) == []


@dataclass
class Deployed:
    work: Path
    out: Path
    prefix: str
    config: Path
    redis_url: str

    def topic(self, role: str) -> str:
        return self.prefix + role


def deploy(work: Path, survey: Survey, broker, redis) -> Deployed:
    """A configuration of its own (topics, group) on ``broker`` writing under ``work/out``."""
    prefix = f"k{uuid.uuid4().hex[:8]}."
    config = write_config(
        work / "stream.toml",
        broker=broker.url,
        redis=redis.url,
        refcat=str(survey.store),
        output_root=str(work / "out"),
        app_id=prefix + "app",
        topic_prefix=prefix,
        session_timeout_s=SESSION_TIMEOUT_S,
        science_processes=1,
    )
    return Deployed(work, work / "out", prefix, config, redis.url)


def submit(deployed: Deployed, paths: list[Path]) -> None:
    argv = ["submit", *map(str, paths), "--config", str(deployed.config)]
    assert stream_main(argv) == 0


# ---------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Survey:
    return make_survey(tmp_path_factory.mktemp("kafka-survey"), n_good=9, size=1024, seed=5)


@pytest.fixture(scope="module")
def batch(survey, tmp_path_factory) -> Path:
    """``calibstream calibrate`` on the whole survey: the outputs every stream must equal."""
    out = tmp_path_factory.mktemp("kafka-batch") / "out"
    argv = ["calibrate", *map(str, survey.exposures), "--refcat", str(survey.store)]
    assert core_main([*argv, "--out", str(out)]) == 1  # two failed, one partial
    assert set(folders(out)) == {str(expid_of(p)) for p in survey.exposures}
    return out


@dataclass
class Streamed(Deployed):
    found: dict
    worker: Worker
    later: list[Path]  # submitted after ``split``
    split: dt.datetime  # a wall time between the two submissions


@pytest.fixture(scope="module")
def streamed(survey, kafka, redis_factory, tmp_path_factory):
    """The survey through one worker on the shared broker, submitted in two batches."""
    deployed = deploy(tmp_path_factory.mktemp("kafka-stream"), survey, kafka, redis_factory())
    worker = start_worker(deployed.config, deployed.work / "worker.log")
    try:
        first, later = [*survey.bad.values(), *survey.good[:4]], survey.good[4:]
        submit(deployed, first)
        time.sleep(1.0)
        split = dt.datetime.now(dt.UTC)
        time.sleep(1.0)
        submit(deployed, later)
        expected = {str(expid_of(p)) for p in survey.exposures}
        found = wait_for_folders(deployed.out, expected, timeout=240, workers=[worker])
        yield Streamed(**vars(deployed), found=found, worker=worker, later=later, split=split)
    finally:
        worker.stop()


# ---------------------------------------------------------------- one worker, 12 exposures


def test_good_exposures_are_complete_and_bad_ones_fail_with_reasons(survey, streamed):
    assert streamed.worker.running, streamed.worker.log_tail()
    found = streamed.found
    ok = {k for k, v in found.items() if v["status"] == "ok"}
    assert ok == {str(expid_of(p)) for p in survey.good}
    for name in ok:
        files = sorted(p.name for p in (streamed.out / "exposures" / name).iterdir())
        assert files == sorted(OUTPUT_FILES)
    failed = {k: v for k, v in found.items() if v["status"] == "failed"}
    assert set(failed) == FAILED
    assert failed["997"]["stage"] == "read" and "truncated" in failed["997"]["reason"]
    assert failed["998"]["stage"] == "read" and "PSF" in failed["998"]["reason"]
    assert found["999"]["status"] == "partial" and found["999"]["stage"] == "astrometry"
    assert "no reference stars" in found["999"]["reason"]
    for name in failed:
        assert [p.name for p in (streamed.out / "exposures" / name).iterdir()] == ["summary.json"]


def test_outputs_equal_the_batch_commands(streamed, batch):
    names = sorted(folders(batch))
    assert names == sorted(folders(streamed.out))
    assert same_folders(streamed.out, batch, names) == []


def test_two_failure_events_keep_their_input(kafka, streamed):
    failures = read_topic(kafka.bootstrap, streamed.topic("failures"))
    by_id = {d.record["exposure_id"]: d.record for *_, d in failures}
    assert len(failures) == 2 and set(by_id) == {997, 998}  # 999: partial, not a failure
    assert by_id[997]["stage"] == by_id[998]["stage"] == "read"
    assert by_id[997]["input_topic"] == streamed.topic("exposures")
    for record in by_id.values():
        assert record["reason"] and record["input"]


def test_ledger_holds_each_calibrated_exposure_once(survey, kafka, streamed):
    model = RedisReadModel(streamed.redis_url)
    assert model.ledger_size() == len(survey.good) + 1  # and the partial calibration
    zeropoints = read_topic(kafka.bootstrap, streamed.topic("zeropoints"))
    ids = sorted(d.record["exposure_id"] for *_, d in zeropoints)
    calibrated = [expid_of(p) for p in survey.good] + [999]
    assert ids == sorted(calibrated)  # no worker died: no redelivery


# ---------------------------------------------------------------- replay


def _exposure_records(kafka, streamed) -> dict[int, list[tuple[int, str]]]:
    """partition -> [(offset, key)] of the exposures topic (4 partitions)."""
    by_partition: dict[int, list[tuple[int, str]]] = {p: [] for p in range(4)}
    for partition, offset, key, _ in read_topic(kafka.bootstrap, streamed.topic("exposures")):
        by_partition[partition].append((offset, key.decode()))
    return by_partition


@pytest.fixture
def reports(monkeypatch) -> list[streams.replay.ReplayReport]:
    """Every report ``calibstream replay`` makes in the test (the command prints it only)."""
    made = []
    real = streams.replay.replay

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(streams.replay, "replay", spy)
    return made


def test_replay_from_an_offset_rewrites_nothing(kafka, streamed, batch, reports, capsys):
    records = _exposure_records(kafka, streamed)
    assert sum(map(len, records.values())) == 12
    n = max(map(len, records.values())) - 1  # >= 2: 12 records in 4 partitions
    replayed = [key for recs in records.values() for offset, key in recs if offset >= n]
    assert replayed and n >= 2
    before = snapshot(streamed.out)
    status = stream_main(["replay", "--from-offset", str(n), "--config", str(streamed.config)])
    assert status == (1 if FAILED & set(replayed) else 0)
    (report,) = reports
    assert report.records == len(replayed)
    assert report.ranges == {p: (min(n, len(recs)), len(recs)) for p, recs in records.items()}
    assert report.folders_before == report.folders_after == 12
    assert f"replayed {len(replayed)} record(s)" in capsys.readouterr().out
    assert snapshot(streamed.out) == before  # no new folder, no file rewritten
    assert same_folders(streamed.out, batch, sorted(folders(batch))) == []


def test_replay_from_a_time_takes_only_the_later_records(kafka, streamed, reports, capsys):
    records = _exposure_records(kafka, streamed)
    later = {str(expid_of(p)) for p in streamed.later}
    before = snapshot(streamed.out)
    argv = ["replay", "--from-time", streamed.split.isoformat(), "--config", str(streamed.config)]
    assert stream_main(argv) == 0  # the later records are all good exposures
    (report,) = reports
    assert report.records == len(later)
    # Each partition from its first later record (the earlier ones precede it) to its end.
    expected = {}
    for partition, recs in records.items():
        earlier = [offset for offset, key in recs if key not in later]
        assert earlier == list(range(len(earlier)))  # submitted first, so written first
        expected[partition] = (len(earlier), len(recs))
    assert report.ranges == expected
    assert report.outcomes["zeropoints"] == len(later) and report.failed == 0
    assert report.folders_before == report.folders_after == 12
    assert f"replayed {len(later)} record(s)" in capsys.readouterr().out
    assert snapshot(streamed.out) == before


# ---------------------------------------------------------------- kcat and fastavro


def test_kcat_reads_a_zero_point_event_fastavro_decodes_it(kafka, streamed):
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if not kcat:
        pytest.skip("kcat is not installed (apt-get install kcat)")
    # A complete calibration's event (a partial one, the field without references, has
    # its photometry NaN): read from its partition and offset.
    topic = streamed.topic("zeropoints")
    partition, offset = next(
        (p, o)
        for p, o, key, decoded in read_topic(kafka.bootstrap, topic)
        if math.isfinite(decoded.record["magzero"])
    )
    out = subprocess.run(
        [
            kcat,
            "-C",
            "-b",
            kafka.bootstrap,
            "-t",
            topic,
            "-p",
            str(partition),
            "-o",
            str(offset),
            "-c",
            "1",
            "-e",
            "-q",
            "-f",
            "%k %S\n%s",
        ],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    head, _, value = out.stdout.partition(b"\n")
    key, size = head.decode().split()
    assert len(value) == int(size) > 5
    magic, schema_id = struct.unpack(">BI", value[:5])
    registry = json.loads((SCHEMAS_DIR / "registry.json").read_text())
    versions = {int(k): v for k, v in registry.items() if v["subject"] == "zeropoint"}
    zeropoint_id, entry = max(versions.items(), key=lambda item: item[1]["version"])
    assert magic == 0 and schema_id == zeropoint_id  # the writer writes the highest version
    schema = fastavro.parse_schema(json.loads((SCHEMAS_DIR / entry["file"]).read_text()))
    body = io.BytesIO(value[5:])
    record = fastavro.schemaless_reader(body, schema)
    assert body.tell() == len(value) - 5  # the whole message, nothing left over
    summary = json.loads((streamed.out / "exposures" / key / "summary.json").read_text())
    assert record["exposure_id"] == int(key) == summary["expid"]
    assert record["magzero"] == summary["header"]["MAGZERO"]
    assert record["n_sources"] == summary["n_sources"]


# ---------------------------------------------------------------- failures mid-stream


def test_kill_9_of_a_worker_mid_stream_persists_each_exposure_once(
    survey, batch, kafka, redis_factory, tmp_path
):
    deployed = deploy(tmp_path, survey, kafka, redis_factory())
    expected = {str(expid_of(p)) for p in survey.good}
    first = start_worker(deployed.config, tmp_path / "first.log")
    second = None
    try:
        submit(deployed, survey.good)
        wait_for_some(deployed.out, 1, timeout=180, worker=first)
        first.kill()
        assert not first.running
        at_kill = complete(deployed.out)
        assert 1 <= len(at_kill) < len(expected), "not killed mid-stream"
        second = start_worker(deployed.config, tmp_path / "second.log")
        wait_for_folders(deployed.out, expected, timeout=180, workers=[second])
        sinking = deployed.topic("zeropoints")
        wait_for_handled([second], "sink", sinking, expected - at_kill)
        wait_for_ledger(deployed.redis_url, len(expected))
        assert second.running, second.log_tail()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    check_persisted_once(deployed.out, batch, expected)
    # The second worker persisted what the first had not.
    sunk = {key for *_, key in handled(second.log, "sink", deployed.topic("zeropoints"))}
    assert expected - at_kill <= sunk
    # One ledger entry per exposure; the zero-point topic names only these exposures
    # (an event in flight at the kill may be there twice: at-least-once).
    assert RedisReadModel(deployed.redis_url).ledger_size() == len(expected)
    zeropoints = read_topic(kafka.bootstrap, deployed.topic("zeropoints"))
    ids = [str(d.record["exposure_id"]) for *_, d in zeropoints]
    assert set(ids) == expected
    print(f"killed after {len(at_kill)} folder(s); {len(ids) - len(expected)} redelivered")


def test_broker_kill_9_and_restart_mid_stream_loses_nothing(
    survey, batch, kafka_factory, redis_factory, tmp_path
):
    broker = kafka_factory()
    deployed = deploy(tmp_path, survey, broker, redis_factory())
    exposures = survey.good[:6]
    expected = {str(expid_of(p)) for p in exposures}
    worker = start_worker(deployed.config, tmp_path / "worker.log")
    try:
        submit(deployed, exposures)
        wait_for_some(deployed.out, 1, timeout=180, worker=worker)
        broker.kill()
        at_kill = complete(deployed.out)
        assert len(at_kill) < len(expected), "the broker was not killed mid-stream"
        time.sleep(3.0)
        broker.start()
        print(f"Apache Kafka back in {broker.started_in:.1f} s")
        wait_for_folders(deployed.out, expected, timeout=180, workers=[worker])
        wait_for_ledger(deployed.redis_url, len(expected))
        assert worker.running, worker.log_tail()
    finally:
        worker.stop()
    check_persisted_once(deployed.out, batch, expected)
    assert RedisReadModel(deployed.redis_url).ledger_size() == len(expected)
    zeropoints = read_topic(broker.bootstrap, deployed.topic("zeropoints"))
    assert {str(d.record["exposure_id"]) for *_, d in zeropoints} == expected


# ---------------------------------------------------------------- two workers, one group


def test_two_workers_of_one_group_split_the_partitions(
    survey, batch, kafka, redis_factory, tmp_path
):
    deployed = deploy(tmp_path, survey, kafka, redis_factory())
    expected = {str(expid_of(p)) for p in survey.good}
    a = start_worker(deployed.config, tmp_path / "a.log")
    b = None
    try:
        wait_for_log(a, READY)
        b = start_worker(deployed.config, tmp_path / "b.log")
        wait_for_log(b, READY)
        # a had every partition, then gave some to b: its second assignment.
        wait_for_log(a, {"Setting newly assigned partitions": 2})
        submit(deployed, survey.good)
        wait_for_folders(deployed.out, expected, timeout=240, workers=[a, b])
        wait_for_handled([a, b], "detect", deployed.topic("exposures"), expected)
        assert a.running and b.running
    finally:
        a.stop()
        if b is not None:
            b.stop()
    check_persisted_once(deployed.out, batch, expected)
    topic = deployed.topic("exposures")
    by_a, by_b = handled(a.log, "detect", topic), handled(b.log, "detect", topic)
    assert by_a and by_b, "one worker calibrated every exposure"
    assert {key for *_, key in by_a} | {key for *_, key in by_b} == expected
    # The group gave each partition to one worker.
    assert not {p for p, *_ in by_a} & {p for p, *_ in by_b}
    print(
        f"worker a: partitions {sorted({p for p, *_ in by_a})}, {len(by_a)} exposures; "
        f"worker b: partitions {sorted({p for p, *_ in by_b})}, {len(by_b)} exposures"
    )
