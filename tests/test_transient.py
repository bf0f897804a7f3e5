"""The machine's faults are retried, never recorded as the exposure's failure; past the last
try the record is parked, naming the record, which stays in its topic."""

from __future__ import annotations

import asyncio
import errno
import hashlib
from collections import Counter

import pytest
from streaming import expid_of, make_survey

from calibstream.config import Config
from calibstream.errors import CalibrationError
from calibstream.failures import RetryPolicy, TransientFailure, failure_of
from calibstream.io.outputs import exposure_dir, read_summary
from streams import runner
from streams.codec import decode
from streams.delivery import Outage, run_retrying
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings
from streams.topology import CALIBRATE
from streams.worker import characterized_exposure

QUICK = RetryPolicy(attempts=3, first_s=0.01, max_s=0.02)


class Counts(RedisReadModel):
    """The read model without Redis, its counters kept here."""

    def __init__(self) -> None:
        super().__init__(None)
        self.counts: Counter = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("transient"), n_good=3, size=1024, seed=12)


def test_the_policy_tells_the_machine_s_faults_from_the_data_s():
    for error in (
        PermissionError(errno.EROFS, "Read-only file system"),
        OSError(errno.ENOSPC, "No space left on device"),
        MemoryError(),
        TimeoutError("slow store"),
        TransientFailure("detect", "the science process died on this event"),
    ):
        assert failure_of(error, "sink").transient, error
    for error in (CalibrationError("no stars"), ValueError("bad"), ZeroDivisionError()):
        assert not failure_of(error, "astrometry").transient, error
    assert [QUICK.delay(n) for n in (1, 2, 3)] == [0.01, 0.02, 0.02]
    assert [RetryPolicy().delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def _message(value: bytes) -> runner.Message:
    return runner.Message("calibstream.zeropoints", 2, 41, b"1001", value)


def test_a_step_that_recovers_is_retried_and_one_that_does_not_is_parked():
    tries = []

    async def flaky() -> list[runner.Output]:
        tries.append(1)
        if len(tries) < 3:
            raise TransientFailure("sink", "output root read-only")
        return [runner.Output("detections", b"k", b"v")]

    counts = Counts()
    message = _message(b"event bytes")
    outputs = asyncio.run(run_retrying(flaky, "sink", message, QUICK, counts, Outage()))
    assert outputs == [runner.Output("detections", b"k", b"v")] and len(tries) == 3
    assert counts.counts == {"waiting:sink": 0, "retried:sink": 2}

    async def broken() -> list[runner.Output]:
        raise TransientFailure("sink", "No space left on device")

    counts = Counts()
    [parked] = asyncio.run(run_retrying(broken, "sink", message, QUICK, counts, Outage()))
    assert parked.role == "parked" and parked.key == b"1001"
    record = decode(parked.value, expected_subject="parked").record
    assert (record["topic"], record["partition"], record["offset"]) == (
        "calibstream.zeropoints",
        2,
        41,
    )
    assert record["sha256"] == hashlib.sha256(b"event bytes").digest()
    assert record["length"] == 11 and record["attempts"] == 4 and "No space" in record["reason"]
    assert counts.counts["parked:sink"] == 1 and counts.counts["parked_now:sink"] == 1
    assert counts.counts["retried:sink"] == 3 and counts.counts["waiting:sink"] == 0


def _context(survey, root, counts) -> runner.Context:
    settings = StreamSettings(refcat=str(survey.store), output_root=str(root))
    return runner.Context(settings, Config(), counts, None, CALIBRATE)


def test_a_read_only_output_root_is_the_machine_s_fault_not_the_exposure_s(
    survey, tmp_path, monkeypatch
):
    """The sink cannot write: the runner raises TransientFailure (no failure event, no
    failure counted, no folder); once the root is writable the same message persists."""
    import agents.sink

    real = agents.sink.write_calibration

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path))

    counts = Counts()
    ctx = _context(survey, tmp_path, counts)
    path = survey.good[0]
    _, key, value = characterized_exposure(path)
    message = runner.Message("calibstream.exposures", 0, 0, key, value)
    [detection, match, zeropoint] = runner.run_chain(
        ctx, "detect", message, {"astrometry", "photometry"}
    )
    assert zeropoint.role == "zeropoints" and not zeropoint.handled
    consumed = runner.Message("calibstream.zeropoints", 0, 0, zeropoint.key, zeropoint.value)
    monkeypatch.setattr(agents.sink, "write_calibration", read_only)
    with pytest.raises(TransientFailure, match="Read-only"):
        runner.run(ctx, "sink", consumed)
    assert not any(name.startswith("failed:") for name in counts.counts)
    assert read_summary(exposure_dir(tmp_path, expid_of(path))) is None
    monkeypatch.setattr(agents.sink, "write_calibration", real)
    assert [o.role for o in runner.run(ctx, "sink", consumed)] == ["outcomes"]
    assert read_summary(exposure_dir(tmp_path, expid_of(path)))["status"] == "ok"
    assert detection.handled and match.handled


def test_the_batch_retries_a_machine_fault_and_never_writes_it_as_a_failure(
    survey, tmp_path, monkeypatch, capsys
):
    import agents.sink
    from streams.cli import main

    calls = Counter()
    real = agents.sink.write_calibration

    def full_then_free(calibrated, root):
        calls[calibrated.metadata.expid] += 1
        if (
            calibrated.metadata.expid == expid_of(survey.good[0])
            or calls[calibrated.metadata.expid] < 2
        ):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(calibrated, root)

    monkeypatch.setattr(agents.sink, "write_calibration", full_then_free)
    config = tmp_path / "fast.toml"
    config.write_text("[stream]\nretry_attempts = 2\nretry_first_s = 0.01\n")
    root = tmp_path / "out"
    argv = ["calibrate", *map(str, survey.good), "--refcat", str(survey.store), "--out", str(root)]
    assert main([*argv, "--config", str(config)]) == 1
    summaries = [read_summary(exposure_dir(root, expid_of(p))) for p in survey.good]
    assert summaries[0] is None  # never a failure summary for the machine's fault
    assert [s["status"] for s in summaries[1:]] == ["ok", "ok"]  # recovered on the retry
    assert "not calibrated" in capsys.readouterr().out


def test_tombstones_empty_values_and_missing_keys_get_a_dead_letter(survey, tmp_path):
    """No record crashes an agent: a null value (a Kafka tombstone), an empty one and a
    record without a key each become a dead letter naming where they were."""
    from streams.app import Handled

    ctx = _context(survey, tmp_path, Counts())
    for value, key in ((None, b"1000"), (b"", b"1000"), (b"\x00junk", None)):
        message = runner.Message("calibstream.exposures", 1, 5, key, value)
        for stage in CALIBRATE:
            [out] = runner.run(ctx, stage.agent, message)
            dead = decode(out.value, expected_subject="dead_letter").record
            assert out.role == "deadletter" and out.key == key
            assert (dead["topic"], dead["partition"], dead["offset"]) == (message.topic, 1, 5)
        assert not Handled().take(message.topic, 1, key, value)
