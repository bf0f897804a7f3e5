"""No event is too big to send (streams.limits): failure events and dead letters keep a
bounded prefix of their input with its length and digest; big catalogues travel in claim
files, verified when read back, and write the very folder an inline event writes; the
producer, the consumers and the topics agree on the record size, checked at a worker's start.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS
from conftest_services import *  # noqa: F403 (the fixtures: tansu, kafka)
from streaming import expid_of, make_survey, same_folders, write_config

from calibstream.config import Config
from calibstream.detection.background import Background
from calibstream.errors import CalibstreamError
from calibstream.failures import failure_of
from calibstream.frame import Frame
from calibstream.io.exposure import Metadata
from streams import events, limits, runner
from streams.cli import main as cli_main
from streams.codec import SchemaRegistry, decode, encode
from streams.kafka_admin import create_topics, run_sync
from streams.limits import LimitsError, check_limits, check_settings, check_topics
from streams.readmodel import RedisReadModel
from streams.settings import Deployment, StreamSettings
from streams.shard_cache import RedisShardCache
from streams.topology import CALIBRATE
from streams.wire import ClaimError
from streams.worker import characterized_exposure, ensure_topics, run_worker

MB = 1_000_000
KIB = 1024


def context(root: Path, refcat: Path | str = "refcat") -> runner.Context:
    settings = StreamSettings(refcat=str(refcat), output_root=str(root))
    return runner.Context(
        settings, Config(), RedisReadModel(None), RedisShardCache(None), CALIBRATE
    )


def message(value: bytes, topic: str = "calibstream.exposures") -> runner.Message:
    return runner.Message(topic, 3, 123_456_789, b"4242", value, 1_700_000_000_000)


METADATA = Metadata(4242, 2000, 7, "r", 60000.25, 30.0, 1.2, 150.0, 2.0)


# ------------------------------------------------------------------ failures, dead letters


def test_the_failure_of_a_50_mb_input_keeps_a_prefix_and_the_digest(tmp_path):
    record = events.characterized_exposure_event(METADATA, str(tmp_path / "gone.fits"))
    record["attributes"] = {"blob": "x" * (50 * MB)}
    value = encode("characterized_exposure", record)
    [out] = runner.run(context(tmp_path), "detect", message(value))
    assert out.role == "failures" and len(out.value) < 100 * KIB
    failure = decode(out.value, expected_subject="failure").record
    assert failure["error"] == "missing_file" and failure["exposure_id"] == 4242
    assert failure["input"] == value[: limits.INPUT_PREFIX_BYTES] and failure["input_truncated"]
    assert failure["input_length"] == len(value) > 50 * MB
    assert failure["input_sha256"] == hashlib.sha256(value).hexdigest()
    assert (failure["input_topic"], failure["input_partition"], failure["input_offset"]) == (
        "calibstream.exposures",
        3,
        123_456_789,
    )


def test_a_50_mb_dead_letter_keeps_a_prefix_and_the_digest(tmp_path):
    value = bytes([0]) + (999).to_bytes(4, "big") + b"\x17" * (50 * MB)  # unknown schema id
    [out] = runner.run(context(tmp_path), "detect", message(value))
    assert out.role == "deadletter" and len(out.value) < 100 * KIB
    dead = decode(out.value, expected_subject="dead_letter").record
    assert dead["error"] == "unknown_schema" and dead["schema_id"] == 999
    assert dead["value"] == value[: limits.INPUT_PREFIX_BYTES] and dead["value_truncated"]
    assert dead["value_length"] == len(value)
    assert dead["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert (dead["topic"], dead["partition"], dead["offset"]) == (
        "calibstream.exposures",
        3,
        123_456_789,
    )


def test_small_inputs_stay_whole_and_every_text_is_bounded(tmp_path):
    value = b"\x00\x00"
    [out] = runner.run(context(tmp_path), "detect", message(value))
    dead = decode(out.value).record
    assert dead["value"] == value and not dead["value_truncated"] and dead["value_length"] == 2
    # an error whose words quote megabytes (fastavro quotes the datum) and a huge key
    error = CalibstreamError("é" * MB, where="w" * MB)
    huge = runner.Message("t", 0, 1, b"k" * MB, b"\x00" * (2 * MB))
    for out in (runner.failure_output("astrometry", error, huge), runner._dead_letter(huge, error)):
        assert len(out.value) < 100 * KIB
        record = decode(out.value).record
        assert len(record["reason"].encode()) <= limits.TEXT_BYTES
        assert record["reason"].endswith("bytes, cut]")
        key = record.get("input_key", record.get("key"))
        assert key == b"k" * limits.KEY_PREFIX_BYTES


def test_v1_records_still_decode_and_v1_readers_read_v2():
    registry = SchemaRegistry()
    old = SchemaRegistry(reader_versions={"failure": 1, "dead_letter": 1})
    failure = events.failure_event(
        failure_of(ValueError("v"), "astrometry"), input=b"abc", input_topic="t", input_offset=5
    )
    v2 = registry.encode("failure", failure)
    back = old.decode(v2).record  # a v1 consumer: the input prefix, the new fields skipped
    assert back["input"] == b"abc" and "input_sha256" not in back and back["input_offset"] == 5
    v1 = registry.encode(5, {k: v for k, v in back.items()})  # a v1 producer
    assert registry.decode(v1).record == {
        **back,
        "input_length": None,
        "input_sha256": None,
        "input_truncated": False,
    }


# ------------------------------------------------------------------ claim checks


def big_detection(n: int = 100_000, seed: int = 3) -> tuple[dict, dict[str, np.ndarray]]:
    """A detection record of a crowded 5000² exposure: ``n`` sources, 40 columns, most of
    them float noise (incompressible, as measured catalogues are)."""
    rng = np.random.default_rng(seed)
    catalog: dict[str, np.ndarray] = {"id": np.arange(1, n + 1, dtype=np.int64)}
    for i in range(36):
        catalog[f"q{i}"] = rng.normal(100.0, 30.0, n)
    catalog["flux32"] = rng.normal(size=n).astype(np.float32)
    catalog["flags"] = rng.integers(0, 64, n).astype(np.int16)
    catalog["used"] = rng.random(n) < 0.1
    catalog["q0"][7] = np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", "<f8")[0]  # a NaN
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix = [150.0, 2.0], [2500.5, 2500.5]
    wcs.wcs.cd = [[-5.5e-5, 0.0], [0.0, 5.5e-5]]
    frame = Frame(METADATA, wcs.to_header(), (5000, 5000), 3.1)
    mesh = rng.normal(1000.0, 1.0, (40, 40)).astype(np.float32)
    background = Background(mesh, (5000, 5000), 1000.0, 12.0, 128, 3)
    origin = events.characterized_exposure_event(METADATA, "/data/x.fits", submitted_ms=0)
    return events.detection_event(origin, frame, catalog, background, {"detect": 1.0}), catalog


def test_a_100000_source_event_streams_under_the_limit_and_round_trips(tmp_path):
    record, catalog = big_detection()
    stream = StreamSettings(output_root=str(tmp_path))
    assert len(encode("detection", record)) > stream.max_message_bytes, "too big inline"
    value = events.encode_event("detection", record, stream)
    assert len(value) <= limits.claim_threshold(stream) < limits.max_event_bytes(stream)
    event = decode(value, expected_subject="detection").record
    claim = event["claim"]
    assert event["catalog"] == [] and event["n_sources"] == 100_000
    assert claim["fields"] == ["catalog"]
    assert Path(tmp_path, "claims", f"{claim['sha256']}.bin").stat().st_size == claim["length"]
    frame, back = events.detection_inputs(event)
    assert frame.shape == (5000, 5000) and list(back) == list(catalog)
    for name, values in catalog.items():
        assert back[name].dtype == values.dtype and back[name].tobytes() == values.tobytes()
    # content-addressed: written once, the same bytes again, nothing left staged
    assert events.encode_event("detection", record, stream) == value
    assert [p.name for p in (tmp_path / "claims").iterdir()] == [f"{claim['sha256']}.bin"]
    # a v1 reader decodes it, with the columns left out (n_sources still says how many)
    v1 = SchemaRegistry(reader_versions={"detection": 1}).decode(value).record
    assert "claim" not in v1 and v1["catalog"] == [] and v1["n_sources"] == 100_000


def test_a_claim_with_other_bytes_fails_the_exposure_a_missing_one_is_the_machines(tmp_path):
    record, _ = big_detection(n=2000)
    value = events.encode_claimed("detection", record, root=tmp_path, threshold=0, limit=10**9)
    claim = decode(value).record["claim"]
    path = tmp_path / "claims" / f"{claim['sha256']}.bin"
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ClaimError, match="SHA-256"):
        events.detection_inputs(decode(value).record)
    [out] = runner.run(context(tmp_path), "astrometry", message(value, "calibstream.detections"))
    failure = decode(out.value).record
    assert out.role == "failures" and failure["error"] == "claim" and "SHA-256" in failure["reason"]
    path.unlink()
    with pytest.raises(FileNotFoundError) as info:
        events.detection_inputs(decode(value).record)
    assert failure_of(info.value, "astrometry").transient, "retried, then parked"


def test_an_event_too_big_even_without_its_columns_is_a_typed_error(tmp_path):
    record, _ = big_detection(n=10)
    record["first_guess_wcs"] *= 2000
    with pytest.raises(limits.EventTooLargeError) as info:
        events.encode_claimed("detection", record, root=tmp_path, threshold=0, limit=100 * KIB)
    assert failure_of(info.value, "detect").kind == "too_large"


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("bounds"), n_good=3, size=768, seed=8)


def _without_timings(value: bytes) -> dict:
    record = decode(value).record
    record.pop("timings")
    return record


@pytest.mark.slow
def test_claim_checked_events_make_the_same_events_and_folder(survey, tmp_path):
    path = survey.good[0]
    plain, claimed = (
        context(tmp_path / "plain", survey.store),
        context(tmp_path / "claimed", survey.store),
    )
    made = {
        o.role: o.value
        for o in runner.run_chain(plain, "detect", message(characterized_exposure(path)[2]))
    }
    assert set(made) == {"detections", "matches", "zeropoints", "outcomes"}

    def claim_checked(value: bytes, subject: str) -> bytes:
        record = decode(value).record
        checked = events.encode_claimed(
            subject, record, root=claimed.root, threshold=0, limit=10**9
        )
        assert decode(checked).record["claim"] is not None and len(checked) < len(value)
        return checked

    detection = claim_checked(made["detections"], "detection")
    [match] = runner.run(claimed, "astrometry", message(detection, "calibstream.detections"))
    assert _without_timings(match.value) == _without_timings(made["matches"])
    [zeropoint] = runner.run(claimed, "photometry", message(claim_checked(match.value, "match")))
    assert _without_timings(zeropoint.value) == _without_timings(made["zeropoints"])
    sink = message(claim_checked(zeropoint.value, "zeropoint"), "calibstream.zeropoints")
    assert [o.role for o in runner.run(claimed, "sink", sink)] == ["outcomes"]
    assert len(list((claimed.root / "claims").glob("*.bin"))) == 3
    name = str(expid_of(path))
    assert same_folders(plain.root, claimed.root, [name]) == []


# ------------------------------------------------------------------ limits


def test_each_mismatch_is_one_line_naming_its_setting():
    stream = StreamSettings()
    size = stream.max_message_bytes
    check_settings(stream)
    check_topics(stream, {"a": size, "b": None})
    cases = [
        (lambda: check_settings(StreamSettings(max_message_bytes=1000)), "max_message_bytes"),
        (
            lambda: check_settings(
                stream, {"producer_max_request_size": size // 2, "consumer_max_fetch_size": size}
            ),
            "producer_max_request_size",
        ),
        (
            lambda: check_settings(
                stream, {"producer_max_request_size": size, "consumer_max_fetch_size": size - 1}
            ),
            "consumer_max_fetch_size",
        ),
        (lambda: check_topics(stream, {"t.a": 1_048_588}), "topic t.a max.message.bytes"),
        (lambda: check_topics(stream, {"t.b": 50 * MB}), "topic t.b max.message.bytes"),
    ]
    for call, setting in cases:
        with pytest.raises(LimitsError) as info:
            call()
        text = str(info.value)
        assert "\n" not in text and text.startswith(f"{setting}: "), text


@pytest.fixture(params=["tansu", pytest.param("kafka", marks=pytest.mark.slow)])
def broker(request):
    return request.getfixturevalue(request.param)


def test_a_worker_stops_on_topics_that_disagree(broker, tmp_path, capsys):
    prefix = f"lim{uuid.uuid4().hex[:8]}."
    stream = StreamSettings(broker=broker.url, topic_prefix=prefix, app_id=prefix + "app")
    run_sync(lambda: ensure_topics(stream))
    described = check_limits(stream)
    assert described == dict.fromkeys(described, stream.max_message_bytes)
    assert len(described) == len(CALIBRATE.roles)
    # topics made earlier with Kafka's default record size (Kafka describes its default;
    # Tansu reports only the values set on a topic, so there it is set)
    small = StreamSettings(broker=broker.url, topic_prefix="small" + prefix, app_id=prefix + "s")
    names = list(Deployment(small).topics)
    config = {"max.message.bytes": "1048588"} if broker.name == "tansu" else {}
    create_topics(
        broker.bootstrap,
        dict.fromkeys(names, small.partitions),
        configs=dict.fromkeys(names, config),
    )
    with pytest.raises(
        LimitsError, match=rf"^topic {small.topic('exposures')} max.message.bytes: "
    ):
        run_worker(Deployment(small))
    conf = write_config(
        tmp_path / "stream.toml", broker=small.broker, topic_prefix=small.topic_prefix
    )
    assert cli_main(["worker", "--config", str(conf)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("calibstream: topic ") and "1048588 is below" in line


def test_an_event_can_name_only_a_claim_file(tmp_path):
    """A claim URI is opened only when it names a regular file ``claims/<sha256>.bin`` of
    the length the event gives: never a device, a FIFO or another file."""
    from streams.wire import read_claim, write_claim

    uri, digest = write_claim(tmp_path, b"columns")
    assert read_claim(uri, digest, 7) == b"columns"
    secret = tmp_path / "secret.txt"
    secret.write_text("columns")
    real = hashlib.sha256(b"columns").hexdigest()
    for bad_uri, sha, length in (
        ("file:///dev/zero", real, 7),
        (f"file://{secret}", real, 7),
        ("/etc/passwd", real, 7),
        (uri, real, 10**12),  # a length the file does not have: not read at all
    ):
        with pytest.raises(ClaimError):
            read_claim(bad_uri, sha, length)
