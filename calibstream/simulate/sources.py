"""One exposure's truth table: the sky objects it sees, where, how bright, and how detectable.

``flux`` is the *total* flux in electrons; ``mag`` is the colour-corrected
magnitude ``r + c0 + c1 (r-i) + c2 (r-i)²`` that MAGZERO refers to.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from calibstream.detection.psfmodel import moffat_stamps
from calibstream.simulate.conditions import Conditions
from calibstream.simulate.config import MASK_BITS, SimConfig
from calibstream.simulate.geometry import propagate, world_to_pixel
from calibstream.simulate.pixels import Pixels
from calibstream.simulate.sky import Sky

#: The truth table's columns in file order (:func:`add_pixel_truth` appends more).
_COLUMNS = (
    "id",
    "ref_id",
    "is_star",
    "x",
    "y",
    "in_chip",
    "ra",
    "dec",
    "flux",
    "mag",
    "r_mag",
    "i_mag",
    "pmra",
    "pmdec",
    "half_light_radius",
    "sersic_n",
    "axis_ratio",
    "pa_pixel",
)


def _on_chip(wcs: WCS, config: SimConfig, ra: np.ndarray, dec: np.ndarray):
    """Indices and 0-based pixels of the positions on the chip (or within ``margin`` px of it).

    Candidates by the linear WCS first: only they go through the iterative SIP inverse.
    """
    nx, ny = config.size
    m = config.margin
    slack = m + config.sip_corner_shift + 5.0
    lx, ly = wcs.wcs_world2pix(ra, dec, 0)
    near = np.flatnonzero(
        (lx > -slack) & (lx < nx - 1 + slack) & (ly > -slack) & (ly < ny - 1 + slack)
    )
    x, y = world_to_pixel(wcs, ra[near], dec[near])
    keep = (x >= -0.5 - m) & (x < nx - 0.5 + m) & (y >= -0.5 - m) & (y < ny - 0.5 + m)
    return near[keep], x[keep], y[keep]


def _star_columns(stars: Table, wcs: WCS, config: SimConfig, epoch: float) -> dict:
    """The truth columns of the stars on the chip, at their positions of ``epoch``."""
    ra, dec = propagate(
        stars["ra"], stars["dec"], stars["pmra"], stars["pmdec"], epoch - config.refcat_epoch
    )
    idx, x, y = _on_chip(wcs, config, np.asarray(ra), np.asarray(dec))
    n = idx.size
    return {
        "id": np.asarray(stars["id"])[idx],
        "ref_id": np.asarray(stars["ref_id"])[idx],
        "is_star": np.ones(n, bool),
        "x": x,
        "y": y,
        "ra": np.asarray(ra)[idx],
        "dec": np.asarray(dec)[idx],
        "r_mag": np.asarray(stars["r_mag"])[idx],
        "i_mag": np.asarray(stars["i_mag"])[idx],
        "pmra": np.asarray(stars["pmra"])[idx],
        "pmdec": np.asarray(stars["pmdec"])[idx],
        "half_light_radius": np.zeros(n),
        "sersic_n": np.zeros(n),
        "axis_ratio": np.ones(n),
        "pa_pixel": np.zeros(n),
    }


def _pa_pixel(wcs: WCS, pa: np.ndarray) -> np.ndarray:
    """Major-axis angle in pixel space (deg, [0, 180)) of a sky PA east of north, by the CD."""
    pa = np.radians(pa)
    vec = np.linalg.solve(wcs.wcs.cd, np.stack([np.sin(pa), np.cos(pa)]))
    return np.degrees(np.arctan2(vec[1], vec[0])) % 180.0


def _galaxy_columns(galaxies: Table, wcs: WCS, config: SimConfig) -> dict:
    """The truth columns of the galaxies on the chip (sizes in px, angles in pixel space)."""
    ra, dec = np.asarray(galaxies["ra"], float), np.asarray(galaxies["dec"], float)
    idx, x, y = _on_chip(wcs, config, ra, dec)
    n = idx.size
    return {
        "id": np.asarray(galaxies["id"])[idx],
        "ref_id": np.full(n, -1, np.int64),
        "is_star": np.zeros(n, bool),
        "x": x,
        "y": y,
        "ra": np.asarray(galaxies["ra"])[idx],
        "dec": np.asarray(galaxies["dec"])[idx],
        "r_mag": np.asarray(galaxies["r_mag"])[idx],
        "i_mag": np.asarray(galaxies["i_mag"])[idx],
        "pmra": np.zeros(n),
        "pmdec": np.zeros(n),
        "half_light_radius": np.asarray(galaxies["hlr"])[idx] / config.pixel_scale,
        "sersic_n": np.asarray(galaxies["sersic_n"])[idx],
        "axis_ratio": np.asarray(galaxies["axis_ratio"])[idx],
        "pa_pixel": _pa_pixel(wcs, np.asarray(galaxies["pa"])[idx]),
    }


def place_sources(sky: Sky, wcs: WCS, config: SimConfig, epoch: float, magzero: float) -> Table:
    """Sky objects landing on (or within ``margin`` px of) the chip: pixel positions, fluxes."""
    nx, ny = config.size
    stars = _star_columns(sky.stars, wcs, config, epoch)
    galaxies = _galaxy_columns(sky.galaxies, wcs, config)
    col = {name: np.concatenate([stars[name], galaxies[name]]) for name in stars}
    x, y = col["x"], col["y"]
    col["in_chip"] = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    c0, c1, c2 = config.colorterm
    colour = col["r_mag"] - col["i_mag"]
    col["mag"] = col["r_mag"] + c0 + c1 * colour + c2 * colour**2
    col["flux"] = config.exptime * 10.0 ** (-0.4 * (col["mag"] - magzero))
    table = Table()
    for name in _COLUMNS:
        table[name] = col[name]
    order = np.argsort(table["id"], kind="stable")
    return table[order]


def add_pixel_truth(sources: Table, pixels: Pixels, cond: Conditions, bad_x: int) -> None:
    """The truth columns that need the pixels: S/N, saturation nearby, the bad column nearby."""
    x = np.asarray(sources["x"])
    y = np.asarray(sources["y"])
    flux = np.asarray(sources["flux"])
    sources["snr"], sources["snr_full"] = _snr(
        x, y, flux, cond.fwhm, cond.beta, cond.order, cond.sky_var, pixels.variance
    )
    sources["saturated"] = any_bit_near(pixels.mask, MASK_BITS["SAT"], x, y, 1)
    sources["near_bad_column"] = (
        np.abs(x - bad_x) < 2.0 * cond.fwhm if bad_x >= 0 else np.zeros(len(x), bool)
    )


def _gather_sum(stamps, x0, y0, weights_plane):
    """Σ stamp² / plane over on-chip pixels, per stamp (for optimal S/N)."""
    ny, nx = weights_plane.shape
    size = stamps.shape[1]
    offsets = np.arange(size)
    rows = y0[:, None] + offsets[None, :]
    cols = x0[:, None] + offsets[None, :]
    ok = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    r = np.clip(rows, 0, ny - 1)[:, :, None]
    c = np.clip(cols, 0, nx - 1)[:, None, :]
    return np.where(ok, stamps**2 / weights_plane[r, c], 0.0).sum(axis=(1, 2))


def _snr(x, y, flux, fwhm, beta, order, sky_var, variance):
    """Optimal point-source S/N against the sky noise alone, and against the full variance."""
    if x.size == 0:
        return np.empty(0), np.empty(0)
    half = int(np.ceil(3.0 * fwhm)) + 1  # P² beyond 3 FWHM is < 1e-6 of Σ P²
    stamps, x0, y0 = moffat_stamps(x, y, half, fwhm, beta, order)
    ones = np.full((1, 1), sky_var)
    ny, nx = variance.shape
    sky_plane = np.broadcast_to(ones, (ny, nx))
    s_sky = _gather_sum(stamps, x0, y0, sky_plane)
    s_full = _gather_sum(stamps, x0, y0, variance)
    return flux * np.sqrt(s_sky), flux * np.sqrt(s_full)


def any_bit_near(mask: np.ndarray, value: int, x, y, radius: int) -> np.ndarray:
    """Whether any pixel within ``radius`` (a square) of each position has the bit."""
    ny, nx = mask.shape
    cx = np.rint(x).astype(np.int64)
    cy = np.rint(y).astype(np.int64)
    found = np.zeros(cx.size, bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r, c = cy + dy, cx + dx
            ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
            found[ok] |= (mask[r[ok], c[ok]] & value) != 0
    return found
