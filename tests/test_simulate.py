"""The simulator is the other tests' ground truth: check that it says what it renders."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from scipy.spatial import cKDTree

from calibstream.detection.psfmodel import (
    gauss_legendre,
    integrate_pixels,
    moffat_alpha,
    moffat_profile,
    moffat_stamps,
)
from calibstream.io.exposure import read_exposure
from calibstream.simulate.config import MASK_PLANES, SimConfig
from calibstream.simulate.exposure import simulate_exposure
from calibstream.simulate.geometry import julian_year, propagate
from calibstream.simulate.survey import simulate_survey, write_simulation
from calibstream.simulate.truth import read_truth, write_truth

SIZE = (1024, 1000)
BITS = {name: 1 << bit for name, bit in MASK_PLANES.items()}
REFCAT_COLUMNS = (
    "id",
    "ra",
    "dec",
    "ra_err",
    "dec_err",
    "pmra",
    "pmdec",
    "pmra_err",
    "pmdec_err",
    "epoch",
    "r_mag",
    "r_mag_err",
    "i_mag",
    "i_mag_err",
    "g_mag",
    "g_mag_err",
)
QUIET = dict(n_sources=0, n_cosmic_rays=0, bad_column=False)


@pytest.fixture(scope="module")
def survey():
    return simulate_survey(3, SimConfig(size=SIZE), seed=7)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return out, write_simulation(out, n=2, size=(300, 260), seed=4)


def sep_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).arcsec


# ---------------------------------------------------------------- files


def test_written_files_read_back(written):
    out, paths = written
    names = sorted(p.name for p in paths)
    assert names == [
        "exp_1000.fits",
        "exp_1000.truth.fits",
        "exp_1001.fits",
        "exp_1001.truth.fits",
        "refcat.fits",
    ]
    for expid in (1000, 1001):
        exposure = read_exposure(out / f"exp_{expid}.fits")
        truth = read_truth(out / f"exp_{expid}.truth.fits")
        assert exposure.metadata.expid == truth.expid == expid
        assert exposure.shape == (260, 300)
        assert exposure.metadata.band == "r"
        assert abs(julian_year(exposure.metadata.mjd_obs) - 2025.9) < 0.1
        assert exposure.icsrc is not None
        assert truth.wcs.sip is not None and truth.wcs.wcs.ctype[0] == "RA---TAN-SIP"
        assert {
            "id",
            "ref_id",
            "is_star",
            "x",
            "y",
            "ra",
            "dec",
            "flux",
            "mag",
            "snr",
            "saturated",
            "near_bad_column",
            "half_light_radius",
        } <= set(truth.sources.colnames)
    refcat = Table.read(out / "refcat.fits")
    assert set(REFCAT_COLUMNS) <= set(refcat.colnames)
    # streamed to disk one exposure at a time, yet the same survey as in memory
    survey = simulate_survey(2, SimConfig(size=(300, 260)), seed=4)
    np.testing.assert_array_equal(refcat["id"], survey.refcat["id"])
    np.testing.assert_array_equal(
        read_exposure(out / "exp_1001.fits").image, survey.exposures[1][0].image
    )


def test_compressed_file_reads_back_identical(tmp_path):
    plain = write_simulation(tmp_path / "plain", n=1, size=(200, 180), seed=2)
    packed = write_simulation(tmp_path / "packed", n=1, size=(200, 180), seed=2, compress=True)
    a, b = read_exposure(plain[0]), read_exposure(packed[0])
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(a, plane), getattr(b, plane))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = write_simulation(tmp_path / "a", n=1, size=(160, 150), seed=9)
    again = write_simulation(tmp_path / "b", n=1, size=(160, 150), seed=9)
    other = write_simulation(tmp_path / "c", n=1, size=(160, 150), seed=10)
    for p, q, r in zip(first, again, other, strict=True):
        assert p.read_bytes() == q.read_bytes(), p.name
        assert p.read_bytes() != r.read_bytes(), p.name


def test_exposure_depends_only_on_its_seed():
    config = SimConfig(size=(200, 200))
    seed = np.random.SeedSequence(12)
    a, _ = simulate_exposure(config, seed)
    b, _ = simulate_exposure(config, seed)
    np.testing.assert_array_equal(a.image, b.image)
    # switching cosmic rays off leaves the noise draw unchanged
    c, _ = simulate_exposure(replace(config, n_cosmic_rays=0), seed)
    same = (a.mask & BITS["CR"]) == 0
    np.testing.assert_array_equal(a.image[same], c.image[same])


def test_truth_round_trip(survey, tmp_path):
    _, truth = survey.exposures[0]
    write_truth(truth, tmp_path / "t.fits")
    back = read_truth(tmp_path / "t.fits")
    assert back.magzero == truth.magzero and back.colorterm == truth.colorterm
    assert back.bad_column == truth.bad_column and back.size == truth.size
    x, y = truth.sources["x"], truth.sources["y"]
    np.testing.assert_allclose(
        back.wcs.all_pix2world(x, y, 0), truth.wcs.all_pix2world(x, y, 0), rtol=0, atol=1e-10
    )
    np.testing.assert_array_equal(back.sources["id"], truth.sources["id"])


# ---------------------------------------------------------------- astrometry


def test_truth_positions_follow_the_true_wcs(survey):
    for _, truth in survey.exposures:
        src = truth.sources
        ra, dec = truth.wcs.all_pix2world(src["x"], src["y"], 0)
        assert sep_arcsec(ra, dec, src["ra"], src["dec"]).max() < 1e-5


def test_first_guess_is_off_by_arcseconds(survey):
    for exposure, truth in survey.exposures:
        centre = [[(SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2]]
        true = truth.wcs.all_pix2world(centre, 0)[0]
        guess = exposure.wcs.all_pix2world(centre, 0)[0]
        offset = sep_arcsec(true[0], true[1], guess[0], guess[1])
        assert 3.0 <= offset <= 8.0
        assert offset == pytest.approx(truth.first_guess_offset, abs=1e-3)
        assert 0.005 < abs(truth.first_guess_rotation) < 0.05
        ic = exposure.icsrc
        ra, dec = exposure.wcs.all_pix2world(ic.x, ic.y, 0)
        assert sep_arcsec(ra, dec, ic.ra, ic.dec).max() < 1e-6  # ICSRC uses the first guess
        matched = truth.sources[truth.sources["icsrc_id"] >= 0]
        by_id = dict(zip(ic.id, range(len(ic)), strict=True))
        k = np.array([by_id[i] for i in matched["icsrc_id"]])
        assert np.median(sep_arcsec(ic.ra[k], ic.dec[k], matched["ra"], matched["dec"])) > 2.0


def test_sip_distortion_is_a_few_pixels_at_the_corners(survey):
    nx, ny = SIZE
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], float) + 1.0
    for _, truth in survey.exposures:
        wcs = truth.wcs
        shift = wcs.sip_pix2foc(corners, 1) - (corners - wcs.wcs.crpix)
        assert np.hypot(*shift.T).max() == pytest.approx(3.0, rel=1e-6)
        back = wcs.sip_foc2pix(wcs.sip_pix2foc(corners, 1), 1)  # AP/BP invert A/B
        assert np.abs(back - corners).max() < 1e-3


def test_proper_motions_matter_and_refcat_is_truth_plus_errors(survey):
    refcat = survey.refcat
    _, truth = survey.exposures[0]
    src = truth.sources[truth.sources["ref_id"] >= 0]
    row = {i: k for k, i in enumerate(refcat["id"])}
    k = np.array([row[i] for i in src["ref_id"]])
    years = truth.epoch - 2016.0
    ra, dec = propagate(
        refcat["ra"][k], refcat["dec"][k], refcat["pmra"][k], refcat["pmdec"][k], years
    )
    moved = sep_arcsec(ra, dec, src["ra"], src["dec"]) * 1e3
    still = sep_arcsec(refcat["ra"][k], refcat["dec"][k], src["ra"], src["dec"]) * 1e3
    assert np.median(moved) < 15.0  # mas: catalog errors propagated over ~10 yr
    assert np.median(still) > 40.0  # ignoring proper motion is visibly wrong
    # the catalog errors are honest: normalised residuals ~ N(0, 1)
    pull = (refcat["pmra"][k] - src["pmra"]) / refcat["pmra_err"][k]
    assert 0.7 < np.std(pull) < 1.3


def test_refcat_contract_and_coverage(survey):
    refcat = survey.refcat
    assert set(REFCAT_COLUMNS) <= set(refcat.colnames)
    assert refcat["id"].dtype == np.int64 and len(np.unique(refcat["id"])) == len(refcat)
    assert np.all(refcat["epoch"] == 2016.0)
    assert refcat["r_mag"].max() < 21.7 and refcat["ra_err"].max() < 2.0
    nx, ny = SIZE
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], float)
    for _, truth in survey.exposures:
        ra, dec = truth.wcs.all_pix2world(corners, 0).T
        assert refcat["ra"].min() < ra.min() and ra.max() < refcat["ra"].max()
        assert refcat["dec"].min() < dec.min() and dec.max() < refcat["dec"].max()
        src = truth.sources
        in_ref = src["ref_id"] >= 0
        assert np.all(np.isin(src["ref_id"][in_ref], refcat["id"]))
        assert np.all(src["r_mag"][in_ref] < 21.5) and np.all(
            src["r_mag"][~in_ref & src["is_star"]] >= 21.5
        )
        assert in_ref.sum() > 20
    # the refcat reaches beyond the exposures
    xs = [
        truth.wcs.all_world2pix(refcat["ra"], refcat["dec"], 0)[0] for _, truth in survey.exposures
    ]
    outside = np.all([(x < 0) | (x > nx - 1) for x in xs], axis=0)
    assert outside.any()


# ---------------------------------------------------------------- photometry


def test_fluxes_follow_magzero_and_colour_term(survey):
    c0, c1, c2 = SimConfig().colorterm
    zps = []
    for exposure, truth in survey.exposures:
        src = truth.sources
        colour = src["r_mag"] - src["i_mag"]
        np.testing.assert_allclose(src["mag"], src["r_mag"] + c0 + c1 * colour + c2 * colour**2)
        exptime = exposure.metadata.exptime
        np.testing.assert_allclose(
            truth.magzero - 2.5 * np.log10(src["flux"] / exptime), src["mag"], atol=1e-9
        )
        zps.append(truth.magzero)
    assert len(set(zps)) == len(zps) and all(abs(z - 28.0) < 0.25 for z in zps)


def test_snr_scale(survey):
    _, truth = survey.exposures[0]
    src = truth.sources
    inner = (
        (src["x"] > 15) & (src["x"] < SIZE[0] - 16) & (src["y"] > 15) & (src["y"] < SIZE[1] - 16)
    )
    src = src[src["is_star"] & inner]
    # S/N ∝ flux: the r=20 and S/N=5 points of the defaults
    k = np.argsort(src["mag"])
    scale = np.median(src["snr"] / src["flux"])
    flux20 = 30.0 * 10 ** (-0.4 * (20.0 - truth.magzero))
    assert 150 < scale * flux20 < 400
    mag5 = truth.magzero - 2.5 * np.log10(5.0 / scale / 30.0)
    assert 23.9 < mag5 < 24.6
    assert np.all(np.diff(src["snr"][k]) < 0.05 * src["snr"][k][1:])  # monotone up to sub-pixel


def test_psf_hdu_and_aperture_corrections(survey):
    exposure, _ = survey.exposures[0]
    psf = exposure.psf
    assert psf.image.shape == (25, 25)
    assert abs(float(psf.image.sum(dtype=np.float64)) - 1.0) < 1e-6
    assert (psf.x, psf.y) == ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2)
    assert np.unravel_index(np.argmax(psf.image), psf.image.shape) == (12, 12)
    # FWHM from second moments: Moffat sigma² = α²/(2(β-2)), + 1/12 from the pixel box
    grid = np.arange(-12, 13)
    var = float((psf.image * grid[None, :] ** 2).sum())
    beta = 3.5
    alpha = np.sqrt(2 * (beta - 2) * (var - 1 / 12))
    fwhm = 2 * alpha * np.sqrt(2 ** (1 / beta) - 1)
    assert psf.fwhm == 3.5 and fwhm == pytest.approx(3.5, rel=0.05)
    # psf_flux correction = 1 / (fraction of the analytic profile inside the stamp),
    # checked with an independent brute-force integral (64 sub-samples per pixel axis)
    alpha = moffat_alpha(3.5, beta)
    stamp = integrate_pixels(
        lambda dx, dy: moffat_profile(dx, dy, alpha, beta),
        np.zeros(1),
        np.zeros(1),
        12,
        gauss_legendre(2, sub=32),
    )[0][0]
    apc = exposure.apcorr.evaluate("psf_flux", np.array([0.0, 900.0]), np.array([5.0, 990.0]))
    np.testing.assert_allclose(apc, 1.0 / stamp.sum(), rtol=1e-7)
    assert 1.0005 < apc[0] < 1.003
    ap12 = exposure.apcorr.evaluate("ap_flux_12", np.array([10.0]), np.array([10.0]))[0]
    assert ap12 == pytest.approx(1 / (1 - (1 + 144 / alpha**2) ** (1 - beta)))
    assert exposure.apcorr.terms["psf_flux"].err == 0.0005


def test_star_pixel_integration_is_exact_enough():
    """Stars use the PSF module's quadrature: < 1e-5 of the flux from a brute-force integral."""
    alpha = moffat_alpha(3.5, 3.5)
    x, y = np.array([10.37, 4.5]), np.array([-3.21, 7.5])
    fast, x0, y0 = moffat_stamps(x, y, 20, 3.5, 3.5)
    brute, bx0, by0 = integrate_pixels(
        lambda dx, dy: moffat_profile(dx, dy, alpha, 3.5), x, y, 20, gauss_legendre(2, sub=24)
    )
    assert np.array_equal(x0, bx0) and np.array_equal(y0, by0)
    assert np.abs(fast - brute).sum(axis=(1, 2)).max() < 1e-5
    assert np.all(1 - fast.sum(axis=(1, 2)) < 2e-4)  # the 41x41 stamp loses < 2e-4


def test_star_and_galaxy_flux_in_a_box():
    """Noiseless pixels: an isolated star holds its total flux to 2e-4, a galaxy exactly."""
    config = SimConfig(
        size=(1500, 1500),
        n_sources=400,
        add_noise=False,
        n_cosmic_rays=0,
        bad_column=False,
        saturation=1e12,
    )
    exposure, truth = simulate_exposure(config, seed=5)
    src = truth.sources
    tree = cKDTree(np.column_stack([src["x"], src["y"]]))
    image = exposure.image.astype(np.float64)
    checked = {True: 0, False: 0}
    for k in np.flatnonzero(src["flux"] > 1000):
        cx, cy = round(src["x"][k]), round(src["y"][k])
        if not (100 <= cx < 1400 and 100 <= cy < 1400):
            continue
        if len(tree.query_ball_point([src["x"][k], src["y"][k]], 130)) > 1:
            continue
        box = image[cy - 60 : cy + 61, cx - 60 : cx + 61].sum()
        star = bool(src["is_star"][k])
        assert box / src["flux"][k] - 1 == pytest.approx(0.0, abs=2e-4 if star else 1e-5)
        checked[star] += 1
    assert checked[True] >= 3 and checked[False] >= 3


def test_bright_star_flux_with_noise():
    config = SimConfig(
        size=(800, 800),
        n_sources=150,
        star_fraction=1.0,
        n_cosmic_rays=0,
        bad_column=False,
        saturation=1e9,
        star_mag_range=(14.5, 15.5),
    )
    exposure, truth = simulate_exposure(config, seed=3)
    src = truth.sources
    k = np.flatnonzero((src["x"] > 60) & (src["x"] < 740) & (src["y"] > 60) & (src["y"] < 740))
    tree = cKDTree(np.column_stack([src["x"], src["y"]]))
    isolated = [i for i in k if len(tree.query_ball_point([src["x"][i], src["y"][i]], 80)) == 1]
    assert isolated
    i = isolated[0]
    cx, cy = round(src["x"][i]), round(src["y"][i])
    box = exposure.image[cy - 40 : cy + 41, cx - 40 : cx + 41].sum(dtype=np.float64)
    assert box == pytest.approx(src["flux"][i], rel=3e-3)


# ---------------------------------------------------------------- noise and defects


def test_pure_noise_exposure():
    config = SimConfig(size=(600, 500), **QUIET)
    exposure, truth = simulate_exposure(config, seed=1)
    assert len(truth.sources) == 0 and len(exposure.icsrc) == 0
    assert not exposure.mask.any()
    assert truth.bad_column == -1
    np.testing.assert_array_equal(exposure.variance, np.float32(1000.0 + 25.0))
    pull = exposure.image / np.sqrt(exposure.variance)
    assert abs(pull.mean()) < 0.01
    assert pull.std() == pytest.approx(1.0, abs=0.01)


def test_noise_matches_the_variance_plane_around_sources(survey):
    exposure, _ = survey.exposures[0]
    clean = exposure.mask == 0
    pull = exposure.image[clean] / np.sqrt(exposure.variance[clean])
    assert pull.std() == pytest.approx(1.0, abs=0.03)  # undetected faint sources add a little


def test_saturated_stars_have_sat_bits(survey):
    clip = SimConfig().saturation - SimConfig().sky
    n_sat = 0
    for exposure, truth in survey.exposures:
        src = truth.sources[truth.sources["in_chip"]]
        sat = exposure.mask & BITS["SAT"] != 0
        np.testing.assert_array_equal(exposure.image[sat], np.float32(clip))
        bright = src["is_star"] & (src["mag"] < 15.5)
        for row in src[bright]:
            cx, cy = round(row["x"]), round(row["y"])
            assert sat[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].any()
            assert row["saturated"]
        assert not np.any(src["saturated"] & (src["mag"] > 17.5))
        n_sat += int(src["saturated"].sum())
        # no SAT pixel without a saturated source next to it
        ys, xs = np.nonzero(sat)
        if xs.size:
            hot = src["saturated"]
            tree = cKDTree(np.column_stack([src["x"][hot], src["y"][hot]]))
            assert tree.query(np.column_stack([xs, ys]))[0].max() < 15
    assert n_sat >= 3


def test_bad_column(survey):
    for exposure, truth in survey.exposures:
        bad = exposure.mask & BITS["BAD"] != 0
        x = truth.bad_column
        assert 100 <= x < SIZE[0] - 100
        assert bad[:, x].all() and bad.sum() == SIZE[1]
        excess = np.median(exposure.image[:, x]) - np.median(exposure.image[:, x + 5])
        assert excess == pytest.approx(2000.0, abs=100)
        near = truth.sources["near_bad_column"]
        assert np.all(np.abs(truth.sources["x"][near] - x) < 2 * truth.fwhm)


def test_cosmic_rays_are_repaired_and_flagged(survey):
    exposure, _ = survey.exposures[1]
    cr = exposure.mask & BITS["CR"] != 0
    intrp = exposure.mask & BITS["INTRP"] != 0
    assert np.array_equal(cr, intrp)
    n = cr.sum()
    assert 5 <= n <= 4 * 100 * SIZE[0] * SIZE[1] / 4096**2 * 4
    # no CR pixel keeps a deposit: values are like their neighbours
    ys, xs = np.nonzero(cr)
    assert np.all(np.abs(exposure.image[ys, xs]) < 5 * np.sqrt(exposure.variance[ys, xs]) + 1e3)
    # with repair off, deposits stay and nothing is flagged
    config = SimConfig(
        size=(400, 400), n_sources=0, bad_column=False, n_cosmic_rays=2000, repair_cosmic_rays=False
    )
    raw, _ = simulate_exposure(config, seed=2)
    assert not raw.mask.any() and raw.image.max() > 250


def test_detected_plane_marks_sources(survey):
    exposure, truth = survey.exposures[0]
    det = exposure.mask & BITS["DETECTED"] != 0
    src = truth.sources[truth.sources["in_chip"] & (truth.sources["snr"] > 30)]
    assert det[np.rint(src["y"]).astype(int), np.rint(src["x"]).astype(int)].all()
    assert 0.001 < det.mean() < 0.2


# ---------------------------------------------------------------- catalogues and knobs


def test_icsrc_flags_and_fluxes(survey):
    for exposure, truth in survey.exposures:
        ic = exposure.icsrc
        src = truth.sources
        chosen = src[src["icsrc_id"] >= 0]
        assert len(chosen) == len(ic) > 10
        assert np.all(chosen["snr"] > 50)
        assert not np.any(ic.calib_psf_used & ic.calib_psf_reserved)
        assert np.all(ic.calib_psf_candidate[ic.calib_psf_used | ic.calib_psf_reserved])
        order = np.argsort(chosen["icsrc_id"])
        chosen = chosen[order]
        assert np.array_equal(chosen["icsrc_id"], ic.id)
        assert not np.any(ic.calib_psf_candidate & ~chosen["is_star"])
        assert not np.any(ic.calib_psf_candidate & chosen["saturated"])
        assert np.hypot(ic.x - chosen["x"], ic.y - chosen["y"]).max() < 0.3
        stars = chosen["is_star"] & ~chosen["saturated"]
        ratio = ic.psf_flux[stars] * truth.apcorr_psf / chosen["flux"][stars]
        assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
    used = sum(int(e.icsrc.calib_psf_used.sum()) for e, _ in survey.exposures)
    cand = sum(int(e.icsrc.calib_psf_candidate.sum()) for e, _ in survey.exposures)
    assert 0.6 < used / cand < 0.95


def test_overlapping_exposures_share_objects(survey):
    ids = [set(t.sources["id"][t.sources["in_chip"]]) for _, t in survey.exposures]
    assert any(ids[i] & ids[j] for i in range(3) for j in range(i + 1, 3))


def test_star_only_and_faint_heavy_knobs():
    stars = SimConfig(size=(600, 600), star_fraction=1.0)
    _, truth = simulate_exposure(stars, seed=3)
    assert len(truth.sources) > 20 and truth.sources["is_star"].all()
    assert np.all(truth.sources["half_light_radius"] == 0)
    faint = replace(
        stars, star_fraction=0.5, star_mag_range=(22.0, 25.5), galaxy_mag_range=(23.0, 25.5)
    )
    _, truth = simulate_exposure(faint, seed=3)
    src = truth.sources
    assert np.all(src["r_mag"] >= 22.0) and np.all(src["ref_id"] == -1)
    assert (~src["is_star"]).any() and np.all(src["half_light_radius"][~src["is_star"]] >= 0.5)
    assert np.median(src["snr"]) < 10


@pytest.mark.slow
def test_full_size_exposure_is_fast():
    start = time.perf_counter()
    survey = simulate_survey(1, SimConfig(size=(4000, 4072)), seed=3)
    seconds = time.perf_counter() - start
    exposure, truth = survey.exposures[0]
    assert exposure.shape == (4072, 4000)
    assert 2500 < len(truth.sources) < 3600
    assert seconds < 15.0, f"{seconds:.1f} s"
