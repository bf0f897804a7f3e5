"""The background model is its mesh: rendering it reproduces sep's background."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from astropy.io import fits

from calibstream.config import BackgroundConfig
from calibstream.detection.background import estimate_background, fit_mesh, mesh_shape, render_mesh
from calibstream.detection.pipeline import background_hdul, read_background
from calibstream.io.exposure import Metadata
from calibstream.io.fitsio import hdulist_bytes


def _sky(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    sky = 100 + 0.01 * x + 5 * np.sin(y / 300.0) + rng.normal(0, 3, shape)
    return sky.astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "mesh_size"),
    [((1000, 1030), 64), ((513, 700), 32), ((300, 200), 128), ((100, 90), 128)],
)
def test_rendered_mesh_is_seps_background(shape, mesh_size):
    back = sep.Background(_sky(shape, 1), bw=mesh_size, bh=mesh_size).back(dtype=np.float32)
    mesh = fit_mesh(back, mesh_size)
    assert mesh.shape == mesh_shape(shape, mesh_size)
    rendered = render_mesh(mesh, shape, mesh_size)
    # float32 rounding of sep's own spline: a few ulps of a level of ~100.
    assert np.abs(rendered - back).max() < 1e-6 * np.abs(back).max() * 10


def test_background_fits_round_trips_what_was_subtracted(tmp_path):
    image = _sky((700, 650), 2)
    background = estimate_background(image, BackgroundConfig())
    meta = Metadata(expid=1, visit=1, detector=0, band="r", mjd_obs=60000.0, exptime=30.0)

    path = tmp_path / "background.fits"
    path.write_bytes(hdulist_bytes(background_hdul(meta, background)))
    with fits.open(path) as hdul:
        again = read_background(hdul)
    assert again.shape == background.shape and again.mesh_size == background.mesh_size
    np.testing.assert_array_equal(again.image, background.image)
    assert path.stat().st_size < 30_000  # a mesh, not a full-resolution plane


def test_mesh_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="mesh"):
        render_mesh(np.zeros((3, 3), np.float32), (512, 512), 128)
