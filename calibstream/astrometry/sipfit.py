"""TAN-SIP fitting: gnomonic projection, a weighted polynomial fit, an astropy WCS.

The fitted model is the FITS one, so ``astropy.wcs.WCS.all_pix2world`` is the
fit: ``(u, v) = pixel - CRPIX`` → ``(U, V) = (u + A(u, v), v + B(u, v))`` →
``(ξ, η) = CD · (U, V)`` (degrees, intermediate world coordinates) → sky by the
inverse gnomonic projection about CRVAL. We fit ``ξ`` and ``η`` directly as
polynomials of total order ``order`` in ``(u, v)`` by weighted linear least
squares; the linear terms are the CD matrix and the non-linear ones, mapped
back through ``CD⁻¹``, are SIP's ``A`` and ``B`` (terms ``p + q ≥ 2``). A
constant term is fitted as well and absorbed by moving CRVAL, so the fit's
own constant vanishes (a few passes converge to micro-arcseconds).

Pixels here are 0-based (numpy, LSST); the WCS is 1-based as FITS says, and
every astropy call in the project uses ``origin=0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS, Sip

from calibstream.astrometry.models import Model, leave_one_out, position_sigma, solve

MAS_PER_DEG = 3.6e6


# ---------------------------------------------------------------- gnomonic projection


def gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (ξ east, η north), degrees, of (ra, dec) about (ra0, dec0).

    The FITS TAN projection's intermediate world coordinates (LONPOLE 180).
    """
    a = np.radians(np.asarray(ra, float) - ra0)
    d = np.radians(np.asarray(dec, float))
    d0 = math.radians(dec0)
    sin_d, cos_d = np.sin(d), np.cos(d)
    cos_c = math.sin(d0) * sin_d + math.cos(d0) * cos_d * np.cos(a)
    xi = cos_d * np.sin(a) / cos_c
    eta = (math.cos(d0) * sin_d - math.sin(d0) * cos_d * np.cos(a)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def inverse_gnomonic(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) degrees of standard coordinates (ξ, η) in degrees about (ra0, dec0)."""
    x = np.radians(np.asarray(xi, float))
    y = np.radians(np.asarray(eta, float))
    d0 = math.radians(dec0)
    denom = math.cos(d0) - y * math.sin(d0)
    ra = math.radians(ra0) + np.arctan2(x, denom)
    dec = np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


# ---------------------------------------------------------------- polynomials


def poly_terms(order: int) -> list[tuple[int, int]]:
    """Exponents (p, q) of every term u^p v^q with p + q ≤ order, by total order."""
    return [(p, n - p) for n in range(order + 1) for p in range(n, -1, -1)]


def n_terms(order: int) -> int:
    return (order + 1) * (order + 2) // 2


def least_squares(design: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Linear least squares by the normal equations.

    The designs here are small and well conditioned (monomials of coordinates
    scaled to about [-1, 1]); unlike ``np.linalg.lstsq`` (LAPACK gelsd) this
    does not slow to tens of milliseconds when OpenBLAS threads compete for
    busy cores.
    """
    return np.linalg.solve(design.T @ design, design.T @ rhs)


def _powers(a: np.ndarray, order: int) -> list[np.ndarray]:
    """a⁰ … a^order by repeated products: ``a**p`` for p ≥ 3 is a slow ``pow`` per element."""
    out = [np.ones_like(a)]
    for _ in range(order):
        out.append(out[-1] * a)
    return out


def _design(u: np.ndarray, v: np.ndarray, terms, scale: float) -> np.ndarray:
    order = max((p + q for p, q in terms), default=0)
    up, vp = _powers(u / scale, order), _powers(v / scale, order)
    return np.stack([up[p] * vp[q] for p, q in terms], axis=1)


def _evaluate(coeffs: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Σ coeffs[p, q] u^p v^q (the SIP layout)."""
    order = coeffs.shape[0] - 1
    u, v = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float))
    up, vp = _powers(u, order), _powers(v, order)
    total = np.zeros(u.shape)
    for p, q in poly_terms(order):
        if coeffs[p, q] != 0.0:
            total += coeffs[p, q] * up[p] * vp[q]
    return total


# ---------------------------------------------------------------- the fit


@dataclass(frozen=True, eq=False)
class TanSipFit:
    """One weighted TAN-SIP fit and its residuals in the tangent plane."""

    wcs: WCS
    order: int  # order of the polynomial fitted (of pixels, or of the base's focal plane)
    residual_xi_mas: np.ndarray  # fit - reference, per input pair, east
    residual_eta_mas: np.ndarray  # north
    chi2: float  # Σ weight × residual² (mas², times the weights' unit) over weighted pairs
    n_parameters: int  # coefficients fitted, both axes
    distortion: str  # "fitted" (polynomial of pixels) or "first guess" (a fixed base)
    model: str = "affine"  # the rung (:mod:`calibstream.astrometry.models`)
    dof: int = 0  # 2 × weighted pairs - n_parameters
    #: Each weighted pair's residual (mas) when fitted without it (NaN: not fitted, undefined).
    loo_xi_mas: np.ndarray | None = None
    loo_eta_mas: np.ndarray | None = None
    #: (x, y) 0-based pixels → total (2-D) 1σ of the fitted position, mas, from the stated errors.
    sigma_mas: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


#: A fixed distortion: 0-based pixels (x, y) → focal-plane coordinates (pixels).
Distortion = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def sip_distortion(wcs: WCS, max_order: int) -> Distortion | None:
    """The SIP distortion of ``wcs`` as a function of 0-based pixels, if it has one.

    ``(u + A(u, v), v + B(u, v))`` with ``(u, v)`` relative to its CRPIX.
    None when ``wcs`` has no SIP or its order exceeds ``max_order`` (the
    composition would not be representable at that order).
    """
    sip = wcs.sip
    if sip is None or sip.a is None or sip.b is None:
        return None
    a, b = np.asarray(sip.a, float), np.asarray(sip.b, float)
    if max(a.shape[0], b.shape[0]) - 1 > max_order or not (a.any() or b.any()):
        return None
    crpix = np.asarray(sip.crpix, float) - 1.0  # 0-based

    def distort(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.asarray(x, float) - crpix[0]
        v = np.asarray(y, float) - crpix[1]
        return u + _evaluate(a, u, v), v + _evaluate(b, u, v)

    return distort


def fit_tan_sip(
    x: np.ndarray,
    y: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    weight: np.ndarray,
    shape: tuple[int, int],
    crval: tuple[float, float],
    order: int,
    sip_order: int | None = None,
    base: Distortion | None = None,
    model: Model | None = None,
) -> TanSipFit:
    """TAN-SIP WCS mapping 0-based pixels (x, y) onto (ra, dec) by weighted least squares.

    ``weight`` is 1/σ² per pair (σ isotropic, mas). ``shape`` is the numpy
    image shape (ny, nx): CRPIX is the chip centre. ``crval`` is a first guess
    of the chip centre's sky position; CRVAL ends there to µas. ``sip_order``
    (≥ ``order``) sets A_ORDER/B_ORDER (higher terms zero); AP/BP are fitted
    to order ``sip_order + 1``. Residuals include every pair (weight 0 too).

    Without ``base``, (ξ, η) are polynomials of order ``order`` in the pixel
    offsets from CRPIX. With ``base`` (a fixed distortion, e.g. the first
    guess's SIP, of order ≤ ``sip_order``), they are polynomials of order
    ``order`` in the distorted coordinates ``base(x, y)``; the composition
    is then re-expressed as TAN-SIP exactly (for ``order`` 1) by a noise-free
    fit on a grid of the chip. ``model`` (a shift or similarity rung, its
    ``first`` the first guess's CD transposed, deg/px) constrains the linear map.
    """
    ny, nx = shape
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    scale = max(nx, ny) / 2.0
    model = _scaled_model(model, order, scale)
    features = _features(centre, base)
    terms = poly_terms(model.order)
    design = _design(*features(x, y), terms, scale)
    root_w = np.sqrt(np.asarray(weight, float))
    coeffs, crval, xi, eta = _fit_about_crval(design, root_w, ra, dec, crval, model)
    residual = (design @ coeffs - np.column_stack([xi, eta])) * MAS_PER_DEG
    chi2 = float(np.sum(np.square(root_w)[:, None] * residual**2))
    stats = _fit_statistics(model, design, root_w, residual, features, terms, scale)

    size = max(model.order, sip_order or model.order, 2) + 1
    if base is not None:  # the same mapping as a polynomial of pixel offsets, on a grid
        terms, coeffs = _pixel_polynomial(features, terms, coeffs, centre, scale, shape, size)
    cd, sip_a, sip_b = _cd_and_sip(terms, coeffs, scale, size)
    wcs = make_tan_sip(crval, cd, sip_a, sip_b, shape)
    distortion = "fitted" if base is None else "first guess"
    n_parameters = model.n_parameters(len(poly_terms(model.order)))
    return TanSipFit(
        wcs, model.order, residual[:, 0], residual[:, 1], chi2, n_parameters, distortion,
        model.name, **stats,
    )  # fmt: skip


def _scaled_model(model: Model | None, order: int, scale: float) -> Model:
    """The rung fitted (default: a polynomial of ``order``), its first guess per scaled unit."""
    if model is None:
        return Model("poly", order)
    if model.first is None:
        return model
    return Model(model.kind, model.order, np.asarray(model.first, float) * scale)


def _fit_statistics(model: Model, design, root_w, residual, features, terms, scale) -> dict:
    """Degrees of freedom, leave-one-out residuals (mas) and the position uncertainty."""
    rows = root_w > 0
    stacked, _ = model.stack(design[rows] * root_w[rows, None])
    p = stacked.shape[1]
    dof = int(2 * np.count_nonzero(rows) - p)
    loo = np.full(residual.shape, np.nan)
    covariance = None
    if dof > 0 or np.count_nonzero(rows) * 2 >= p:
        covariance = np.linalg.pinv(stacked.T @ stacked)
    if dof > 0:
        loo[rows] = leave_one_out(stacked, residual[rows] * root_w[rows, None])
        loo[rows] /= root_w[rows, None]

    def sigma_mas(px, py):
        if covariance is None:
            return np.full(np.size(px), np.inf)
        rows_at, _ = model.stack(_design(*features(px, py), terms, scale))
        return position_sigma(rows_at, covariance, np.size(px))

    return {"dof": dof, "loo_xi_mas": loo[:, 0], "loo_eta_mas": loo[:, 1], "sigma_mas": sigma_mas}


def _features(centre: np.ndarray, base: Distortion | None) -> Distortion:
    """Pixels → the offsets fitted: from CRPIX, or ``base``'s focal plane about its centre."""
    if base is None:

        def features(px, py):
            return np.asarray(px, float) - centre[0], np.asarray(py, float) - centre[1]

        return features
    base_centre = np.array(base(centre[:1], centre[1:])).ravel()

    def based(px, py):
        fu, fv = base(px, py)
        return fu - base_centre[0], fv - base_centre[1]

    return based


def _fit_about_crval(
    design: np.ndarray, root_w: np.ndarray, ra, dec, crval: tuple[float, float], model: Model
) -> tuple[np.ndarray, tuple[float, float], np.ndarray, np.ndarray]:
    """Coefficients of (ξ, η) with CRVAL moved onto the fit's constant term (then zeroed).

    Returns the coefficients, CRVAL, and the references' (ξ, η) about it.
    """
    fit_rows = root_w > 0
    a_mat = design[fit_rows] * root_w[fit_rows, None]
    stacked, offset = model.stack(a_mat)
    crval = (float(crval[0]) % 360.0, float(crval[1]))
    for k in range(4):  # move CRVAL onto the fit's constant term, then refit
        xi, eta = gnomonic(ra, dec, *crval)
        rhs = np.column_stack([xi, eta])[fit_rows] * root_w[fit_rows, None]
        beta = solve(stacked, offset, np.concatenate([rhs[:, 0], rhs[:, 1]]))
        coeffs = model.coefficients(beta, design.shape[1])
        shift = coeffs[0]
        if math.hypot(shift[0], shift[1]) < 1e-10 or k == 3:  # 0.4 µas
            break
        ra0, dec0 = inverse_gnomonic(shift[0], shift[1], *crval)
        crval = (float(ra0), float(dec0))
    coeffs[0] = 0.0  # the constant is CRVAL's now
    return coeffs, crval, xi, eta


def _pixel_polynomial(
    features: Distortion,
    terms: list[tuple[int, int]],
    coeffs: np.ndarray,
    centre: np.ndarray,
    scale: float,
    shape: tuple[int, int],
    size: int,
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """A fit through ``features`` re-expressed in pixel offsets, of order ``size - 1``.

    Fitted without noise on a 24 × 24 grid over the chip.
    """
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 24), np.linspace(0, ny - 1, 24))
    gx, gy = gx.ravel(), gy.ravel()
    values = _design(*features(gx, gy), terms, scale) @ coeffs
    terms = poly_terms(size - 1)
    coeffs = least_squares(_design(gx - centre[0], gy - centre[1], terms, scale), values)
    return terms, coeffs


def _cd_and_sip(
    terms: list[tuple[int, int]], coeffs: np.ndarray, scale: float, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CD (the linear terms) and SIP A, B (the rest through CD⁻¹) of a fit in scaled offsets."""
    # coefficient of u^p v^q in degrees per pixel^(p+q)
    poly_xi = np.zeros((size, size))
    poly_eta = np.zeros((size, size))
    for k, (p, q) in enumerate(terms):
        poly_xi[p, q] = coeffs[k, 0] / scale ** (p + q)
        poly_eta[p, q] = coeffs[k, 1] / scale ** (p + q)
    cd = np.array([[poly_xi[1, 0], poly_xi[0, 1]], [poly_eta[1, 0], poly_eta[0, 1]]])
    if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) == 0.0:
        raise np.linalg.LinAlgError("degenerate CD matrix")
    inv_cd = np.linalg.inv(cd)
    nonlinear = np.stack([poly_xi, poly_eta])
    for p in range(size):
        for q in range(size):
            if p + q < 2:
                nonlinear[:, p, q] = 0.0
    sip_a, sip_b = np.einsum("ij,jpq->ipq", inv_cd, nonlinear)
    return cd, sip_a, sip_b


def make_tan_sip(
    crval: tuple[float, float],
    cd: np.ndarray,
    sip_a: np.ndarray,
    sip_b: np.ndarray,
    shape: tuple[int, int],
) -> WCS:
    """An astropy TAN-SIP WCS: CRPIX at the centre of an image of numpy ``shape`` (ny, nx).

    The inverse polynomials AP, BP (one order higher than A, B) are fitted on
    a grid covering the chip and a 5 % margin, so world → pixel needs no
    iteration in readers that use them.
    """
    ny, nx = shape
    crpix = np.array([(nx + 1) / 2.0, (ny + 1) / 2.0])  # 1-based centre
    sip_ap, sip_bp = sip_inverse(sip_a, sip_b, shape)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crpix = crpix
    wcs.wcs.crval = [crval[0] % 360.0, crval[1]]
    wcs.wcs.cd = cd
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.sip = Sip(sip_a, sip_b, sip_ap, sip_bp, crpix)
    wcs.pixel_shape = (nx, ny)
    wcs.wcs.set()
    return wcs


def sip_inverse(
    sip_a: np.ndarray, sip_b: np.ndarray, shape: tuple[int, int], grid: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """AP, BP of order (A's order + 1) by least squares on a grid over the chip."""
    ny, nx = shape
    order = sip_a.shape[0]  # one more than A's order
    half_x, half_y = 0.55 * nx, 0.55 * ny
    u, v = np.meshgrid(np.linspace(-half_x, half_x, grid), np.linspace(-half_y, half_y, grid))
    u, v = u.ravel(), v.ravel()
    big_u = u + _evaluate(sip_a, u, v)
    big_v = v + _evaluate(sip_b, u, v)
    scale = max(nx, ny) / 2.0
    terms = poly_terms(order)
    design = _design(big_u, big_v, terms, scale)
    solution = least_squares(design, np.column_stack([u - big_u, v - big_v]))
    ap = np.zeros((order + 1, order + 1))
    bp = np.zeros((order + 1, order + 1))
    for k, (p, q) in enumerate(terms):
        ap[p, q] = solution[k, 0] / scale ** (p + q)
        bp[p, q] = solution[k, 1] / scale ** (p + q)
    return ap, bp
