"""A multi-detector visit: one pointing, one sky, one transparency and seeing for all.

The camera's geometry (:mod:`calibstream.camera`) places each detector in the focal
plane; the visit's nominal boresight and sky rotation place the focal plane on the sky.
Each detector's first guess follows from the nominal pointing, its true WCS from the
true one: the nominal moved by ``pointing_offset_arcsec`` (ξ = Δα cos δ, η = Δδ) and
turned by ``rotation_arcsec`` about the boresight (east towards north), so the pointing
error is common to every detector, as a telescope's is. Every detector sees the same
true zero-point, ``zeropoint + 2.5 log10(transparency)``, and the same seeing.

Files (:func:`write_visit`): ``exp_<EXPID>.fits`` and ``exp_<EXPID>.truth.fits`` per
detector (EXPID = VISIT x 1000 + DETECTOR), ``refcat.fits`` and
``visit_<VISIT>.truth.json`` (:class:`VisitTruth`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from calibstream.camera import Camera, Detector
from calibstream.io.exposure import Exposure, write_exposure
from calibstream.simulate.config import SimConfig
from calibstream.simulate.exposure import simulate_exposure
from calibstream.simulate.geometry import make_wcs, sip_polynomials, tan_deproject
from calibstream.simulate.sky import Pointing, Sky, make_sky
from calibstream.simulate.truth import Truth, write_truth


@dataclass(frozen=True)
class VisitTruth:
    """What a visit's summary should recover (angles: see this module)."""

    visit: int
    boresight: tuple[float, float]  # nominal (ra, dec) deg: where the first guesses point
    sky_rotation: float  # deg, the focal plane's x-axis on the sky (make_wcs's rotation)
    pointing_offset: tuple[float, float]  # arcsec (Δα cos δ, Δδ), true minus nominal
    rotation: float  # arcsec, true about nominal, east towards north
    transparency: float  # flux fraction
    magzero: float  # the expected visit zero-point
    seeing: float  # px, Moffat FWHM
    expids: Mapping[int, int]  # detector -> EXPID

    def to_dict(self) -> dict:
        """JSON-safe (detector ids as strings)."""
        out = dataclasses.asdict(self)
        out["expids"] = {str(k): v for k, v in sorted(self.expids.items())}
        return out


@dataclass(frozen=True)
class _Plan:
    """Everything fixed before any pixel: the truth, the sky, each detector's WCS pair."""

    truth: VisitTruth
    config: SimConfig
    sky: Sky
    wcs: Mapping[int, tuple[WCS, WCS]]  # detector -> (true, first guess)
    root: np.random.SeedSequence


def visit_expid(visit: int, detector: int) -> int:
    """EXPID of a visit's detector: unique while detectors are fewer than 1000."""
    if not 0 <= detector < 1000:
        raise ValueError(f"detector id {detector} outside 0..999: no unique EXPID")
    return visit * 1000 + detector


def _turn(theta_rad: float) -> np.ndarray:
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    return np.array([[c, -s], [s, c]])


def _detector_wcs(
    det: Detector, truth: VisitTruth, config: SimConfig, rng: np.random.Generator
) -> tuple[WCS, WCS]:
    """(true, first guess) of one detector: its centre placed through the camera geometry."""
    scale = config.pixel_scale
    phi = math.radians(truth.sky_rotation)
    c, s = math.cos(phi), math.sin(phi)
    nominal = scale * np.array([-c * det.x + s * det.y, s * det.x + c * det.y])  # arcsec
    theta = math.radians(truth.rotation / 3600.0)
    true_at = _turn(theta) @ nominal + np.asarray(truth.pointing_offset)
    size = (det.nx, det.ny)
    sip = sip_polynomials(rng, size, config.sip_corner_shift)
    sip = sip if config.sip_corner_shift > 0 else None
    ra_g, dec_g = tan_deproject(nominal[0], nominal[1], *truth.boresight)
    guess = make_wcs(float(ra_g), float(dec_g), truth.sky_rotation + det.rotation, size, scale, sip)
    true_wcs = guess.deepcopy()
    ra_t, dec_t = tan_deproject(true_at[0], true_at[1], *truth.boresight)
    true_wcs.wcs.crval = [float(ra_t), float(dec_t)]
    true_wcs.wcs.cd = _turn(theta) @ guess.wcs.cd
    true_wcs.wcs.set()
    if not config.first_guess_sip:
        guess.sip = None
        guess.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        guess.wcs.set()
    return true_wcs, guess


def plan_visit(
    camera: Camera,
    config: SimConfig | None = None,
    seed: int = 0,
    visit: int = 1,
    *,
    pointing_offset_arcsec: tuple[float, float] = (3.0, -4.0),
    rotation_arcsec: float = 30.0,
    transparency: float = 1.0,
    seeing: float | None = None,
    sky_rotation: float = 0.0,
    boresight: tuple[float, float] | None = None,
) -> _Plan:
    """The visit's truth, sky and WCS pairs; ``seeing`` in px (default ``config.fwhm``)."""
    config = config or SimConfig()
    if not transparency > 0:
        raise ValueError(f"transparency must be positive, got {transparency}")
    truth = VisitTruth(
        visit=visit,
        boresight=tuple(boresight or config.center),  # type: ignore[arg-type]
        sky_rotation=float(sky_rotation),
        pointing_offset=(float(pointing_offset_arcsec[0]), float(pointing_offset_arcsec[1])),
        rotation=float(rotation_arcsec),
        transparency=float(transparency),
        magzero=config.zeropoint + 2.5 * math.log10(transparency),
        seeing=float(seeing if seeing is not None else config.fwhm),
        expids={d.id: visit_expid(visit, d.id) for d in camera.detectors},
    )
    config = dataclasses.replace(
        config, zeropoint=truth.magzero, zeropoint_scatter=0.0, fwhm=truth.seeing, fwhm_jitter=0.0
    )
    root = np.random.SeedSequence(seed)
    geometry = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(0,)))
    wcs = {d.id: _detector_wcs(d, truth, config, geometry) for d in camera.detectors}
    pointings = [Pointing(*(float(v) for v in w.wcs.crval), rotation=0.0) for w, _ in wcs.values()]
    sky_config = dataclasses.replace(config, size=_largest(camera))
    sky = make_sky(sky_config, pointings, np.random.SeedSequence(root.entropy, spawn_key=(1,)))
    return _Plan(truth=truth, config=config, sky=sky, wcs=wcs, root=root)


def _largest(camera: Camera) -> tuple[int, int]:
    """A size covering every detector: the sky's margin about each centre follows it."""
    return max(d.nx for d in camera.detectors), max(d.ny for d in camera.detectors)


def simulate_detector(plan: _Plan, camera: Camera, detector: int) -> tuple[Exposure, Truth]:
    """One detector's exposure and truth; EXPID, VISIT, DETECTOR and BORE-RA/DEC set."""
    det = camera.detector(detector)
    config = dataclasses.replace(plan.config, size=(det.nx, det.ny))
    seed = np.random.SeedSequence(plan.root.entropy, spawn_key=(2, det.id))
    exposure, truth = simulate_exposure(config, seed, sky=plan.sky, wcs=plan.wcs[det.id])
    expid = plan.truth.expids[det.id]
    metadata = dataclasses.replace(
        exposure.metadata,
        expid=expid,
        visit=plan.truth.visit,
        detector=det.id,
        bore_ra=float(plan.truth.boresight[0]),
        bore_dec=float(plan.truth.boresight[1]),
    )
    exposure = dataclasses.replace(exposure, metadata=metadata)
    return exposure, dataclasses.replace(truth, expid=expid)


def simulate_visit(
    camera: Camera,
    config: SimConfig | None = None,
    seed: int = 0,
    visit: int = 1,
    **conditions: Any,
) -> list[tuple[Exposure, Truth]]:
    """Every detector's exposure and truth, in camera order (``conditions``: the keywords
    of :func:`plan_visit`)."""
    plan = plan_visit(camera, config, seed, visit, **conditions)
    return [simulate_detector(plan, camera, d.id) for d in camera.detectors]


def write_visit(
    outdir: Path,
    camera: Camera,
    config: SimConfig | None = None,
    seed: int = 0,
    visit: int = 1,
    *,
    bad: set[int] = frozenset(),  # type: ignore[assignment]
    missing: set[int] = frozenset(),  # type: ignore[assignment]
    **kwargs,
) -> VisitTruth:
    """Write the visit's files (see this module), one detector at a time.

    A ``bad`` detector's file is cut to half its length (its primary header survives, so
    its failure names its EXPID); a ``missing`` one is not written.
    """
    unknown = sorted((set(bad) | set(missing)) - camera.expected)
    if unknown:
        raise ValueError(f"detector(s) {unknown} not in camera {camera.name!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plan = plan_visit(camera, config, seed, visit, **kwargs)
    for det in camera.detectors:
        if det.id in missing:
            continue
        exposure, truth = simulate_detector(plan, camera, det.id)
        path = outdir / f"exp_{truth.expid}.fits"
        write_exposure(exposure, path)
        write_truth(truth, outdir / f"exp_{truth.expid}.truth.fits")
        if det.id in bad:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    plan.sky.refcat.write(outdir / "refcat.fits", format="fits", overwrite=True)
    text = json.dumps(plan.truth.to_dict(), indent=2, sort_keys=True) + "\n"
    (outdir / f"visit_{visit}.truth.json").write_text(text)
    return plan.truth
