"""Unit checks of the small pure pieces: Chebyshev maps, sub-pixel shifts, flag copying."""

from __future__ import annotations

import numpy as np
import pytest

from calibstream.config import config_from_dict
from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm, apply_apcorr
from calibstream.detection.icsrc import copy_icsrc_flags
from calibstream.detection.stamps import shifted_models
from calibstream.errors import ConfigError
from calibstream.io.exposure import IcSrc


def test_chebyshev_map_follows_the_contract_index_convention():
    # Coefficient i*(ORDER+1)+j multiplies T_i(y') T_j(x'): put one term at (i=1, j=2).
    order, width, height = 2, 101, 51
    coeffs = np.zeros((order + 1, order + 1))
    coeffs[1, 2] = 1.0
    apcorr = ApCorrMap({"psf_flux": ApCorrTerm("psf_flux", order, coeffs, 0.0)}, width, height)
    x = np.array([0.0, 50.0, 100.0, 25.0])
    y = np.array([0.0, 25.0, 50.0, 40.0])
    xn, yn = 2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1
    expected = yn * (2 * xn**2 - 1)  # T_1(y') T_2(x')
    np.testing.assert_allclose(apcorr.evaluate("psf_flux", x, y), expected, atol=1e-12)


def test_apcorr_error_adds_the_map_uncertainty_in_quadrature():
    flux, err = apply_apcorr(np.array([100.0]), np.array([3.0]), np.array([1.1]), 0.04)
    assert flux[0] == pytest.approx(110.0)
    assert err[0] == pytest.approx(np.hypot(3.0 * 1.1, 100.0 * 0.04))


@pytest.mark.parametrize("dx,dy", [(0.0, 0.0), (0.3, -0.2), (-0.5, 0.5), (0.47, 0.13)])
def test_shifted_psf_matches_the_analytic_profile(dx, dy):
    sigma, half = 1.6, 12
    grid = np.arange(-half, half + 1)

    def gaussian(cx, cy):
        g = np.exp(-((grid[None, :] - cx) ** 2 + (grid[:, None] - cy) ** 2) / (2 * sigma**2))
        return g / g.sum()

    moved = shifted_models(gaussian(0, 0), np.array([dx]), np.array([dy]))[0]
    assert abs(moved.sum() - 1) < 1e-12
    assert np.abs(moved - gaussian(dx, dy)).max() < 1e-4 * gaussian(0, 0).max()
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    assert (moved * xx).sum() == pytest.approx(dx, abs=1e-4)
    assert (moved * yy).sum() == pytest.approx(dy, abs=1e-4)


def _icsrc(x, y, used):
    n = len(x)
    z = np.zeros(n)
    return IcSrc(
        id=np.arange(n),
        x=np.asarray(x, float),
        y=np.asarray(y, float),
        ra=z,
        dec=z,
        psf_flux=z,
        psf_flux_err=z,
        calib_psf_candidate=np.ones(n, bool),
        calib_psf_used=np.asarray(used),
        calib_psf_reserved=np.zeros(n, bool),
    )


def test_icsrc_flags_go_to_the_nearest_deep_source_within_the_radius():
    x = np.array([10.0, 50.0, 90.0])
    y = np.array([10.0, 50.0, 90.0])
    # Two claims on source 1 (the closer wins), one too far from anything.
    icsrc = _icsrc([50.5, 51.5, 200.0], [50.0, 50.0, 200.0], [True, False, True])
    flags = copy_icsrc_flags(x, y, icsrc, radius=3.0)
    assert flags["calib_psf_candidate"].tolist() == [False, True, False]
    assert flags["calib_psf_used"].tolist() == [False, True, False]
    assert not flags["calib_psf_reserved"].any()


def test_configuration_rejects_unknown_keys_and_reads_tuples():
    config = config_from_dict({"measurement": {"aperture_radii": [2, 4]}})
    assert config.measurement.aperture_radii == (2, 4)
    with pytest.raises(ConfigError, match="thresold"):
        config_from_dict({"detection": {"thresold": 4.0}})


def test_fits_bytes_do_not_depend_on_the_clock_and_checksums_verify(tmp_path):
    import time
    import warnings

    from astropy.io import fits

    from calibstream.io.fitsio import hdulist_bytes, table_hdu

    def make():
        return fits.HDUList([fits.PrimaryHDU(), table_hdu({"a": np.arange(5.0)}, "T")])

    first = hdulist_bytes(make())
    time.sleep(1.1)  # astropy's default checksum comment is a timestamp to the second
    assert hdulist_bytes(make()) == first
    (tmp_path / "t.fits").write_bytes(first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum mismatch is a warning in astropy
        with fits.open(tmp_path / "t.fits", checksum=True) as hdul:
            assert hdul["T"].header["CHECKSUM"]
