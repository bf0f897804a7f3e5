"""The summary statistics that need pixels, measured at detection (pure functions).

* The PSF model: ``psfSigma`` (determinant radius of its adaptive moments), ``psfIxx``,
  ``psfIyy``, ``psfIxy`` (px²) and ``psfArea`` = (Σ p)² / Σ p² (SRD Eq. 1), as Rubin's
  ``update_psf_stats``. The contract's PSF is one image for the whole chip.
* The PSF stars: adaptive moments of the sources characterization flagged as PSF stars
  (``adaptive_xx``, ``adaptive_yy``, ``adaptive_xy``, ``adaptive_flag`` columns, beside
  the isophotal ``shape_*`` of every source), and Rubin's residuals
  against the model: the median and the MAD scatter of star e1, e2 and trace radius minus
  the PSF's, over the ``calib_psf_used`` stars with a PSF-flux S/N of 50 to 1000.
* The sky. The input arrives with its background subtracted, so the sky is read off the
  variance plane: a sky pixel's variance is sky + read noise² (electrons, gain 1), so
  ``meanVar`` is the clipped mean of the variance over sky pixels (no mask plane of
  ``[summary] sky_mask_planes``, DETECTED included) and ``skyBg = meanVar - read_noise²``
  (the band's fiducial read noise). ``skyNoise`` is the clipped standard deviation of the
  image's sky pixels, corrected for the clipping (the sigma of the Gaussian that, clipped at
  the same cut, has that standard deviation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from calibstream.detection.background import Background, background_at, background_grid
from calibstream.detection.stamps import gather
from calibstream.io.exposure import Exposure
from calibstream.moments import Moments, adaptive_moments
from calibstream.quality_config import Fiducial, SummaryConfig
from calibstream.summary_stats import SummaryStats

#: IQR to Gaussian sigma, MAD to Gaussian sigma.
IQR_TO_SIGMA = 0.7413011092528009
MAD_TO_SIGMA = 1.482602218505602
#: Mask planes whose pixels carry no weight in a PSF star's moments.
SHAPE_MASK_PLANES = ("BAD", "SAT", "NO_DATA", "CR")
#: The flags whose stars are measured (every PSF candidate, used or reserved).
SHAPE_SOURCES = ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved")


def image_summary(
    exposure: Exposure,
    catalog: dict[str, np.ndarray],
    background: Background | np.ndarray,
    fiducial: Fiducial | None,
    config: SummaryConfig,
) -> tuple[SummaryStats, dict[str, np.ndarray]]:
    """The pixels' summary statistics, and the catalog's shape columns. ``background``: the
    model (evaluated only at the pixels read) or its full-resolution image."""
    psf = adaptive_moments(exposure.psf.image[None])
    pixels = Subtracted(exposure.image, background)
    shapes = star_shapes(pixels, exposure, catalog, float(psf.determinant_radius[0]))
    residuals = psf_star_residuals({**catalog, **shapes}, psf, config)
    read_noise = 0.0 if fiducial is None else fiducial.read_noise
    bad = exposure.bits(*config.sky_mask_planes)
    sky = sky_statistics(pixels, exposure.variance, exposure.mask, bad, read_noise, config)
    p = exposure.psf.image.astype(np.float64)
    stats = SummaryStats(
        psfSigma=psf.determinant_radius[0],
        psfArea=p.sum() ** 2 / np.sum(p * p),
        psfIxx=psf.xx[0],
        psfIyy=psf.yy[0],
        psfIxy=psf.xy[0],
        **residuals,
        **sky,
    )
    return stats, shapes


@dataclass(frozen=True)
class Subtracted:
    """``image - background`` read where it is needed: the same float32 values as the whole
    difference, without a full-size plane (the model evaluated at those pixels only)."""

    image: np.ndarray
    background: Background | np.ndarray  # the model, or its full-resolution image

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """At pixels (rows[i], cols[i])."""
        if isinstance(self.background, Background):
            return gather(self.image, rows, cols) - background_at(self.background, rows, cols)
        return gather(self.image, rows, cols) - gather(self.background, rows, cols)

    def grid(self, stride: int) -> np.ndarray:
        """On the sub-grid of every ``stride``-th row and column."""
        pixels = self.image[::stride, ::stride]
        if isinstance(self.background, Background):
            rows, cols = (np.arange(0, n, stride) for n in self.image.shape)
            return pixels - background_grid(self.background, rows, cols)
        return pixels - self.background[::stride, ::stride]


def star_shapes(
    pixels: Subtracted, exposure: Exposure, catalog: dict[str, np.ndarray], psf_sigma: float
) -> dict[str, np.ndarray]:
    """Adaptive moments of the PSF candidates (``adaptive_*`` columns; NaN and ``adaptive_flag``
    for every other source, and where the iteration failed)."""
    n = len(catalog["id"])
    columns = {name: np.full(n, np.nan) for name in ("adaptive_xx", "adaptive_yy", "adaptive_xy")}
    flag = np.ones(n, dtype=bool)
    chosen = np.zeros(n, dtype=bool)
    for name in SHAPE_SOURCES:
        if name in catalog:
            chosen |= catalog[name]
    chosen &= np.isfinite(catalog["x"]) & np.isfinite(catalog["y"])
    rows = np.flatnonzero(chosen)
    if rows.size:
        half = max(exposure.psf.image.shape[0] // 2, math.ceil(5 * psf_sigma))
        ix = np.rint(catalog["x"][rows]).astype(np.int64)
        iy = np.rint(catalog["y"][rows]).astype(np.int64)
        offsets = np.arange(-half, half + 1)
        r = iy[:, None, None] + offsets[None, :, None]
        c = ix[:, None, None] + offsets[None, None, :]
        ny, nx = exposure.shape
        inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        r, c = np.broadcast_arrays(np.clip(r, 0, ny - 1), np.clip(c, 0, nx - 1))
        masked = (gather(exposure.mask, r, c) & exposure.bits(*SHAPE_MASK_PLANES)) != 0
        stamps = np.where(inside & ~masked, pixels.at(r, c), 0.0)
        moments = adaptive_moments(stamps, inside & ~masked, sigma0=psf_sigma)
        columns["adaptive_xx"][rows] = moments.xx
        columns["adaptive_yy"][rows] = moments.yy
        columns["adaptive_xy"][rows] = moments.xy
        flag[rows] = moments.failed
    return {**columns, "adaptive_flag": flag}


def psf_star_residuals(
    catalog: dict[str, np.ndarray], psf: Moments, config: SummaryConfig
) -> dict[str, float | int | None]:
    """nPsfStar and the PSF-star residuals (Rubin's definitions: star minus model)."""
    used = catalog.get("calib_psf_used", np.zeros(len(catalog["id"]), dtype=bool))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = catalog["psf_flux"] / catalog["psf_flux_err"]
    good = used & ~catalog["adaptive_flag"] & (snr >= config.psf_star_min_snr)
    good &= snr <= config.psf_star_max_snr
    if "flag_psf_flux" in catalog:
        good &= ~catalog["flag_psf_flux"]
    result: dict[str, float | int | None] = {"nPsfStar": int(np.count_nonzero(used))}
    if not good.any():
        return result
    xx, yy, xy = (catalog[f"adaptive_{k}"][good] for k in ("xx", "yy", "xy"))
    star_e1, star_e2 = (xx - yy) / (xx + yy), 2.0 * xy / (xx + yy)
    star_size = np.sqrt((xx + yy) / 2.0)
    for name, delta in (
        ("E1", star_e1 - psf.e1[0]),
        ("E2", star_e2 - psf.e2[0]),
        ("Size", star_size - psf.trace_radius[0]),
    ):
        result[f"psfStarDelta{name}Median"] = float(np.median(delta))
        result[f"psfStarDelta{name}Scatter"] = _mad_sigma(delta)
    return result


def _mad_sigma(values: np.ndarray) -> float:
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def sky_statistics(
    image: Subtracted,
    variance: np.ndarray,
    mask: np.ndarray,
    bad_bits: int,
    read_noise: float,
    config: SummaryConfig,
) -> dict[str, float | None]:
    """skyBg, skyNoise and meanVar over the sky pixels (a regular sub-grid of at most
    ``config.sky_max_pixels``) of the background-subtracted ``image``."""
    stride = max(1, math.ceil(math.sqrt(variance.size / config.sky_max_pixels)))
    pixels = image.grid(stride)
    var = variance[::stride, ::stride]
    good = ((mask[::stride, ::stride] & bad_bits) == 0) & np.isfinite(pixels)
    good &= np.isfinite(var) & (var > 0)
    if np.count_nonzero(good) < 100:
        return {"skyBg": None, "skyNoise": None, "meanVar": None}
    sigma, clip = config.sky_clip_sigma, config.sky_clip_iterations
    _, noise, cut = clipped(pixels[good].astype(np.float64), sigma, clip)
    mean_var, _, _ = clipped(var[good].astype(np.float64), sigma, clip)
    return {
        "skyBg": mean_var - read_noise**2,
        "skyNoise": gaussian_sigma(noise, cut),
        "meanVar": mean_var,
    }


def clipped(values: np.ndarray, nsigma: float, iterations: int) -> tuple[float, float, float]:
    """Mean and standard deviation after clipping at ``nsigma`` about the median (sigma from
    the interquartile range), then ``iterations - 1`` more times about the clipped mean (as
    afw's MEANCLIP and STDEVCLIP); and the half-width of the last clip."""
    q25, centre, q75 = np.percentile(values, [25, 50, 75])
    mean, std, cut = float(centre), float(IQR_TO_SIGMA * (q75 - q25)), math.inf
    for _ in range(max(1, iterations)):
        cut = nsigma * std
        chosen = values[np.abs(values - mean) <= cut]
        if chosen.size == 0:
            break
        mean, std = float(chosen.mean()), float(chosen.std())
    return mean, std, cut


def gaussian_sigma(clipped_std: float, cut: float) -> float:
    """The sigma of the Gaussian whose standard deviation, clipped at ±``cut`` about its
    mean, is ``clipped_std`` (what clipping takes off a Gaussian's sigma, given back)."""
    if not (math.isfinite(cut) and clipped_std > 0 and cut > 0):
        return clipped_std
    sigma = clipped_std
    for _ in range(100):
        t = cut / sigma
        kept = float(special.erf(t / math.sqrt(2.0)))
        density = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        shrink = 1.0 - 2.0 * t * density / kept
        if not shrink > 0:
            return clipped_std
        updated = clipped_std / math.sqrt(shrink)
        if abs(updated - sigma) < 1e-12 * sigma:
            break
        sigma = updated
    return sigma
