"""The visit's science core (issue 19) against the simulator's truth.

One real-chain visit: a 3×3 camera of 768² detectors (``write_visit``), detector 4's
file truncated and detector 8 never written, every other file calibrated in-process
by the batch command (``streams.cli calibrate``), each detector's outcome made from
its summary.json, its input's first-guess WCS and its fitted WCS. On it: the summary
names the bad and the missing detector, the visit zero-point is within 1 mmag of the
simulated transparency's, the pointing offset within 20 mas and the rotation within
5 arcsec. The zero-point's bias and honesty over many visits: on 20 real-chain visits of
2×2 512² detectors (slow, ~30 s; 3×3 visits: benchmarks/visit_zeropoint.py), and on
outcomes drawn from the truth with realistic per-detector errors (200 visits per case);
then the fold's idempotence and order-freedom on the real outcomes, and the camera's
errors.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calibstream.camera import Camera, Detector, camera_from_mapping, grid_camera
from calibstream.config import camera_toml
from calibstream.simulate.config import SimConfig
from calibstream.simulate.visit import VisitTruth, write_visit
from calibstream.visit import (
    DetectorOutcome,
    VisitState,
    fold,
    is_complete,
    outcome_from_summary,
    summarize,
    summary_json,
)
from streams.cli import main

SIZE = (768, 768)
CAMERA = grid_camera(3, SIZE, gap=100)
VISIT = 7
BAD, MISSING = 4, 8


def _outcome(folder: Path, sim: Path) -> DetectorOutcome:
    """A detector's outcome as the stream side would make it: summary.json, the input's
    first guess (its IMAGE header) and the fitted WCS (the summary's calexp header)."""
    summary = json.loads((folder / "summary.json").read_text())
    path = sim / f"exp_{folder.name}.fits"
    detector = fits.getheader(path, 0)["DETECTOR"]
    try:
        guess = dict(fits.getheader(path, "IMAGE"))
    except (OSError, KeyError):
        guess = None
    shape = (SIZE[1], SIZE[0])
    return outcome_from_summary(summary, guess, summary.get("header"), shape, detector=detector)


@pytest.fixture(scope="module")
def real_visit(tmp_path_factory) -> tuple[list[DetectorOutcome], VisitTruth]:
    root = tmp_path_factory.mktemp("visit")
    sim = root / "sim"
    config = SimConfig(size=SIZE, n_sources=16000.0)  # ~40 reference stars per detector
    truth = write_visit(
        sim, CAMERA, config, seed=11, visit=VISIT, bad={BAD}, missing={MISSING},
        pointing_offset_arcsec=(2.5, -3.5), rotation_arcsec=45.0, transparency=0.8,
        sky_rotation=37.0,
    )  # fmt: skip
    assert main(["ingest-refcat", str(sim / "refcat.fits"), "--out", str(root / "store")]) == 0
    inputs = sorted(str(p) for p in sim.glob("exp_*[0-9].fits"))
    out = root / "out"
    main(["calibrate", "--refcat", str(root / "store"), "--out", str(out), *inputs])
    folders = sorted((out / "exposures").iterdir())
    return [_outcome(f, sim) for f in folders], truth


def _fold_all(outcomes) -> VisitState:
    state = None
    for outcome in outcomes:
        state = fold(state, VISIT, outcome)
    return state


@pytest.mark.slow
def test_a_visit_with_a_bad_and_a_missing_detector_names_both(real_visit):
    outcomes, _ = real_visit
    state = _fold_all(outcomes)
    summary = summarize(state, CAMERA)
    assert summary.failed == (BAD,) and summary.missing == (MISSING,)
    assert "truncated" in summary.failures[BAD]
    assert summary.ok == tuple(d for d in range(9) if d not in (BAD, MISSING))
    assert not summary.complete and not is_complete(state, CAMERA)
    record = json.loads(summary_json(summary))
    assert record["failed"] == [BAD] and record["missing"] == [MISSING]
    print(f"ok {summary.ok}, failed {summary.failed}: {summary.failures[BAD]!r}")
    print(f"missing {summary.missing}")


@pytest.mark.slow
def test_visit_zeropoint_within_one_mmag_of_the_transparency(real_visit):
    """Truth: 28.0 + 2.5 log10(0.8). The error must itself be below 1 mmag for the claim
    to mean anything, and the offset within 3 of it."""
    outcomes, truth = real_visit
    summary = summarize(_fold_all(outcomes), CAMERA)
    delta = summary.zeropoint - truth.magzero
    print(
        f"zp {summary.zeropoint:.5f} ± {summary.zeropoint_err:.5f} (scatter "
        f"{summary.zeropoint_scatter:.5f}), truth {truth.magzero:.5f}: Δ {delta * 1e3:+.3f} mmag"
    )
    assert abs(delta) < 0.001
    assert summary.zeropoint_err < 0.001 and abs(delta) < 3 * summary.zeropoint_err
    offsets = np.array(list(summary.offsets.values()))
    assert len(offsets) == 7 and np.abs(offsets).max() < 0.01


@pytest.mark.slow
def test_pointing_offset_and_rotation_recovered(real_visit):
    """Offset within 20 mas (the issue's figure); rotation within 5 arcsec: the fitted
    points err by ~4-7 mas (ASTERR, ASTERRMX) on lever arms of ~250 arcsec, so ~1-2 arcsec
    for the visit. Seeing, sky and m5 are the detectors' medians."""
    outcomes, truth = real_visit
    summary = summarize(_fold_all(outcomes), CAMERA)
    dx, dy = (np.array(summary.pointing_offset) - truth.pointing_offset) * 1000.0
    drot = summary.rotation - truth.rotation
    print(
        f"offset {summary.pointing_offset} arcsec vs {truth.pointing_offset}: "
        f"({dx:+.2f}, {dy:+.2f}) mas; rotation {summary.rotation:.2f} vs {truth.rotation}: "
        f'{drot:+.2f}"; rms {summary.pointing_rms:.2f} mas over {summary.pointing_detectors}'
    )
    assert np.hypot(dx, dy) < 20.0 and abs(drot) < 5.0
    assert summary.pointing_detectors == 7
    assert summary.seeing is not None and 0.5 < summary.seeing < 1.2  # arcsec
    assert summary.sky == pytest.approx(1000.0, rel=0.01) and summary.m5 > 23.0


def _drawn_pulls(rng: np.random.Generator, n_visits: int, extra: float) -> np.ndarray:
    """(zp - truth) / err of visits whose detectors' MAGZERO scatter by their stated
    error (log-normal about 2 mmag, as the real chain's 1-8 mmag) and ``extra`` more."""
    pulls = []
    for visit in range(n_visits):
        truth = 28.0 + 0.1 * rng.standard_normal()
        reporting = rng.permutation(9)[: int(rng.integers(6, 10))]
        state = None
        for det in reporting:
            err = 0.002 * float(np.exp(rng.normal(0.0, 0.5)))
            zp = truth + float(rng.normal(0.0, np.hypot(err, extra)))
            outcome = DetectorOutcome(
                int(det), visit * 1000 + int(det), "ok", magzero=zp, magzero_err=err
            )
            state = fold(state, visit, outcome)
        summary = summarize(state, CAMERA, timed_out=True)
        pulls.append((summary.zeropoint - truth) / summary.zeropoint_err)
    return np.array(pulls)


MANY, MANY_SIZE = 20, (512, 512)
MANY_CAMERA = grid_camera(2, MANY_SIZE, gap=100)


def _calibrated_visit(visit: int, root: Path) -> tuple[float, float, float]:
    """One 2×2 visit through the real chain: (zeropoint - truth, zeropoint_err, truth).
    Transparency, seeing and pointing error vary with the visit."""
    rng = np.random.default_rng(visit)
    folder = root / f"v{visit}"
    truth = write_visit(
        folder / "sim", MANY_CAMERA, SimConfig(size=MANY_SIZE, n_sources=16000.0),
        seed=500 + visit, visit=visit, transparency=float(rng.uniform(0.5, 1.0)),
        seeing=float(rng.uniform(2.8, 4.6)),
        pointing_offset_arcsec=(float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5))),
    )  # fmt: skip
    (folder / "camera.toml").write_text(camera_toml(MANY_CAMERA))
    store, out = folder / "store", folder / "out"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["ingest-refcat", str(folder / "sim" / "refcat.fits"), "--out", str(store)])
        inputs = sorted(str(p) for p in (folder / "sim").glob("exp_*[0-9].fits"))
        main(["calibrate", "--config", str(folder / "camera.toml"), "--refcat", str(store),
              "--out", str(out), *inputs])  # fmt: skip
    summary = json.loads((out / "visits" / str(visit) / "summary.json").read_text())
    assert summary["ok"] == [0, 1, 2, 3]
    return summary["zeropoint"] - truth.magzero, summary["zeropoint_err"], truth.magzero


@pytest.mark.slow
def test_real_chain_zeropoint_is_unbiased_with_honest_errors(tmp_path):
    """20 real-chain visits of 2×2 512² detectors (~40 s on two processes; 3×3 768²
    visits: benchmarks/visit_zeropoint.py). Each visit's error is ~0.8 mmag, so the mean
    Δ is known to ~0.2 mmag: |mean Δ| < 0.5 mmag (half the issue's 1 mmag, ~2.5σ). The
    pulls: the mean of 20 unit normals scatters by 0.22 and their sd by 0.16, so the mean
    within ±0.67 and the sd within 1 ± 0.5 (3σ); none beyond 4. The benchmark's 3×3
    visits (error ~0.35 mmag) show every visit within 1 mmag."""
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        rows = np.array(list(pool.map(_calibrated_visit, range(1, MANY + 1), [tmp_path] * MANY)))
    delta, err = rows[:, 0], rows[:, 1]
    pull = delta / err
    print(
        f"{MANY} visits: mean Δ {delta.mean() * 1e3:+.3f} mmag (sd {delta.std() * 1e3:.3f}, "
        f"median err {np.median(err) * 1e3:.3f}); pulls mean {pull.mean():+.3f}, "
        f"sd {pull.std(ddof=1):.3f}, max |pull| {np.abs(pull).max():.2f}"
    )
    assert abs(delta.mean()) < 0.0005 and np.median(err) < 0.0012
    assert abs(pull.mean()) < 0.67 and abs(pull.std(ddof=1) - 1.0) < 0.5
    assert np.abs(pull).max() < 4.0


def test_zeropoint_error_is_honest_over_many_visits():
    """Honest per-detector errors: 200 visits' pulls have sd 1 within 0.15 (the sd of 200
    normal draws scatters by 0.05: 3σ). Errors understated by a 3 mmag chip-to-chip
    scatter: τ (Paule–Mandel) carries it, so the pulls' robust width (1.4826 MAD) is 1
    within 0.2; their sd is allowed 1.5, since τ from 6-9 detectors is noisy and the pulls
    have Student-t-like tails (t with 5-8 dof has sd 1.15-1.3)."""
    rng = np.random.default_rng(19)
    honest = _drawn_pulls(rng, 200, 0.0)
    scattered = _drawn_pulls(rng, 200, 0.003)
    width = 1.4826 * np.median(np.abs(scattered - np.median(scattered)))
    print(f"honest: sd {honest.std():.3f}, mean {honest.mean():+.3f}; chip scatter: "
          f"robust width {width:.3f}, sd {scattered.std():.3f}")  # fmt: skip
    assert abs(honest.std() - 1.0) < 0.15 and abs(honest.mean()) < 0.25
    assert abs(width - 1.0) < 0.2 and scattered.std() < 1.5


@pytest.mark.slow
def test_fold_is_idempotent_and_order_free(real_visit):
    outcomes, _ = real_visit
    reference = summary_json(summarize(_fold_all(outcomes), CAMERA))
    twice = _fold_all([o for o in outcomes for _ in range(2)])
    assert summary_json(summarize(twice, CAMERA)) == reference
    rng = np.random.default_rng(3)
    for _ in range(5):
        order = [outcomes[i] for i in rng.permutation(len(outcomes))]
        replayed = order + order[: len(order) // 2]
        assert summary_json(summarize(_fold_all(replayed), CAMERA)) == reference
    state = _fold_all(outcomes)
    restored = VisitState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state and summary_json(summarize(restored, CAMERA)) == reference


def test_a_later_outcome_replaces_but_a_failure_never_replaces_a_calibration():
    failed = DetectorOutcome(3, 7003, "failed", reason="machine fault")
    ok = DetectorOutcome(3, 7003, "ok", magzero=28.0, magzero_err=0.002)
    assert fold(fold(None, 7, failed), 7, ok).outcomes[3] == ok
    assert fold(fold(None, 7, ok), 7, failed).outcomes[3] == ok
    state = fold(None, 7, ok)
    assert fold(state, 7, ok) is state
    with pytest.raises(ValueError, match="visit 8"):
        fold(state, 8, ok)


def test_wrong_inputs_are_named():
    state = fold(None, 7, DetectorOutcome(42, 7042, "ok"))
    with pytest.raises(ValueError, match=r"detector\(s\) \[42\] not in camera 'sim3x3'"):
        summarize(state, CAMERA)
    with pytest.raises(ValueError, match="status 'weird'"):
        DetectorOutcome(1, 1, "weird")
    with pytest.raises(ValueError, match="no detector"):
        outcome_from_summary({"status": "failed", "expid": 5}, None, None, (16, 16))
    with pytest.raises(ValueError, match="unknown field"):
        DetectorOutcome.from_dict({"detector": 1, "expid": 1, "status": "ok", "zp": 1.0})
    with pytest.raises(ValueError, match="detector 99 is not in camera"):
        CAMERA.detector(99)


def test_outcome_round_trips_through_json():
    outcome = DetectorOutcome(
        2, 7002, "partial", reason="astrometry", band="r", magzero=27.9, magzero_err=0.003,
        seeing=0.8, sky=1000.0, m5=24.1, astrms=12.5,
        guess_points=((150.0, 2.0), (150.1, 2.1)), fitted_points=None,
    )  # fmt: skip
    assert DetectorOutcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


def test_grid_camera_geometry():
    assert CAMERA.expected == frozenset(range(9))
    centre, corner = CAMERA.detector(4), CAMERA.detector(0)
    assert (centre.x, centre.y) == (0.0, 0.0) and (corner.x, corner.y) == (-868.0, -868.0)
    table = {"name": "sim3x3", "detectors": [dataclasses.asdict(d) for d in CAMERA.detectors]}
    assert camera_from_mapping(table) == CAMERA
    rotated = Detector(id=0, x=100.0, y=0.0, rotation=90.0, nx=11, ny=11)
    fx, fy = rotated.to_focal_plane(np.array([10.0]), np.array([5.0]))
    assert fx[0] == pytest.approx(100.0) and fy[0] == pytest.approx(5.0)


def _one(**fields) -> dict:
    """A camera table of one detector, ``fields`` replacing or adding to id 0 at (0, 0)."""
    return {"name": "c", "detectors": [{"id": 0, "x": 0, "y": 0, **fields}]}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"detectors": [{"id": 0, "x": 0, "y": 0}]}, "field 'name' must be a non-empty string"),
        ({"name": "c", "detectors": []}, "'detectors' must be a non-empty list"),
        ({"name": "c", "detectors": [{"id": 0, "x": 0}]}, r"detectors\[0\]: missing field 'y'"),
        (_one(id="0"), "field 'id' must be int"),
        (_one(x=True), "field 'x' must be int or float"),
        (_one(rot=1), r"unknown field\(s\) \['rot'\]"),
        (_one(nx=0), "nx and ny must be positive"),
        (_one(x=float("nan")), "'x' must be finite"),
        (
            {"name": "c", "detectors": [{"id": 1, "x": 0, "y": 0}, {"id": 1, "x": 5, "y": 0}]},
            r"duplicate detector id\(s\) \[1\]",
        ),
        ({**_one(), "extra": 1}, r"unknown field\(s\) \['extra'\]"),
        ({"name": "c", "detectors": [3]}, r"detectors\[0\]: a detector must be a table"),
    ],
)
def test_camera_from_mapping_errors_are_clear(table, message):
    with pytest.raises(ValueError, match=message):
        camera_from_mapping(table)


def test_camera_equality_is_data():
    assert isinstance(
        camera_from_mapping({"name": "one", "detectors": [{"id": 5, "x": 1, "y": 2}]}), Camera
    )


def test_outcome_from_summary_reads_what_was_fitted():
    """A warning is calibrated; a partial whose astrometry did not fit (no ASTNMATCH: the
    calexp holds the first guess) has no fitted points; a failure no zero-point."""
    wcs = {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 8.5, "CRPIX2": 8.5,
        "CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -5.6e-5, "CD1_2": 0.0, "CD2_1": 0.0,
        "CD2_2": 5.6e-5,
    }  # fmt: skip
    header = {**wcs, "MAGZERO": 28.0, "MAGZERO_ERR": 0.002, "ASTRMS": 12.0, "ASTNMATCH": 20}
    stats = {"psfSigma": 1.5, "pixelScale": 0.2, "skyBg": 1000.0, "magLim": 24.0}
    summary = {
        "status": "warning", "expid": 7001, "detector": 1, "band": "r", "flags": ["psf"],
        "header": header, "summary_stats": stats,
    }  # fmt: skip
    ok = outcome_from_summary(summary, wcs, header, (16, 16))
    assert ok.status == "ok" and ok.reason == "warning: psf" and ok.magzero == 28.0
    assert ok.seeing == pytest.approx(1.5 * 2.3548 * 0.2, rel=1e-4) and ok.m5 == 24.0
    assert ok.guess_points[0] == pytest.approx((150.0, 2.0)) and len(ok.fitted_points) == 5
    partial = {**summary, "status": "partial", "reason": "astrometry: no match", "header": wcs}
    got = outcome_from_summary(partial, wcs, wcs, (16, 16))
    assert got.fitted_points is None and got.magzero is None and got.reason.startswith("astro")
    failed = outcome_from_summary(
        {**summary, "status": "failed", "reason": "x"}, wcs, header, (16, 16)
    )
    assert failed.magzero is None and failed.fitted_points is None and failed.reason == "x"
