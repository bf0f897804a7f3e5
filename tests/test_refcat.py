"""Reference catalogs: ingest into HEALPix shards, load a circle, proper motion, shard cache."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, angular_separation
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from calibstream.astrometry import refcat_store
from calibstream.astrometry.refcat import (
    RefCatalog,
    footprint_circle,
    ingest_refcat,
    load_refcat,
    propagate_to_epoch,
)
from calibstream.astrometry.refcat_formats import CONTRACT_UNITS
from calibstream.astrometry.refcat_store import healpix
from calibstream.errors import CalibstreamError, RefcatError

UNITS = CONTRACT_UNITS  # the contract's units (reference-catalog.md), one table
ASTROMETRY = ("ra_err", "dec_err", "pmra", "pmdec", "pmra_err", "pmdec_err", "epoch")


def catalog(n, seed=0, ra=(0.0, 360.0), dec=(-90.0, 90.0), astrometry=True, bands="gri", id0=1):
    """Random rows, uniform on the sphere within the ra/dec box (ra may wrap: (-5, 5))."""
    rng = np.random.default_rng(seed)
    sin_lo, sin_hi = np.sin(np.radians(dec[0])), np.sin(np.radians(dec[1]))
    cols = {
        "id": rng.permutation(np.arange(id0, id0 + n, dtype=np.int64) * 3),
        "ra": np.mod(rng.uniform(*ra, n), 360.0),
        "dec": np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, n))),
    }
    if astrometry:
        cols["ra_err"] = rng.uniform(0.02, 1.0, n)
        cols["dec_err"] = rng.uniform(0.02, 1.0, n)
        cols["pmra"] = rng.normal(0.0, 20.0, n)
        cols["pmdec"] = rng.normal(0.0, 20.0, n)
        cols["pmra_err"] = rng.uniform(0.02, 1.0, n)
        cols["pmdec_err"] = rng.uniform(0.02, 1.0, n)
        cols["epoch"] = np.full(n, 2016.0)
    for band in bands:
        cols[f"{band}_mag"] = rng.uniform(14.0, 21.0, n)
        err = rng.uniform(0.001, 0.1, n)
        err[::17] = np.nan  # missing values survive as NaN
        cols[f"{band}_mag_err"] = err
    return cols


def write(cols, path, units=None):
    """The columns as FITS / Parquet (astropy, with units) or CSV (no units, exact floats)."""
    units = UNITS if units is None else units
    if path.suffix == ".csv":
        pacsv.write_csv(pa.table({k: np.asarray(v) for k, v in cols.items()}), path)
        return path
    table = Table()
    for name, values in cols.items():
        unit = units.get(name, u.mag if name.endswith(("_mag", "_mag_err")) else None)
        table[name] = values if unit is None else np.asarray(values) * unit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table.write(path, overwrite=True)
    return path


def brute_force(cols, ra, dec, radius):
    sep = angular_separation(cols["ra"] * u.deg, cols["dec"] * u.deg, ra * u.deg, dec * u.deg)
    return set(cols["id"][sep.to_value(u.deg) <= radius].tolist())


def by_id(ref: RefCatalog) -> RefCatalog:
    return ref.take(np.argsort(ref.id))


class DictCache:
    def __init__(self):
        self.data, self.gets, self.sets = {}, 0, 0

    def get(self, key):
        self.gets += 1
        return self.data.get(key)

    def set(self, key, value):
        self.sets += 1
        self.data[key] = value


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("suffix", [".fits", ".parquet", ".csv"])
def test_round_trip_keeps_every_value(tmp_path, suffix):
    cols = catalog(3000, seed=1, ra=(10, 20), dec=(-5, 5))
    path = write(cols, tmp_path / f"cat{suffix}")
    report = ingest_refcat([path], tmp_path / "store")
    assert report.rows == 3000 and report.bands == ("g", "i", "r")
    ref = by_id(load_refcat(tmp_path / "store", 15.0, 0.0, 10.0))
    assert len(ref) == 3000
    order = np.argsort(cols["id"])
    for name in ("id", "ra", "dec", *ASTROMETRY):
        np.testing.assert_array_equal(getattr(ref, name), cols[name][order], err_msg=name)
    for band in "gri":
        mag, err = ref.bands[band]
        np.testing.assert_array_equal(mag, cols[f"{band}_mag"][order])
        np.testing.assert_array_equal(err, cols[f"{band}_mag_err"][order])  # NaN == NaN here

    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["nside"] == 32 and manifest["ordering"] == "nested"
    assert manifest["rows"] == 3000 == sum(s["rows"] for s in manifest["shards"])
    assert manifest["bands"] == ["g", "i", "r"]
    assert manifest["columns"][:3] == ["id", "ra", "dec"]
    assert manifest["sources"][0]["rows"] == 3000 and manifest["sources"][0]["path"].endswith(
        f"cat{suffix}"
    )


def test_the_three_formats_give_identical_shards(tmp_path):
    cols = catalog(2000, seed=2, ra=(100, 104), dec=(30, 34))
    reports = [
        ingest_refcat([write(cols, tmp_path / f"c{suffix}")], tmp_path / suffix[1:])
        for suffix in (".fits", ".parquet", ".csv")
    ]
    assert len({r.shard_dir for r in reports}) == 1
    trees = [_tree(tmp_path / name / reports[0].shard_dir) for name in ("fits", "parquet", "csv")]
    assert len(trees[0]) == reports[0].shards > 1
    assert trees[0] == trees[1] == trees[2]


def test_shards_are_valid_fits_one_pixel_each_sorted_by_id(tmp_path):
    cols = catalog(4000, seed=3, ra=(200, 210), dec=(-40, -30))
    ingest_refcat([write(cols, tmp_path / "c.fits")], tmp_path / "store", nside=16)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    hp = healpix(16)
    for entry in manifest["shards"]:
        path = tmp_path / "store" / manifest["shard_dir"] / f"{entry['pixel']:04d}.fits"
        with fits.open(path) as hdul:
            hdul.verify("exception")
            header, data = hdul[1].header, hdul[1].data
            assert header["NSIDE"] == 16 and header["ORDERING"] == "NESTED"
            assert header["HPXPIX"] == entry["pixel"] and len(data) == entry["rows"]
            assert header["TUNIT2"] == "deg"
            pixels = hp.lonlat_to_healpix(data["ra"] * u.deg, data["dec"] * u.deg)
            assert np.all(pixels == entry["pixel"])
            assert np.all(np.diff(data["id"]) > 0)
            # The loader's direct byte reader agrees with astropy.
            fast = refcat_store.read_shard(path.read_bytes(), manifest["columns"], "x")
            for name in manifest["columns"]:
                np.testing.assert_array_equal(fast[name], data[name])


# --------------------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def allsky(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("allsky")
    cols = catalog(60000, seed=4, bands="g")
    ingest_refcat([write(cols, tmp / "allsky.parquet")], tmp / "store", nside=8)
    return cols, tmp / "store"


CONES = [
    (0.4, 10.0, 3.0),  # crosses RA = 0
    (359.8, -20.0, 1.0),  # crosses RA = 0 from the other side
    (123.0, 89.3, 2.0),  # contains the north pole
    (0.0, 90.0, 5.0),  # centred on the pole
    (45.0, -89.9, 0.7),  # south pole
    (259.38918197668687, -56.42215326813397, 0.23472048192436668),  # cone_search misses 657
    (80.0, 5.0, 60.0),  # large
    (10.0, 0.0, 0.0),  # empty
    (10.0, 0.0, 180.0),  # everything
]


def test_loader_returns_exactly_the_rows_in_the_circle(allsky):
    cols, store = allsky
    rng = np.random.default_rng(5)
    random_cones = [
        (rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-1, 1))), 10 ** rng.uniform(-1, 1))
        for _ in range(25)
    ]
    total = json.loads((store / "manifest.json").read_text())["rows"]
    for ra, dec, radius in CONES + random_cones:
        ref = load_refcat(store, ra, dec, radius)
        assert set(ref.id.tolist()) == brute_force(cols, ra, dec, radius), (ra, dec, radius)
        assert len(set(ref.id.tolist())) == len(ref)
        if radius < 5:
            assert ref.stats.rows_read < total / 20  # only the overlapping shards were read


def test_loader_on_patches_at_the_default_nside(tmp_path):
    """Patches crossing RA = 0 and around the pole, nside 32."""
    wrap = catalog(20000, seed=6, ra=(-4, 4), dec=(-3, 3))
    polar = catalog(20000, seed=7, dec=(84, 90), id0=10**6)
    paths = [write(wrap, tmp_path / "wrap.fits"), write(polar, tmp_path / "polar.parquet")]
    ingest_refcat(paths, tmp_path / "store")
    both = {k: np.concatenate([wrap[k], polar[k]]) for k in wrap}
    for ra, dec, radius in [
        (0.0, 0.0, 1.5),
        (359.5, 1.0, 0.3),
        (3.9, -2.9, 0.5),
        (0.0, 90.0, 1.0),
        (200.0, 87.5, 2.0),
        (17.0, 84.2, 0.1),
    ]:
        ref = load_refcat(tmp_path / "store", ra, dec, radius)
        assert set(ref.id.tolist()) == brute_force(both, ra, dec, radius), (ra, dec, radius)


def test_astropy_healpix_cone_search_misses_a_pixel_the_loader_does_not(tmp_path):
    """astropy/astropy-healpix#287: a centre near a pixel edge loses a neighbour."""
    centre_ra, centre_dec, radius = 3.43078364996241, 37.55379844326741, 2.467314936442793
    hp = healpix(1)
    assert 0 not in hp.cone_search_lonlat(centre_ra * u.deg, centre_dec * u.deg, radius * u.deg)
    # Stars of pixel 0 well inside the circle.
    cols = catalog(20000, seed=8, ra=(-3, 9), dec=(33, 42), astrometry=False, bands="")
    pix = hp.lonlat_to_healpix(cols["ra"] * u.deg, cols["dec"] * u.deg)
    ingest_refcat([write(cols, tmp_path / "c.csv")], tmp_path / "store", nside=1)
    expected = brute_force(cols, centre_ra, centre_dec, radius)
    assert expected & set(cols["id"][pix == 0].tolist())
    ref = load_refcat(tmp_path / "store", centre_ra, centre_dec, radius)
    assert set(ref.id.tolist()) == expected


def test_footprint_circle_covers_a_chip_across_ra_zero():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [0.05, -30.0]
    wcs.wcs.crpix = [2000.5, 2036.5]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    shape = (4072, 4000)
    ra, dec, radius = footprint_circle(wcs, shape, margin_deg=0.01)
    half_diagonal = np.hypot(4000, 4072) / 2 * 0.2 / 3600
    assert radius == pytest.approx(half_diagonal + 0.01, rel=1e-3)
    assert abs(dec + 30.0) < 1e-3 and min(ra, 360 - ra) < 0.06
    rng = np.random.default_rng(9)
    x, y = rng.uniform(-0.5, 3999.5, 2000), rng.uniform(-0.5, 4071.5, 2000)
    sky = wcs.pixel_to_world(x, y)
    sep = angular_separation(sky.ra, sky.dec, ra * u.deg, dec * u.deg).to_value(u.deg)
    assert sep.max() <= radius - 0.01 + 1e-9


def test_empty_results_and_bad_queries(allsky, tmp_path):
    _, store = allsky
    ref = load_refcat(store, 10.0, 0.0, 0.0)
    assert len(ref) == 0 and ref.id.dtype == np.int64 and ref.ra.dtype == np.float64
    assert set(ref.bands) == {"g"}
    for args in [(10.0, 0.0, -1.0), (10.0, 91.0, 1.0), (np.nan, 0.0, 1.0)]:
        with pytest.raises(RefcatError):
            load_refcat(store, *args)
    with pytest.raises(RefcatError, match="manifest"):
        load_refcat(tmp_path / "nowhere", 0.0, 0.0, 1.0)


# --------------------------------------------------------------------------- several files


def test_separate_astrometry_and_photometry_stores_and_one_store_from_two_files(tmp_path):
    astro = catalog(3000, seed=10, ra=(50, 56), dec=(10, 16), bands="")
    photo = catalog(
        2000, seed=11, ra=(50, 56), dec=(10, 16), astrometry=False, bands="gr", id0=10**7
    )
    a, p = write(astro, tmp_path / "gaia.fits"), write(photo, tmp_path / "ps1.csv")
    ingest_refcat([a], tmp_path / "astrometry")
    ingest_refcat([p], tmp_path / "photometry")
    ra_ = load_refcat(tmp_path / "astrometry", 53.0, 13.0, 10.0)
    ph = load_refcat(tmp_path / "photometry", 53.0, 13.0, 10.0)
    assert len(ra_) == 3000 and ra_.bands == {} and "pmra" in ra_.columns
    assert len(ph) == 2000 and set(ph.bands) == {"g", "r"} and "pmra" not in ph.columns
    assert np.all(ph.pmra == 0) and np.all(ph.pmdec == 0)  # absent pm is 0
    assert np.all(np.isnan(ph.ra_err)) and np.all(np.isnan(ph.epoch))  # absent is unknown

    report = ingest_refcat([a, p], tmp_path / "both")
    assert report.rows == 5000 and [s.rows for s in report.sources] == [3000, 2000]
    both = load_refcat(tmp_path / "both", 53.0, 13.0, 10.0)
    from_photo = both.id >= 3 * 10**7
    assert from_photo.sum() == 2000
    assert np.all(both.pmra[from_photo] == 0) and np.all(np.isnan(both.epoch[from_photo]))
    assert np.all(np.isnan(both.bands["g"][0][~from_photo]))
    # ...and the union still moves: photometric rows stay, astrometric rows move.
    moved = propagate_to_epoch(both, 60000.0)
    np.testing.assert_array_equal(moved.ra[from_photo], both.ra[from_photo])
    assert np.all(moved.ra[~from_photo] != both.ra[~from_photo])


# --------------------------------------------------------------------------- determinism


def _tree(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_ingest_is_byte_identical_when_repeated(tmp_path):
    cols = catalog(5000, seed=12, ra=(300, 310), dec=(-10, 0))
    path = write(cols, tmp_path / "c.fits")
    ingest_refcat([path], tmp_path / "a")
    first = _tree(tmp_path / "a")
    ingest_refcat([path], tmp_path / "a")  # again, same store
    ingest_refcat([path], tmp_path / "b")  # again, another store
    assert _tree(tmp_path / "a") == first == _tree(tmp_path / "b")
    # The input's row order does not matter to the shards.
    shuffled = {k: v[::-1].copy() for k, v in cols.items()}
    report = ingest_refcat([write(shuffled, tmp_path / "d.fits")], tmp_path / "c")
    shards = {k: v for k, v in _tree(tmp_path / "c").items() if k.startswith(report.shard_dir)}
    assert shards == {k: v for k, v in first.items() if k.startswith(report.shard_dir)}


def test_failed_ingest_leaves_the_previous_store_whole(tmp_path, monkeypatch):
    old = catalog(2000, seed=13, ra=(20, 24), dec=(20, 24))
    new = catalog(2500, seed=14, ra=(20, 24), dec=(20, 24))
    ingest_refcat([write(old, tmp_path / "old.fits")], tmp_path / "store")
    before = _tree(tmp_path / "store")
    # A kill half-way through writing: simulated by a failing write after two shards,
    # plus the debris a SIGKILL would leave (a half-written folder).
    (tmp_path / "store" / ".ingest-killed").mkdir()
    (tmp_path / "store" / ".ingest-killed" / "0001.fits").write_bytes(b"SIMPLE  =")
    calls = {"n": 0}
    real = refcat_store._ShardWriter.shard
    n_shards = len(json.loads((tmp_path / "store" / "manifest.json").read_text())["shards"])

    def failing(self, rows, pixel):
        calls["n"] += 1
        if calls["n"] > n_shards + 2:  # pass 1 hashes every shard; fail in pass 2
            raise OSError("disk full")
        return real(self, rows, pixel)

    monkeypatch.setattr(refcat_store._ShardWriter, "shard", failing)
    with pytest.raises(OSError, match="disk full"):
        ingest_refcat([write(new, tmp_path / "new.fits")], tmp_path / "store")
    after = {k: v for k, v in _tree(tmp_path / "store").items() if not k.startswith(".")}
    assert after == {k: v for k, v in before.items() if not k.startswith(".")}
    assert set(load_refcat(tmp_path / "store", 22, 22, 5).id.tolist()) == set(old["id"].tolist())

    monkeypatch.setattr(refcat_store._ShardWriter, "shard", real)
    ingest_refcat([tmp_path / "new.fits"], tmp_path / "store")
    assert set(load_refcat(tmp_path / "store", 22, 22, 5).id.tolist()) == set(new["id"].tolist())
    leftovers = [p.name for p in (tmp_path / "store").iterdir()]
    assert len([n for n in leftovers if n.startswith("shards-")]) == 1
    assert not [n for n in leftovers if n.startswith(".")]


# --------------------------------------------------------------------------- validation


def _bad(tmp_path, mutate, suffix=".fits", units=None):
    cols = catalog(200, seed=15, ra=(0, 5), dec=(0, 5))
    mutate(cols)
    return write(cols, tmp_path / f"bad{suffix}", units=units)


def _drop(*names):
    def mutate(cols):
        for name in names:
            del cols[name]

    return mutate


def _set(name, index, value):
    def mutate(cols):
        cols[name] = cols[name].astype(float) if name == "id" else cols[name]
        cols[name][index] = value

    return mutate


def _dup(cols):
    cols["id"][7] = cols["id"][3]


MALFORMED = {
    "missing id": (_drop("id"), "id", {}),
    "missing ra": (_drop("ra"), "ra", {}),
    "missing dec": (_drop("dec"), "dec", {}),
    "ra in radians": (lambda c: None, "ra", {"ra": u.rad}),
    "pm in mas": (lambda c: None, "pmra", {"pmra": u.mas}),
    "error in arcsec": (lambda c: None, "dec_err", {"dec_err": u.arcsec}),
    "magnitude in Jy": (lambda c: None, "r_mag", {"r_mag": u.Jy}),
    "NaN ra": (_set("ra", 17, np.nan), "ra", {}),
    "infinite dec": (_set("dec", 3, np.inf), "dec", {}),
    "dec beyond the pole": (_set("dec", 3, 91.0), "dec", {}),
    "duplicate id": (_dup, "id", {}),
    "float id": (_set("id", 0, 1.5), "id", {}),
    "pm without epoch": (_drop("epoch"), "epoch", {}),
    "pmra without pmdec": (_drop("pmdec"), "pmdec", {}),
    "error without magnitude": (_drop("g_mag"), "g_mag_err", {}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_raises_refcat_error_naming_the_column(tmp_path, case):
    mutate, column, units = MALFORMED[case]
    path = _bad(tmp_path, mutate, units={**UNITS, **units})
    with pytest.raises(RefcatError) as info:
        ingest_refcat([path], tmp_path / "store")
    error = info.value
    assert isinstance(error, CalibstreamError) and error.kind == "refcat"
    assert error.where == f"bad.fits:{column}", error
    assert f"'{column}'" in str(error)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_unknown_unit_in_parquet_and_bad_files(tmp_path):
    path = _bad(
        tmp_path,
        lambda c: None,
        suffix=".parquet",
        units={**UNITS, "pmdec": u.def_unit("furlong_per_fortnight")},
    )
    with pytest.raises(RefcatError, match="pmdec") as info:
        ingest_refcat([path], tmp_path / "store")
    assert info.value.where == "bad.parquet:pmdec"
    # Units a file does not carry (CSV) are not checked; its values are taken as the contract's.
    ingest_refcat([_bad(tmp_path, lambda c: None, suffix=".csv")], tmp_path / "store")
    bad = tmp_path / "bad.txt"
    bad.write_text("id,ra,dec\n")
    with pytest.raises(RefcatError, match="unknown file type"):
        ingest_refcat([bad], tmp_path / "store")
    with pytest.raises(RefcatError, match="no such file"):
        ingest_refcat([tmp_path / "none.fits"], tmp_path / "store")
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"not fits at all" * 300)
    with pytest.raises(RefcatError, match="cannot read"):
        ingest_refcat([garbage], tmp_path / "store")
    with pytest.raises(RefcatError, match="nside"):
        ingest_refcat([tmp_path / "bad.csv"], tmp_path / "store", nside=12)


def test_duplicate_ids_across_files_name_both_files(tmp_path):
    one = catalog(100, seed=16, ra=(0, 5), dec=(0, 5))
    two = catalog(100, seed=17, ra=(0, 5), dec=(0, 5))  # same ids
    paths = [write(one, tmp_path / "one.fits"), write(two, tmp_path / "two.csv")]
    with pytest.raises(RefcatError, match=r"one\.fits and two\.csv") as info:
        ingest_refcat(paths, tmp_path / "store")
    assert info.value.where == "id"


def test_upper_case_fits_names_are_the_contract_columns(tmp_path):
    cols = catalog(300, seed=18, ra=(0, 5), dec=(0, 5), bands="g")
    upper = {k.upper(): v for k, v in cols.items()}
    write(upper, tmp_path / "upper.fits", units={k.upper(): v for k, v in UNITS.items()})
    report = ingest_refcat([tmp_path / "upper.fits"], tmp_path / "store")
    assert report.columns[:3] == ("id", "ra", "dec") and report.bands == ("g",)


# --------------------------------------------------------------------------- proper motion


def one_star(dec, pmra=0.0, pmdec=0.0, ra_err=3.0, dec_err=1.0, pmra_err=0.4, pmdec_err=0.2):
    return RefCatalog.from_columns(
        {
            "id": np.array([1]),
            "ra": np.array([30.0]),
            "dec": np.array([dec]),
            "ra_err": np.array([ra_err]),
            "dec_err": np.array([dec_err]),
            "pmra": np.array([pmra]),
            "pmdec": np.array([pmdec]),
            "pmra_err": np.array([pmra_err]),
            "pmdec_err": np.array([pmdec_err]),
            "epoch": np.array([2000.0]),
        }
    )


def mjd_of(year):
    return 51544.5 + (year - 2000.0) * 365.25


def sep_mas(a: RefCatalog, b: RefCatalog):
    return angular_separation(a.ra * u.deg, a.dec * u.deg, b.ra * u.deg, b.dec * u.deg).to_value(
        u.mas
    )


def test_pmra_100_mas_per_year_at_dec_60_moves_1000_mas_in_ten_years():
    star = one_star(60.0, pmra=100.0)
    moved = propagate_to_epoch(star, mjd_of(2010.0))
    assert sep_mas(star, moved)[0] == pytest.approx(1000.0, abs=1e-6)
    # pmra includes cos dec: ra itself moves by twice that at dec 60.
    assert (moved.ra[0] - star.ra[0]) * 3.6e6 == pytest.approx(2000.0, rel=1e-6)
    # A great circle, not the parallel: dec drops by (θ²/2)·tan(dec) = 1.2e-9 deg (4 µas).
    assert moved.dec[0] - 60.0 == pytest.approx(
        -0.5 * (1 / 3600) ** 2 * np.pi / 180 * np.tan(np.radians(60)), rel=1e-3
    )
    assert moved.epoch[0] == pytest.approx(2010.0, abs=1e-12)
    north = propagate_to_epoch(one_star(-20.0, pmdec=-50.0), mjd_of(1990.0))
    assert (north.dec[0] + 20.0) * 3.6e6 == pytest.approx(500.0, rel=1e-9)  # back in time: north


def test_errors_grow_in_quadrature_both_ways_in_time():
    star = one_star(10.0, pmra=5.0)
    for year in (2010.0, 1990.0):
        moved = propagate_to_epoch(star, mjd_of(year))
        assert moved.ra_err[0] == pytest.approx(np.hypot(3.0, 0.4 * 10), rel=1e-9)  # 5 mas
        assert moved.dec_err[0] == pytest.approx(np.hypot(1.0, 0.2 * 10), rel=1e-9)
    assert star.ra[0] == 30.0 and star.ra_err[0] == 3.0 and star.epoch[0] == 2000.0  # pure


def test_propagation_agrees_with_astropy_space_motion_everywhere():
    rng = np.random.default_rng(19)
    n = 2000
    cols = catalog(n, seed=19, bands="")
    cols["dec"][:4] = [89.99999, -89.99999, 0.0, 60.0]
    cols["pmra"] = rng.normal(0, 300, n)
    cols["pmdec"] = rng.normal(0, 300, n)
    ref = RefCatalog.from_columns(cols)
    moved = propagate_to_epoch(ref, mjd_of(2026.0))
    coord = SkyCoord(
        ra=ref.ra * u.deg,
        dec=ref.dec * u.deg,
        pm_ra_cosdec=ref.pmra * u.mas / u.yr,
        pm_dec=ref.pmdec * u.mas / u.yr,
        obstime=Time(2016.0, format="jyear"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ERFA: distance overridden
        expected = coord.apply_space_motion(new_obstime=Time(2026.0, format="jyear"))
    sep = angular_separation(moved.ra * u.deg, moved.dec * u.deg, expected.ra, expected.dec)
    assert sep.to_value(u.mas).max() < 1e-4


def test_propagation_is_vectorised_and_leaves_still_rows_exact():
    cols = catalog(100_000, seed=20, bands="")
    cols["pmra"][:10] = 0.0
    cols["pmdec"][:10] = 0.0
    cols["pmra"][10:20] = np.nan  # e.g. Gaia's two-parameter solutions
    cols["epoch"][:5] = np.nan
    ref = RefCatalog.from_columns(cols)
    start = time.perf_counter()
    moved = propagate_to_epoch(ref, 60500.0)
    assert time.perf_counter() - start < 0.5
    np.testing.assert_array_equal(moved.ra[:20], ref.ra[:20])
    np.testing.assert_array_equal(moved.dec[:20], ref.dec[:20])
    assert np.all(np.isfinite(moved.ra_err)) and np.all(moved.epoch == moved.epoch[0])
    assert np.all(moved.ra[20:] != ref.ra[20:])


# --------------------------------------------------------------------------- shard cache


def test_shard_cache_is_filled_then_used(allsky):
    _, store = allsky
    cache = DictCache()
    first = load_refcat(store, 150.0, 20.0, 8.0, shard_cache=cache)
    assert first.stats.shards > 1
    assert first.stats.cache_misses == first.stats.shards and first.stats.cache_hits == 0
    assert len(cache.data) == first.stats.shards
    assert all(key.startswith("calibstream:refcat:") for key in cache.data)
    second = load_refcat(store, 150.0, 20.0, 8.0, shard_cache=cache)
    assert second.stats.cache_hits == second.stats.shards and second.stats.cache_misses == 0
    np.testing.assert_array_equal(second.id, first.id)
    np.testing.assert_array_equal(second.ra, first.ra)


class BrokenCache:
    def __init__(self):
        self.calls = 0

    def get(self, key):
        self.calls += 1
        raise ConnectionError("redis is down")

    def set(self, key, value):
        self.calls += 1
        raise ConnectionError("redis is down")


def test_a_failing_or_corrupt_cache_never_breaks_loading(allsky):
    _, store = allsky
    expected = load_refcat(store, 300.0, -40.0, 8.0)
    broken = BrokenCache()
    ref = load_refcat(store, 300.0, -40.0, 8.0, shard_cache=broken)
    np.testing.assert_array_equal(ref.id, expected.id)
    assert ref.stats.cache_errors == 1 and broken.calls == 1  # not asked again in this load

    cache = DictCache()
    load_refcat(store, 300.0, -40.0, 8.0, shard_cache=cache)
    for key in cache.data:
        cache.data[key] = b"SIMPLE  = garbage"
    ref = load_refcat(store, 300.0, -40.0, 8.0, shard_cache=cache)
    np.testing.assert_array_equal(ref.id, expected.id)
    assert ref.stats.cache_errors == ref.stats.shards and ref.stats.cache_hits == 0
    again = load_refcat(store, 300.0, -40.0, 8.0, shard_cache=cache)  # repaired
    assert again.stats.cache_hits == again.stats.shards


def test_cache_keys_follow_content_so_a_reingest_is_never_served_stale(tmp_path):
    old = catalog(1000, seed=21, ra=(60, 62), dec=(0, 2))
    new = catalog(1000, seed=22, ra=(60, 62), dec=(0, 2))
    cache = DictCache()
    ingest_refcat([write(old, tmp_path / "old.fits")], tmp_path / "store")
    load_refcat(tmp_path / "store", 61, 1, 2, shard_cache=cache)
    ingest_refcat([write(new, tmp_path / "new.fits")], tmp_path / "store")
    ref = load_refcat(tmp_path / "store", 61, 1, 2, shard_cache=cache)
    assert ref.stats.cache_hits == 0
    np.testing.assert_array_equal(np.sort(ref.ra), np.sort(new["ra"]))


def test_shards_in_another_layout_are_read_through_astropy():
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ID", format="J", array=np.array([3, 1], dtype=np.int32)),
            fits.Column(name="RA", format="E", array=np.array([1.5, 2.5], dtype=np.float32)),
            fits.Column(name="DEC", format="D", array=np.array([-1.0, 1.0])),
        ]
    )
    data = refcat_store.read_shard(
        refcat_store_bytes(fits.HDUList([fits.PrimaryHDU(), table])), ["id", "ra", "dec"], "x"
    )
    assert data["id"].tolist() == [3, 1] and data["ra"].tolist() == [1.5, 2.5]
    with pytest.raises(RefcatError, match="lacks columns"):
        refcat_store.read_shard(
            refcat_store_bytes(fits.HDUList([fits.PrimaryHDU(), table])), ["id", "pmra"], "x"
        )
    with pytest.raises(RefcatError, match="unreadable shard"):
        refcat_store.read_shard(b"garbage" * 500, ["id"], "x")


def refcat_store_bytes(hdul):
    import io

    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def test_a_damaged_store_is_a_refcat_error_not_wrong_rows(tmp_path):
    cols = catalog(500, seed=23, ra=(70, 72), dec=(5, 7))
    report = ingest_refcat([write(cols, tmp_path / "c.fits")], tmp_path / "store")
    shard = next((tmp_path / "store" / report.shard_dir).iterdir())
    data = bytearray(shard.read_bytes())
    data[-3000] ^= 0xFF  # one flipped byte in the rows
    shard.write_bytes(bytes(data))
    with pytest.raises(RefcatError, match="sha256"):
        load_refcat(tmp_path / "store", 71, 6, 3)
    shard.unlink()
    with pytest.raises(RefcatError, match="missing") as info:
        load_refcat(tmp_path / "store", 71, 6, 3)
    assert info.value.where.endswith(shard.name)
