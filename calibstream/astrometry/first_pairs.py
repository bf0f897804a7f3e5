"""The first (source, reference) pairs the TAN-SIP fit starts from.

Sparse chips (fewer sources or reference stars than ``min_matches``) can only be
paired directly, under the header's trusted first guess
(:mod:`calibstream.astrometry.direct`). Rich chips try the same direct matching
first when the first guess is trusted (``first_guess_error_arcsec`` > 0), but
only between the brightest sources and reference stars, and the shift it finds
must then pass the pattern candidates' verification on all sources (tight
matches, well above chance): among many candidates a chance agreement on a shift
is easy, a verified one is not. It costs milliseconds where the pattern vote's
pair-pair combinations cost ~0.2 s; when it does not verify, the pattern vote
(:mod:`calibstream.astrometry.matcher`) runs as before, so the capture range is
unchanged.

The brightest lists skip as many of the brightest reference stars as there are
sources brighter than any given (saturated, left out upstream): on a crowded
chip a thousand saturated stars would otherwise fill the brightest references
and the two lists would not overlap.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from calibstream.astrometry.direct import direct_bounds, match_direct
from calibstream.astrometry.matcher import (
    PatternSolution,
    Verifier,
    expected_chance_matches,
    fit_similarity,
    match_pattern,
    verified_threshold,
)
from calibstream.astrometry.tangent import Projected, TangentFrame
from calibstream.config import AstrometryConfig
from calibstream.errors import AstrometryError

#: Pattern matching: pairs shorter than this fraction of the chip's short side do not vote.
MIN_PAIR_FRACTION = 0.1
#: Shift-vote bin and verification radius, pixels (converted with the first guess's scale).
SHIFT_BIN_PX = 5.0
VERIFY_RADIUS_PX = 10.0
#: Reference stars used for the votes per bright source, per unit of searched area / chip area.
REF_PER_SOURCE = 2.0
#: The pattern vote's references skip as many of the brightest as the brighter sources
#: left out (saturated), per unit area, times each of these in turn until one verifies:
#: the count is only an estimate (saturated stars merge, some sources are not stars).
SKIP_TRIALS = (1.0, 0.7, 0.5)

#: (the sources' brightness, the references' rank, the brighter sources left out)
Ranks = tuple[np.ndarray, np.ndarray, int]


def first_pairs(
    src: Projected,
    ref: Projected,
    ranks: Ranks,
    frame: TangentFrame,
    margin: float,
    cfg: AstrometryConfig,
) -> PatternSolution:
    """Direct matching on sparse chips; on rich ones a verified direct match of the
    brightest if the first guess is trusted, else (or failing that) the pattern vote."""
    sparse = min(src.rows.size, ref.rows.size) < cfg.min_matches
    trusted = cfg.first_guess_error_arcsec > 0
    if sparse and not trusted:
        raise AstrometryError(
            f"only {src.rows.size} sources and {ref.rows.size} reference stars to match "
            f"(pattern matching needs {cfg.min_matches}; first_guess_error_arcsec is 0)",
            where="astrometry.match",
        )
    if sparse:
        return match_direct(src.xy, ref.xy, *direct_bounds(frame, cfg))
    bright_src, ref_order, n_ref_bright, skip = _brightest(ranks, frame, margin, cfg)
    area_foot = (frame.nx + 2 * margin) * (frame.ny + 2 * margin) * frame.pixel_scale**2
    ref_density = ref.rows.size / area_foot
    if trusted:
        # direct matching is cheap: its references span the skip's whole doubt
        window = ref_order[: 2 * skip + n_ref_bright]
        found = _direct_verified(src, ref, bright_src, window, frame, ref_density, cfg)
        if found is not None:
            return found
    error = None
    for fraction in SKIP_TRIALS if skip else (0.0,):
        start = round(fraction * skip)
        try:
            bright_ref = ref_order[start : start + n_ref_bright]
            return _pattern(src, ref, bright_src, bright_ref, frame, ref_density, cfg)
        except AstrometryError as exc:  # the next window, if any
            error = exc
    raise error


def _pattern(src, ref, bright_src, bright_ref, frame, ref_density, cfg) -> PatternSolution:
    """:func:`~calibstream.astrometry.matcher.match_pattern` of these brightest lists."""
    nx, ny, pixel_scale = frame.nx, frame.ny, frame.pixel_scale
    return match_pattern(
        src.xy,
        ref.xy,
        bright_src,
        bright_ref,
        ref_density=ref_density,
        max_offset=cfg.max_offset_arcsec,
        max_rotation_deg=cfg.max_rotation_deg,
        max_scale_error=cfg.max_scale_error,
        min_pair_length=MIN_PAIR_FRACTION * min(nx, ny) * pixel_scale,
        shift_bin=SHIFT_BIN_PX * pixel_scale,
        verify_radius=VERIFY_RADIUS_PX * pixel_scale,
        min_matches=cfg.min_matches,
    )


def _brightest(
    ranks: Ranks, frame: TangentFrame, margin: float, cfg: AstrometryConfig
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The ``n_bright`` brightest sources; the reference stars brightest first, how many
    of them the pattern vote takes (``REF_PER_SOURCE`` per source per unit area) and how
    many to skip: as many as the sources left out as brighter, per unit area."""
    src_brightness, ref_rank, n_brighter = ranks
    area_ratio = (frame.nx + 2 * margin) * (frame.ny + 2 * margin) / (frame.nx * frame.ny)
    rank_src = np.nan_to_num(src_brightness, nan=-np.inf)
    bright_src = np.argsort(-rank_src, kind="stable")[: cfg.n_bright]
    n_ref_bright = round(REF_PER_SOURCE * cfg.n_bright * area_ratio)
    skip = min(round(n_brighter * area_ratio), ref_rank.size // 2)
    return bright_src, np.argsort(-ref_rank, kind="stable"), n_ref_bright, skip


def _direct_verified(
    src: Projected,
    ref: Projected,
    bright_src: np.ndarray,
    bright_ref: np.ndarray,
    frame: TangentFrame,
    ref_density: float,
    cfg: AstrometryConfig,
) -> PatternSolution | None:
    """Direct matching of the brightest lists, verified on all sources as a pattern
    candidate is; None when it finds no shift or the shift does not verify."""
    try:
        direct = match_direct(src.xy[bright_src], ref.xy[bright_ref], *direct_bounds(frame, cfg))
    except AstrometryError:
        return None
    paired_src = src.xy[bright_src[direct.source_index]]
    paired_ref = ref.xy[bright_ref[direct.ref_index]]
    candidate = (0.0, 1.0, np.asarray(direct.shift, float))
    if paired_src.shape[0] >= 3:
        candidate = fit_similarity(paired_src, paired_ref)
    return verify_candidate(
        src.xy,
        ref.xy,
        candidate,
        ref_density=ref_density,
        verify_radius=VERIFY_RADIUS_PX * frame.pixel_scale,
        min_matches=cfg.min_matches,
    )


def verify_candidate(
    src_xy: np.ndarray,
    ref_xy: np.ndarray,
    candidate: tuple[float, float, np.ndarray],
    *,
    ref_density: float,
    verify_radius: float,
    min_matches: int,
) -> PatternSolution | None:
    """A (rotation, scale, shift) found otherwise, verified as a pattern candidate is:
    refined on all sources, tight, and above chance. None when it is not."""
    src_all = np.asarray(src_xy, float)
    verifier = Verifier(src_all, ref_xy, cKDTree(ref_xy), verify_radius)
    (rotation, scale, shift), pairs = verifier.refined(*candidate)
    n_expected = expected_chance_matches(src_all.shape[0], ref_density, verify_radius)
    if not verifier.tight(rotation, scale, shift, pairs):
        return None
    if pairs[0].size < verified_threshold(n_expected, min_matches):
        return None
    return PatternSolution(
        rotation_deg=float(rotation),
        scale=float(scale),
        shift=np.asarray(shift, float),
        source_index=pairs[0],
        ref_index=pairs[1],
        votes=0.0,
        vote_background=0.0,
        shift_votes=0.0,
        n_expected=n_expected,
        method="direct",
    )
