"""Reference catalogues in the forms users hold them: the contract's columns, Gaia DR3's, an
LSST stack HTM refcat and a HATS catalogue (ingested, or read in place); the colour-term
library keyed by catalogue and band."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from astropy import units as u
from refcat_forms import (
    GAIA_BANDS,
    gaia_dr3_table,
    htm_index,
    lsst_table,
    write_gaia_parquet,
    write_hats,
    write_lsst_htm,
)
from test_refcat import catalog, write

from calibstream.astrometry.refcat import ingest_refcat, load_refcat, store_name
from calibstream.colorterms import colorterm_for, required_colorterm
from calibstream.config import ColorTerm, config_from_dict
from calibstream.errors import CalibrationError, ConfigError, RefcatError
from streams.cli import main

ASTROMETRY = ("ra", "dec", "ra_err", "dec_err", "pmra", "pmdec", "pmra_err", "pmdec_err", "epoch")
CIRCLE = (150.0, 2.0, 0.6)


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """One catalogue written in every form, each ingested into a store."""
    root = tmp_path_factory.mktemp("forms")
    cols = catalog(3000, seed=31, ra=(149.0, 151.0), dec=(1.0, 3.0))
    inputs = {
        "contract": write(cols, root / "contract.fits"),
        "gaia-fits": root / "gaia.fits",
        "gaia-csv": root / "gaia.csv",
        "gaia-parquet": write_gaia_parquet(cols, root / "gaia.parquet"),
        "lsst": write_lsst_htm(cols, root / "htm"),
        "hats": write_hats(gaia_dr3_table(cols), root / "hats"),
    }
    gaia = gaia_dr3_table(cols)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gaia.write(inputs["gaia-fits"])
    pacsv.write_csv(pa.table({c: np.asarray(gaia[c]) for c in gaia.colnames}), inputs["gaia-csv"])
    stores = {}
    for key, path in inputs.items():
        stores[key] = root / f"store-{key}"
        ingest_refcat([path], stores[key])
    return cols, inputs, stores


def _same_rows(a, b, gaia_names=False):
    """Every astrometric value to 1e-6 mas (or relative 1e-12), magnitudes to 1e-9 mag."""
    oa, ob = np.argsort(a.id), np.argsort(b.id)
    assert np.array_equal(a.id[oa], b.id[ob])
    for name in ASTROMETRY:
        x, y = getattr(a, name)[oa], getattr(b, name)[ob]
        scale = 3.6e6 if name in ("ra", "dec") else 1.0
        assert np.allclose(x * scale, y * scale, rtol=1e-12, atol=1e-6, equal_nan=True), name
    for band, (mag, err) in a.bands.items():
        other = GAIA_BANDS[band] if gaia_names else band
        assert np.allclose(mag[oa], b.bands[other][0][ob], atol=1e-9, equal_nan=True), band
        assert np.allclose(err[oa], b.bands[other][1][ob], atol=1e-9, equal_nan=True), band


@pytest.mark.parametrize("key", ["gaia-fits", "gaia-csv", "gaia-parquet", "lsst", "hats"])
def test_every_form_gives_the_contract_rows(forms, key):
    _, _, stores = forms
    base = load_refcat(stores["contract"], *CIRCLE)
    other = load_refcat(stores[key], *CIRCLE)
    assert len(base) > 500
    _same_rows(base, other, gaia_names=key != "lsst")
    if key != "lsst":  # Gaia's bands keep Gaia's names
        assert sorted(other.bands) == ["phot_bp_mean", "phot_g_mean", "phot_rp_mean"]


def test_a_hats_catalogue_read_in_place_reads_only_overlapping_partitions(forms):
    _, inputs, stores = forms
    base = load_refcat(stores["contract"], *CIRCLE)
    in_place = load_refcat(inputs["hats"], *CIRCLE)
    _same_rows(base, in_place, gaia_names=True)
    assert in_place.name == "gaia_dr3" == store_name(inputs["hats"])
    total = len((inputs["hats"] / "partition_info.csv").read_text().split()) - 1
    small = load_refcat(inputs["hats"], 150.0, 2.0, 0.05)
    assert 0 < small.stats.shards < total, (small.stats, total)
    _same_rows(load_refcat(stores["contract"], 150.0, 2.0, 0.05), small, gaia_names=True)
    assert len(load_refcat(inputs["hats"], 10.0, -40.0, 0.1)) == 0


def test_the_hats_catalogue_written_here_is_one_hats_reads_and_validates(forms):
    hats = pytest.importorskip("hats")
    from hats.io.validation import is_valid_catalog

    _, inputs, _ = forms
    assert is_valid_catalog(inputs["hats"], strict=True)
    catalog = hats.read_hats(inputs["hats"])
    orders = {p.order for p in catalog.get_healpix_pixels()}
    assert len(orders) == 2  # mixed orders, as hats-import writes them
    assert catalog.catalog_info.catalog_name == "gaia_dr3"


def test_hats_partitions_go_through_the_shard_cache(forms):
    _, inputs, _ = forms

    class Cache(dict):
        def get(self, key):
            return super().get(key)

        def set(self, key, value):
            self[key] = value

    cache = Cache()
    first = load_refcat(inputs["hats"], *CIRCLE, shard_cache=cache)
    again = load_refcat(inputs["hats"], *CIRCLE, shard_cache=cache)
    assert first.stats.cache_misses == first.stats.shards == again.stats.cache_hits > 0
    for key in cache:
        cache[key] = b"\0" * 40  # corrupt: read again from the file
    third = load_refcat(inputs["hats"], *CIRCLE, shard_cache=cache)
    assert third.stats.cache_errors == third.stats.shards and len(third) == len(first)


def test_the_command_says_which_form_it_found(forms, tmp_path, capsys):
    _, inputs, _ = forms
    for key, words in [
        ("contract", "the contract's columns (contract), recognised"),
        ("gaia-parquet", "Gaia DR3's columns (gaia-dr3), recognised"),
        ("lsst", "an LSST stack refcat's columns (lsst), recognised"),
        ("hats", "a HATS catalogue (hats) with Gaia DR3's columns, recognised"),
    ]:
        assert main(["ingest-refcat", str(inputs[key]), "--out", str(tmp_path / key)]) == 0
        assert words in capsys.readouterr().out
    out = tmp_path / "named"
    assert main(["ingest-refcat", str(inputs["hats"]), "--out", str(out), "--format", "hats",
                 "--name", "gaia_dr3_hats"]) == 0  # fmt: skip
    assert "as given" in capsys.readouterr().out
    assert store_name(out) == "gaia_dr3_hats" and store_name(tmp_path / "lsst") == "lsst"


def _table(tmp_path, columns, name="t.parquet"):
    path = tmp_path / name
    ints = ("id", "source_id")
    values = {c: np.arange(3, dtype=int if c in ints else float) + 1 for c in columns}
    pa.parquet.write_table(pa.table(values), path)
    return path


def test_missing_or_ambiguous_columns_are_one_error_naming_them(tmp_path):
    import pyarrow.parquet  # noqa: F401 (pa.parquet)

    cases = [
        (["ra", "dec", "flux"], r"none of the column sets.*closest is contract, missing 'id'"),
        (["id", "source_id", "ra", "dec"], r"ambiguous.*contract \(id, ra, dec\); gaia-dr3"),
        (["source_id", "ra", "dec", "pmra"], r"Gaia DR3's columns lack 'pmdec', 'ref_epoch'"),
        (["id", "coord_ra"], r"closest is lsst, missing 'coord_dec'"),
    ]
    for columns, message in cases:
        with pytest.raises(RefcatError, match=message):
            ingest_refcat([_table(tmp_path, columns)], tmp_path / "s")
    path = _table(tmp_path, ["id", "source_id", "ra", "dec"])
    report = ingest_refcat([path], tmp_path / "s", form="gaia-dr3")  # said: no longer ambiguous
    assert report.sources[0].form == "gaia-dr3" and report.rows == 3
    with pytest.raises(RefcatError, match="the LSST stack's refcat columns lack 'coord_ra'"):
        ingest_refcat([path], tmp_path / "s", form="lsst")
    with pytest.raises(RefcatError, match="not a HATS catalogue"):
        ingest_refcat([path], tmp_path / "s", form="hats")


def test_units_a_file_gives_are_converted_and_wrong_ones_named(tmp_path):
    cols = catalog(50, seed=32, ra=(10, 11), dec=(-5, -4))
    t = lsst_table(cols)
    t["coord_ra"] = np.degrees(np.asarray(t["coord_ra"])) * u.deg  # degrees, and says so
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.write(tmp_path / "deg.fits")
        t["pm_dec"].unit = u.mag
        t.write(tmp_path / "bad.fits")
    report = ingest_refcat([tmp_path / "deg.fits"], tmp_path / "s")
    ref = load_refcat(tmp_path / "s", 10.5, -4.5, 2.0)
    assert report.rows == 50 and np.allclose(np.sort(ref.ra), np.sort(cols["ra"]), atol=1e-12)
    with pytest.raises(RefcatError, match="'pm_dec' has unit 'mag'") as info:
        ingest_refcat([tmp_path / "bad.fits"], tmp_path / "s")
    assert info.value.where == "bad.fits:pm_dec"


def test_htm_index_is_the_stacks_numbering():
    # The 8 root trixels at depth 0 (S0..S3 = 8..11 in the south, N0..N3 = 12..15).
    ra = np.array([45.0, 135.0, 225.0, 315.0, 45.0, 135.0, 225.0, 315.0])
    dec = np.array([-30.0] * 4 + [30.0] * 4)
    assert list(htm_index(ra, dec, 0)) == [8, 9, 10, 11, 15, 14, 13, 12]
    deep = htm_index(ra, dec, 7)
    assert list(deep >> 14) == [8, 9, 10, 11, 15, 14, 13, 12]


COLORTERMS = """
[colorterms.r]
primary = "r"
secondary = "i"
c1 = 0.04

[colorterms.gaia_dr3.r]
primary = "phot_g_mean"
secondary = "phot_rp_mean"
c1 = 0.03

[colorterms."ps1*".g]
primary = "g"
secondary = "r"
c0 = 0.01
"""


def test_one_configuration_serves_two_catalogues(tmp_path):
    import tomllib

    config = config_from_dict(tomllib.loads(COLORTERMS))
    assert colorterm_for(config, "r", "sim") == ColorTerm("r", "i", c1=0.04)  # the default
    assert colorterm_for(config, "r", "gaia_dr3") == ColorTerm(
        "phot_g_mean", "phot_rp_mean", c1=0.03
    )
    assert colorterm_for(config, "g", "ps1_pv3") == ColorTerm("g", "r", c0=0.01)  # a glob
    assert colorterm_for(config, "g", "sim") == ColorTerm("g", "r")  # the defaults stay
    with pytest.raises(CalibrationError, match=r"against reference catalogue 'gaia_dr3' \(give "
                       r"\[colorterms\.gaia_dr3\.g\]\)"):  # fmt: skip
        required_colorterm(config, "g", "gaia_dr3")
    two = config_from_dict(tomllib.loads(COLORTERMS + '\n[colorterms."ps1_*".g]\nprimary="g"\n'
                                         'secondary="r"\n'))  # fmt: skip
    with pytest.raises(CalibrationError, match="several colour-term libraries"):
        colorterm_for(two, "g", "ps1_pv3")


@pytest.mark.parametrize(
    "text, where",
    [
        ('[colorterms.gaia.r]\nprimary = "x"\n', "colorterms.gaia.r"),  # no secondary
        ('[colorterms.gaia.r]\nprimary = "x"\nsecondary = "y"\nc4 = 1\n', "colorterms.gaia.r"),
        ('[colorterms.gaia]\nprimary = "x"\n[colorterms.gaia.r]\nc0 = 1\n', "colorterms.gaia"),
        (
            '[colorterms.gaia.r]\nprimary = "x"\nsecondary = "y"\nc1 = "big"\n',
            "colorterms.gaia.r.c1",
        ),
        ("colorterm_libraries = 1\n", "config"),
    ],
)
def test_colour_term_library_mistakes_are_named(text, where):
    import tomllib

    with pytest.raises(ConfigError) as info:
        config_from_dict(tomllib.loads(text))
    assert info.value.where == where, info.value
