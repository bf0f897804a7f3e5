"""Sky geometry: epochs, the gnomonic projection, proper motion and the exposures' WCSs.

Each exposure has a true TAN-SIP WCS (a random camera distortion) and a
first-guess header WCS off by arcseconds and hundredths of a degree, as a
telescope's pointing model would give.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS, Sip

from calibstream.simulate.config import MAS_PER_DEG, SimConfig


def julian_year(mjd: float) -> float:
    """Julian epoch of an MJD (J2000.0 = MJD 51544.5)."""
    return 2000.0 + (mjd - 51544.5) / 365.25


def tan_deproject(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float):
    """Gnomonic (TAN) deprojection: tangent-plane offsets in arcsec to (ra, dec) degrees."""
    xi = np.radians(np.asarray(xi, float) / 3600.0)
    eta = np.radians(np.asarray(eta, float) / 3600.0)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    denom = math.cos(d0) - eta * math.sin(d0)
    ra = a0 + np.arctan2(xi, denom)
    dec = np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def tan_project(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float):
    """Gnomonic projection: (ra, dec) degrees to tangent-plane offsets in arcsec."""
    a = np.radians(np.asarray(ra, float)) - math.radians(ra0)
    d = np.radians(np.asarray(dec, float))
    d0 = math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def propagate(ra, dec, pmra, pmdec, years: float):
    """Proper motion over ``years`` (pmra includes cos dec): straight line on the sphere.

    The unit vector moves by Δt·μ along the local east/north axes and is
    renormalised (no parallax, no radial velocity) — as astropy's
    ``apply_space_motion`` for such sources, and valid near the poles.
    """
    ra_r = np.radians(np.asarray(ra, float))
    dec_r = np.radians(np.asarray(dec, float))
    step = years * np.radians(1.0 / MAS_PER_DEG)
    a = np.asarray(pmra, float) * step
    d = np.asarray(pmdec, float) * step
    sin_ra, cos_ra = np.sin(ra_r), np.cos(ra_r)
    sin_dec, cos_dec = np.sin(dec_r), np.cos(dec_r)
    x = cos_dec * cos_ra - a * sin_ra - d * sin_dec * cos_ra
    y = cos_dec * sin_ra + a * cos_ra - d * sin_dec * sin_ra
    z = sin_dec + d * cos_dec
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arctan2(z, np.hypot(x, y)))


def _cd_matrix(scale_arcsec: float, rotation_deg: float) -> np.ndarray:
    """CD matrix, north up and east left at rotation 0 (det < 0, as on the sky)."""
    s = scale_arcsec / 3600.0
    c, n = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    return s * np.array([[-c, n], [n, c]])


def sip_polynomials(rng: np.random.Generator, size: tuple[int, int], corner_shift: float):
    """Order-3 SIP A, B: a radial cubic plus random terms, scaled to ``corner_shift`` px.

    Only terms of order 2 and 3: the distortion and its gradient vanish at
    CRPIX, so the linear part stays the CD matrix.
    """
    nx, ny = size
    scale = max(nx, ny) / 2.0
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    radial = rng.choice([-1.0, 1.0])
    a[3, 0] = a[1, 2] = radial
    b[2, 1] = b[0, 3] = radial
    for p in range(4):
        for q in range(4):
            if 2 <= p + q <= 3:
                a[p, q] += 0.4 * rng.standard_normal()
                b[p, q] += 0.4 * rng.standard_normal()
                a[p, q] /= scale ** (p + q)
                b[p, q] /= scale ** (p + q)
    u = np.array([-1, 1, -1, 1]) * (nx - 1) / 2.0
    v = np.array([-1, -1, 1, 1]) * (ny - 1) / 2.0
    shift = np.hypot(_poly(a, u, v), _poly(b, u, v)).max()
    factor = corner_shift / shift if shift > 0 else 0.0
    return a * factor, b * factor


def _poly(coeffs: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sum of coeffs[p, q] u^p v^q (the SIP convention)."""
    order = coeffs.shape[0] - 1
    total = np.zeros(np.broadcast(u, v).shape)
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if coeffs[p, q] != 0.0:
                total = total + coeffs[p, q] * u**p * v**q
    return total


def _sip_inverse(a: np.ndarray, b: np.ndarray, size: tuple[int, int], order: int = 5):
    """AP, BP fitted by least squares so that readers without iteration still invert well."""
    nx, ny = size
    u, v = np.meshgrid(np.linspace(-nx / 2, nx / 2, 40), np.linspace(-ny / 2, ny / 2, 40))
    u, v = u.ravel(), v.ravel()
    big_u = u + _poly(a, u, v)
    big_v = v + _poly(b, u, v)
    scale = max(nx, ny) / 2.0
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    design = np.stack([(big_u / scale) ** p * (big_v / scale) ** q for p, q in terms], axis=1)
    ap = np.zeros((order + 1, order + 1))
    bp = np.zeros((order + 1, order + 1))
    sol_u = np.linalg.lstsq(design, u - big_u, rcond=None)[0]
    sol_v = np.linalg.lstsq(design, v - big_v, rcond=None)[0]
    for (p, q), cu, cv in zip(terms, sol_u, sol_v, strict=True):
        ap[p, q] = cu / scale ** (p + q)
        bp[p, q] = cv / scale ** (p + q)
    return ap, bp


def make_wcs(
    ra: float,
    dec: float,
    rotation: float,
    size: tuple[int, int],
    pixel_scale: float,
    sip: tuple[np.ndarray, np.ndarray] | None = None,
) -> WCS:
    """A TAN (or TAN-SIP) WCS with CRPIX at the chip centre and CRVAL at (ra, dec)."""
    nx, ny = size
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]  # FITS 1-based: 0-based (nx-1)/2
    wcs.wcs.crval = [ra % 360.0, dec]
    wcs.wcs.cd = _cd_matrix(pixel_scale, rotation)
    wcs.wcs.radesys = "ICRS"
    if sip is None:
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    else:
        a, b = sip
        ap, bp = _sip_inverse(a, b, size)
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.sip = Sip(a, b, ap, bp, wcs.wcs.crpix)
    wcs.pixel_shape = (nx, ny)
    wcs.wcs.set()
    return wcs


def first_guess(truth: WCS, rng: np.random.Generator, config: SimConfig):
    """The header WCS: CRVAL displaced by arcseconds, CD rotated by a few hundredths of a degree.

    Returns it with its offset (arcsec) from the truth at the chip centre and its rotation (deg).
    """
    lo, hi = config.first_guess_offset
    offset = rng.uniform(lo, hi)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rotation = rng.choice([-1.0, 1.0]) * config.first_guess_rotation * rng.uniform(0.5, 1.5)
    ra0, dec0 = truth.wcs.crval
    new_ra, new_dec = tan_deproject(offset * math.sin(angle), offset * math.cos(angle), ra0, dec0)
    guess = truth.deepcopy()
    if not config.first_guess_sip:
        guess.sip = None
        guess.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    guess.wcs.crval = [float(new_ra), float(new_dec)]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    guess.wcs.cd = np.array([[c, -s], [s, c]]) @ truth.wcs.cd
    guess.wcs.set()
    centre = ((config.size[0] - 1) / 2.0, (config.size[1] - 1) / 2.0)
    true_c = truth.all_pix2world([centre], 0)[0]
    guess_c = guess.all_pix2world([centre], 0)[0]
    xi, eta = tan_project(guess_c[0], guess_c[1], true_c[0], true_c[1])
    return guess, float(np.hypot(xi, eta)), float(rotation)


def world_to_pixel(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixels through the full (SIP-inverting) transform, converged to 1e-10 px."""
    if ra.size == 0:
        return np.empty(0), np.empty(0)
    x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-10, maxiter=100, quiet=False)
    return np.asarray(x, float), np.asarray(y, float)
