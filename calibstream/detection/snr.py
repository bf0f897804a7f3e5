"""The point-source S/N image detection thresholds: the PSF as matched filter, with
inverse-variance weights (masked pixels weigh nothing), by FFT::

    snr = ((I / V) ⋆ P) / sqrt((1 / V) ⋆ P²)

Lean in memory: each correlation is transformed in place in its own zero-padded float32
buffer, so the whole costs two padded planes (see :func:`matched_filter_snr`).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from calibstream.detection.background import Background, subtracted_bands
from calibstream.detection.maskbits import Invalid, rows_of


def matched_filter_snr(
    image: np.ndarray,
    variance: np.ndarray,
    invalid: Invalid,
    psf: np.ndarray,
    background: Background | None = None,
) -> np.ndarray:
    """Point-source S/N at every pixel: the PSF fit amplitude over its error.

    Lean in memory (one 4k×4k plane is 64 MB): two zero-padded float32 buffers, one for
    the weights (then the denominator), one for the weighted pixels (then the numerator),
    each transformed in place (:func:`_correlate_in_place`); the numerator goes back a band
    of rows at a time, divided, into the denominator's rows already used. ``background``:
    ``image`` is raw, this model subtracted a band of rows at a time (no subtracted plane).
    """
    ny, nx = image.shape
    ky, kx = psf.shape
    shape = (
        scipy.fft.next_fast_len(ny + ky - 1, real=True),
        scipy.fft.next_fast_len(nx + kx - 1, real=True),
    )
    full = _weights(shape, variance, invalid)
    _correlate_in_place(full, psf * psf, shape[1])
    full = full.reshape(-1)[: shape[0] * shape[1]].reshape(shape)  # its real result
    denominator = full[ky // 2 : ky // 2 + ny, kx // 2 : kx // 2 + nx]
    weighted = _weights(shape, variance, invalid)
    pixels = weighted[:ny, :nx]
    if background is None:
        np.multiply(pixels, image, out=pixels, dtype=np.float32)
    else:
        for band, values in subtracted_bands(image, background):
            np.multiply(pixels[band], values, out=pixels[band])
    _zero_invalid(pixels, invalid)
    spectrum = _correlate_in_place(weighted, psf, shape[1], back=False)
    floor = np.float32(1e-12 * float(denominator.max(initial=0)))
    snr = full.reshape(-1)[: ny * nx].reshape(ny, nx)  # contiguous, over the denominator
    for start in range(0, ny, _ROWS):
        rows = slice(start, min(start + _ROWS, ny))
        band = spectrum[start + ky // 2 : rows.stop + ky // 2]
        numerator = scipy.fft.irfft(band, shape[1], axis=1, workers=1)[:, kx // 2 : kx // 2 + nx]
        sigma = denominator[rows].copy()  # read before snr's rows overwrite them
        empty = ~(sigma > floor)
        sigma[empty] = 1
        np.sqrt(sigma, out=sigma)
        np.divide(numerator, sigma, out=numerator)
        numerator[empty] = 0
        snr[rows] = numerator  # snr's rows end before the denominator's next row starts
    return snr


#: Columns (of the spectrum) and rows transformed at once (a few MB of complex64).
_KERNEL_BAND = 32
_ROWS = 64


def _weights(shape: tuple[int, int], variance: np.ndarray, invalid: Invalid) -> np.ndarray:
    """A (rows, 2 * (columns // 2 + 1)) float32 buffer, zero but for 1 / variance (0 where
    invalid) in its top-left corner: room for each row's real FFT in place."""
    ny, nx = invalid.shape
    buffer = np.zeros((shape[0], 2 * (shape[1] // 2 + 1)), dtype=np.float32)
    weight = buffer[:ny, :nx]
    np.divide(np.float32(1), variance, out=weight, dtype=np.float32)
    _zero_invalid(weight, invalid)
    return buffer


def _zero_invalid(plane: np.ndarray, invalid: Invalid) -> None:
    """``plane[invalid] = 0``, a band of rows at a time."""
    for start in range(0, plane.shape[0], _ROWS):
        band = slice(start, start + _ROWS)
        rows = plane[band]
        rows[rows_of(invalid, band)] = 0


def _correlate_in_place(
    buffer: np.ndarray, kernel: np.ndarray, width: int, back: bool = True
) -> np.ndarray:
    """``buffer[:, :width] ⋆ kernel`` (zero padded) computed in ``buffer`` itself: real FFTs
    of its rows a band at a time (row r's spectrum fills row r), the columns' FFT, the
    kernel's and the inverse a band of columns at a time, then (``back``) the rows' inverse
    a band at a time, real row r written where complex rows <= r were. Returns the
    spectrum (columns transformed back) if not ``back``, else the buffer."""
    spectrum = buffer.view(np.complex64)  # (rows, width // 2 + 1)
    rows_total = buffer.shape[0]
    for start in range(0, rows_total, _ROWS):
        band = slice(start, start + _ROWS)
        spectrum[band] = scipy.fft.rfft(buffer[band, :width], axis=1, workers=1)
    # Correlation is convolution with the flipped kernel.
    flipped = kernel[::-1, ::-1].astype(np.float32)
    kernel_rows = scipy.fft.rfft(flipped, width, axis=1, workers=1)
    for start in range(0, spectrum.shape[1], _KERNEL_BAND):
        band = slice(start, start + _KERNEL_BAND)
        columns = scipy.fft.fft(spectrum[:, band], axis=0, workers=1)
        columns *= scipy.fft.fft(kernel_rows[:, band], rows_total, axis=0, workers=1)
        spectrum[:, band] = scipy.fft.ifft(columns, axis=0, workers=1, overwrite_x=True)
    if not back:
        return spectrum
    flat = buffer.reshape(-1)
    for start in range(0, rows_total, _ROWS):
        stop = min(start + _ROWS, rows_total)
        real = scipy.fft.irfft(spectrum[start:stop], width, axis=1, workers=1)
        flat[start * width : stop * width] = real.reshape(-1)
    return buffer
