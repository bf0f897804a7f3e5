"""One failure policy: whatever a stage raises, batch and stream write the same failure
summary (stage, kind, reason), and the batch command goes on to the next exposure.
Failure folders are always one exposure's, inside ROOT/exposures/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from astropy.io import fits
from streaming import expid_of, make_survey

from calibstream import stages
from calibstream.config import Config
from calibstream.errors import CalibrationError
from calibstream.failures import failure_of
from calibstream.io.outputs import exposure_dir, folder_name, read_summary
from streams import runner
from streams.cli import main
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings
from streams.topology import CALIBRATE
from streams.worker import characterized_exposure

#: Where each stage's core call is looked up when it runs (what the injection replaces).
STAGE_CALLS = {
    "detect": (stages, "detect"),
    "astrometry": (stages, "astrometry"),
    "photometry": (stages, "photometry"),
    "sink": (__import__("agents.sink", fromlist=["x"]), "write_calibration"),
}
ERRORS = {
    "typed": lambda: CalibrationError("injected", where="test"),
    "untyped": lambda: ValueError("injected"),
}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("policy"), n_good=5, size=1024, seed=11)


def poison(monkeypatch, stage: str, error, expid: int) -> None:
    """Make ``stage`` raise ``error()`` on exposure ``expid`` only."""
    module, name = STAGE_CALLS[stage]
    real = getattr(module, name)

    def injected(first, *args, **kwargs):
        if _exposure_of(first) == expid:
            raise error()
        return real(first, *args, **kwargs)

    monkeypatch.setattr(module, name, injected)


def _exposure_of(first) -> int | None:
    """The EXPID a stage call is about: its file, frame, fitted or calibrated exposure."""
    if isinstance(first, Path):
        return expid_of(first)
    metadata = getattr(first, "metadata", None) or getattr(first.frame, "metadata", None)
    return metadata.expid


def stream_failure(survey, root, path) -> dict:
    """The exposure through the agents one step at a time, as the live service runs it
    (each event consumed from its topic), failures to the failures' sink."""
    ctx = runner.Context(
        StreamSettings(refcat=str(survey.store), output_root=str(root)),
        Config(),
        RedisReadModel(None),
        None,
        CALIBRATE,
    )
    _, key, value = characterized_exposure(path)
    pending = [("exposures", value)]
    while pending:
        role, value = pending.pop()
        stage = CALIBRATE.consumer_of(role)
        if stage is None:
            continue
        message = runner.Message(f"calibstream.{role}", 0, 3, key, value)
        pending += [(o.role, o.value) for o in runner.run(ctx, stage.agent, message)]
    return read_summary(exposure_dir(root, expid_of(path)))


@pytest.mark.parametrize("kind", sorted(ERRORS))
@pytest.mark.parametrize("stage", sorted(STAGE_CALLS))
def test_batch_and_stream_write_the_same_failure_and_the_batch_goes_on(
    survey, tmp_path, monkeypatch, stage, kind
):
    victim = survey.good[2]
    poison(monkeypatch, stage, ERRORS[kind], expid_of(victim))
    streamed = stream_failure(survey, tmp_path / "stream", victim)
    argv = ["calibrate", *map(str, survey.good), "--refcat", str(survey.store)]
    assert main([*argv, "--out", str(tmp_path / "batch")]) == 1
    batch = {p: read_summary(exposure_dir(tmp_path / "batch", expid_of(p))) for p in survey.good}
    # a calibstream error while fitting astrometry leaves a partial calibration (the
    # catalogue kept, stage, kind and reason said alike); anything else is a failure
    status = "partial" if (stage, kind) == ("astrometry", "typed") else "failed"
    assert [s["status"] for s in batch.values()] == ["ok", "ok", status, "ok", "ok"]
    expected = failure_of(ERRORS[kind](), stage)
    for summary in (streamed, batch[victim]):
        assert summary["status"] == status
        assert (summary["stage"], summary["error"], summary["reason"]) == (
            stage,
            expected.kind,
            expected.reason,
        )
    assert streamed == batch[victim]


def test_the_policy_names_typed_and_untyped_errors():
    typed = CalibrationError("no stars", where="refcat")
    typed.stage = "astrometry"
    assert failure_of(typed, "photometry") == failure_of(typed, "astrometry")
    assert (
        failure_of(typed, "x").kind == "calibration" and "no stars" in failure_of(typed, "x").reason
    )
    assert failure_of(ZeroDivisionError("division by zero"), "astrometry").reason == (
        "ZeroDivisionError: division by zero"
    )
    assert failure_of(MemoryError(), "detect").reason == "MemoryError"
    assert failure_of(MemoryError(), "detect").transient  # the machine's fault: retried


@pytest.mark.parametrize(
    "name", ["..fits", "...fits", ".fits", "a/../../x.fits", "b\\..\\y.fits", ".hidden.fits"]
)
def test_unreadable_files_with_hostile_names_stay_inside_the_exposures_folder(
    survey, tmp_path, name
):
    root = tmp_path / "out"
    main(["calibrate", str(survey.good[0]), "--refcat", str(survey.store), "--out", str(root)])
    earlier = sorted(p.name for p in (root / "exposures").iterdir())
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = inputs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"SIMPLE  =                    T" + b" " * 50)  # no END: unreadable
    outside = {p for p in tmp_path.rglob("*")}
    assert main(["calibrate", str(path), "--refcat", str(survey.store), "--out", str(root)]) == 1
    after = sorted(p.name for p in (root / "exposures").iterdir() if not p.name.startswith("."))
    assert set(earlier) <= set(after) and len(after) == len(earlier) + 1
    [new] = set(after) - set(earlier)
    assert new not in (".", "..") and "/" not in new and not new.startswith(".")
    summary = json.loads((root / "exposures" / new / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stage"] == "read"
    assert read_summary(exposure_dir(root, expid_of(survey.good[0])))["status"] == "ok"
    created = {p for p in tmp_path.rglob("*")} - outside
    assert all((root / "exposures") in p.parents for p in created), created


def test_folder_names_are_never_dots_separators_nul_or_hidden():
    for hostile in (".", "..", "...", "", "a/b", "a\\b", "x\x00y", ".git", "/etc", "~"):
        name = folder_name(hostile)
        assert name and name not in (".", "..") and not name.startswith(".")
        assert "/" not in name and "\\" not in name and "\x00" not in name
    assert folder_name(12345) == "12345" and folder_name("exp_001") == "exp_001"


def test_a_failure_does_not_follow_a_symlink_out_of_the_exposures_folder(survey, tmp_path):
    root = tmp_path / "out"
    (root / "exposures").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    os.symlink(elsewhere, root / "exposures" / "broken")
    path = tmp_path / "broken.fits"
    path.write_bytes(b"not fits at all")
    assert main(["calibrate", str(path), "--refcat", str(survey.store), "--out", str(root)]) == 1
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    folder = root / "exposures" / "broken"
    assert not folder.is_symlink() and read_summary(folder)["status"] == "failed"
    with fits.open(survey.good[0]) as hdul:
        assert hdul[0].header["EXPID"] == expid_of(survey.good[0])
