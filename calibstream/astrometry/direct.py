"""Direct nearest-neighbour matching under a trusted first guess.

When the header's WCS is trusted to ``first_guess_error_arcsec`` (a prior on
its error, the chip centre's displacement), every source and reference star
within ``DIRECT_RADIUS_FACTOR`` times that error votes for its shift; the
shift most pairs agree on (within ``DIRECT_AGREEMENT_ARCSEC``) is taken when
it is unique and above chance, and the sources are paired with their nearest
reference stars after it. This is what sparse chips (too few
sources or reference stars for a pattern) and a failed pattern vote fall back
on: one or two stars give a shift when unambiguous; anything else is a clear
failure naming what was ambiguous.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy.spatial import cKDTree

from calibstream.astrometry.matcher import PatternSolution, unique_pairs
from calibstream.errors import AstrometryError

#: Candidates are searched within this many times the first guess's trusted error.
DIRECT_RADIUS_FACTOR = 3.0
#: Pairs must agree on the shift to this (arcsec): the first guess's rotation and
#: scale errors times the chip's size, plus centroid and reference errors.
DIRECT_AGREEMENT_ARCSEC = 0.5
#: The winning shift's agreeing pairs must arise among random candidates less often than this.
DIRECT_FALSE_ALARM = 0.01
#: A lone pair (nothing to agree with) is trusted only when a source falls within the
#: search radius of a given point by chance less often than this (sources' density × πr²).
DIRECT_MAX_CHANCE = 0.1


def direct_bounds(frame, cfg) -> tuple[float, float, float]:
    """``match_direct``'s trusted error, chip area (arcsec²) and spread of the shifts across
    the chip: 3σ of the first guess's rotation and scale errors (``first_guess_rotation_deg``)
    over the chip's diagonal (``frame``: a :class:`~.tangent.TangentFrame`)."""
    area = frame.nx * frame.ny * frame.pixel_scale**2
    diagonal = math.hypot(frame.nx, frame.ny) * frame.pixel_scale
    spread = 3 * math.sqrt(2) * math.radians(cfg.first_guess_rotation_deg) * diagonal
    return cfg.first_guess_error_arcsec, area, spread


def match_direct(
    src_xy: np.ndarray,
    ref_xy: np.ndarray,
    error_arcsec: float,
    area_arcsec2: float,
    spread_arcsec: float = 0.0,
) -> PatternSolution:
    """The shift most (source, reference) candidates within the trusted radius agree on.

    ``src_xy``, ``ref_xy``: (n, 2) tangent-plane positions (arcsec) through
    the first guess; ``area_arcsec2`` the chip's area; ``spread_arcsec`` how much
    the shifts may differ across the chip by the first guess's rotation and
    scale errors (added to ``DIRECT_AGREEMENT_ARCSEC``). Every source and
    reference star within ``DIRECT_RADIUS_FACTOR × error_arcsec`` is a
    candidate pair voting for its shift; the shift with the most candidates
    agreeing (within ``DIRECT_AGREEMENT_ARCSEC``) wins when no other shift has
    as many and it stands above chance agreements. Raises
    :class:`AstrometryError` otherwise.
    """
    radius = DIRECT_RADIUS_FACTOR * error_arcsec
    agreement = DIRECT_AGREEMENT_ARCSEC + spread_arcsec
    src_xy, ref_xy = np.asarray(src_xy, float), np.asarray(ref_xy, float)
    src_c, ref_c = _candidates(src_xy, ref_xy, radius)
    if src_c.size == 0:
        raise AstrometryError(
            f"no direct match: no reference star within {radius:.1f} arcsec of a source "
            f"(first_guess_error_arcsec = {error_arcsec:g})",
            where="astrometry.match",
        )
    shifts = ref_xy[ref_c] - src_xy[src_c]
    tree = cKDTree(shifts)
    votes = np.array([len(c) for c in tree.query_ball_point(shifts, agreement)])
    best = int(np.argmax(votes))
    apart = np.hypot(*(shifts - shifts[best]).T) > 2 * agreement
    second = int(votes[apart].max()) if apart.any() else 0
    # random candidates agreeing with one of them: Poisson, times the candidates (a cluster
    # of v is found from each of its v members)
    v = int(votes[best])
    mean = (src_c.size - 1) * (agreement / radius) ** 2
    false_alarm = src_c.size / v * float(special.pdtrc(v - 2, mean)) if v > 1 else 0.0
    lone = src_xy.shape[0] / area_arcsec2 * math.pi * radius**2  # sources within r of a point
    if votes[best] <= second or false_alarm > DIRECT_FALSE_ALARM:
        raise AstrometryError(
            f"no direct match: the best shift has {votes[best]} agreeing pairs among "
            f"{src_c.size} candidates, another {second} (chance {false_alarm:.2g}): ambiguous",
            where="astrometry.match",
        )
    if votes[best] == 1 and lone > DIRECT_MAX_CHANCE:
        raise AstrometryError(
            f"no direct match: one pair, but a source lies within {radius:.1f} arcsec of any "
            f"point with probability {lone:.2f} (> {DIRECT_MAX_CHANCE:g})",
            where="astrometry.match",
        )
    return _solution(src_xy, ref_xy, shifts, shifts[best], agreement)


def _solution(src_xy, ref_xy, shifts, shift, agreement) -> PatternSolution:
    """One-to-one pairs of the candidates agreeing with ``shift``, as a pattern solution."""
    near = np.hypot(*(shifts - shift).T) <= agreement
    shift = np.median(shifts[near], axis=0)
    distance, nearest = cKDTree(ref_xy).query(src_xy + shift, distance_upper_bound=agreement)
    src_rows, ref_rows = unique_pairs(distance, nearest)
    return PatternSolution(
        rotation_deg=0.0,
        scale=1.0,
        shift=shift,
        source_index=src_rows,
        ref_index=ref_rows,
        votes=0.0,
        vote_background=0.0,
        shift_votes=float(near.sum()),
        n_expected=0.0,
        method="direct",
    )


def _candidates(src_xy, ref_xy, radius) -> tuple[np.ndarray, np.ndarray]:
    """Every (source, reference) pair of rows within ``radius``."""
    if src_xy.shape[0] == 0 or ref_xy.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    near = cKDTree(ref_xy).query_ball_point(src_xy, radius)
    counts = np.array([len(c) for c in near])
    src_rows = np.repeat(np.arange(src_xy.shape[0]), counts)
    ref_rows = np.array([j for c in near for j in c], dtype=np.int64)
    return src_rows.astype(np.int64), ref_rows
