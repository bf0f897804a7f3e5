"""Residual background: what characterization's subtraction left behind.

SExtractor's mesh estimator (sep): sigma-clipped mode per mesh cell, median
filtered over cells, bicubic spline between them. Bad pixels are masked so
that a bad column or a saturated star does not lift the sky around it.

The model is its mesh of node values (as LSST persists a background): a few
kilobytes that travel in an event and are written to ``background.fits``.
The full-resolution image is rendered from them by the same natural bicubic
spline as SExtractor's (two small matrix products), so whoever holds the mesh
reconstructs exactly the background that detection subtracted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sep

from calibstream.arrays import writable_alias
from calibstream.config import BackgroundConfig

#: Rows and columns sampled when the mesh is recovered from sep's rendering
#: (the spline is exactly determined by far fewer than all of them).
_FIT_STRIDE = 8
#: Rows of the full-resolution background rendered at once (float64, a few MB).
_RENDER_ROWS = 64


@dataclass(frozen=True)
class Background:
    """The background model: its mesh, the image shape, and its global noise level."""

    mesh: np.ndarray  # float32 (mesh rows, mesh columns): spline node values
    shape: tuple[int, int]  # (height, width) of the exposure
    global_level: float
    global_rms: float
    mesh_size: int
    filter_size: int

    @functools.cached_property
    def image(self) -> np.ndarray:
        """The background at full resolution (float32), rendered once."""
        return render_mesh(self.mesh, self.shape, self.mesh_size)


def estimate_background(
    image: np.ndarray, config: BackgroundConfig, masked: np.ndarray | None = None
) -> Background:
    """Background of ``image`` with the ``masked`` pixels (boolean) left out."""
    data = writable_alias(np.ascontiguousarray(image, dtype=np.float32))
    if masked is not None and not np.isfinite(data[masked]).all():
        # sep skips masked pixels, but non-finite values there (NO_DATA) must not leak in.
        data = np.where(masked, np.float32(0), data)
    bkg = sep.Background(
        data,
        mask=masked,
        bw=config.mesh_size,
        bh=config.mesh_size,
        fw=config.filter_size,
        fh=config.filter_size,
    )
    # sep keeps its nodes to itself: recover them from its rendering (exact to
    # float32 rounding), so the mesh is the model and the image its rendering.
    return Background(
        mesh=fit_mesh(bkg.back(dtype=np.float32), config.mesh_size),
        shape=(int(data.shape[0]), int(data.shape[1])),
        global_level=float(bkg.globalback),
        global_rms=float(bkg.globalrms),
        mesh_size=config.mesh_size,
        filter_size=config.filter_size,
    )


def mesh_shape(shape: tuple[int, int], mesh_size: int) -> tuple[int, int]:
    """Nodes of the mesh: one per cell, the last cell of a row or column partial."""
    height, width = shape
    return max(1, -(-height // mesh_size)), max(1, -(-width // mesh_size))


def render_mesh(mesh: np.ndarray, shape: tuple[int, int], mesh_size: int) -> np.ndarray:
    """The full-resolution background of node values ``mesh`` (float32)."""
    out = np.empty(tuple(shape), dtype=np.float32)
    for band, values in _rendered_bands(mesh, shape, mesh_size):
        out[band] = values
    return out


def subtract_background(image: np.ndarray, background: Background) -> np.ndarray:
    """``image - background.image`` (float32, the same values) without the full-size
    background beside it: rendered and subtracted a band of rows at a time (64 MB less
    at detection's peak on a 4k×4k exposure)."""
    out = np.empty(image.shape, dtype=np.float32)
    for band, values in subtracted_bands(image, background):
        out[band] = values
    return out


def subtracted_bands(image: np.ndarray, background: Background):
    """(rows, ``image[rows] - background.image[rows]`` as float32), a band at a time in one
    reused buffer."""
    buffer = np.empty((_RENDER_ROWS, image.shape[1]), dtype=np.float32)
    for band, values in _rendered_bands(background.mesh, background.shape, background.mesh_size):
        part = buffer[: values.shape[0]]
        part[...] = values
        np.subtract(image[band], part, out=part)
        yield band, part


def background_at(background: Background, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``background.image[rows, cols]`` (float32, the same values) without the full-size
    image: rendered a band of rows at a time, each band's pixels read off it."""
    rows, cols = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
    out = np.empty(rows.shape, dtype=np.float32)
    flat_rows, flat_cols, flat_out = rows.ravel(), cols.ravel(), out.reshape(-1)
    order = np.argsort(flat_rows, kind="stable")
    ends = np.searchsorted(
        flat_rows[order], np.arange(_RENDER_ROWS, background.shape[0] + _RENDER_ROWS, _RENDER_ROWS)
    )
    wanted = np.diff(ends, prepend=0) > 0  # bands holding any of the pixels
    start = 0
    for (band, values), end in zip(
        _rendered_bands(background.mesh, background.shape, background.mesh_size, wanted),
        ends,
        strict=True,
    ):
        chosen = order[start:end]
        start = end
        if values is not None:
            flat_out[chosen] = values[flat_rows[chosen] - band.start, flat_cols[chosen]]
    return out


def background_grid(background: Background, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``background.image[np.ix_(rows, cols)]`` (float32, the same values): the rendering's
    products for those rows and columns only (each value the same sum as the whole's)."""
    along_y, along_x = _operators(tuple(background.shape), background.mesh_size)
    nodes = along_y @ np.asarray(background.mesh, dtype=np.float64)
    return np.matmul(nodes[rows], along_x[cols].T).astype(np.float32)


def _rendered_bands(
    mesh: np.ndarray, shape: tuple[int, int], mesh_size: int, wanted: np.ndarray | None = None
):
    """(rows, float64 values) of the rendering, a band of rows at a time (one buffer);
    values None for a band not ``wanted`` (a boolean per band), not rendered."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.shape != mesh_shape(shape, mesh_size):
        raise ValueError(f"a {shape} image with {mesh_size}-px cells has no {mesh.shape} mesh")
    along_y, along_x = _operators(tuple(shape), mesh_size)
    rows = along_y @ mesh
    buffer = np.empty((_RENDER_ROWS, shape[1]))
    for index, start in enumerate(range(0, shape[0], _RENDER_ROWS)):
        band = slice(start, start + _RENDER_ROWS)
        if wanted is not None and not wanted[index]:
            yield band, None
            continue
        values = buffer[: rows[band].shape[0]]
        np.matmul(rows[band], along_x.T, out=values)
        yield band, values


def fit_mesh(image: np.ndarray, mesh_size: int) -> np.ndarray:
    """Node values whose rendering is ``image`` (least squares on a grid of samples)."""
    along_y, along_x = _operators(image.shape, mesh_size)
    rows = _samples(image.shape[0], mesh_size)
    cols = _samples(image.shape[1], mesh_size)
    samples = np.asarray(image[np.ix_(rows, cols)], dtype=np.float64)
    mesh = np.linalg.pinv(along_y[rows]) @ samples @ np.linalg.pinv(along_x[cols]).T
    return mesh.astype(np.float32)


def _samples(npix: int, mesh_size: int) -> np.ndarray:
    stride = max(1, min(_FIT_STRIDE, mesh_size // 4))
    return np.unique(np.append(np.arange(0, npix, stride), npix - 1))


@functools.lru_cache(maxsize=8)
def _operators(shape: tuple[int, int], mesh_size: int) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = mesh_shape(shape, mesh_size)
    # SExtractor's nodes sit at cell centres: y = (j + 0.5) * size, x = (i + 0.5) * size - 0.5.
    return (
        spline_operator(shape[0], mesh_size, ny, 0.0),
        spline_operator(shape[1], mesh_size, nx, 0.5),
    )


def spline_operator(npix: int, mesh_size: int, n: int, offset: float) -> np.ndarray:
    """(npix, n) matrix taking node values to pixels: SExtractor's natural cubic spline.

    Between nodes k and k+1 at fraction t the value is
    (1-t) v_k + t v_{k+1} + ((1-t)³ - (1-t)) D_k + (t³ - t) D_{k+1},
    with D = y''/6 from the natural-spline recurrence, which is linear in v.
    """
    if n == 1:
        return np.ones((npix, 1))
    t = (np.arange(npix) + offset) / mesh_size - 0.5
    segment = np.clip(np.floor(t).astype(np.intp), 0, n - 2)
    dt = t - segment
    cdt = 1.0 - dt
    curvature = _natural_spline_curvature(np.eye(n))
    operator = np.zeros((npix, n))
    rows = np.arange(npix)
    operator[rows, segment] += cdt
    operator[rows, segment + 1] += dt
    operator += (cdt**3 - cdt)[:, None] * curvature[segment]
    operator += (dt**3 - dt)[:, None] * curvature[segment + 1]
    return operator


def _natural_spline_curvature(values: np.ndarray) -> np.ndarray:
    """D = y''/6 at the nodes (rows of ``values``), zero at the ends (Thomas algorithm)."""
    n = values.shape[0]
    d = np.zeros(values.shape)
    if n < 3:
        return d
    u = np.zeros(values.shape)
    for i in range(1, n - 1):  # one step per mesh node, vectorised over columns
        temp = -1.0 / (d[i - 1] + 4.0)
        d[i] = temp
        u[i] = temp * (u[i - 1] - 6.0 * (values[i + 1] + values[i - 1] - 2.0 * values[i]))
    for i in range(n - 2, 0, -1):
        d[i] = (d[i] * d[i + 1] + u[i]) / 6.0
    return d
