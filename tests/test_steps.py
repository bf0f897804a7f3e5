"""The agents' steps without a broker: events in, events out, the same folder as the batch.

Each step runs as the science pool runs it (``steps.run`` on a message's bytes), chained
as ``replay`` chains them; Redis down must not stop anything; bad input becomes a failure
event or a dead letter, never an exception.
"""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pytest
from astropy.io import fits
from streaming import expid_of, make_survey, same_folders

from calibstream.calibrate import frame_of
from calibstream.cli import main as core_main
from calibstream.config import Config
from calibstream.exposure import read_exposure, read_metadata
from calibstream.pipeline import background_hdul, measure_exposure
from streams import events, steps
from streams.codec import decode, encode
from streams.readmodel import RedisReadModel
from streams.replay import run_chain
from streams.services import free_port
from streams.settings import StreamSettings


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("steps"), n_good=3, size=768, seed=8)


def message(value: bytes, topic: str = "calibstream.exposures") -> steps.Message:
    return steps.Message(topic, 0, 7, b"key", value, 1_700_000_000_000)


def context(survey, root, redis=None) -> steps.Context:
    settings = StreamSettings(refcat=str(survey.store), output_root=str(root), redis=redis)
    return steps.Context(settings, Config(), RedisReadModel(redis))


def submitted(path) -> bytes:
    record = events.characterized_exposure_event(read_metadata(path), str(path.resolve()))
    return encode("characterized_exposure", record)


def test_chain_with_redis_down_writes_what_the_batch_writes(survey, tmp_path, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ctx = context(survey, tmp_path / "stream", redis=dead)
    with caplog.at_level(logging.WARNING, logger="calibstream.redis"):
        made = [run_chain(ctx, "exposures", message(submitted(p))) for p in survey.exposures]
    assert ctx.readmodel.state == "down"
    assert any("redis" in r.getMessage().lower() for r in caplog.records), "no word of Redis"
    assert [dict(m) for m in made[:3]] == [{"detections": 1, "matches": 1, "zeropoints": 1}] * 3
    assert [m["failures"] for m in made[3:]] == [1, 1, 1]
    batch = tmp_path / "batch"
    argv = ["calibrate", *map(str, (p.resolve() for p in survey.exposures))]
    assert core_main([*argv, "--refcat", str(survey.store), "--out", str(batch)]) == 1
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
    background = events.background_from_record(back["background"])
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
    rebuilt = events.cards_to_header(events.header_to_cards(header))
    assert rebuilt.tostring() == header.tostring()


def test_bad_input_becomes_a_failure_event_or_a_dead_letter(survey, tmp_path):
    ctx = context(survey, tmp_path)
    gone = events.characterized_exposure_event(
        read_metadata(survey.good[0]), str(tmp_path / "nowhere.fits")
    )
    [out] = steps.run(ctx, "detect", message(encode("characterized_exposure", gone)))
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
        [out] = steps.run(ctx, "detect", message(value))
        dead = decode(out.value).record
        assert out.role == "deadletter" and dead["value"] == value and words in dead["reason"]
    # a detection event whose catalog bytes are corrupt: a failure, not a crash
    detection = run_detect(ctx, survey.good[0])
    detection["catalog"][0]["data"] = zlib.compress(b"123")
    [out] = steps.run(ctx, "astrometry", message(encode("detection", detection)))
    failure = decode(out.value).record
    assert out.role == "failures" and failure["error"] == "internal"
    assert failure["exposure_id"] == detection["exposure_id"]


def run_detect(ctx, path) -> dict:
    [out] = steps.run(ctx, "detect", message(submitted(path)))
    return decode(out.value).record
