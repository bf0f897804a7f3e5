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

from dataclasses import dataclass

import numpy as np
import scipy.fft
import sep
from scipy import ndimage

from .config import DetectionConfig

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Detections:
    """Detected sources, measured on the real pixels of their footprints."""

    objects: np.ndarray  # sep's structured array (barycentres, moments, flux, peak)
    segmap: np.ndarray  # int32: 0 none, i + 1 for objects[i]
    deblended: np.ndarray  # bool: a child of a deblended blend
    family: np.ndarray  # int: connected-footprint label shared by blend siblings
    significance: np.ndarray  # peak of the detection image in threshold-sigma units

    def __len__(self) -> int:
        return len(self.objects)


def matched_filter_snr(
    image: np.ndarray, variance: np.ndarray, invalid: np.ndarray, psf: np.ndarray
) -> np.ndarray:
    """Point-source S/N at every pixel: the PSF fit amplitude over its error."""
    weight = np.where(invalid, np.float32(0), np.float32(1) / variance)
    weighted = np.where(invalid, np.float32(0), image * weight)
    numerator, denominator = _correlate_pair(weighted, weight, psf, psf * psf)
    np.maximum(denominator, np.float32(0), out=denominator)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = numerator / np.sqrt(denominator)
    snr[~(denominator > 1e-12 * float(denominator.max(initial=0)))] = 0
    return snr


def _correlate_pair(
    a: np.ndarray, b: np.ndarray, ka: np.ndarray, kb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``a ⋆ ka`` and ``b ⋆ kb`` ('same' size, zero padded) by real FFTs in float32."""
    ny, nx = a.shape
    ky, kx = ka.shape
    shape = (
        scipy.fft.next_fast_len(ny + ky - 1, real=True),
        scipy.fft.next_fast_len(nx + kx - 1, real=True),
    )
    out = []
    for data, kernel in ((a, ka), (b, kb)):
        # Correlation is convolution with the flipped kernel.
        fk = scipy.fft.rfft2(kernel[::-1, ::-1].astype(np.float32), shape)
        fd = scipy.fft.rfft2(data.astype(np.float32, copy=False), shape)
        fd *= fk
        full = scipy.fft.irfft2(fd, shape)
        out.append(np.ascontiguousarray(full[ky // 2 : ky // 2 + ny, kx // 2 : kx // 2 + nx]))
    return out[0], out[1]


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
    common = {
        "minarea": config.min_area,
        "deblend_nthresh": config.deblend_nthresh,
        "deblend_cont": config.deblend_cont,
        "clean": config.clean,
        "clean_param": config.clean_param,
        "segmentation_map": True,
    }
    if config.filter == "psf":
        if psf is None:
            raise ValueError("PSF-matched detection needs a PSF model")
        var = (
            np.broadcast_to(np.float32(variance), image.shape)
            if np.isscalar(variance)
            else variance
        )
        detection = matched_filter_snr(image, var, invalid, psf)
        found, segmap = sep.extract(detection, config.threshold, filter_kernel=None, **common)
        significance = found["peak"]
    else:
        kernel = np.asarray(config.kernel, dtype=np.float32)
        noise = _noise_args(variance)
        found, segmap = sep.extract(
            image,
            config.threshold,
            mask=invalid,
            filter_kernel=kernel,
            filter_type="conv",
            **noise,
            **common,
        )
        significance = found["cpeak"] / _scalar_or_peak_sigma(variance, found)
    deblended = (found["flag"] & sep.OBJ_MERGED) != 0
    objects = found
    if config.filter == "psf" and len(found):
        # The footprints came from the S/N image; analyse them on the real pixels.
        objects, _ = sep.extract(
            image, -np.inf, var=np.ones_like(image), mask=invalid, filter_kernel=None,
            segmentation_map=segmap,
        )
        objects["flag"] |= found["flag"]
    labels, _ = ndimage.label(segmap > 0, structure=EIGHT_CONNECTED)
    family = labels[found["ycpeak"], found["xcpeak"]] if len(found) else np.zeros(0, int)
    return Detections(
        objects=objects,
        segmap=segmap.astype(np.int32, copy=False),
        deblended=deblended,
        family=family,
        significance=np.asarray(significance, dtype=float),
    )


def _noise_args(variance: np.ndarray | float) -> dict:
    if np.isscalar(variance):
        return {"err": float(np.sqrt(variance))}
    return {"var": variance}


def _scalar_or_peak_sigma(variance: np.ndarray | float, found: np.ndarray) -> np.ndarray:
    if np.isscalar(variance):
        return np.full(len(found), np.sqrt(float(variance)))
    return np.sqrt(variance[found["ycpeak"], found["xcpeak"]])
