"""Events that evolve (README "Compatibility rule"): v3 of detection, match and zero-point
add the quality fields, v4 of match and zero-point the first guess, with defaults, each
appended after the older versions' fields.

* a bare fastavro reader holding only the v1 ``.avsc`` decodes the v1 fields of a newer event
  (new fields are appended at the end of the top-level record, so v1's fields are a prefix
  of the body);
* archived v1 topics replay: the statistics the event holds what they need for are computed
  (the WCS geometry, the astrometric offsets, the zero-point, effTime's transparency
  factor), the others are null; in process as replay runs each record, and through
  ``calibstream replay`` on the embedded broker.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import uuid

import fastavro
import pytest
from aiokafka import AIOKafkaProducer
from conftest_services import *  # noqa: F403 (the fixtures: tansu)
from streaming import expid_of, make_survey, write_config

from calibstream.assess import STAT_CARDS
from calibstream.config import Config
from calibstream.io.outputs import exposure_dir, read_summary
from streams import runner
from streams.cli import main as stream_main
from streams.codec import SCHEMAS_DIR, decode, encode
from streams.kafka_admin import create_topics
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings, load_deployment
from streams.topology import CALIBRATE
from streams.worker import characterized_exposure

REGISTRY = json.loads((SCHEMAS_DIR / "registry.json").read_text())
SUBJECTS = ("detection", "match", "zeropoint")
#: The calexp header's cards a v1 writer did not write (the assessment's).
NEW_CARDS = {key for key, _ in STAT_CARDS.values()} | {
    "PSFFWHM", "QSTATUS", "QAASTOFF", "QAASTRMS", "QAASTNM", "QAPHRMS", "QAPHNST", "QAPHCOL",
    "QAPSF", "QASKY", "QADEPTH", "PARTIAL", "WCSGUESS",
    *(f"{axis}CORN{i}" for axis in ("RA", "DEC") for i in range(1, 5)),
}  # fmt: skip
#: Statistics a v1 event allows (no pixels' statistics in it) and those it does not.
KNOWN_FROM_V1 = (
    "zeroPoint", "effTimeZeroPointScale", "astromOffsetMean", "astromOffsetStd", "ra", "dec",
    "raCorners", "decCorners", "pixelScale", "zenithDistance",
)  # fmt: skip
UNKNOWN_FROM_V1 = (
    "psfSigma", "psfArea", "nPsfStar", "skyBg", "skyNoise", "meanVar", "magLim", "effTime",
    "effTimePsfSigmaScale", "effTimeSkyBgScale",
)  # fmt: skip


def schema_file(subject: str, version: int) -> dict:
    return json.loads((SCHEMAS_DIR / f"{subject}.v{version}.avsc").read_text())


def schema_id(subject: str, version: int) -> int:
    return next(
        int(k) for k, e in REGISTRY.items() if (e["subject"], e["version"]) == (subject, version)
    )


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("versions"), n_good=3, size=768, seed=8)


def context(store, root) -> runner.Context:
    settings = StreamSettings(refcat=str(store), output_root=str(root))
    return runner.Context(settings, Config(), RedisReadModel(None), None, CALIBRATE)


@pytest.fixture(scope="module")
def chain(survey, tmp_path_factory):
    """The events (as this version writes them) of the first good exposure."""
    ctx = context(survey.store, tmp_path_factory.mktemp("chain"))
    value, made = characterized_exposure(survey.good[0])[2], {}
    for agent, subject in (("detect", "detection"), ("astrometry", "match"),
                           ("photometry", "zeropoint")):  # fmt: skip
        [out] = runner.run(ctx, agent, runner.Message("t", 0, 0, b"k", value, 1))
        made[subject] = value = out.value
    return made


def as_v1(subject: str, value: bytes) -> bytes:
    """The event as a v1 writer wrote it: the v1 fields, framed with v1's id; a zero-point
    event's calexp header without the cards v1 never wrote."""
    record = decode(value).record
    fields = [f["name"] for f in schema_file(subject, 1)["fields"]]
    old = {name: record[name] for name in fields}
    if subject == "zeropoint":
        old["calexp_header"] = [c for c in old["calexp_header"] if c["key"] not in NEW_CARDS]
    return encode(schema_id(subject, 1), old)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_a_bare_reader_with_only_the_v1_avsc_decodes_the_v1_fields_of_a_new_event(chain, subject):
    message = chain[subject]
    newest = max(e["version"] for e in REGISTRY.values() if e["subject"] == subject)
    assert int.from_bytes(message[1:5], "big") == schema_id(subject, newest)
    # nothing else: no registry, no newer version
    v1 = fastavro.parse_schema(schema_file(subject, 1))
    body = io.BytesIO(message[5:])
    record = fastavro.schemaless_reader(body, v1)
    full = decode(message).record
    assert record == {f["name"]: full[f["name"]] for f in schema_file(subject, 1)["fields"]}
    assert body.tell() < len(message) - 5, "the fields v1 does not know follow, unread"


@pytest.mark.parametrize("subject", sorted({e["subject"] for e in REGISTRY.values()}))
def test_every_version_appends_its_fields_after_the_older_ones(subject):
    """The rule that makes the bare reader above work, for every registered subject."""
    versions = sorted(e["version"] for e in REGISTRY.values() if e["subject"] == subject)
    for old, new in itertools.pairwise(versions):
        before = [(f["name"], f["type"]) for f in schema_file(subject, old)["fields"]]
        after = schema_file(subject, new)["fields"]
        assert [(f["name"], f["type"]) for f in after[: len(before)]] == before, (
            f"{subject} v{new} changes v{old}'s fields (names, types or order)"
        )
        assert all("default" in f for f in after[len(before) :])


@pytest.mark.parametrize("subject", SUBJECTS)
def test_an_archived_v1_topic_replays_with_the_statistics_it_allows(
    chain, survey, subject, tmp_path
):
    agent = CALIBRATE.consumer_of({"detection": "detections", "match": "matches",
                                   "zeropoint": "zeropoints"}[subject]).agent  # fmt: skip
    ctx = context(survey.store, tmp_path)
    message = runner.Message("archived", 0, 0, b"k", as_v1(subject, chain[subject]), 1)
    outputs = runner.run_chain(ctx, agent, message)
    roles = [o.role for o in outputs]
    assert "failures" not in roles and "deadletter" not in roles
    summary = read_summary(exposure_dir(tmp_path, expid_of(survey.good[0])))
    stats = summary["summary_stats"]
    assert summary["status"] == "ok"
    assert all(stats[name] is not None for name in KNOWN_FROM_V1), stats
    assert all(stats[name] is None for name in UNKNOWN_FROM_V1), stats
    assert (
        summary["header"]["ZEROPNT"] == stats["zeroPoint"] and "PSFSIGMA" not in summary["header"]
    )
    assert {v["group"] for v in summary["verdicts"]} == {"astrometric", "photometric", "image"}


def test_calibstream_replay_of_a_v1_detection_topic(chain, survey, tansu, tmp_path):
    prefix = f"v{uuid.uuid4().hex[:8]}."
    config = write_config(
        tmp_path / "stream.toml", broker=tansu.url, refcat=str(survey.store),
        output_root=str(tmp_path / "out"), app_id=prefix + "app", topic_prefix=prefix,
    )  # fmt: skip
    deployment = load_deployment(config)
    names = {role: deployment.stream.topic(role) for role in CALIBRATE.roles}
    create_topics(tansu.bootstrap, {name: 1 for name in names.values()})

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
        await producer.start()
        try:
            v1 = as_v1("detection", chain["detection"])
            await producer.send_and_wait(names["detections"], v1, key=b"1000", partition=0)
        finally:
            await producer.stop()

    asyncio.run(produce())
    argv = ["replay", "--topic", "detections", "--from-offset", "0", "--config", str(config)]
    assert stream_main(argv) == 0
    summary = read_summary(exposure_dir(tmp_path / "out", expid_of(survey.good[0])))
    assert summary["status"] == "ok" and summary["summary_stats"]["psfSigma"] is None
    assert summary["summary_stats"]["zeroPoint"] is not None
