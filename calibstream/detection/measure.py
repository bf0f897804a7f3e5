"""Per-source measurement of detected footprints, all sources at once.

As SExtractor: aperture and Kron fluxes at the isophotal barycentre, the
windowed centroid with a window set by the half-light radius; plus a PSF
flux at the windowed centroid and LSST-style pixel flags from the mask
planes. Returns plain columns (name -> array) in a fixed order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sep

from calibstream.config import MeasurementConfig
from calibstream.detection.centroid import Centroids, windowed_centroids
from calibstream.detection.detect import Detections
from calibstream.detection.psfflux import psf_fluxes
from calibstream.detection.stamps import gather, stamp_indices

FWHM_TO_SIGMA = 1.0 / 2.3548200450309493
#: SExtractor's window: sigma = 2/2.35 x half-light radius.
WINDOW_PER_HALF_LIGHT = 2.0 / 2.35
KRON_ELLIPSE_EXTENT = 6.0  # Kron radius measured within 6 x (a, b), as SExtractor
APERTURE_SUBPIX = 5  # SExtractor's sub-pixel sampling of circular apertures
#: Mask planes reported as ``flag_<name>`` when any pixel of a source carries them.
PIXEL_FLAG_PLANES = {
    "bad": "BAD",
    "saturated": "SAT",
    "interpolated": "INTRP",
    "cr": "CR",
    "nodata": "NO_DATA",
    "suspect": "SUSPECT",
}


@dataclass(frozen=True)
class PixelContext:
    """The pixels a measurement reads: image, noise, masks."""

    image: np.ndarray  # background-subtracted
    variance: np.ndarray | float
    invalid: np.ndarray  # bool: pixels that carry no information
    mask: np.ndarray | None = None  # the exposure's bit mask
    mask_planes: Mapping[str, int] | None = None
    raw_peak_image: np.ndarray | None = None  # image before residual background, for saturation


def aperture_name(radius: float) -> str:
    """Column name of the circular aperture flux of ``radius`` pixels (ap_flux_4_5 for 4.5)."""
    return "ap_flux_" + f"{radius:g}".replace(".", "_")


def measure_sources(
    pixels: PixelContext,
    detections: Detections,
    config: MeasurementConfig,
    psf: np.ndarray | None = None,
    psf_fwhm: float | None = None,
) -> dict[str, np.ndarray]:
    """Measure every detection; returns catalog columns."""
    obj = detections.objects
    n = len(obj)
    err_kw = _err_kwargs(pixels.variance)
    ell = _Ellipses(obj["x"].astype(float), obj["y"].astype(float), *_valid_ellipses(obj))
    kron = _kron(pixels, ell, err_kw, config)
    cen = _centroids(pixels, ell, kron.flux, obj["flag"], psf_fwhm, config)
    columns: dict[str, np.ndarray] = {"id": np.arange(1, n + 1, dtype=np.int64)}
    columns["parent"] = _parents(detections, n)
    columns.update(_position_columns(cen, ell, detections))
    psf_columns, psf_failed = _psf_columns(pixels, psf, cen.x, cen.y, n)
    columns.update(psf_columns)
    apertures, aperture_truncated = _aperture_columns(pixels, ell, err_kw, config)
    columns.update(apertures)
    columns.update(kron_radius=kron.radius, kron_flux=kron.flux, kron_flux_err=kron.err)
    truncated = kron.truncated | cen.truncated | aperture_truncated
    columns.update(_flag_columns(pixels, detections, cen, psf_fwhm, config, truncated, psf_failed))
    return columns


@dataclass(frozen=True)
class _Ellipses:
    """Isophotal barycentres and the (valid) ellipses apertures are placed on."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray


@dataclass(frozen=True)
class _Kron:
    """Kron radius and flux (MAG_AUTO) per source, and whether an aperture was truncated."""

    radius: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    truncated: np.ndarray


@dataclass(frozen=True)
class _Centroid:
    """Adopted positions (windowed, or isophotal where that fails) and the half-light radius."""

    x: np.ndarray
    y: np.ndarray
    windowed: Centroids
    bad: np.ndarray  # the windowed centroid failed or moved too far
    flux_radius: np.ndarray
    truncated: np.ndarray


def _truncated(n: int, *flags: np.ndarray) -> np.ndarray:
    """Sources any of whose sep apertures (``flags``) was truncated by the image edge."""
    truncated = np.zeros(n, dtype=bool)
    for flag in flags:
        truncated = truncated | ((flag & sep.APER_TRUNC) != 0)
    return truncated


def _kron(pixels: PixelContext, ell: _Ellipses, err_kw: dict, config: MeasurementConfig) -> _Kron:
    """Kron radius and flux by SExtractor's rules (a circle when the ellipse is too small)."""
    image, invalid = pixels.image, pixels.invalid
    x, y, a, b, theta = ell.x, ell.y, ell.a, ell.b, ell.theta
    kron_radius, kflag = sep.kron_radius(
        image, x, y, a, b, theta, KRON_ELLIPSE_EXTENT, mask=invalid
    )
    use_circle = kron_radius * np.sqrt(a * b) < config.kron_min_radius
    kr_eff = np.where(np.isfinite(kron_radius) & (kron_radius > 0), kron_radius, 1e-6)
    kflux, kerr, kfl = sep.sum_ellipse(
        image, x, y, a, b, theta, config.kron_factor * kr_eff, mask=invalid, subpix=1, **err_kw
    )
    if use_circle.any() and config.kron_min_radius > 0:
        cflux, cerr, cfl = sep.sum_circle(
            image, x, y, config.kron_min_radius, mask=invalid, subpix=1, **err_kw
        )
        kflux, kerr, kfl = (
            np.where(use_circle, c, k) for c, k in ((cflux, kflux), (cerr, kerr), (cfl, kfl))
        )
    return _Kron(kron_radius, kflux, kerr, _truncated(len(x), kflag, kfl))


def _centroids(
    pixels: PixelContext,
    ell: _Ellipses,
    kron_flux: np.ndarray,
    obj_flags: np.ndarray,
    psf_fwhm: float | None,
    config: MeasurementConfig,
) -> _Centroid:
    """Windowed centroids with the window set by the half-light radius, as SExtractor,
    between one and ``window_max_psf_sigmas`` PSF sigmas."""
    image, invalid, xb, yb = pixels.image, pixels.invalid, ell.x, ell.y
    radius, rflag = sep.flux_radius(
        image, xb, yb, KRON_ELLIPSE_EXTENT * ell.a, 0.5, normflux=kron_flux, mask=invalid, subpix=5
    )
    sigma = WINDOW_PER_HALF_LIGHT * np.where(np.isfinite(radius) & (radius > 0), radius, 1.0)
    if psf_fwhm is not None:
        psf_sigma = psf_fwhm * FWHM_TO_SIGMA
        sigma = np.clip(sigma, psf_sigma, config.window_max_psf_sigmas * psf_sigma)
    cen = windowed_centroids(image, pixels.variance, invalid, xb, yb, sigma)
    shift = np.hypot(cen.x - xb, cen.y - yb)
    bad_centroid = (
        cen.failed | (shift > config.max_centroid_shift) | ((obj_flags & sep.OBJ_SINGU) != 0)
    )
    x = np.where(bad_centroid, xb, cen.x)
    y = np.where(bad_centroid, yb, cen.y)
    return _Centroid(x, y, cen, bad_centroid, radius, _truncated(len(xb), rflag))


def _position_columns(
    cen: _Centroid, ell: _Ellipses, detections: Detections
) -> dict[str, np.ndarray]:
    """Centroids with their errors, isophotal barycentres, moments, ellipses and sizes."""
    obj = detections.objects
    return dict(
        x=cen.x,
        y=cen.y,
        x_err=cen.windowed.x_err,
        y_err=cen.windowed.y_err,
        xy_cov=cen.windowed.xy_cov,
        x_isophotal=ell.x,
        y_isophotal=ell.y,
        shape_xx=obj["x2"].astype(float),
        shape_yy=obj["y2"].astype(float),
        shape_xy=obj["xy"].astype(float),
        a=ell.a,
        b=ell.b,
        theta=ell.theta,
        npix=obj["npix"].astype(np.int32),
        flux_radius=cen.flux_radius,
        detect_significance=detections.significance,
    )


def _psf_columns(
    pixels: PixelContext, psf: np.ndarray | None, x: np.ndarray, y: np.ndarray, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """psf_flux and its error at the centroids (none without a PSF), and the failed fits."""
    if psf is None:
        return {}, np.zeros(n, dtype=bool)
    var = pixels.variance
    if np.isscalar(var):
        var = np.broadcast_to(np.float32(var), pixels.image.shape)
    fit = psf_fluxes(pixels.image, var, pixels.invalid, psf, x, y)
    return {"psf_flux": fit.flux, "psf_flux_err": fit.err}, fit.failed


def _aperture_columns(
    pixels: PixelContext, ell: _Ellipses, err_kw: dict, config: MeasurementConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Circular aperture fluxes and errors at the barycentres, and truncated apertures."""
    columns: dict[str, np.ndarray] = {}
    flags = []
    for r in config.aperture_radii:
        flux, ferr, fflag = sep.sum_circle(
            pixels.image, ell.x, ell.y, r, mask=pixels.invalid, subpix=APERTURE_SUBPIX, **err_kw
        )
        flags.append(fflag)
        name = aperture_name(r)
        columns[name] = flux
        columns[name + "_err"] = ferr
    return columns, _truncated(len(ell.x), *flags)


def _flag_columns(
    pixels: PixelContext,
    detections: Detections,
    cen: _Centroid,
    psf_fwhm: float | None,
    config: MeasurementConfig,
    truncated: np.ndarray,
    psf_failed: np.ndarray,
) -> dict[str, np.ndarray]:
    """The flag columns: edge, truncation, saturation, blends, failures, then mask planes."""
    obj, n = detections.objects, len(detections)
    pixel_flags = _pixel_flags(pixels, detections, cen.x, cen.y, psf_fwhm)
    saturated = pixel_flags.pop("saturated")
    if config.saturation is not None:
        peak_image = pixels.raw_peak_image if pixels.raw_peak_image is not None else pixels.image
        saturated = saturated | (
            _footprint_max(peak_image, detections.segmap, n) >= config.saturation
        )
    columns = dict(
        flag_edge=((obj["flag"] & sep.OBJ_TRUNC) != 0) | pixel_flags.pop("edge"),
        flag_aperture_truncated=truncated,
        flag_saturated=saturated,
        flag_deblended=detections.deblended.copy(),
        flag_bad_centroid=cen.bad,
        flag_psf_flux=psf_failed,
    )
    columns.update({f"flag_{name}": value for name, value in pixel_flags.items()})
    return columns


def _valid_ellipses(obj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a, b, theta with degenerate footprints (a single pixel or a line) made tiny circles."""
    a, b, theta = (obj[k].astype(float) for k in ("a", "b", "theta"))
    good = np.isfinite(a) & np.isfinite(b) & np.isfinite(theta) & (b > 0) & (a >= b)
    # sep's float32 theta can exceed pi/2 by a rounding step once widened; wrap it back.
    theta = np.clip((theta + np.pi / 2) % np.pi - np.pi / 2, -np.pi / 2, np.pi / 2)
    return np.where(good, a, 0.5), np.where(good, b, 0.5), np.where(good, theta, 0.0)


def _err_kwargs(variance: np.ndarray | float) -> dict:
    if np.isscalar(variance):
        return {"err": float(np.sqrt(variance))}
    return {"var": variance}


def _parents(detections: Detections, n: int) -> np.ndarray:
    """Blend family id shared by deblended siblings (n + label), 0 for lone sources.

    Parent records themselves are not kept: the catalog holds the leaves.
    """
    family = np.asarray(detections.family, dtype=np.int64)
    counts = np.bincount(family, minlength=1) if n else np.zeros(1, dtype=np.int64)
    shared = counts[family] > 1
    return np.where(shared & (family > 0), n + family, 0).astype(np.int64)


def _footprint_max(image: np.ndarray, segmap: np.ndarray, n: int) -> np.ndarray:
    """Peak pixel of each footprint (0 for an empty one, NaN if it holds one), as
    ``ndimage.maximum`` gives it, by one unsorted pass over the map: ndimage argsorts
    the whole image (3.3 s and 235 MB of temporaries on a crowded 4k chip)."""
    if n == 0:
        return np.zeros(0)
    labels = segmap.ravel()
    peak = np.full(max(n, int(labels.max())) + 1, -np.inf, dtype=image.dtype)
    _reduce_at(np.maximum, peak, labels, image.ravel())
    present = np.zeros(len(peak), dtype=bool)  # banded too: bincount would widen the map
    _reduce_at(np.logical_or, present, labels, np.broadcast_to(np.True_, labels.shape))
    return np.where(present[1 : n + 1], peak[1 : n + 1], 0.0).astype(float)


def _pixel_flags(
    pixels: PixelContext,
    detections: Detections,
    x: np.ndarray,
    y: np.ndarray,
    psf_fwhm: float | None,
) -> dict[str, np.ndarray]:
    """A flag per mask plane: any footprint pixel, or any pixel within one FWHM of the centre."""
    n = len(x)
    planes = pixels.mask_planes or {}
    names = {**PIXEL_FLAG_PLANES, "edge": "EDGE"}
    flags = {name: np.zeros(n, dtype=bool) for name in names}
    if pixels.mask is None or n == 0:
        return flags
    footprint_or = _footprint_or(pixels.mask, detections.segmap, n)
    core_or = _core_or(pixels.mask, x, y, max(1.0, psf_fwhm or 1.5))
    for name, plane in names.items():
        if plane not in planes:
            continue
        bit = np.int64(1) << planes[plane]
        flags[name] = ((footprint_or & bit) != 0) | ((core_or & bit) != 0)
    return flags


def _footprint_or(mask: np.ndarray, segmap: np.ndarray, n: int) -> np.ndarray:
    """The mask bits set on any pixel of each footprint: one pass over the map, with no
    index arrays of its pixels (int64, 8 bytes a footprint pixel on a crowded chip)."""
    labels = segmap.ravel()
    bits = np.zeros(max(n, int(labels.max())) + 1, dtype=mask.dtype)
    _reduce_at(np.bitwise_or, bits, labels, mask.ravel())
    return bits[1 : n + 1]


#: Map pixels scanned at once: ``ufunc.at`` widens its labels to intp (8 bytes a pixel), so
#: a whole 4k map would cost 128 MB of temporaries; a band of this many costs 8 MB.
BAND_PIXELS = 1 << 20


def _reduce_at(ufunc: np.ufunc, out: np.ndarray, labels: np.ndarray, values: np.ndarray) -> None:
    """``ufunc.at(out, labels, values)`` over the footprints' pixels (label > 0) of flat
    bands of the map, in place; label 0's entry is left as it was (no footprint owns it,
    and the sky is most of the map: reducing it cost 0.15 s on a 4k chip)."""
    for start in range(0, labels.size, BAND_PIXELS):
        band = slice(start, start + BAND_PIXELS)
        members = np.flatnonzero(labels[band] != 0)  # a boolean's nonzero is 3-8x an integer's
        ufunc.at(out, labels[band][members], values[band][members])


#: Stamp pixels of the sources whose centre masks are read at once (a few arrays of this
#: many: ~4 MB of temporaries, whatever the number of sources).
CORE_PIXELS = 1 << 16


def _core_or(mask: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """The mask bits set on any pixel within ``radius`` of each centre, chunk by chunk."""
    half = int(np.ceil(radius))
    step = max(1, CORE_PIXELS // (2 * half + 1) ** 2)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    core_or = np.zeros(len(x), dtype=mask.dtype)
    for start in range(0, len(x), step):  # temporaries of a chunk only
        part = slice(start, start + step)
        rows, cols, inside = stamp_indices(mask.shape, ix[part], iy[part], half)
        dx, dy = cols - x[part, None, None], rows - y[part, None, None]
        core = inside & ((dx**2 + dy**2) <= radius**2)
        core_mask = np.where(core, gather(mask, rows, cols), 0)
        core_or[part] = np.bitwise_or.reduce(core_mask.reshape(len(core), -1), axis=1)
    return core_or
