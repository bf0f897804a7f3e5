"""Pattern matching of sources to reference stars robust to a poor first-guess WCS.

Both lists are given as tangent-plane positions in arcseconds about the same
point (the first guess's chip centre): the sources through the first-guess
WCS, the reference stars by the gnomonic projection. A first guess wrong by
a shift, a rotation and a scale makes the two patterns differ by a similarity
transform ``ref = s · R(θ) · src + t``; we find it by voting, all vectorised:

1. rotation and scale: every pair of bright sources against every pair of
   bright reference stars whose lengths agree within the scale bound gives
   one vote ``(θ, ln s)`` from the difference of the pair angles and the log
   ratio of the lengths (pairs are undirected: the orientation whose angle is
   within ±90° is kept). Consistent pairs pile up in one cell of a 2-D
   histogram, random coincidences spread over all of it: a cell is a
   candidate only if random pairs would fill some cell with as many votes
   with a probability below ``VOTE_FALSE_ALARM`` (Poisson tail times the
   number of cells);
2. shift: for each of the few best significant (θ, s) cells, every bright
   source transformed by it against every bright reference star votes for ``t``;
3. verification: all sources are transformed and matched to all reference
   stars within a few pixels; a least-squares similarity from its matches is
   re-verified, and a candidate whose matches spread over the radius as
   chance ones do (rms > ``TIGHT_FRACTION`` of it) is rejected before any
   fit; the candidate with the most matches wins if that number is well
   above the matches expected by chance from the densities.

Loops run over the few candidate solutions and over chunks of pair
combinations (to bound memory), never over sources or pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.spatial import cKDTree

from calibstream.astrometry.sipfit import least_squares
from calibstream.errors import AstrometryError

#: Rotation/scale candidates followed up with a shift vote and a verification.
N_CANDIDATES = 3
#: Bound on pair-pair combinations examined at once (memory of one chunk).
CHUNK = 2_000_000
#: A rotation/scale cell is a candidate when random pairs would fill one cell of the
#: histogram with as many votes less often than this (Poisson, times the number of cells).
VOTE_FALSE_ALARM = 1e-3
#: A candidate is verified only when its matches' rms distance is within this fraction of
#: the verification radius: true matches sit at the centroid errors, chance ones at 0.71.
TIGHT_FRACTION = 0.4
#: A Rayleigh median: median of |r| for an isotropic 2-D Gaussian of unit σ per axis.
RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True, eq=False)
class PatternSolution:
    """``ref = scale · R(rotation) · src + shift`` in the tangent plane (arcsec)."""

    rotation_deg: float
    scale: float
    shift: np.ndarray  # (2,) arcsec, east and north
    source_index: np.ndarray  # verified pairs: rows of the source list ...
    ref_index: np.ndarray  # ... and of the reference list
    votes: float  # rotation/scale votes in the winning cell
    vote_background: float  # the same cell's expectation from random pairs
    shift_votes: float
    n_expected: float  # verified matches expected by chance
    method: str = "pattern"  # how it was found: "pattern" or "direct" (matching)

    @property
    def n_verified(self) -> int:
        return int(self.source_index.size)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        return similarity(xy, self.rotation_deg, self.scale, self.shift)


def similarity(xy: np.ndarray, rotation_deg: float, scale: float, shift) -> np.ndarray:
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    rot = scale * np.array([[c, -s], [s, c]])
    return xy @ rot.T + np.asarray(shift, float)


def match_pattern(
    src_xy: np.ndarray,
    ref_xy: np.ndarray,
    bright_src: np.ndarray,
    bright_ref: np.ndarray,
    *,
    ref_density: float,
    max_offset: float,
    max_rotation_deg: float,
    max_scale_error: float,
    min_pair_length: float,
    shift_bin: float,
    verify_radius: float,
    min_matches: int,
    angle_bin_deg: float = 0.1,
) -> PatternSolution:
    """The similarity transform taking sources onto reference stars, verified.

    ``src_xy``, ``ref_xy``: (n, 2) tangent-plane positions, arcsec;
    ``bright_src``, ``bright_ref``: rows used for the votes; ``ref_density``:
    reference stars per arcsec² (for the chance-match expectation); lengths
    (``max_offset``, ``min_pair_length``, ``shift_bin``, ``verify_radius``) in
    arcsec. Raises :class:`AstrometryError` when no candidate is significant.
    """
    votes = _rotation_scale_votes(
        src_xy[bright_src],
        ref_xy[bright_ref],
        max_rotation_deg,
        max_scale_error,
        min_pair_length,
        angle_bin_deg,
    )
    src_all = np.asarray(src_xy, float)
    verifier = Verifier(src_all, ref_xy, cKDTree(ref_xy), verify_radius)
    n_expected = expected_chance_matches(src_all.shape[0], ref_density, verify_radius)
    best: PatternSolution | None = None
    for i, j, n_votes in _significant_cells(votes):
        rotation, scale = votes.cell(i, j)
        shift, shift_votes = _vote_shift(
            src_all[bright_src], ref_xy[bright_ref], rotation, scale, max_offset, shift_bin
        )
        (rotation, scale, shift), pairs = verifier.refined(rotation, scale, shift)
        if not verifier.tight(rotation, scale, shift, pairs):
            continue  # matches spread over the radius as chance ones do: a wrong candidate
        if best is None or pairs[0].size > best.n_verified:
            best = PatternSolution(
                rotation_deg=float(rotation),
                scale=float(scale),
                shift=np.asarray(shift, float),
                source_index=pairs[0],
                ref_index=pairs[1],
                votes=n_votes,
                vote_background=votes.background,
                shift_votes=shift_votes,
                n_expected=n_expected,
            )
    threshold = verified_threshold(n_expected, min_matches)
    if best is None or best.n_verified < threshold:
        raise _no_solution(best, votes, verify_radius, n_expected, threshold)
    return best


def expected_chance_matches(n_src: int, ref_density: float, radius: float) -> float:
    """Sources within ``radius`` of a reference star by chance (densities per arcsec²)."""
    return n_src * ref_density * math.pi * radius**2


def verified_threshold(n_expected: float, min_matches: int) -> float:
    """Verified matches a candidate needs: 5σ above the chance ones, and ``min_matches``."""
    return max(min_matches, n_expected + 5.0 * math.sqrt(n_expected) + 3.0)


@dataclass(frozen=True, eq=False)
class _RotationScaleVotes:
    """The (θ, ln s) votes of pair-pair combinations and their counts in 2×2-cell boxes."""

    theta: np.ndarray  # rad
    ln_s: np.ndarray
    box: np.ndarray  # votes per box of 2×2 histogram cells
    rot_edges: np.ndarray  # the histogram's cell edges in θ ...
    ln_edges: np.ndarray  # ... and in ln s
    background: float  # a box's expected votes from random pairs

    def cell(self, i: int, j: int) -> tuple[float, float]:
        """Median rotation (deg) and scale of the votes in box (i, j)."""
        inside = (
            (self.theta >= self.rot_edges[i])
            & (self.theta < self.rot_edges[i + 2])
            & (self.ln_s >= self.ln_edges[j])
            & (self.ln_s < self.ln_edges[j + 2])
        )
        rotation = math.degrees(float(np.median(self.theta[inside])))
        scale = math.exp(float(np.median(self.ln_s[inside])))
        return rotation, scale


def _rotation_scale_votes(
    src: np.ndarray,
    ref: np.ndarray,
    max_rotation_deg: float,
    max_scale_error: float,
    min_pair_length: float,
    angle_bin_deg: float,
) -> _RotationScaleVotes:
    """Votes of every bright source pair × reference pair, histogrammed; none is an error."""
    w = math.radians(angle_bin_deg)  # bin width in rotation (rad) and in ln scale
    rot_max = math.radians(max_rotation_deg)
    ln_max = max(math.log1p(max_scale_error), -math.log1p(-max_scale_error))
    theta, ln_s = _pair_votes(src, ref, rot_max + w, ln_max + w, min_pair_length)
    if theta.size == 0:
        raise AstrometryError(
            "no pair of bright sources matches a pair of reference stars in length "
            f"(scale error ≤ {max_scale_error:g}): no consistent pattern solution",
            where="astrometry.match",
        )
    n_rot = math.ceil((rot_max + w) / w)
    n_ln = math.ceil((ln_max + w) / w)
    hist, rot_edges, ln_edges = np.histogram2d(
        theta,
        ln_s,
        bins=(2 * n_rot, 2 * n_ln),
        range=((-n_rot * w, n_rot * w), (-n_ln * w, n_ln * w)),
    )
    box = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]  # 2×2 cells
    # random coincidences spread evenly over the (θ, ln s) region kept
    background = theta.size * (2 * w) ** 2 / ((2 * (rot_max + w)) * (2 * (ln_max + w)))
    return _RotationScaleVotes(theta, ln_s, box, rot_edges, ln_edges, background)


def _significant_cells(votes: _RotationScaleVotes) -> Iterator[tuple[int, int, float]]:
    """Up to ``N_CANDIDATES`` boxes (i, j, votes), best first, that random pairs cannot explain.

    A box's neighbours are suppressed once it is taken; the first box within
    random fluctuations ends the candidates.
    """
    suppressed = votes.box.copy()
    for _ in range(N_CANDIDATES):
        i, j = np.unravel_index(np.argmax(suppressed), suppressed.shape)
        n_votes = float(votes.box[i, j])
        if n_votes <= 0:
            return
        suppressed[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3] = -1.0
        false_alarm = votes.box.size * float(special.pdtrc(n_votes - 1.0, votes.background))
        if false_alarm > VOTE_FALSE_ALARM:
            return  # this cell and all lower ones are within random fluctuations
        yield i, j, n_votes


@dataclass(frozen=True, eq=False)
class Verifier:
    """Matches of all sources, moved by a candidate similarity, to all reference stars."""

    src: np.ndarray
    ref: np.ndarray
    ref_tree: cKDTree
    radius: float

    def pairs(self, rotation, scale, shift) -> tuple[np.ndarray, np.ndarray]:
        """One-to-one (source, reference) rows within ``radius`` under the similarity."""
        return _verify(self.src, self.ref_tree, rotation, scale, shift, self.radius)

    def tight(self, rotation, scale, shift, pairs) -> bool:
        """Whether the pairs' rms distance under the similarity is within ``TIGHT_FRACTION``
        of the radius (chance pairs, uniform in the circle, give 0.71 of it)."""
        if pairs[0].size == 0:
            return False
        moved = similarity(self.src[pairs[0]], rotation, scale, shift)
        rms = math.sqrt(float(np.mean(np.sum((moved - self.ref[pairs[1]]) ** 2, axis=1))))
        return rms <= TIGHT_FRACTION * self.radius

    def refined(self, rotation, scale, shift):
        """The similarity and its pairs; a least-squares refit if it verifies as many or more."""
        pairs = self.pairs(rotation, scale, shift)
        if pairs[0].size >= 3:  # refine with a least-squares similarity, re-verify
            refined = fit_similarity(self.src[pairs[0]], self.ref[pairs[1]])
            refined_pairs = self.pairs(*refined)
            if refined_pairs[0].size >= pairs[0].size:
                return refined, refined_pairs
        return (rotation, scale, shift), pairs


def _no_solution(
    best: PatternSolution | None,
    votes: _RotationScaleVotes,
    verify_radius: float,
    n_expected: float,
    threshold: float,
) -> AstrometryError:
    """The error saying why no candidate stands out: no vote, or too few verified matches."""
    if best is None:
        found = (
            f"the best rotation/scale vote, {votes.box.max():.0f} pairs where "
            f"{votes.background:.1f} are expected by chance, is not significant"
        )
    else:
        found = (
            f"the best candidate gives {best.n_verified} matches within "
            f"{verify_radius:.2f} arcsec where {n_expected:.1f} are expected by chance "
            f"(need {threshold:.0f})"
        )
    return AstrometryError(f"no consistent pattern solution: {found}", where="astrometry.match")


def _pair_votes(src, ref, rot_lim, ln_lim, min_length):
    """(θ, ln s) of every source pair × reference pair within the bounds."""
    si, sj = np.triu_indices(src.shape[0], 1)
    ds = src[sj] - src[si]
    ls = np.hypot(ds[:, 0], ds[:, 1])
    ok = ls >= min_length
    ls, phi_s = ls[ok], np.arctan2(ds[ok, 1], ds[ok, 0])
    ri, rj = np.triu_indices(ref.shape[0], 1)
    dr = ref[rj] - ref[ri]
    lr = np.hypot(dr[:, 0], dr[:, 1])
    order = np.argsort(lr)
    lr, phi_r = lr[order], np.arctan2(dr[order, 1], dr[order, 0])
    lo = np.searchsorted(lr, ls * math.exp(-ln_lim), side="left")
    hi = np.searchsorted(lr, ls * math.exp(ln_lim), side="right")
    counts = hi - lo
    ends = np.cumsum(counts)
    thetas, lns = [], []
    start = 0
    while start < ls.size:  # chunks of source pairs holding about CHUNK combinations
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + CHUNK, side="right"))
        stop = max(stop, start + 1)
        k = np.arange(start, stop)
        c = counts[k]
        pair_s = np.repeat(k, c)
        first = np.repeat(np.cumsum(c) - c, c)
        pair_r = np.repeat(lo[k], c) + (np.arange(pair_s.size) - first)
        dphi = phi_r[pair_r] - phi_s[pair_s]
        dphi = (dphi + 0.5 * np.pi) % np.pi - 0.5 * np.pi  # undirected pairs: fold by π
        ln_ratio = np.log(lr[pair_r] / ls[pair_s])
        keep = (np.abs(dphi) <= rot_lim) & (np.abs(ln_ratio) <= ln_lim)
        thetas.append(dphi[keep])
        lns.append(ln_ratio[keep])
        start = stop
    if not thetas:
        return np.empty(0), np.empty(0)
    return np.concatenate(thetas), np.concatenate(lns)


def _vote_shift(src, ref, rotation, scale, max_offset, bin_size):
    """The shift most bright (transformed source, reference) differences agree on."""
    moved = similarity(src, rotation, scale, (0.0, 0.0))
    diff = (ref[None, :, :] - moved[:, None, :]).reshape(-1, 2)
    n = math.ceil(max_offset / bin_size) + 2
    half = n * bin_size
    diff = diff[(np.abs(diff[:, 0]) <= half) & (np.abs(diff[:, 1]) <= half)]
    if diff.shape[0] == 0:
        return np.zeros(2), 0.0
    hist, ex, ey = np.histogram2d(
        diff[:, 0], diff[:, 1], bins=(2 * n, 2 * n), range=((-half, half), (-half, half))
    )
    box = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    i, j = np.unravel_index(np.argmax(box), box.shape)
    centre = np.array([ex[i + 1], ey[j + 1]])
    near = np.all(np.abs(diff - centre) <= bin_size, axis=1)
    return np.median(diff[near], axis=0), float(box[i, j])


def _verify(src, ref_tree, rotation, scale, shift, radius) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference star within ``radius`` of every transformed source, one-to-one."""
    moved = similarity(src, rotation, scale, shift)
    distance, nearest = ref_tree.query(moved, distance_upper_bound=radius)
    return unique_pairs(distance, nearest)


def unique_pairs(distance: np.ndarray, nearest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From a KD-tree query (inf where none): each reference keeps its closest source."""
    hit = np.flatnonzero(np.isfinite(distance))
    hit = hit[np.argsort(distance[hit], kind="stable")]
    _, first = np.unique(nearest[hit], return_index=True)
    src_rows = np.sort(hit[first])
    return src_rows, nearest[src_rows].astype(np.int64)


def fit_similarity(src: np.ndarray, ref: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares ``ref = [[a, -b], [b, a]] src + t``: rotation (deg), scale, shift."""
    n = src.shape[0]
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    a, b, tx, ty = least_squares(design, ref.reshape(-1))
    return math.degrees(math.atan2(b, a)), math.hypot(a, b), np.array([tx, ty])
