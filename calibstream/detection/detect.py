"""Detection: threshold a filtered image, deblend, and find blend families.

Default (``filter = "psf"``, as LSST's calibrate): the PSF model is the matched
filter and the threshold is in sigma of the filtered image. The filtered image
is the point-source S/N at every pixel, computed by FFT with inverse-variance
weights (masked pixels weigh nothing)::

    snr = ((I / V) ⋆ P) / sqrt((1 / V) ⋆ P²)

sep then thresholds and deblends that image (no filter of its own), and a
second sep pass measures the footprints on the real pixels. ``filter =
"kernel"`` is SExtractor's scheme instead (a small kernel, one noise level),
used for the peer check against SExtractor itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage

from calibstream.config import DetectionConfig
from calibstream.detection.background import Background
from calibstream.detection.maskbits import Invalid, count_of, plane_of
from calibstream.detection.snr import matched_filter_snr
from calibstream.errors import MeasurementError

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
#: sep's pixel stack (the pixels of the objects it is extracting at once) is sized from the
#: image: an eighth of its pixels, at least sep's own default. sep allocates and touches it
#: whole at ~24 bytes a pixel (3 bytes per image pixel here; all of them would cost 24 and
#: ~1 s at 4k x 4k); an image fuller than that over the threshold is a MeasurementError.
PIXSTACK_MIN = 300_000
PIXSTACK_FRACTION = 8


@dataclass(frozen=True)
class Detections:
    """Detected sources, measured on the real pixels of their footprints."""

    objects: np.ndarray  # sep's structured array (barycentres, moments, flux, peak)
    segmap: np.ndarray  # uint16 (fewer than 65535 objects) or int32: 0 none, i + 1 for objects[i]
    deblended: np.ndarray  # bool: a child of a deblended blend
    family: np.ndarray  # int: connected-footprint label shared by blend siblings
    significance: np.ndarray  # peak of the detection image in threshold-sigma units

    def __len__(self) -> int:
        return len(self.objects)


@dataclass(frozen=True)
class Found:
    """Detection's first phase: footprints and blend families, not yet measured."""

    objects: np.ndarray
    segmap: np.ndarray
    significance: np.ndarray
    family: np.ndarray


def detect_sources(
    image: np.ndarray,
    variance: np.ndarray | float,
    invalid: np.ndarray | None,
    psf: np.ndarray | None,
    config: DetectionConfig,
) -> Detections:
    """Detect, deblend and measure footprints of a background-subtracted image.

    ``variance`` may be a scalar (one noise level, as SExtractor's global rms);
    ``invalid`` marks pixels that carry no information.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    if invalid is None:
        invalid = np.zeros(image.shape, dtype=bool)
    return measured(find_sources(image, variance, invalid, psf, config), image, config)


def find_sources(
    image: np.ndarray,
    variance: np.ndarray | float,
    invalid: Invalid,
    psf: np.ndarray | None,
    config: DetectionConfig,
    background: Background | None = None,
) -> Found:
    """Footprints, peak S/N and families. ``background`` (PSF filter only): ``image`` is
    raw and the S/N image subtracts the model itself, so the caller makes the subtracted
    plane only once the S/N plane is gone (64 MB less at the peak on a 4k×4k exposure).
    ``invalid``: a boolean plane, or the mask bits that mark the invalid pixels."""
    if config.filter == "psf":
        found, segmap, significance = _detect_matched(
            image, variance, invalid, psf, config, background
        )
    elif background is None:
        found, segmap, significance = _detect_kernel(image, variance, plane_of(invalid), config)
    else:
        raise ValueError("the kernel filter needs the subtracted image")
    return Found(found, segmap, np.asarray(significance, dtype=float), _families(segmap, found))


def measured(found: Found, image: np.ndarray, config: DetectionConfig) -> Detections:
    """Detections of ``found``, their footprints measured on the subtracted ``image``."""
    objects = found.objects
    if config.filter == "psf" and len(objects):
        # The footprints came from the S/N image; measure them on the real pixels.
        objects = footprint_moments(image, found.segmap, objects)
    return Detections(
        objects=objects,
        segmap=found.segmap,
        deblended=(found.objects["flag"] & sep.OBJ_MERGED) != 0,
        family=found.family,
        significance=found.significance,
    )


def _extract_options(config: DetectionConfig) -> dict:
    """sep.extract's arguments shared by both detection schemes."""
    return {
        "minarea": config.min_area,
        "deblend_nthresh": config.deblend_nthresh,
        "deblend_cont": config.deblend_cont,
        "clean": config.clean,
        "clean_param": config.clean_param,
        "segmentation_map": True,
    }


def _detect_matched(
    image: np.ndarray,
    variance: np.ndarray | float,
    invalid: Invalid,
    psf: np.ndarray | None,
    config: DetectionConfig,
    background: Background | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objects, segmentation map and refined peak S/N, thresholding the PSF-matched S/N."""
    if psf is None:
        raise ValueError("PSF-matched detection needs a PSF model")
    var = np.broadcast_to(np.float32(variance), image.shape) if np.isscalar(variance) else variance
    detection = matched_filter_snr(image, var, invalid, psf, background)
    _no_peaks_deep_inside(detection, invalid)
    # Threshold the S/N field's sub-pixel maximum, not its value at the nearest pixel
    # centre (which loses ~4% for an off-centre source): find candidates a little
    # lower, refine each peak, keep those whose refined peak reaches the threshold.
    prethreshold = config.threshold - PEAK_REFINEMENT_MARGIN
    found, segmap = _extract(
        detection, prethreshold, filter_kernel=None, **_extract_options(config)
    )
    significance = refined_peaks(detection, found["xcpeak"], found["ycpeak"])
    del detection  # 64 MB at 4k×4k, freed before the segmentation map's work
    keep = significance >= config.threshold
    return found[keep], _renumbered(segmap, keep), significance[keep]


#: Invalid pixels farther than this (px) from valid ones carry no S/N peak; a bad column
#: keeps the S/N its neighbours give it (zeroed, it would split the sources across it).
DEEP_INVALID_PX = 3
#: ... looked for only when this fraction of the image is invalid (a large NO_DATA region;
#: the filter costs 0.16 s at 4k, not spent on a few bad columns).
DEEP_INVALID_MIN_FRACTION = 0.01


def _no_peaks_deep_inside(snr: np.ndarray, invalid: Invalid) -> None:
    """Zero the S/N deep inside invalid regions, in place: there both its numerator and its
    noise are FFT round-off, and a chip half NO_DATA gave 1-pixel "sources" (issue 16)."""
    if count_of(invalid) < DEEP_INVALID_MIN_FRACTION * snr.size:
        return
    plane = plane_of(invalid)
    deep = ndimage.minimum_filter(plane.view(np.uint8), size=2 * DEEP_INVALID_PX + 1)
    np.copyto(snr, 0.0, where=deep.view(bool))


def _detect_kernel(
    image: np.ndarray, variance: np.ndarray | float, invalid: np.ndarray, config: DetectionConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objects, segmentation map and peak S/N by SExtractor's scheme (a small kernel)."""
    kernel = np.asarray(config.kernel, dtype=np.float32)
    noise = _noise_args(variance)
    found, segmap = _extract(
        image,
        config.threshold,
        mask=invalid,
        filter_kernel=kernel,
        filter_type="conv",
        **noise,
        **_extract_options(config),
    )
    return found, segmap, found["cpeak"] / _scalar_or_peak_sigma(variance, found)


def _extract(image: np.ndarray, threshold: float, **options) -> tuple[np.ndarray, np.ndarray]:
    """sep.extract with its pixel stack sized from ``image``; a full stack is the data's."""
    pixstack = max(PIXSTACK_MIN, image.size // PIXSTACK_FRACTION)
    sep.set_extract_pixstack(pixstack)
    try:
        return sep.extract(image, threshold, **options)
    except Exception as exc:
        if "pixel buffer full" not in str(exc):
            raise
        raise MeasurementError(
            f"more than {pixstack:,} pixels over the detection threshold at once "
            "(is the image background-subtracted?)",
            where="IMAGE",
        ) from exc


def _families(segmap: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Label of each object's connected footprint (8-connected), shared by blend siblings."""
    # Straight off the map (no boolean plane); no more footprints than objects, so the
    # labels fit the map's own type (a uint16 plane, not an int32 one, below 65535).
    labels = np.empty(segmap.shape, dtype=segmap.dtype)
    ndimage.label(segmap, structure=EIGHT_CONNECTED, output=labels)
    if not len(found):
        return np.zeros(0, int)
    return labels[found["ycpeak"], found["xcpeak"]].astype(np.int32)


#: Candidates are found this far (in sigma) below the threshold, then judged by their
#: refined peak; an off-centre source's nearest-pixel S/N is at most ~10% low.
PEAK_REFINEMENT_MARGIN = 0.5


def refined_peaks(snr: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sub-pixel maximum of ``snr`` near each peak pixel, by a quadratic fit to its 3×3."""
    ny, nx = snr.shape
    x = np.clip(np.asarray(x, dtype=np.int64), 1, nx - 2)
    y = np.clip(np.asarray(y, dtype=np.int64), 1, ny - 2)
    f = snr[
        y[:, None, None] + np.arange(-1, 2)[None, :, None],
        x[:, None, None] + np.arange(-1, 2)[None, None, :],
    ].astype(np.float64)
    centre = f[:, 1, 1]
    gx = (f[:, 1, 2] - f[:, 1, 0]) / 2
    gy = (f[:, 2, 1] - f[:, 0, 1]) / 2
    hxx = f[:, 1, 2] - 2 * centre + f[:, 1, 0]
    hyy = f[:, 2, 1] - 2 * centre + f[:, 0, 1]
    hxy = (f[:, 2, 2] - f[:, 2, 0] - f[:, 0, 2] + f[:, 0, 0]) / 4
    det = hxx * hyy - hxy * hxy
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = -(hyy * gx - hxy * gy) / det
        dy = -(hxx * gy - hxy * gx) / det
        peak = centre + 0.5 * (gx * dx + gy * dy)
    # Only a true maximum within the central pixel refines the value.
    valid = (hxx < 0) & (det > 0) & (np.abs(dx) <= 0.5) & (np.abs(dy) <= 0.5)
    return np.where(valid & np.isfinite(peak), np.maximum(peak, centre), centre)


#: Rows of the segmentation map renumbered at once.
_RENUMBER_ROWS = 256


def _renumbered(segmap: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Segmentation map with dropped objects cleared and the rest numbered 1..n: uint16
    when n < 65535 (half sep's int32 plane through measurement), else int32 in place."""
    kept = int(keep.sum())
    dtype = np.uint16 if kept < np.iinfo(np.uint16).max else np.int32
    new_ids = np.zeros(len(keep) + 1, dtype=dtype)
    new_ids[1:][keep] = np.arange(1, kept + 1, dtype=dtype)
    if keep.all() and dtype == np.int32:
        return segmap
    out = np.empty(segmap.shape, dtype) if dtype != segmap.dtype else segmap
    for start in range(0, segmap.shape[0], _RENUMBER_ROWS):  # a band at a time
        band = slice(start, start + _RENUMBER_ROWS)
        np.take(new_ids, segmap[band], out=out[band])
    return out


def expected_false_detections(psf: np.ndarray, n_pixels: int, threshold: float) -> float:
    """Expected number of pure-noise detections above ``threshold`` sigma.

    The matched-filter S/N of white noise is a smooth unit-variance Gaussian
    field; the expected number of its excursions above u over an area A is
    the Euler-characteristic density A sqrt(det Λ) u exp(-u²/2) / (2π)^(3/2),
    where Λ is the covariance of the field's gradient, computed here from
    the PSF's power spectrum.
    """
    spectrum = np.abs(np.fft.fft2(psf.astype(np.float64))) ** 2
    ky = 2 * np.pi * np.fft.fftfreq(psf.shape[0])[:, None]
    kx = 2 * np.pi * np.fft.fftfreq(psf.shape[1])[None, :]
    total = spectrum.sum()
    lxx = (spectrum * kx * kx).sum() / total
    lyy = (spectrum * ky * ky).sum() / total
    lxy = (spectrum * kx * ky).sum() / total
    u = threshold
    density = np.sqrt(lxx * lyy - lxy * lxy) * u * np.exp(-u * u / 2) / (2 * np.pi) ** 1.5
    return float(n_pixels * density)


#: SExtractor's guard against singular moments: a pixel's own 1/12 variance.
SINGULAR_DETERMINANT = 1.0 / 144.0


def footprint_moments(image: np.ndarray, segmap: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``found`` with barycentre, second moments, ellipse, flux and peak taken from
    the positive ``image`` pixels of each footprint (SExtractor's formulas)."""
    n = len(found)
    total, flux = _footprint_sums(image, segmap, n, lambda o, r, c, v: (np.maximum(v, 0.0), v))
    # A footprint with no positive pixel falls back to equal weights.
    empty = ~(total > 0)
    fallback = empty if empty.any() else None

    def weight(owner: np.ndarray, values: np.ndarray) -> np.ndarray:
        positive = np.maximum(values, 0.0)
        return positive if fallback is None else np.where(fallback[owner], 1.0, positive)

    def first(owner: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
        w = weight(owner, values)
        return w * cols, w * rows

    if fallback is not None:
        (total,) = _footprint_sums(image, segmap, n, lambda o, r, c, v: (weight(o, v),))
    x, y = _footprint_sums(image, segmap, n, first) / total

    def second(owner: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
        w, dx, dy = weight(owner, values), cols - x[owner], rows - y[owner]
        return w * dx * dx, w * dy * dy, w * dx * dy

    x2, y2, xy = _footprint_sums(image, segmap, n, second) / total
    singular = x2 * y2 - xy * xy < SINGULAR_DETERMINANT
    x2 = np.where(singular, x2 + 1 / 12, x2)
    y2 = np.where(singular, y2 + 1 / 12, y2)
    half_sum, root = (x2 + y2) / 2, np.sqrt(((x2 - y2) / 2) ** 2 + xy**2)
    objects = found.copy()
    objects["x"], objects["y"] = x, y
    objects["x2"], objects["y2"], objects["xy"] = x2, y2, xy
    objects["a"] = np.sqrt(half_sum + root)
    objects["b"] = np.sqrt(np.maximum(half_sum - root, 0.0))
    objects["theta"] = 0.5 * np.arctan2(2 * xy, x2 - y2)
    objects["flux"] = flux
    objects["peak"] = image[found["ycpeak"], found["xcpeak"]]
    objects["flag"] |= np.where(singular, sep.OBJ_SINGU, 0).astype(objects["flag"].dtype)
    return objects


#: Footprint pixels are summed a band of this many map pixels at a time: their int64 and
#: float64 columns cost ~80 bytes a footprint pixel, 300 MB over a crowded 4k chip at once.
MOMENT_BAND_PIXELS = 1 << 20


def _footprint_sums(
    image: np.ndarray, segmap: np.ndarray, n: int, terms: Callable[..., tuple[np.ndarray, ...]]
) -> np.ndarray:
    """Per footprint, the sums of ``terms(owner, rows, cols, values)`` (arrays over its
    pixels), band by band. ``add.at`` adds each pixel in the map's order, as one
    ``bincount`` over the whole map would: the same sums to the last bit."""
    ny, nx = segmap.shape
    step = max(1, MOMENT_BAND_PIXELS // nx)
    sums: np.ndarray | None = None
    for top in range(0, ny, step):
        seg = segmap[top : top + step].ravel()
        members = np.flatnonzero(seg != 0)  # a boolean's nonzero is 3-8x an integer's
        rows, cols = np.divmod(members, nx)
        owner = seg[members] - 1
        values = image[top : top + step].ravel()[members].astype(np.float64)
        parts = terms(owner, rows + top, cols, values)
        sums = np.zeros((len(parts), n)) if sums is None else sums
        for acc, part in zip(sums, parts, strict=True):
            np.add.at(acc, owner, part)
    return sums if sums is not None else np.zeros((0, n))


def _noise_args(variance: np.ndarray | float) -> dict:
    if np.isscalar(variance):
        return {"err": float(np.sqrt(variance))}
    return {"var": variance}


def _scalar_or_peak_sigma(variance: np.ndarray | float, found: np.ndarray) -> np.ndarray:
    if np.isscalar(variance):
        return np.full(len(found), np.sqrt(float(variance)))
    return np.sqrt(variance[found["ycpeak"], found["xcpeak"]])
