"""The agents' steps without a broker: events in, events out, the same folder as the batch.

Each step runs as the science pool runs it (``steps.run`` on a message's bytes), chained
as ``replay`` chains them; Redis down must not stop anything; bad input becomes a failure
event or a dead letter, never an exception.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter

import numpy as np
import pytest
from astropy.io import fits
from streaming import expid_of, make_survey, same_folders

from calibstream import stages
from calibstream.config import Config
from calibstream.detection.pipeline import background_hdul, measure_exposure
from calibstream.frame import frame_of
from calibstream.io.exposure import read_exposure, read_metadata
from calibstream.io.outputs import exposure_dir, read_summary
from harness.processes import free_port
from streams import events, runner, wire
from streams.app import Handled
from streams.cli import main as cli_main
from streams.codec import decode, encode
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings
from streams.shard_cache import RedisShardCache
from streams.topology import CALIBRATE
from streams.worker import characterized_exposure


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("steps"), n_good=3, size=768, seed=8)


#: What a live worker owning every partition takes on ahead: every stage but the stateful
#: visit agent, which runs beside its table.
ONWARD = frozenset(stage.agent for stage in CALIBRATE if not stage.stateful)


def message(value: bytes, topic: str = "calibstream.exposures") -> runner.Message:
    return runner.Message(topic, 0, 7, b"key", value, 1_700_000_000_000)


def context(survey, root, redis=None) -> runner.Context:
    settings = StreamSettings(refcat=str(survey.store), output_root=str(root), redis=redis)
    return runner.Context(
        settings, Config(), RedisReadModel(redis), RedisShardCache(redis), CALIBRATE
    )


def submitted(path) -> bytes:
    return characterized_exposure(path)[2]


def test_chain_with_redis_down_writes_what_the_batch_writes(survey, tmp_path, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ctx = context(survey, tmp_path / "stream", redis=dead)
    with caplog.at_level(logging.WARNING, logger="calibstream.redis"):
        made = [
            Counter(o.role for o in runner.run_chain(ctx, "detect", message(submitted(p))))
            for p in survey.exposures
        ]
    assert ctx.readmodel.state == "down"
    assert any("redis" in r.getMessage().lower() for r in caplog.records), "no word of Redis"
    calibrated = {"detections": 1, "matches": 1, "zeropoints": 1, "outcomes": 1}
    assert [dict(m) for m in made[:3]] == [calibrated] * 3
    unreadable = {"failures": 1, "outcomes": 1}  # a failure, and the visit told of it
    assert [dict(m) for m in made[3:5]] == [unreadable] * 2
    assert dict(made[5]) == calibrated  # no reference stars: a partial calibration
    batch = tmp_path / "batch"
    argv = ["calibrate", *map(str, (p.resolve() for p in survey.exposures))]
    assert cli_main([*argv, "--refcat", str(survey.store), "--out", str(batch)]) == 1
    names = [str(expid_of(p)) for p in survey.good] + ["997", "998", "999"]
    assert same_folders(tmp_path / "stream", batch, names) == []


def test_each_event_round_trips_what_its_consumer_needs(survey):
    exposure = read_exposure(survey.good[0])
    measurement = measure_exposure(exposure, Config())
    frame = frame_of(exposure)
    record = events.detection_event(
        {"x": 1}, frame, measurement.catalog, measurement.background, {"detect": 1.0}
    )
    encoded = encode("detection", {**record, "input": decode(submitted(survey.good[0])).record})
    back = decode(encoded).record
    frame2, catalog = events.detection_inputs(back)
    assert frame2.metadata == frame.metadata and frame2.shape == frame.shape
    # card for card (astropy pads short strings when it formats a card anew: 'deg     ')
    assert [tuple(c) for c in frame2.wcs_header.cards] == [tuple(c) for c in frame.wcs_header.cards]
    x, y = np.meshgrid(np.linspace(0, frame.shape[1], 7), np.linspace(0, frame.shape[0], 7))
    assert np.array_equal(frame2.wcs.all_pix2world(x, y, 0), frame.wcs.all_pix2world(x, y, 0))
    assert list(catalog) == list(measurement.catalog)
    for name, values in measurement.catalog.items():
        assert catalog[name].dtype == values.dtype
        assert np.array_equal(catalog[name], values, equal_nan=values.dtype.kind == "f"), name
    background = wire.background_from_record(back["background"])
    assert np.array_equal(background.mesh, measurement.background.mesh)
    same = [background_hdul(frame.metadata, b) for b in (background, measurement.background)]
    assert same[0][1].header == same[1][1].header
    assert np.array_equal(same[0][1].data, same[1][1].data)
    raw = sum(v.nbytes for v in measurement.catalog.values())
    packed = sum(len(c["data"]) for c in back["catalog"])
    assert packed < raw, "columns travel compressed"


def test_header_cards_rebuild_the_same_header():
    header = fits.Header()
    header["CTYPE1"] = ("RA---TAN-SIP", "projection")
    header["CRVAL1"] = (150.123456789012345, "deg")
    header["A_ORDER"] = 3
    header["FLAG"] = True
    header["HIERARCH MAGZERO_RMS"] = (0.0123, "scatter")
    header["UNDEF"] = fits.card.UNDEFINED
    header.add_comment("a comment")
    rebuilt = wire.cards_to_header(wire.header_to_cards(header))
    assert rebuilt.tostring() == header.tostring()


def test_bad_input_becomes_a_failure_event_or_a_dead_letter(survey, tmp_path):
    ctx = context(survey, tmp_path)
    gone = events.characterized_exposure_event(
        read_metadata(survey.good[0]), str(tmp_path / "nowhere.fits")
    )
    [out] = runner.run(ctx, "detect", message(encode("characterized_exposure", gone)))
    failure = decode(out.value).record
    assert out.role == "failures" and failure["stage"] == "read"
    assert failure["error"] == "missing_file" and "nowhere.fits" in failure["reason"]
    assert failure["input"] == encode("characterized_exposure", gone)
    # a well-formed event of another subject, and bytes that are no event at all
    other = encode(
        "dead_letter",
        events.dead_letter_event(b"x", topic="t", partition=0, offset=0, error=ValueError("v")),
    )
    for value, words in ((other, "expected characterized_exposure"), (b"\x00\x00", "5-byte")):
        [out] = runner.run(ctx, "detect", message(value))
        dead = decode(out.value).record
        assert out.role == "deadletter" and dead["value"] == value and words in dead["reason"]
    # a detection event whose catalog bytes are corrupt: a failure, not a crash
    detection = run_detect(ctx, survey.good[0])
    detection["catalog"][0]["data"] = zlib.compress(b"123")
    [out] = runner.run(ctx, "astrometry", message(encode("detection", detection)))
    failure = decode(out.value).record
    assert out.role == "failures" and failure["error"] == "internal"
    assert failure["exposure_id"] == detection["exposure_id"]


def run_detect(ctx, path) -> dict:
    [out] = runner.run(ctx, "detect", message(submitted(path)))
    return decode(out.value).record


def _without_timings(value: bytes) -> dict:
    record = decode(value).record
    record.pop("timings", None)
    if "input" in record:  # an exposure-outcome event has none
        record["input"] = {**record["input"], "submitted_ms": 0}
    return record


def test_chained_steps_make_the_events_and_the_folder_the_steps_make(survey, tmp_path):
    onward = ONWARD
    one, two = context(survey, tmp_path / "chained"), context(survey, tmp_path / "steps")
    for path in survey.good:
        value = submitted(path)
        chained = runner.run_chain(one, "detect", message(value), onward)
        assert [(o.role, o.handled) for o in chained] == [
            ("detections", True),
            ("matches", True),
            ("zeropoints", True),
            ("outcomes", False),  # the visit agent's, partitioned by visit
        ]
        stepwise = []
        for agent in ("detect", "astrometry", "photometry", "sink"):
            outputs = runner.run(two, agent, message(value))
            stepwise += outputs
            value = outputs[0].value if outputs else b""
        assert [o.role for o in stepwise] == [o.role for o in chained]
        assert [o.key for o in stepwise] == [o.key for o in chained]
        # the same events (the stage timings aside, measured anew), the same folder
        assert [_without_timings(o.value) for o in stepwise] == [
            _without_timings(o.value) for o in chained
        ]
    names = [str(expid_of(p)) for p in survey.good]
    assert same_folders(tmp_path / "chained", tmp_path / "steps", names) == []
    # nothing down the chain: run itself; only astrometry here: the match goes out unhandled
    value = submitted(survey.good[0])
    assert [o.handled for o in runner.run_chain(one, "detect", message(value), ())] == [False]
    partly = runner.run_chain(one, "detect", message(value), {"astrometry"})
    assert [(o.role, o.handled) for o in partly] == [("detections", True), ("matches", False)]


def test_a_step_failing_down_the_chain_is_left_to_its_agent(survey, tmp_path, monkeypatch):
    """Astrometry fails (an internal error: the data's fault, not one that leaves usable
    results): the chain gives the detection event back unhandled and no failure event; the
    astrometry agent's own run makes the failure event, naming the detection event it
    consumed."""
    ctx = context(survey, tmp_path)
    onward = ONWARD

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the fit")

    monkeypatch.setattr(stages, "astrometry_or_partial", broken)
    far = survey.good[0]
    [detection] = runner.run_chain(ctx, "detect", message(submitted(far)), onward)
    assert detection.role == "detections" and not detection.handled
    consumed = message(detection.value, topic="calibstream.detections")
    [out] = runner.run(ctx, "astrometry", consumed)
    failure = decode(out.value).record
    assert out.role == "failures" and failure["stage"] == "astrometry"
    assert failure["error"] == "internal" and "a bug in the fit" in failure["reason"]
    assert failure["input_topic"] == "calibstream.detections" and failure["input_offset"] == 7
    # a failure of the consumed event itself is run's: a failure event, as always, taken
    # on to the failures' sink here (this worker owns its partition) and still published
    truncated = survey.bad["truncated"]
    out, told = runner.run_chain(ctx, "detect", message(submitted(truncated)), onward)
    assert out.role == "failures" and out.handled
    assert told.role == "outcomes" and not told.handled
    summary = read_summary(exposure_dir(tmp_path, expid_of(truncated)))
    assert summary["status"] == "failed" and summary["stage"] == "read"


def test_the_marks_of_events_handled_upstream_are_taken_once_and_bounded():
    marks = Handled(limit=3)
    marks.add("t", 0, b"1", b"event")
    marks.add("t", 0, b"1", b"event")  # the same event twice (a redelivered input)
    assert not marks.take("t", 1, b"1", b"event")  # another partition
    assert not marks.take("t", 0, b"1", b"other")  # other bytes
    assert marks.take("t", 0, b"1", b"event") and marks.take("t", 0, b"1", b"event")
    assert not marks.take("t", 0, b"1", b"event") and len(marks) == 0
    for i in range(5):  # never taken (the partition moved): the oldest age out
        marks.add("t", 0, str(i).encode(), b"event")
    assert len(marks) == 3 and not marks.take("t", 0, b"0", b"event")
    assert marks.take("t", 0, b"4", b"event")
