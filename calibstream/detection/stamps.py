"""Per-source postage stamps as one (N, S, S) array: the vectorised hot path.

Measurements that sep does not provide (PSF fits, centroid errors, pixel
flags near the centre) work on stamps gathered with fancy indexing, so no
Python loop runs per source.
"""

from __future__ import annotations

import numpy as np


def stamp_indices(
    shape: tuple[int, int], ix: np.ndarray, iy: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column indices (clipped) of stamps centred on integer pixels, and inside-ness."""
    offsets = np.arange(-half, half + 1)
    rows = np.asarray(iy)[:, None, None] + offsets[None, :, None]
    cols = np.asarray(ix)[:, None, None] + offsets[None, None, :]
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    rows = np.clip(rows, 0, shape[0] - 1)
    cols = np.clip(cols, 0, shape[1] - 1)
    return np.broadcast_to(rows, inside.shape), np.broadcast_to(cols, inside.shape), inside


def size_classes(half_sizes: np.ndarray, smallest: int = 4):
    """Group sources by stamp half-size rounded up to a power of two: (indices, half) pairs.

    Lets stamps follow each source's size with a handful of array operations
    instead of one giant stamp size for all (or one loop turn per source).
    """
    half_sizes = np.maximum(np.asarray(half_sizes, dtype=float), smallest)
    classes = smallest * 2 ** np.ceil(np.log2(half_sizes / smallest)).astype(int)
    for half in np.unique(classes):
        yield np.flatnonzero(classes == half), int(half)


def gather(array: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``array[rows, cols]``; by flat index on a contiguous plane, twice as fast as numpy's
    indexing with two index arrays."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return np.take(array.reshape(-1), rows * array.shape[1] + cols)
    return array[rows, cols]


def shifted_models(model: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``model`` (centred, odd) moved by sub-pixel (dx, dy) for every source: (N, S, S).

    A Fourier phase shift: exact for a band-limited (well-sampled) model, where
    polynomial or Lanczos interpolation errs by tenths of a percent at the peak.
    Each result keeps the sum of ``model``.
    """
    size_y, size_x = model.shape
    spectrum = np.fft.rfft2(model.astype(np.float64))
    ky = np.fft.fftfreq(size_y)[:, None]
    kx = np.fft.rfftfreq(size_x)[None, :]
    dx = np.asarray(dx, dtype=float)[:, None, None]
    dy = np.asarray(dy, dtype=float)[:, None, None]
    ramp = np.exp(-2j * np.pi * (kx * dx + ky * dy))
    return np.fft.irfft2(spectrum * ramp, s=(size_y, size_x))
