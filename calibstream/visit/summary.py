"""A visit's summary (:func:`summarize`) and its canonical bytes (:func:`summary_json`).

The zero-point is a robust weighted mean over the ok and partial detectors that have
MAGZERO, with the per-star machinery of :mod:`calibstream.photometry.zeropoint_stats`
applied to detectors: an outlying detector is clipped at ``clip_sigma`` robust sigmas
of its normalised residual (never when five or fewer report), then the kept ones are
averaged with weights 1 / (σ_i² + τ²), τ solving χ²/dof = 1 (Paule–Mandel). Its error
1 / sqrt(Σ w_i) is then honest both ways: the per-detector errors when the detectors
agree within them, and the scatter about the mean (through τ) when they do not (a
chip's flat-field or a stated error too small). ``zeropoint_scatter`` is the rms of the
kept detectors about the mean, ``zeropoint_sigma_int`` τ.

The error is statistical and against the reference system, as MAGZERO is (contract
outputs.md: "magnitude in the reference system, colour terms applied"). The detectors'
errors are independent: each fits its own stars, and each star's reference magnitude
carries its own error. What every detector shares, the catalogue's own zero-point and the
colour term's coefficients, defines that system, so it is no error of the visit's
zero-point and is not added; whoever compares it with a physical (AB) scale adds the
catalogue's calibration error (PS1's is a few mmag). benchmarks/visit_zeropoint.py
checks the claim against the simulator's truth over many real-chain visits.

Units: mag; pointing offset (ξ = Δα cos δ, η = Δδ) and rotation in arcsec
(:mod:`calibstream.visit.pointing`), its residual rms in mas; seeing arcsec (FWHM),
sky e-/px (Rubin's skyBg), m5 mag (magLim); all medians over the ok and partial
detectors that have them. :meth:`VisitSummary.to_dict` rounds every float to 10
significant digits (1e-8 mag, 1e-7 arcsec here), so the same state gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from calibstream.camera import Camera
from calibstream.config import PhotometryConfig
from calibstream.photometry.zeropoint_stats import clip_zeropoints, weighted_fit
from calibstream.visit.outcome import DetectorOutcome
from calibstream.visit.pointing import fit_pointing
from calibstream.visit.state import VisitState

#: Significant digits of every float in a summary's JSON.
DIGITS = 10


@dataclass(frozen=True)
class VisitSummary:
    """What the night's watchers ask of a visit (units: see this module)."""

    visit: int
    band: str | None
    ok: tuple[int, ...]
    partial: tuple[int, ...]
    failed: tuple[int, ...]
    missing: tuple[int, ...]
    failures: Mapping[int, str]  # failed and partial detectors: why
    zeropoint: float | None
    zeropoint_err: float | None
    zeropoint_scatter: float | None
    zeropoint_sigma_int: float | None
    zeropoint_clipped: tuple[int, ...]  # detectors left out of the mean as outliers
    offsets: Mapping[int, float]  # MAGZERO - zeropoint, every detector with MAGZERO
    pointing_offset: tuple[float, float] | None  # (Δα cos δ, Δδ) arcsec
    rotation: float | None  # arcsec, east towards north
    pointing_rms: float | None  # mas, the rigid fit's residual rms
    pointing_detectors: int
    seeing: float | None
    sky: float | None
    m5: float | None
    astrms: float | None  # mas, median
    complete: bool
    timed_out: bool

    def to_dict(self) -> dict:
        """JSON-safe and deterministic: ids as strings, floats to :data:`DIGITS` digits."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


def _json(value):
    """Rounded floats, string keys, lists for tuples."""
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    return value


def summary_json(summary: VisitSummary) -> bytes:
    """The summary's canonical bytes: sorted keys, indent 2, a final newline."""
    return (
        json.dumps(summary.to_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"
    ).encode()


@dataclass(frozen=True)
class _ZeroPoint:
    value: float | None = None
    err: float | None = None
    scatter: float | None = None
    sigma_int: float | None = None
    clipped: tuple[int, ...] = ()


def visit_zeropoint(outcomes: list[DetectorOutcome], config: PhotometryConfig) -> _ZeroPoint:
    """Robust weighted mean of the detectors' MAGZERO (see this module)."""
    used = [
        o
        for o in outcomes
        if o.status != "failed" and o.magzero is not None and o.magzero_err and o.magzero_err > 0
    ]
    if not used:
        return _ZeroPoint()
    z = np.array([o.magzero for o in used])
    s = np.array([o.magzero_err for o in used])
    keep, _ = clip_zeropoints(z, s, config)
    mean, err, sigma_int, _ = weighted_fit(z[keep], s[keep])
    scatter = float(np.sqrt(np.mean((z[keep] - mean) ** 2))) if keep.sum() > 1 else None
    clipped = tuple(o.detector for o, k in zip(used, keep, strict=True) if not k)
    return _ZeroPoint(mean, err, scatter, sigma_int, clipped)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def _band(outcomes: list[DetectorOutcome]) -> str | None:
    """The visit's band; several (the data's fault) are listed, comma-separated."""
    bands = sorted({o.band for o in outcomes if o.band})
    return ",".join(bands) if bands else None


def summarize(
    state: VisitState, camera: Camera, *, timed_out: bool = False,
    photometry: PhotometryConfig | None = None,
) -> VisitSummary:  # fmt: skip
    """The visit's summary; ValueError naming a detector the camera does not have."""
    outside = sorted(set(state.outcomes) - camera.expected)
    if outside:
        raise ValueError(
            f"visit {state.visit}: detector(s) {outside} not in camera {camera.name!r}"
        )
    outcomes = list(state.outcomes.values())  # in detector order
    by_status = {
        s: tuple(o.detector for o in outcomes if o.status == s) for s in ("ok", "partial", "failed")
    }
    calibrated = [o for o in outcomes if o.status != "failed"]
    zp = visit_zeropoint(outcomes, photometry or PhotometryConfig())
    pointing = fit_pointing(calibrated, camera)
    return VisitSummary(
        visit=state.visit,
        band=_band(outcomes),
        ok=by_status["ok"],
        partial=by_status["partial"],
        failed=by_status["failed"],
        missing=tuple(sorted(camera.expected - set(state.outcomes))),
        failures={o.detector: o.reason or o.status for o in outcomes if o.status != "ok"},
        zeropoint=zp.value,
        zeropoint_err=zp.err,
        zeropoint_scatter=zp.scatter,
        zeropoint_sigma_int=zp.sigma_int,
        zeropoint_clipped=zp.clipped,
        offsets={
            o.detector: o.magzero - zp.value
            for o in calibrated
            if o.magzero is not None and zp.value is not None
        },
        pointing_offset=None if pointing is None else (pointing.dra_cosdec, pointing.ddec),
        rotation=None if pointing is None else pointing.rotation,
        pointing_rms=None if pointing is None else pointing.rms_mas,
        pointing_detectors=0 if pointing is None else pointing.n_detectors,
        seeing=_median([o.seeing for o in calibrated]),
        sky=_median([o.sky for o in calibrated]),
        m5=_median([o.m5 for o in calibrated]),
        astrms=_median([o.astrms for o in calibrated]),
        complete=not (camera.expected - set(state.outcomes)),
        timed_out=timed_out,
    )
